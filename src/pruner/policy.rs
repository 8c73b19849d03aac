//! Retention policy: which snapshots to keep (`vault prune`/`vault forget` policy flags).
//!
//! Semantics are restic's documented ones (`restic forget`). Snapshots are grouped (by host and
//! paths by default) and each group is considered newest first:
//! * `--keep-last n` keeps the n newest snapshots;
//! * `--keep-{hourly,daily,weekly,monthly,yearly} n`: for the last n hours/days/ISO weeks/
//!   months/years that have snapshots, keep the newest snapshot of each;
//! * `--keep-within D` keeps every snapshot within D of the group's newest snapshot;
//! * `--keep-tag T` keeps every snapshot carrying tag T.
//!
//! A snapshot kept by several rules counts for each of them. Calendar periods are computed in
//! the time zone the snapshot recorded (its UTC offset), not the machine's. Held snapshots are
//! always kept. Pure: no I/O.

use std::collections::BTreeMap;

use crate::format::snapshot::Snapshot;
use crate::id::SnapshotId;

/// How many periods of each kind to keep (0 = rule off).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Newest n snapshots.
    pub last: u32,
    /// Newest snapshot in each of the last n hours with snapshots.
    pub hourly: u32,
    /// … days.
    pub daily: u32,
    /// … ISO weeks.
    pub weekly: u32,
    /// … months.
    pub monthly: u32,
    /// … years.
    pub yearly: u32,
    /// Keep everything within this span of the newest snapshot of the group.
    pub within: Option<Span>,
    /// Keep snapshots with any of these tags.
    pub tags: Vec<String>,
}

impl Policy {
    /// Whether no rule is set (such a policy would remove everything).
    pub fn is_empty(&self) -> bool {
        self.last == 0
            && self.hourly == 0
            && self.daily == 0
            && self.weekly == 0
            && self.monthly == 0
            && self.yearly == 0
            && self.within.is_none()
            && self.tags.is_empty()
    }
}

/// A calendar span such as `1y2m3d4h` (years, months, days, hours).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    /// Years.
    pub years: i32,
    /// Months.
    pub months: i32,
    /// Days.
    pub days: i32,
    /// Hours.
    pub hours: i32,
}

impl Span {
    /// Parses `30d`, `1y2m`, `12h`, `2y6m15d`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut span = Span::default();
        let mut num = String::new();
        let mut any = false;
        for c in s.trim().chars() {
            if c.is_ascii_digit() {
                num.push(c);
                continue;
            }
            let n: i32 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
            num.clear();
            match c {
                'y' => span.years += n,
                'm' => span.months += n,
                'd' => span.days += n,
                'h' => span.hours += n,
                _ => {
                    return Err(format!(
                        "invalid duration {s:?}: unit {c:?} (use y, m, d, h)"
                    ));
                }
            }
            any = true;
        }
        if !num.is_empty() || !any {
            return Err(format!(
                "invalid duration {s:?}: every number needs a unit (y, m, d, h)"
            ));
        }
        Ok(span)
    }

    /// The time this span before `t` (calendar arithmetic in UTC); `None` when out of range.
    pub fn before(
        &self,
        t: crate::format::time::Timestamp,
    ) -> Option<crate::format::time::Timestamp> {
        let z = jiff::Timestamp::new(t.secs, 0)
            .ok()?
            .to_zoned(jiff::tz::TimeZone::UTC);
        let limit = z
            .checked_sub(
                jiff::Span::new()
                    .years(self.years)
                    .months(self.months)
                    .days(self.days),
            )
            .ok()?
            .checked_sub(jiff::Span::new().hours(self.hours))
            .ok()?;
        Some(crate::format::time::Timestamp {
            secs: limit.timestamp().as_second(),
            nanos: t.nanos,
        })
    }
}

/// Why a snapshot is kept.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct KeepReason {
    /// The snapshot.
    pub snapshot: SnapshotId,
    /// Rules that keep it ("last snapshot", "daily snapshot", "within 30d", "tag db", "hold: …").
    pub matches: Vec<String>,
}

