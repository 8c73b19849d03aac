//! Exclude and include patterns.
//!
//! A pattern containing `/` is matched against the whole absolute path; one without `/` is
//! matched against the entry's name at any depth. `*` and `?` never match `/`; `**` does.
//! Lines of an exclude file that are empty or start with `#` are ignored.
//!
//! Paths are bytes, and so are patterns: a pattern that is not UTF-8 (given on a command line
//! or in a file) matches the same bytes. Such patterns are compiled by globset like any other,
//! with each invalid byte standing in as a private-use character that is then put back as the
//! byte itself in the generated (byte-oriented) regular expression, so both kinds follow the
//! same glob rules.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

use crate::{Error, Result};

/// Where a compiled pattern lives.
#[derive(Clone, Debug)]
enum Compiled {
    /// In the glob sets (`full_to_pattern`/`name_to_pattern` map back to it).
    Set,
    /// A byte regex for a pattern that is not UTF-8.
    Bytes { full: bool, re: regex::bytes::Regex },
}

/// A compiled set of patterns.
#[derive(Clone, Debug)]
pub struct PathMatcher {
    full: GlobSet,
    name: GlobSet,
    /// Per original pattern (in order), how it is compiled; `None` for blank patterns.
    patterns: Vec<Option<Compiled>>,
    /// Reverse maps from set indices to original pattern indices.
    full_to_pattern: Vec<usize>,
    name_to_pattern: Vec<usize>,
    texts: Vec<String>,
}

/// First code point of the private-use stand-ins for invalid bytes (plane 15).
const STAND_IN_BASE: u32 = 0xF0000;

fn build_glob(text: &str) -> std::result::Result<Glob, globset::Error> {
    GlobBuilder::new(text)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
}

/// Compiles a pattern that is not UTF-8 into a byte regex with globset's semantics.
fn compile_bytes(p: &[u8], shown: &str) -> Result<regex::bytes::Regex> {
    let mut text = String::new();
    for chunk in p.utf8_chunks() {
        if chunk
            .valid()
            .chars()
            .any(|c| (STAND_IN_BASE..STAND_IN_BASE + 256).contains(&(c as u32)))
        {
            return Err(Error::InvalidInput(format!(
                "pattern {shown}: mixes invalid UTF-8 with plane-15 private-use characters"
            )));
        }
        text.push_str(chunk.valid());
        for &b in chunk.invalid() {
            text.push(char::from_u32(STAND_IN_BASE + u32::from(b)).expect("invariant: valid"));
        }
    }
    let glob =
        build_glob(&text).map_err(|e| Error::InvalidInput(format!("pattern {shown}: {e}")))?;
    let mut re = glob.regex().to_string();
    for b in 0..=255u32 {
        let c = char::from_u32(STAND_IN_BASE + b).expect("invariant: valid");
        let mut enc = [0u8; 4];
        let escaped: String = c
            .encode_utf8(&mut enc)
            .bytes()
            .map(|x| format!("\\x{x:02x}"))
            .collect();
        if re.contains(&escaped) {
            re = re.replace(&escaped, &format!("\\x{b:02x}"));
        }
    }
    regex::bytes::Regex::new(&re).map_err(|e| Error::InvalidInput(format!("pattern {shown}: {e}")))
}

