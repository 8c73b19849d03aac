//! Who a process is, precisely enough to prove that it no longer exists.
//!
//! A PID alone is not an identity: PIDs are reused (within minutes on a busy host), and two
//! containers on one kernel have separate PID spaces. A [`ProcessIdentity`] adds the kernel's
//! boot id, the PID namespace and the process's start time (in clock ticks since boot). A
//! process is **provably gone** only when the identity was recorded under this very boot and
//! PID namespace and either no process has that PID or the process that has it started at
//! another time. Anything else (another host, another container, another boot) is
//! [`Liveness::Unknown`], and callers fall back to timeouts.
//!
//! Locks record it (`format-spec/09-locks.md`) and so do the names of staging files in
//! `tmp/`, so that both can be removed as soon as their owner is provably gone.

use std::sync::OnceLock;

/// A process, identified across PID reuse.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ProcessIdentity {
    /// The kernel boot id (32 lowercase hex digits, dashes removed); empty if unknown.
    pub boot_id: String,
    /// The inode number of the PID namespace; 0 if unknown.
    pub pid_ns: u64,
    /// The process id.
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/PID/stat`, field 22); 0 if unknown.
    pub start_ticks: u64,
}

/// What can be said about a recorded process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// It runs.
    Alive,
    /// It provably no longer exists.
    Gone,
    /// It cannot be checked from here (another host, container or boot).
    Unknown,
}

fn read_boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().replace('-', "").to_ascii_lowercase())
        .ok()
        .filter(|s| s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_default()
}

fn read_pid_ns() -> u64 {
    // "pid:[4026531836]"
    std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .and_then(|l| {
            let s = l.to_string_lossy().into_owned();
            s.strip_prefix("pid:[")?.strip_suffix(']')?.parse().ok()
        })
        .unwrap_or(0)
}

/// The start time of `pid` in clock ticks since boot, if such a process exists.
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    parse_start_ticks(&stat)
}

/// Field 22 of `/proc/PID/stat`. The second field (the command name, in parentheses) may
/// contain spaces and parentheses, so fields are counted after its last `)`.
fn parse_start_ticks(stat: &[u8]) -> Option<u64> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    // After ")" come field 3 (state) onwards; field 22 is the 20th of them.
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

impl ProcessIdentity {
    /// This process.
    pub fn current() -> &'static ProcessIdentity {
        static ME: OnceLock<ProcessIdentity> = OnceLock::new();
        ME.get_or_init(|| {
            let pid = std::process::id();
            ProcessIdentity {
                boot_id: read_boot_id(),
                pid_ns: read_pid_ns(),
                pid,
                start_ticks: start_ticks(pid).unwrap_or(0),
            }
        })
    }

    /// Whether the process is alive, provably gone, or cannot be checked from here.
    pub fn liveness(&self) -> Liveness {
        let me = Self::current();
        if self.boot_id.is_empty()
            || self.pid_ns == 0
            || self.start_ticks == 0
            || self.boot_id != me.boot_id
            || self.pid_ns != me.pid_ns
        {
            return Liveness::Unknown;
        }
        match start_ticks(self.pid) {
            Some(t) if t == self.start_ticks => Liveness::Alive,
            Some(_) | None => Liveness::Gone,
        }
    }

    /// A compact form for file names: `BOOT8.PIDNS.PID.START` (boot id shortened to 8 hex).
    pub fn tag(&self) -> String {
        let boot = self.boot_id.get(..8).unwrap_or("00000000");
        format!("{boot}.{}.{}.{}", self.pid_ns, self.pid, self.start_ticks)
    }

    /// Whether a [`ProcessIdentity::tag`] names a process of this boot and PID namespace
    /// that is provably gone.
    pub fn tag_is_gone(tag: &str) -> bool {
        let me = Self::current();
        let mut it = tag.split('.');
        let (Some(boot), Some(ns), Some(pid), Some(start), None) =
            (it.next(), it.next(), it.next(), it.next(), it.next())
        else {
            return false;
        };
        let (Ok(ns), Ok(pid), Ok(start)) = (ns.parse::<u64>(), pid.parse::<u32>(), start.parse())
        else {
            return false;
        };
        if me.boot_id.len() < 8 || boot != &me.boot_id[..8] || ns != me.pid_ns || start == 0 {
            return false;
        }
        start_ticks(pid) != Some(start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing_survives_odd_command_names() {
        let mut stat =
            b"1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 ".to_vec();
        stat.extend_from_slice(b"987654 1000 200 18446744073709551615\n");
        assert_eq!(parse_start_ticks(&stat), Some(987654));
        assert_eq!(parse_start_ticks(b"garbage"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_changed_start_time_is_gone() {
        let me = ProcessIdentity::current().clone();
        if me.boot_id.is_empty() || me.pid_ns == 0 {
            return; // no /proc: nothing can be proven on this system
        }
        assert_eq!(me.liveness(), Liveness::Alive);
        let reused = ProcessIdentity {
            start_ticks: me.start_ticks + 1,
            ..me.clone()
        };
        assert_eq!(reused.liveness(), Liveness::Gone);
        let elsewhere = ProcessIdentity {
            boot_id: "0".repeat(32),
            ..me.clone()
        };
        assert_eq!(elsewhere.liveness(), Liveness::Unknown);
        assert!(!ProcessIdentity::tag_is_gone(&me.tag()));
        assert!(ProcessIdentity::tag_is_gone(&reused.tag()));
        assert!(!ProcessIdentity::tag_is_gone("not-a-tag"));
    }
}