/// The decision for one group.
#[derive(Clone, Debug)]
pub struct GroupDecision {
    /// Group key values (host, paths, tags as selected by `--group-by`).
    pub key: GroupKey,
    /// Snapshots kept, newest first.
    pub keep: Vec<SnapshotId>,
    /// Snapshots removed, newest first.
    pub remove: Vec<SnapshotId>,
    /// Why each kept snapshot is kept.
    pub reasons: Vec<KeepReason>,
}

/// What `--group-by` groups on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupBy {
    /// Group by host name.
    pub host: bool,
    /// Group by the set of paths.
    pub paths: bool,
    /// Group by the set of tags.
    pub tags: bool,
}

impl GroupBy {
    /// Parses `host,paths` (the default), `host`, `paths`, `tags`, combinations, or `` (one group).
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut g = GroupBy::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "host" => g.host = true,
                "paths" => g.paths = true,
                "tags" => g.tags = true,
                other => return Err(format!("cannot group by {other:?} (use host, paths, tags)")),
            }
        }
        Ok(g)
    }
}

/// The values a group is keyed on.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupKey {
    /// Host name, when grouping by host.
    pub hostname: Option<String>,
    /// Sorted paths, when grouping by paths.
    pub paths: Option<Vec<String>>,
    /// Sorted tags, when grouping by tags.
    pub tags: Option<Vec<String>>,
}

/// The group a snapshot belongs to under `by`.
pub fn group_key(s: &Snapshot, by: GroupBy) -> GroupKey {
    let mut paths: Vec<String> = s
        .paths
        .iter()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    paths.sort();
    GroupKey {
        hostname: by.host.then(|| s.hostname.clone()),
        paths: by.paths.then_some(paths),
        tags: by.tags.then(|| s.tags.clone()),
    }
}

/// The local calendar fields of a snapshot's time in its own recorded offset.
struct Local {
    year: i32,
    month: i8,
    day: i8,
    hour: i8,
    iso_year: i16,
    iso_week: i8,
    zoned: Option<jiff::Zoned>,
}

fn local(s: &Snapshot) -> Local {
    let off = jiff::tz::Offset::from_seconds(s.tz_offset_secs).unwrap_or(jiff::tz::Offset::UTC);
    let zoned = jiff::Timestamp::new(s.time.secs, s.time.nanos as i32)
        .ok()
        .map(|t| t.to_zoned(jiff::tz::TimeZone::fixed(off)));
    match &zoned {
        Some(z) => {
            let iso = z.date().iso_week_date();
            Local {
                year: i32::from(z.year()),
                month: z.month(),
                day: z.day(),
                hour: z.hour(),
                iso_year: iso.year(),
                iso_week: iso.week(),
                zoned: zoned.clone(),
            }
        }
        None => Local {
            year: 0,
            month: 0,
            day: 0,
            hour: 0,
            iso_year: 0,
            iso_week: 0,
            zoned: None,
        },
    }
}

/// Applies `policy` to snapshots grouped by `by`. `held` snapshots are always kept (with the
/// hold's reason). Groups come out in key order; within a group, newest first.
pub fn apply(
    snapshots: &[(SnapshotId, Snapshot)],
    policy: &Policy,
    by: GroupBy,
    held: &BTreeMap<SnapshotId, String>,
) -> Vec<GroupDecision> {
    let mut groups: BTreeMap<GroupKey, Vec<&(SnapshotId, Snapshot)>> = BTreeMap::new();
    for s in snapshots {
        groups.entry(group_key(&s.1, by)).or_default().push(s);
    }
    groups
        .into_iter()
        .map(|(key, mut list)| {
            list.sort_by(|a, b| b.1.time.cmp(&a.1.time).then(b.0.cmp(&a.0)));
            decide(key, &list, policy, held)
        })
        .collect()
}

