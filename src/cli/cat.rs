//! `vault cat`: one repository object, decrypted, for debugging and damage investigation
//! (JSON where the object is structured; a data blob's bytes as they are).

use std::io::Write;

use anyhow::{Result, anyhow};
use clap::{Args, ValueEnum};
use vault::format::tree::{ContentPart, Node};
use vault::id::{AuditId, BlobId, BlobType, HoldId, IndexId, PackId};

use super::global::GlobalArgs;
use super::output;

/// What to print.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum CatKind {
    /// The repository config
    Config,
    /// A key file (its parameters; never key material)
    Key,
    /// An index object
    Index,
    /// A snapshot manifest (`latest` works)
    Snapshot,
    /// A tree blob (a directory)
    Tree,
    /// A data blob: its bytes to stdout
    Blob,
    /// A pack's header: the blobs it holds
    Pack,
    /// A hold object
    Hold,
    /// A lock object
    Lock,
    /// An audit record
    Audit,
}

/// Options of `vault cat`.
#[derive(Args, Debug)]
pub struct CatArgs {
    /// Kind of object
    pub kind: CatKind,
    /// Its id (a unique prefix for snapshots and keys; `latest` for snapshots); not for config
    pub id: Option<String>,
}

fn full_id<T>(id: Option<&str>, parse: impl Fn(&str) -> Option<T>) -> Result<T> {
    let s = id.ok_or_else(|| super::usage("this kind of object needs an id"))?;
    parse(s).ok_or_else(|| anyhow!("not a 64-character hex id: {s:?}"))
}

/// A tree node as JSON (content parts included).
pub fn node_json(n: &Node) -> serde_json::Value {
    serde_json::json!({
        "name": String::from_utf8_lossy(&n.name),
        "name_hex": hex::encode(&n.name),
        "type": n.kind.name(),
        "mode": format!("{:04o}", n.mode),
        "uid": n.uid, "gid": n.gid, "user": n.user, "group": n.group,
        "mtime": output::time(n.mtime, 0),
        "ctime": output::time(n.ctime, 0),
        "atime": n.atime.map(|t| output::time(t, 0)),
        "inode": n.inode, "device": n.device, "nlink": n.nlink, "rdev": n.rdev,
        "size": n.size,
        "content": n.content.iter().map(|c| match c {
            ContentPart::Chunk(id) => serde_json::json!({"blob": id.to_hex()}),
            ContentPart::Hole(len) => serde_json::json!({"hole": len}),
        }).collect::<Vec<_>>(),
        "subtree": n.subtree.map(|t| t.to_hex()),
        "link_target": String::from_utf8_lossy(&n.link_target),
        "xattrs": n.xattrs.iter().map(|(k, v)| serde_json::json!({"name": String::from_utf8_lossy(k), "value_hex": hex::encode(v)})).collect::<Vec<_>>(),
    })
}