impl PathMatcher {
    /// Compiles UTF-8 `patterns`.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self> {
        let bytes: Vec<Vec<u8>> = patterns
            .iter()
            .map(|p| p.as_ref().as_bytes().to_vec())
            .collect();
        Self::new_bytes(&bytes)
    }

    /// Compiles patterns given as raw bytes (any bytes; see the module documentation).
    pub fn new_bytes<B: AsRef<[u8]>>(patterns: &[B]) -> Result<Self> {
        let mut full = GlobSetBuilder::new();
        let mut name = GlobSetBuilder::new();
        let mut out = Self {
            full: GlobSet::empty(),
            name: GlobSet::empty(),
            patterns: Vec::new(),
            full_to_pattern: Vec::new(),
            name_to_pattern: Vec::new(),
            texts: Vec::new(),
        };
        for (i, p) in patterns.iter().enumerate() {
            let raw = p.as_ref();
            let shown = crate::quote::quote_bytes(raw);
            out.texts.push(shown.clone());
            let mut end = raw.len();
            while end > 0 && raw[end - 1] == b'/' {
                end -= 1;
            }
            let p = &raw[..end];
            if p.iter().all(u8::is_ascii_whitespace) {
                out.patterns.push(None);
                continue;
            }
            let is_full = p.contains(&b'/');
            let compiled = match std::str::from_utf8(p) {
                Ok(text) => {
                    let glob = build_glob(text)
                        .map_err(|e| Error::InvalidInput(format!("pattern {shown}: {e}")))?;
                    if is_full {
                        full.add(glob);
                        out.full_to_pattern.push(i);
                    } else {
                        name.add(glob);
                        out.name_to_pattern.push(i);
                    }
                    Compiled::Set
                }
                Err(_) => Compiled::Bytes {
                    full: is_full,
                    re: compile_bytes(p, &shown)?,
                },
            };
            out.patterns.push(Some(compiled));
        }
        let build = |b: GlobSetBuilder| {
            b.build()
                .map_err(|e| Error::InvalidInput(format!("patterns: {e}")))
        };
        out.full = build(full)?;
        out.name = build(name)?;
        Ok(out)
    }

    /// Reads patterns from a file: one per line (raw bytes; `#` comments, blank lines and
    /// surrounding ASCII whitespace ignored).
    pub fn read_pattern_file(path: &Path) -> Result<Vec<Vec<u8>>> {
        let data = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Ok(data
            .split(|&b| b == b'\n')
            .map(|l| l.trim_ascii())
            .filter(|l| !l.is_empty() && !l.starts_with(b"#"))
            .map(<[u8]>::to_vec)
            .collect())
    }

    /// Whether there are no patterns at all.
    pub fn is_empty(&self) -> bool {
        self.patterns.iter().all(Option::is_none)
    }

    /// The patterns as given (escaped for display), in order.
    pub fn texts(&self) -> &[String] {
        &self.texts
    }

    /// Whether `path` (absolute) matches a pattern.
    pub fn matches(&self, path: &Path) -> bool {
        if self.is_empty() {
            return false;
        }
        let name = path.file_name().map(|n| n.as_bytes());
        if self.full.is_match(path)
            || name.is_some_and(|n| {
                self.name
                    .is_match(Path::new(std::ffi::OsStr::from_bytes(n)))
            })
        {
            return true;
        }
        self.patterns.iter().flatten().any(|c| match c {
            Compiled::Bytes { full: true, re } => re.is_match(path.as_os_str().as_bytes()),
            Compiled::Bytes { full: false, re } => name.is_some_and(|n| re.is_match(n)),
            Compiled::Set => false,
        })
    }

    /// Calls `f` with the index (in the order given) of every pattern `path` matches.
    pub fn for_each_match(&self, path: &Path, mut f: impl FnMut(usize)) {
        if self.is_empty() {
            return;
        }
        for i in self.full.matches(path) {
            f(self.full_to_pattern[i]);
        }
        let name = path.file_name().map(|n| n.as_bytes());
        if let Some(n) = name {
            for i in self.name.matches(Path::new(std::ffi::OsStr::from_bytes(n))) {
                f(self.name_to_pattern[i]);
            }
        }
        for (i, c) in self.patterns.iter().enumerate() {
            let hit = match c {
                Some(Compiled::Bytes { full: true, re }) => {
                    re.is_match(path.as_os_str().as_bytes())
                }
                Some(Compiled::Bytes { full: false, re }) => name.is_some_and(|n| re.is_match(n)),
                _ => false,
            };
            if hit {
                f(i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(b: &[u8]) -> &Path {
        Path::new(std::ffi::OsStr::from_bytes(b))
    }

    #[test]
    fn name_and_path_patterns() {
        let m = PathMatcher::new(&["*.tmp", "/var/cache/**", "/home/*/Downloads"]).unwrap();
        assert!(m.matches(Path::new("/a/b/c.tmp")));
        assert!(!m.matches(Path::new("/a/b/c.tmpx")));
        assert!(m.matches(Path::new("/var/cache/x/y")));
        assert!(m.matches(Path::new("/home/ann/Downloads")));
        assert!(!m.matches(Path::new("/home/ann/x/Downloads")));
        assert!(
            !PathMatcher::new::<&str>(&[])
                .unwrap()
                .matches(Path::new("/x"))
        );
    }

    #[test]
    fn non_utf8_patterns_match_the_same_bytes() {
        let m = PathMatcher::new_bytes(&[b"caf\xe9*".to_vec(), b"/data/\xff/**".to_vec()]).unwrap();
        assert!(m.matches(p(b"/x/caf\xe9-\xff.bin")));
        assert!(!m.matches(p(b"/x/cafe")));
        assert!(m.matches(p(b"/data/\xff/a/b")));
        assert!(!m.matches(p(b"/data/\xfe/a/b")));
        // A UTF-8 pattern still matches non-UTF-8 paths.
        let u = PathMatcher::new(&["*.bin"]).unwrap();
        assert!(u.matches(p(b"/x/\xff.bin")));
    }

    #[test]
    fn reports_which_patterns_matched() {
        let m = PathMatcher::new_bytes(&[b"*.a".to_vec(), b"/x/**".to_vec(), b"z\xff".to_vec()])
            .unwrap();
        let mut hits = Vec::new();
        m.for_each_match(p(b"/x/y.a"), |i| hits.push(i));
        hits.sort();
        assert_eq!(hits, vec![0, 1]);
        hits.clear();
        m.for_each_match(p(b"/q/z\xff"), |i| hits.push(i));
        assert_eq!(hits, vec![2]);
    }

    proptest::proptest! {
        /// The byte path (used for non-UTF-8 patterns) agrees with globset on UTF-8 ones.
        #[test]
        fn byte_compilation_agrees_with_globset(
            pat in "[a-c*?/]{1,8}",
            path in "/[a-c/]{0,10}",
        ) {
            if let Ok(glob) = build_glob(&pat) {
                let set = glob.compile_matcher();
                let re = compile_bytes(pat.as_bytes(), &pat).unwrap();
                proptest::prop_assert_eq!(set.is_match(&path), re.is_match(path.as_bytes()));
            }
        }
    }
}
