//! The PostgreSQL WAL archive of a repository (`format-spec/15-postgresql.md`): one sealed
//! object per archived file under `wal/`, named by the file name PostgreSQL uses.
//!
//! `push` follows PostgreSQL's archive_command contract: it returns only once the file is
//! durably stored; pushing a file that is already there with identical content succeeds, with
//! different content it fails. Objects are written create-only, so two concurrent pushes of one
//! name cannot both win. WAL objects are not referenced by any index or snapshot; they need no
//! lock (prune removes only files older than the oldest kept base backup).

use crate::compress::{decode_payload, encode_payload_parallel};
use crate::format::KIND_WAL;
use crate::format::envelope::encode_header;
use crate::format::time::Timestamp;
use crate::format::wal::{WAL_DIR, WalObject, decode_wal, encode_wal, valid_name};
use crate::{Error, ObjectRef, Result};

use super::Repository;

/// What a push did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Stored now.
    Stored,
    /// Already archived with the same content (a retry after a lost acknowledgement).
    AlreadyIdentical,
}

/// The path of a WAL object.
pub fn wal_path(name: &str) -> String {
    format!("{WAL_DIR}/{name}")
}

fn check_name(name: &str) -> Result<()> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "{name:?} is not a WAL file name PostgreSQL archives (segment, .partial, .history \
             or .backup)"
        )))
    }
}

impl Repository {
    /// Archives one WAL file's content under `name`.
    pub fn wal_push(&self, name: &str, data: &[u8]) -> Result<Pushed> {
        check_name(name)?;
        if self.is_write_only() {
            return Err(super::write_only_refusal(&ObjectRef::Wal(name.into())));
        }
        let path = wal_path(name);
        if let Some(existing) = self.wal_fetch(name)? {
            return if existing == data {
                Ok(Pushed::AlreadyIdentical)
            } else {
                Err(Error::AlreadyExists(format!(
                    "WAL file {name} is already archived with different content ({} bytes \
                     archived, {} bytes offered); refusing to overwrite it",
                    existing.len(),
                    data.len()
                )))
            };
        }
        let mut payload = Vec::new();
        // One segment per call and nothing else to do: compress it on every core.
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(8)) as u32;
        encode_payload_parallel(data, self.config().compression, workers, &mut payload);
        let plain = encode_wal(&WalObject {
            name: name.to_string(),
            pushed: Timestamp::now(),
            raw_length: data.len() as u64,
            payload,
        });
        let bytes = self.seal_bound(
            &encode_header(KIND_WAL),
            &ObjectRef::Wal(name.into()),
            &plain,
        )?;
        match self.backend().write(&path, &bytes) {
            Ok(()) => Ok(Pushed::Stored),
            // A concurrent push of the same name won the race: compare with what it stored.
            Err(e) if e.kind() == crate::ErrorKind::AlreadyExists => match self.wal_fetch(name)? {
                Some(existing) if existing == data => Ok(Pushed::AlreadyIdentical),
                _ => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// The archived object `name` (decoded, payload still encoded), if any.
    pub fn wal_object(&self, name: &str) -> Result<Option<WalObject>> {
        check_name(name)?;
        let object = ObjectRef::Wal(name.into());
        let bytes = match self.backend().read(&wal_path(name)) {
            Ok(b) => b,
            Err(e) if e.kind() == crate::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let plain = self.open_object(KIND_WAL, &bytes, object.clone())?;
        let w = decode_wal(&plain).map_err(|e| Error::corrupt(object.clone(), e.0))?;
        if w.name != name {
            return Err(Error::corrupt(object, format!("holds {}", w.name)));
        }
        Ok(Some(w))
    }

    /// The archived content of `name`, if any (verified: sealed, named, exact length).
    pub fn wal_fetch(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let Some(w) = self.wal_object(name)? else {
            return Ok(None);
        };
        decode_payload(w.payload, w.raw_length)
            .map(Some)
            .map_err(|e| Error::corrupt(ObjectRef::Wal(name.into()), e.0))
    }

    /// Names and stored sizes of every archived file.
    pub fn wal_list(&self) -> Result<Vec<(String, u64)>> {
        let mut out: Vec<(String, u64)> = self
            .backend()
            .list(WAL_DIR)?
            .into_iter()
            .filter_map(|o| {
                let name = o.path.rsplit('/').next()?.to_string();
                valid_name(&name).then_some((name, o.size))
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Removes one archived file (prune's WAL retention).
    pub fn wal_delete(&self, name: &str) -> Result<()> {
        check_name(name)?;
        self.backend().delete(&wal_path(name))
    }
}