/// Runs `vault cat`.
pub fn run(g: &GlobalArgs, a: CatArgs) -> Result<i32> {
    let repo = g.open()?;
    let _lock = g.read_lock(&repo)?;
    let id = a.id.as_deref();
    let v = match a.kind {
        CatKind::Config => {
            let c = repo.config();
            serde_json::json!({
                "repository_id": c.repo_id.to_hex(),
                "created": output::time(c.created, 0),
                "chunker": {"min": c.chunker.min_size, "avg": c.chunker.avg_size, "max": c.chunker.max_size},
                "compression": format!("{:?}", c.compression),
                "pack_size": c.pack_size,
            })
        }
        CatKind::Key => {
            let spec = id.ok_or_else(|| super::usage("cat key needs an id"))?;
            let kid = vault::repo::keys::resolve_key(repo.backend(), spec)?;
            let info = vault::repo::keys::list_keys(repo.backend())?
                .into_iter()
                .find(|k| k.id == kid)
                .ok_or_else(|| anyhow!("key {spec} not found"))?;
            serde_json::json!({
                "id": info.id.to_hex(), "created": output::time(info.created, 0),
                "hostname": info.hostname, "username": info.username,
                "kdf": {"memory_kib": info.kdf.m_cost_kib, "iterations": info.kdf.t_cost, "parallelism": info.kdf.p_cost},
                "damaged": info.damaged,
            })
        }
        CatKind::Index => {
            let iid = full_id(id, IndexId::from_hex)?;
            let idx = repo.read_index(&iid)?;
            serde_json::json!({
                "supersedes": idx.supersedes.iter().map(|s| s.to_hex()).collect::<Vec<_>>(),
                "packs": idx.packs.iter().map(|p| serde_json::json!({
                    "id": p.id.to_hex(), "size": p.size,
                    "blobs": p.blobs.iter().map(entry_json).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })
        }
        CatKind::Snapshot => {
            let spec = id.ok_or_else(|| super::usage("cat snapshot needs an id or `latest`"))?;
            let (sid, s) = repo.resolve_snapshot(spec, &Default::default(), None)?;
            super::snapshots::snapshot_json(&sid, &s)
        }
        CatKind::Tree => {
            let bid = full_id(id, BlobId::from_hex)?;
            let t = repo.load_tree(&bid)?;
            serde_json::json!({"nodes": t.nodes.iter().map(node_json).collect::<Vec<_>>()})
        }
        CatKind::Blob => {
            let bid = full_id(id, BlobId::from_hex)?;
            let data = repo.load_blob(BlobType::Data, &bid)?;
            std::io::stdout().lock().write_all(&data)?;
            return Ok(super::exit::OK);
        }
        CatKind::Pack => {
            let pid = full_id(id, PackId::from_hex)?;
            let entries = repo.read_pack_header(&pid, None)?;
            serde_json::json!({"id": pid.to_hex(), "blobs": entries.iter().map(entry_json).collect::<Vec<_>>()})
        }
        CatKind::Hold => {
            let hid = full_id(id, HoldId::from_hex)?;
            let h = repo.load_hold(&hid)?;
            serde_json::json!({"snapshot": h.snapshot.to_hex(), "reason": h.reason, "created": output::time(h.created, 0), "hostname": h.hostname, "username": h.username})
        }
        CatKind::Lock => {
            let want = id.ok_or_else(|| super::usage("cat lock needs an id"))?;
            let l = repo
                .list_locks()?
                .into_iter()
                .find(|l| l.id.to_hex() == want)
                .ok_or_else(|| anyhow!("lock {want} not found"))?;
            match &l.lock {
                Ok(k) => serde_json::json!({
                    "id": l.id.to_hex(), "exclusive": k.exclusive, "hostname": k.hostname,
                    "username": k.username, "pid": k.pid, "uid": k.uid,
                    "created": output::time(k.created, 0), "refreshed": output::time(k.refreshed, 0),
                }),
                Err(e) => return Err(anyhow!("lock {want} cannot be read: {e}")),
            }
        }
        CatKind::Audit => {
            let aid = full_id(id, AuditId::from_hex)?;
            let r = repo.load_audit(&aid)?;
            serde_json::json!({
                "writer": hex::encode(r.writer), "seq": r.seq, "prev": r.prev.map(hex::encode),
                "time": output::time(r.time, 0), "hostname": r.hostname, "username": r.username,
                "profile": r.profile, "command": r.command, "args": r.args, "exit_code": r.exit_code,
                "error": r.error, "snapshots": r.snapshots.iter().map(hex::encode).collect::<Vec<_>>(),
                "bytes": r.bytes, "summary": r.summary,
            })
        }
    };
    // Structured objects are JSON whether or not --json was given.
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &v)?;
    writeln!(out)?;
    Ok(super::exit::OK)
}

fn entry_json(e: &vault::format::pack::PackEntry) -> serde_json::Value {
    let mut v = serde_json::json!({
        "type": match e.blob_type { BlobType::Data => "data", BlobType::Tree => "tree" },
        "id": e.id.to_hex(), "offset": e.offset, "length": e.length, "raw_length": e.raw_length,
    });
    // A frame member: where it lies in its frame's plaintext (format-spec 6.3).
    if let Some(f) = e.frame {
        v["frame"] = serde_json::json!({ "inner": f.inner, "frame_raw": f.frame_raw });
    }
    v
}
