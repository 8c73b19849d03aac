//! Timestamps as stored on disk: signed seconds since the Unix epoch plus nanoseconds.
//!
//! Encoded as `ivarint(secs) || uvarint(nanos)` with `nanos < 10^9` (`format-spec/02-encoding.md`).
//! Seconds are signed and 64-bit so that any file time the OS can report survives a round trip.

use super::wire::{DecodeResult, Reader, Writer, err};

/// A point in time with nanosecond precision.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    /// Seconds since 1970-01-01T00:00:00Z (may be negative).
    pub secs: i64,
    /// Nanoseconds within the second, `0..1_000_000_000`.
    pub nanos: u32,
}

impl Timestamp {
    /// Builds a timestamp, normalising `nanos`.
    pub fn new(secs: i64, nanos: u32) -> Self {
        Self {
            secs: secs.saturating_add(i64::from(nanos / 1_000_000_000)),
            nanos: nanos % 1_000_000_000,
        }
    }

    /// The current wall-clock time.
    pub fn now() -> Self {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Self::new(d.as_secs() as i64, d.subsec_nanos())
    }

    /// Whole nanoseconds since the epoch, saturating outside the `i128` range (never in practice).
    pub fn as_nanos(&self) -> i128 {
        i128::from(self.secs) * 1_000_000_000 + i128::from(self.nanos)
    }

    /// RFC 3339 in UTC (`2026-10-01T00:00:00Z`), for messages; `@SECS` outside the range
    /// calendars handle.
    pub fn to_rfc3339(&self) -> String {
        match jiff::Timestamp::new(self.secs, self.nanos as i32) {
            Ok(ts) => ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            Err(_) => format!("@{}", self.secs),
        }
    }

    /// Encodes the timestamp.
    pub fn encode(&self, w: &mut Writer) {
        w.ivarint(self.secs);
        w.uvarint(u64::from(self.nanos));
    }

    /// Decodes a timestamp, refusing out-of-range nanoseconds.
    pub fn decode(r: &mut Reader<'_>) -> DecodeResult<Self> {
        let secs = r.ivarint()?;
        let nanos = r.uvarint()?;
        if nanos >= 1_000_000_000 {
            return err(format!("nanoseconds {nanos} out of range"));
        }
        Ok(Self {
            secs,
            nanos: nanos as u32,
        })
    }
}
