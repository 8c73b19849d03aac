//! Canonical binary primitives shared by every encoding (`format-spec/02-encoding.md`).
//!
//! * `u8` — one byte.
//! * `uvarint` — unsigned LEB128, at most 10 bytes, minimal form only (no trailing 0x80 0x00).
//! * `ivarint` — zigzag-mapped signed integer, then `uvarint`.
//! * `bytes` — `uvarint` length, then that many bytes.
//! * `str` — `bytes` that must be valid UTF-8.
//! * `id` — exactly 32 bytes.
//! * `bool` — one byte, 0 or 1.
//!
//! The [`Reader`] rejects every non-canonical form, so a decoded value re-encodes to the very
//! bytes it came from.

use crate::id::ID_LEN;

/// Why a decoder refused its input. Converted to [`crate::Error::Corrupt`] by callers, who know
/// which object was being decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<DecodeError> for crate::Error {
    fn from(e: DecodeError) -> Self {
        crate::Error::corrupt(crate::ObjectRef::Path("(decoding)".into()), e.0)
    }
}

/// Shorthand for decoder results.
pub type DecodeResult<T> = Result<T, DecodeError>;

pub(crate) fn err<T>(msg: impl Into<String>) -> DecodeResult<T> {
    Err(DecodeError(msg.into()))
}

/// Appends canonical encodings to a byte vector.
#[derive(Default, Debug)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// A writer that appends to `buf`.
    pub fn with_buffer(buf: Vec<u8>) -> Self {
        Self { buf }
    }

    /// The bytes written so far.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// One byte.
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    /// A boolean as 0 or 1.
    pub fn bool(&mut self, v: bool) {
        self.buf.push(u8::from(v));
    }

    /// Unsigned LEB128.
    pub fn uvarint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    /// Zigzag signed varint.
    pub fn ivarint(&mut self, v: i64) {
        self.uvarint(((v << 1) ^ (v >> 63)) as u64);
    }

    /// Length-prefixed bytes.
    pub fn bytes(&mut self, v: &[u8]) {
        self.uvarint(v.len() as u64);
        self.buf.extend_from_slice(v);
    }

    /// Length-prefixed UTF-8.
    pub fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }

    /// A 32-byte id, raw.
    pub fn id(&mut self, v: &[u8; ID_LEN]) {
        self.buf.extend_from_slice(v);
    }

    /// Raw bytes with no length prefix.
    pub fn raw(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }

    /// An optional id: `bool` presence, then the id.
    pub fn opt_id(&mut self, v: Option<&[u8; ID_LEN]>) {
        self.bool(v.is_some());
        if let Some(id) = v {
            self.id(id);
        }
    }
}

/// Reads canonical encodings from a byte slice, refusing anything malformed.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Current offset into the input.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Fails unless every byte was consumed.
    pub fn finish(&self) -> DecodeResult<()> {
        if self.remaining() != 0 {
            return err(format!("{} trailing bytes", self.remaining()));
        }
        Ok(())
    }

    /// Takes exactly `n` raw bytes.
    pub fn take(&mut self, n: usize) -> DecodeResult<&'a [u8]> {
        if n > self.remaining() {
            return err(format!(
                "truncated: need {n} bytes at offset {}, have {}",
                self.pos,
                self.remaining()
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// One byte.
    pub fn u8(&mut self) -> DecodeResult<u8> {
        Ok(self.take(1)?[0])
    }

    /// A 0/1 boolean.
    pub fn bool(&mut self) -> DecodeResult<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => err(format!("invalid boolean byte {b}")),
        }
    }

    /// Unsigned LEB128 in minimal form.
    pub fn uvarint(&mut self) -> DecodeResult<u64> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.u8()?;
            if i == 9 && b > 1 {
                return err("varint overflows 64 bits");
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                if b == 0 && i > 0 {
                    return err("non-minimal varint");
                }
                return Ok(v);
            }
        }
        err("varint longer than 10 bytes")
    }

    /// A `uvarint` that must fit in `u32`.
    pub fn u32v(&mut self) -> DecodeResult<u32> {
        let v = self.uvarint()?;
        u32::try_from(v).or_else(|_| err(format!("value {v} exceeds 32 bits")))
    }

    /// A `uvarint` used as a count of following items; each needs at least `min_item_len` bytes,
    /// which bounds allocations on hostile input.
    pub fn count(&mut self, min_item_len: usize) -> DecodeResult<usize> {
        let n = self.uvarint()?;
        let max = (self.remaining() / min_item_len.max(1)) as u64;
        if n > max {
            return err(format!(
                "count {n} exceeds what the remaining input can hold"
            ));
        }
        Ok(n as usize)
    }

    /// Zigzag signed varint.
    pub fn ivarint(&mut self) -> DecodeResult<i64> {
        let u = self.uvarint()?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }

    /// Length-prefixed bytes.
    pub fn bytes(&mut self) -> DecodeResult<&'a [u8]> {
        let n = self.uvarint()?;
        if n > self.remaining() as u64 {
            return err(format!("byte string of {n} bytes is truncated"));
        }
        self.take(n as usize)
    }

    /// Length-prefixed UTF-8.
    pub fn str(&mut self) -> DecodeResult<&'a str> {
        let b = self.bytes()?;
        std::str::from_utf8(b).or_else(|_| err("string is not UTF-8"))
    }

    /// A 32-byte id.
    pub fn id(&mut self) -> DecodeResult<[u8; ID_LEN]> {
        let s = self.take(ID_LEN)?;
        let mut out = [0u8; ID_LEN];
        out.copy_from_slice(s);
        Ok(out)
    }

    /// An optional id written by [`Writer::opt_id`].
    pub fn opt_id(&mut self) -> DecodeResult<Option<[u8; ID_LEN]>> {
        if self.bool()? {
            Ok(Some(self.id()?))
        } else {
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn varint_known_answers() {
        let cases: &[(u64, &[u8])] = &[
            (0, &[0]),
            (1, &[1]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (300, &[0xac, 0x02]),
            (
                u64::MAX,
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ];
        for (v, bytes) in cases {
            let mut w = Writer::new();
            w.uvarint(*v);
            assert_eq!(w.into_bytes(), *bytes);
            let mut r = Reader::new(bytes);
            assert_eq!(r.uvarint().unwrap(), *v);
            r.finish().unwrap();
        }
    }

    #[test]
    fn rejects_non_canonical_varints() {
        assert!(Reader::new(&[0x80, 0x00]).uvarint().is_err());
        assert!(Reader::new(&[0xff; 10]).uvarint().is_err());
        assert!(
            Reader::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02])
                .uvarint()
                .is_err()
        );
        assert!(Reader::new(&[0x80]).uvarint().is_err());
    }

    #[test]
    fn rejects_bad_bools_and_overlong_counts() {
        assert!(Reader::new(&[2]).bool().is_err());
        let mut r = Reader::new(&[5, 1, 2]);
        assert!(r.count(1).is_err());
        assert!(Reader::new(&[3, b'a']).bytes().is_err());
    }

    proptest! {
        #[test]
        fn signed_and_unsigned_round_trip(u in any::<u64>(), i in any::<i64>(), b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut w = Writer::new();
            w.uvarint(u);
            w.ivarint(i);
            w.bytes(&b);
            let bytes = w.into_bytes();
            let mut r = Reader::new(&bytes);
            prop_assert_eq!(r.uvarint().unwrap(), u);
            prop_assert_eq!(r.ivarint().unwrap(), i);
            prop_assert_eq!(r.bytes().unwrap(), &b[..]);
            prop_assert!(r.finish().is_ok());
        }
    }
}