fn decide(
    key: GroupKey,
    list: &[&(SnapshotId, Snapshot)],
    policy: &Policy,
    held: &BTreeMap<SnapshotId, String>,
) -> GroupDecision {
    type Bucket = fn(&Local) -> i64;
    let buckets: [(&str, u32, Bucket); 5] = [
        ("hourly snapshot", policy.hourly, |l| {
            ((i64::from(l.year) * 100 + i64::from(l.month)) * 100 + i64::from(l.day)) * 100
                + i64::from(l.hour)
        }),
        ("daily snapshot", policy.daily, |l| {
            (i64::from(l.year) * 100 + i64::from(l.month)) * 100 + i64::from(l.day)
        }),
        ("weekly snapshot", policy.weekly, |l| {
            i64::from(l.iso_year) * 100 + i64::from(l.iso_week)
        }),
        ("monthly snapshot", policy.monthly, |l| {
            i64::from(l.year) * 100 + i64::from(l.month)
        }),
        ("yearly snapshot", policy.yearly, |l| i64::from(l.year)),
    ];
    let mut remaining: Vec<u32> = buckets.iter().map(|b| b.1).collect();
    let mut last_bucket: Vec<Option<i64>> = vec![None; buckets.len()];
    let within_limit = policy.within.and_then(|span| {
        let newest = local(&list.first()?.1).zoned?;
        let limit = newest
            .checked_sub(
                jiff::Span::new()
                    .years(span.years)
                    .months(span.months)
                    .days(span.days),
            )
            .ok()?
            .checked_sub(jiff::Span::new().hours(span.hours))
            .ok()?;
        Some(limit.timestamp())
    });
    let mut keep = Vec::new();
    let mut remove = Vec::new();
    let mut reasons = Vec::new();
    for (i, (id, s)) in list.iter().map(|e| (&e.0, &e.1)).enumerate() {
        let l = local(s);
        let mut matches = Vec::new();
        if (i as u32) < policy.last {
            matches.push("last snapshot".to_string());
        }
        for (k, (name, _, bucket)) in buckets.iter().enumerate() {
            if remaining[k] == 0 {
                continue;
            }
            let b = bucket(&l);
            if last_bucket[k] != Some(b) {
                last_bucket[k] = Some(b);
                remaining[k] -= 1;
                matches.push((*name).to_string());
            }
        }
        if let (Some(limit), Some(z)) = (within_limit, &l.zoned)
            && z.timestamp() >= limit
        {
            let w = policy.within.expect("invariant: limit comes from within");
            matches.push(format!(
                "within {}y{}m{}d{}h",
                w.years, w.months, w.days, w.hours
            ));
        }
        for t in &policy.tags {
            if s.tags.iter().any(|st| st == t) {
                matches.push(format!("tag {t}"));
            }
        }
        if let Some(reason) = held.get(id) {
            matches.push(format!("hold: {reason}"));
        }
        if matches.is_empty() {
            remove.push(*id);
        } else {
            keep.push(*id);
            reasons.push(KeepReason {
                snapshot: *id,
                matches,
            });
        }
    }
    GroupDecision {
        key,
        keep,
        remove,
        reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::time::Timestamp;

    fn snap(time: &str, host: &str, tags: &[&str]) -> (SnapshotId, Snapshot) {
        let z: jiff::Timestamp = time.parse().unwrap();
        let id = SnapshotId(*blake3::hash(format!("{time}{host}").as_bytes()).as_bytes());
        (
            id,
            Snapshot {
                time: Timestamp::new(z.as_second(), 0),
                tz_offset_secs: 0,
                hostname: host.into(),
                username: String::new(),
                uid: 0,
                gid: 0,
                paths: vec![b"/data".to_vec()],
                tags: tags.iter().map(|t| t.to_string()).collect(),
                tree: crate::id::BlobId::default(),
                parent: None,
                original: None,
                program_version: String::new(),
                summary: Default::default(),
            },
        )
    }

    fn kept(d: &GroupDecision, all: &[(SnapshotId, Snapshot)]) -> Vec<String> {
        d.keep
            .iter()
            .map(|id| {
                let s = &all.iter().find(|x| x.0 == *id).unwrap().1;
                jiff::Timestamp::new(s.time.secs, 0).unwrap().to_string()
            })
            .collect()
    }

    #[test]
    fn worked_example_daily_weekly_monthly() {
        // Snapshots at 03:00 and 15:00 UTC every day from Thu 2026-01-01 to Mon 2026-02-09.
        let mut all = Vec::new();
        for d in 0..40 {
            for h in [3, 15] {
                let t =
                    jiff::Timestamp::from_second(1_767_225_600 + d * 86_400 + h * 3600).unwrap();
                all.push(snap(&t.to_string(), "db1", &[]));
            }
        }
        let policy = Policy {
            daily: 7,
            weekly: 4,
            monthly: 2,
            ..Policy::default()
        };
        let d = &apply(
            &all,
            &policy,
            GroupBy {
                host: true,
                paths: true,
                tags: false,
            },
            &BTreeMap::new(),
        )[0];
        // Daily: the newest of Feb 9..Feb 3. Weekly (ISO): W07 Feb 9, W06 Feb 8, W05 Feb 1,
        // W04 Jan 25. Monthly: Feb 9 and Jan 31. Always the 15:00 snapshot of a day.
        let expected: Vec<String> = [
            "02-09", "02-08", "02-07", "02-06", "02-05", "02-04", "02-03", "02-01", "01-31",
            "01-25",
        ]
        .iter()
        .map(|d| format!("2026-{d}T15:00:00Z"))
        .collect();
        assert_eq!(kept(d, &all), expected);
        assert_eq!(d.keep.len() + d.remove.len(), 80);
        let feb9 = &d.reasons[0].matches;
        assert_eq!(
            feb9,
            &vec!["daily snapshot", "weekly snapshot", "monthly snapshot"]
        );
        let jan31 = &d.reasons[8].matches;
        assert_eq!(jan31, &vec!["monthly snapshot"]);
    }

    #[test]
    fn last_within_tags_and_holds() {
        let mut all = Vec::new();
        for d in 0..10 {
            let t = jiff::Timestamp::from_second(1_767_225_600 + d * 86_400).unwrap();
            all.push(snap(
                &t.to_string(),
                "h",
                if d == 2 { &["keep"] } else { &[] },
            ));
        }
        let held: BTreeMap<SnapshotId, String> = [(all[0].0, "case 7".to_string())].into();
        let policy = Policy {
            last: 2,
            within: Some(Span {
                days: 3,
                ..Span::default()
            }),
            tags: vec!["keep".into()],
            ..Policy::default()
        };
        let d = &apply(&all, &policy, GroupBy::default(), &held)[0];
        // last 2: days 9, 8; within 3 days of day 9: days 9..6; tag: day 2; hold: day 0.
        let days: Vec<String> = kept(d, &all).iter().map(|t| t[8..10].to_string()).collect();
        assert_eq!(days, vec!["10", "09", "08", "07", "03", "01"]);
        assert!(
            d.reasons
                .last()
                .unwrap()
                .matches
                .contains(&"hold: case 7".to_string())
        );
    }

    #[test]
    fn groups_by_host_and_time_zone_decides_the_day() {
        let mut a = snap("2026-03-01T23:30:00Z", "a", &[]);
        let mut b = snap("2026-03-01T22:30:00Z", "a", &[]);
        // In UTC+2 both are on March 2nd, so daily=2 keeps the newer and the previous day…
        a.1.tz_offset_secs = 7200;
        b.1.tz_offset_secs = 7200;
        let c = snap("2026-02-28T12:00:00Z", "a", &[]);
        let other = snap("2026-03-01T12:00:00Z", "b", &[]);
        let all = vec![a.clone(), b.clone(), c.clone(), other.clone()];
        let policy = Policy {
            daily: 2,
            ..Policy::default()
        };
        let groups = apply(
            &all,
            &policy,
            GroupBy {
                host: true,
                paths: false,
                tags: false,
            },
            &BTreeMap::new(),
        );
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].keep, vec![a.0, c.0]);
        assert_eq!(groups[0].remove, vec![b.0]);
        assert_eq!(groups[1].keep, vec![other.0]);
    }

    #[test]
    fn spans_parse() {
        assert_eq!(
            Span::parse("30d").unwrap(),
            Span {
                days: 30,
                ..Span::default()
            }
        );
        assert_eq!(
            Span::parse("1y2m").unwrap(),
            Span {
                years: 1,
                months: 2,
                ..Span::default()
            }
        );
        assert!(Span::parse("30").is_err());
        assert!(Span::parse("3w").is_err());
        assert!(Span::parse("").is_err());
    }
}
