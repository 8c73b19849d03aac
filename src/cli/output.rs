//! Human and JSON output: sizes, times, tables, and quiet exits on closed pipes.

use std::io::Write;

use anyhow::Result;
use vault::format::time::Timestamp;

/// Formats a byte count with binary units (`1.5 GiB`).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Formats a snapshot time in its recorded UTC offset, RFC 3339 style.
pub fn time(t: Timestamp, offset_secs: i32) -> String {
    let off = jiff::tz::Offset::from_seconds(offset_secs).unwrap_or(jiff::tz::Offset::UTC);
    match jiff::Timestamp::new(t.secs, t.nanos as i32) {
        Ok(ts) => ts
            .to_zoned(jiff::tz::TimeZone::fixed(off))
            .strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string(),
        Err(_) => format!("@{}", t.secs),
    }
}

/// Short table time: `2026-11-21 06:30:00`.
pub fn short_time(t: Timestamp, offset_secs: i32) -> String {
    let off = jiff::tz::Offset::from_seconds(offset_secs).unwrap_or(jiff::tz::Offset::UTC);
    match jiff::Timestamp::new(t.secs, t.nanos as i32) {
        Ok(ts) => ts
            .to_zoned(jiff::tz::TimeZone::fixed(off))
            .strftime("%Y-%m-%d %H:%M:%S")
            .to_string(),
        Err(_) => format!("@{}", t.secs),
    }
}

/// Prints a table with left-aligned columns.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| -> String {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}",
        line(header.iter().map(|s| s.to_string()).collect())
    )?;
    writeln!(
        out,
        "{}",
        "-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1))
    )?;
    for r in rows {
        writeln!(out, "{}", line(r.clone()))?;
    }
    Ok(())
}

/// Prints one JSON document on stdout.
pub fn json(v: &serde_json::Value) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

/// Prints one compact JSON value on a line of its own (JSON lines).
pub fn json_line(v: &serde_json::Value) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, v)?;
    writeln!(out)
}

/// Parses sizes like `16MiB`, `512K`, `1g`, `4096`.
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().map_err(|_| format!("invalid size {s:?}"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        u => return Err(format!("unknown size unit {u:?} in {s:?}")),
    };
    Ok((v * mult as f64) as u64)
}

/// Parses a time given on the command line: RFC 3339 (`2026-01-05T10:00:00+01:00`), a local
/// date-time (`2026-01-05 10:00`) or a date (`2026-01-05`, midnight local time).
pub fn parse_time(s: &str) -> std::result::Result<(Timestamp, i32), String> {
    use jiff::fmt::temporal::{Pieces, PiecesOffset};
    let pieces = Pieces::parse(s.trim()).map_err(|e| format!("invalid time {s:?}: {e}"))?;
    let dt = pieces.date().to_datetime(pieces.time().unwrap_or_default());
    let ts = match pieces.offset() {
        Some(PiecesOffset::Zulu) => jiff::tz::Offset::UTC.to_timestamp(dt),
        Some(PiecesOffset::Numeric(n)) => n.offset().to_timestamp(dt),
        _ => dt
            .to_zoned(jiff::tz::TimeZone::system())
            .map(|z| z.timestamp()),
    }
    .map_err(|e| format!("invalid time {s:?}: {e}"))?;
    let off = match pieces.offset() {
        Some(PiecesOffset::Numeric(n)) => n.offset().seconds(),
        Some(PiecesOffset::Zulu) => 0,
        _ => jiff::tz::TimeZone::system().to_offset(ts).seconds(),
    };
    Ok((
        Timestamp::new(ts.as_second(), ts.subsec_nanosecond() as u32),
        off,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16MiB").unwrap(), 16 << 20);
        assert_eq!(parse_size("512k").unwrap(), 512 << 10);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert!(parse_size("1x").is_err());
        assert_eq!(bytes(1536), "1.5 KiB");
    }

    #[test]
    fn times() {
        let (t, off) = parse_time("2026-01-05T10:00:00+01:00").unwrap();
        assert_eq!(off, 3600);
        assert_eq!(t.secs, 1767603600);
        assert_eq!(time(t, off), "2026-01-05T10:00:00+01:00");
        let (z, zo) = parse_time("2026-01-05T09:00:00Z").unwrap();
        assert_eq!((z.secs, zo), (1767603600, 0));
    }
}
