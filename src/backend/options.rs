//! `-o key=value` backend options: parsed once, never printed with their values (they may be
//! secrets); vault's own keys are taken out before the rest goes to the storage service.

use std::collections::BTreeMap;

use crate::{Error, Result};

/// `-o key=value` options for a backend. Keys vault itself understands:
///
/// * `storage_class` — storage class for packs of data blobs (S3, GCS); everything else stays in
///   the service's default (hot) class.
/// * `timeout` — per-request timeout for metadata requests (default 60s).
/// * `io_timeout` — timeout for each read or write of a transfer (default 120s).
/// * `object_lock` — the storage retains every object this many days (S3 object lock default
///   retention, Azure immutability): young data objects are never deleted, prune schedules
///   them (`backend::objectlock`).
///
/// Every other key is handed to the OpenDAL service's configuration unchanged.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct BackendOptions {
    pub(crate) map: BTreeMap<String, String>,
}

impl std::fmt::Debug for BackendOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Values may be secrets: never print them.
        f.debug_list().entries(self.map.keys()).finish()
    }
}

impl BackendOptions {
    /// Parses `key=value` strings.
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Self> {
        let mut map = BTreeMap::new();
        for item in items {
            let item = item.as_ref();
            let (k, v) = item.split_once('=').ok_or_else(|| {
                Error::InvalidInput(format!(
                    "backend option {:?} must be key=value",
                    item.split('=').next().unwrap_or("")
                ))
            })?;
            let k = k.trim();
            if k.is_empty() {
                return Err(Error::InvalidInput(
                    "backend option with an empty key".into(),
                ));
            }
            map.insert(k.to_string(), v.to_string());
        }
        Ok(Self { map })
    }

    /// Sets one option.
    pub fn set(&mut self, key: &str, value: &str) {
        self.map.insert(key.to_string(), value.to_string());
    }

    /// Removes and returns one option (a key vault handles itself).
    pub(crate) fn take(&mut self, key: &str) -> Option<String> {
        self.map.remove(key)
    }

    /// Whether an option is set.
    pub(crate) fn contains(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }
}
