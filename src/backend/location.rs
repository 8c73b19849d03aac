//! Repository locations: parsing `--repo` strings and opening the matching backend.
//!
//! `/path`, `./path` and `fs:/path` are local directories. Other schemes are recognised and
//! reported as unsupported by this build until their OpenDAL service is enabled.

use std::path::PathBuf;
use std::sync::Arc;

use super::DynBackend;
use super::opendal::OpendalBackend;
use crate::{Error, Result};

/// A parsed repository location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A local directory.
    Fs(PathBuf),
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Fs(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Parses a `--repo` value.
pub fn parse(s: &str) -> Result<Location> {
    if s.is_empty() {
        return Err(Error::InvalidInput("empty repository location".into()));
    }
    if let Some(rest) = s.strip_prefix("fs:") {
        return Ok(Location::Fs(PathBuf::from(rest)));
    }
    if let Some((scheme, _)) = s.split_once(':')
        && scheme.len() > 1
        && scheme.chars().all(|c| c.is_ascii_alphanumeric())
    {
        return Err(Error::Unsupported(format!(
            "repository scheme {scheme:?} is not supported by this build"
        )));
    }
    Ok(Location::Fs(PathBuf::from(s)))
}

/// Opens the backend for a location, with retries of transient failures and, when
/// `VAULT_FAULTS` is set (tests only), fault injection beneath the retries.
pub fn open(loc: &Location) -> Result<DynBackend> {
    let mut b = open_raw(loc)?;
    if let Ok(spec) = std::env::var("VAULT_FAULTS")
        && !spec.is_empty()
    {
        let opts = super::fault::FaultOptions::parse(&spec)?;
        b = Arc::new(super::fault::FaultBackend::new(b, opts));
    }
    let mut retry = super::retry::RetryOptions::default();
    if let Some(ms) = std::env::var("VAULT_RETRY_BASE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        retry.base = std::time::Duration::from_millis(ms);
    }
    Ok(Arc::new(super::retry::RetryBackend::new(b, retry)))
}

fn open_raw(loc: &Location) -> Result<DynBackend> {
    match loc {
        Location::Fs(p) => {
            let abs = if p.is_absolute() {
                p.clone()
            } else {
                std::env::current_dir()
                    .map_err(|e| Error::io(".", e))?
                    .join(p)
            };
            Ok(Arc::new(OpendalBackend::fs(&abs)?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_local_forms() {
        assert_eq!(
            parse("/srv/repo").unwrap(),
            Location::Fs("/srv/repo".into())
        );
        assert_eq!(
            parse("fs:/srv/repo").unwrap(),
            Location::Fs("/srv/repo".into())
        );
        assert_eq!(parse("rel/repo").unwrap(), Location::Fs("rel/repo".into()));
        assert!(parse("").is_err());
    }
}
