//! Quoting names for people: file names are bytes, and a listing must show each one on one
//! line, unambiguously.
//!
//! The style is `ls -b`'s (GNU "escape" quoting): printable characters stand for themselves;
//! a backslash, a space and the C escapes (`\n`, `\t`, `\r`, …) are backslash-escaped; every
//! other control character and every byte that is not part of valid UTF-8 is written as
//! `\ooo` (three octal digits). Pure: no I/O.

/// Quotes raw name bytes in `ls -b` style.
pub fn quote_bytes(name: &[u8]) -> String {
    // Most names are plain printable ASCII and stand for themselves (a restore quotes every
    // path it restores, for its messages).
    if name.iter().all(|&b| b.is_ascii_graphic() && b != b'\\')
        && let Ok(plain) = std::str::from_utf8(name)
    {
        return plain.to_owned();
    }
    let mut out = String::with_capacity(name.len());
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                ' ' => out.push_str("\\ "),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                '\x07' => out.push_str("\\a"),
                '\x08' => out.push_str("\\b"),
                '\x0b' => out.push_str("\\v"),
                '\x0c' => out.push_str("\\f"),
                c if c.is_control() => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        out.push_str(&format!("\\{b:03o}"));
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\{b:03o}"));
        }
    }
    out
}

/// Quotes a path (see [`quote_bytes`]).
pub fn quote_path(p: &std::path::Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    quote_bytes(p.as_os_str().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_ls_b() {
        assert_eq!(quote_bytes(b"plain.txt"), "plain.txt");
        assert_eq!(quote_bytes(b"two\nlines"), "two\\nlines");
        assert_eq!(quote_bytes(b"a b\\c\t"), "a\\ b\\\\c\\t");
        assert_eq!(quote_bytes(b"caf\xe9"), "caf\\351");
        assert_eq!(quote_bytes("café".as_bytes()), "café");
        assert_eq!(quote_bytes(b"\x01\x7f"), "\\001\\177");
        assert_eq!(quote_bytes(b"dir/sub.d/file-1~"), "dir/sub.d/file-1~");
        assert_eq!(quote_bytes(b"end\\"), "end\\\\");
        assert_eq!(quote_bytes(b""), "");
    }
}
