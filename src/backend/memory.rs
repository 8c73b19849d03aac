//! An in-memory backend for tests and benchmarks. Same contract as every other backend.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::{Backend, ObjectInfo, not_found};
use crate::{Error, Result};

/// Objects kept in a map; cheap to clone (clones share the same store).
#[derive(Clone, Debug, Default)]
pub struct MemoryBackend {
    objects: Arc<Mutex<BTreeMap<String, Arc<Vec<u8>>>>>,
}

impl MemoryBackend {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Vec<u8>>>> {
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces an object's bytes, bypassing the create-only rule (to simulate damage in tests).
    pub fn tamper(&self, path: &str, data: Vec<u8>) {
        self.map().insert(path.to_string(), Arc::new(data));
    }
}

impl Backend for MemoryBackend {
    fn location(&self) -> String {
        "memory:".into()
    }

    fn read(&self, path: &str) -> Result<Vec<u8>> {
        self.map()
            .get(path)
            .map(|v| v.as_ref().clone())
            .ok_or_else(|| not_found(path))
    }

    fn read_range(&self, path: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let obj = self
            .map()
            .get(path)
            .cloned()
            .ok_or_else(|| not_found(path))?;
        let end = offset.checked_add(len).filter(|&e| e <= obj.len() as u64);
        match end {
            Some(end) => Ok(obj[offset as usize..end as usize].to_vec()),
            None => Err(Error::corrupt(
                crate::ObjectRef::Path(path.to_string()),
                format!(
                    "truncated: range {offset}+{len} beyond object of {} bytes",
                    obj.len()
                ),
            )),
        }
    }

    fn write(&self, path: &str, data: &[u8]) -> Result<()> {
        let mut m = self.map();
        if m.contains_key(path) {
            return Err(Error::AlreadyExists(path.to_string()));
        }
        m.insert(path.to_string(), Arc::new(data.to_vec()));
        Ok(())
    }

    fn replace(&self, path: &str, data: &[u8]) -> Result<()> {
        self.map()
            .insert(path.to_string(), Arc::new(data.to_vec()))
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }

    fn delete(&self, path: &str) -> Result<()> {
        self.map()
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }

    fn list(&self, dir: &str) -> Result<Vec<ObjectInfo>> {
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        Ok(self
            .map()
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, v)| ObjectInfo {
                modified: None,
                path: k.clone(),
                size: v.len() as u64,
            })
            .collect())
    }

    fn stat(&self, path: &str) -> Result<ObjectInfo> {
        self.map()
            .get(path)
            .map(|v| ObjectInfo {
                modified: None,
                path: path.to_string(),
                size: v.len() as u64,
            })
            .ok_or_else(|| not_found(path))
    }
}
