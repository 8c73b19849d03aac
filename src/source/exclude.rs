//! Exclude and include patterns.
//!
//! A pattern containing `/` is matched against the whole absolute path; one without `/` is
//! matched against the entry's name at any depth. `*` and `?` never match `/`; `**` does.
//! Lines of an exclude file that are empty or start with `#` are ignored.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::{Error, Result};

/// A compiled set of patterns.
#[derive(Clone, Debug)]
pub struct PathMatcher {
    full: GlobSet,
    name: GlobSet,
    empty: bool,
}

impl PathMatcher {
    /// Compiles `patterns`.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self> {
        let mut full = GlobSetBuilder::new();
        let mut name = GlobSetBuilder::new();
        for p in patterns {
            let p = p.as_ref().trim_end_matches('/');
            if p.is_empty() {
                continue;
            }
            let glob = GlobBuilder::new(p)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| Error::InvalidInput(format!("pattern {p:?}: {e}")))?;
            if p.contains('/') {
                full.add(glob);
            } else {
                name.add(glob);
            }
        }
        let build = |b: GlobSetBuilder| {
            b.build()
                .map_err(|e| Error::InvalidInput(format!("patterns: {e}")))
        };
        Ok(Self {
            full: build(full)?,
            name: build(name)?,
            empty: patterns.iter().all(|p| p.as_ref().trim().is_empty()),
        })
    }

    /// Reads patterns from a file (one per line; `#` comments).
    pub fn read_pattern_file(path: &Path) -> Result<Vec<String>> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(String::from)
            .collect())
    }

    /// Whether there are no patterns at all.
    pub fn is_empty(&self) -> bool {
        self.empty
    }

    /// Whether `path` (absolute) matches a pattern.
    pub fn matches(&self, path: &Path) -> bool {
        if self.empty {
            return false;
        }
        if self.full.is_match(path) {
            return true;
        }
        match path.file_name() {
            Some(n) => self
                .name
                .is_match(Path::new(std::ffi::OsStr::from_bytes(n.as_bytes()))),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
