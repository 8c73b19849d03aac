//! Invariant checks shared by the `fuzz/` targets and the corpus-replay test.
//!
//! Each function feeds arbitrary bytes to one decoder and asserts the decoder's contract: it
//! never panics, and whatever it accepts re-encodes to exactly the input (the encodings are
//! canonical). A violated invariant panics, which is what a fuzzer reports.

use super::{audit, config, envelope, hold, index, key, lock, pack, snapshot, tree};

/// The decoders that have fuzz targets, by target name.
pub const TARGETS: [&str; 10] = [
    "config",
    "key_file",
    "pack_header",
    "pack_trailer",
    "index",
    "tree",
    "snapshot",
    "lock",
    "hold",
    "audit",
];

/// Runs the check for `target` on `data`.
pub fn check(target: &str, data: &[u8]) {
    match target {
        "config" => {
            if let Ok(c) = config::decode_config(data) {
                assert_eq!(
                    config::encode_config(&c),
                    data,
                    "config re-encodes differently"
                );
            }
        }
        "key_file" => {
            if let Ok(k) = key::decode_key_file(data) {
                assert_eq!(
                    key::encode_key_file(&k),
                    data,
                    "key file re-encodes differently"
                );
                if let key::KeyBody::Master(m) = &k.body {
                    assert_eq!(m.len(), key::SEALED_MASTER_LEN);
                }
            }
        }
        "pack_header" => {
            if let Ok(entries) = pack::decode_pack_header(data) {
                assert!(!entries.is_empty());
                let mut next = 0;
                for unit in pack::units(&entries) {
                    assert_eq!(unit[0].offset, next, "pack entries must be contiguous");
                    next = unit[0].end();
                    // A frame's members tile its plaintext in order.
                    let mut inner = 0;
                    for e in unit.iter().filter(|e| e.frame.is_some()) {
                        let f = e.frame.expect("filtered");
                        assert_eq!(f.inner, inner, "frame members must tile the frame");
                        inner += e.raw_length;
                        assert!(inner <= f.frame_raw);
                    }
                }
                assert_eq!(pack::encode_pack_header(&entries), data);
            }
        }
        "pack_trailer" => {
            if data.len() >= 4 {
                let (tail, len_bytes) = data.split_at(data.len() - 4);
                let pack_len = tail.len() as u64 + 4;
                if let Ok((off, len)) = pack::decode_trailer(len_bytes, pack_len) {
                    assert_eq!(off + len + 4, pack_len, "header must end at the trailer");
                }
            }
            let _ = envelope::decode_header(data, super::KIND_PACK_HEADER);
        }
        "index" => {
            if let Ok(idx) = index::decode_index(data) {
                for p in &idx.packs {
                    for b in &p.blobs {
                        assert!(b.end() <= p.size, "blob beyond its pack");
                    }
                }
                assert_eq!(index::encode_index(&idx), data);
            }
        }
        "tree" => {
            if let Ok(t) = tree::decode_tree(data) {
                for w in t.nodes.windows(2) {
                    assert!(w[0].name < w[1].name, "tree must be sorted");
                }
                assert_eq!(tree::encode_tree(&t), data);
            }
        }
        "snapshot" => {
            if let Ok(s) = snapshot::decode_snapshot(data) {
                assert_eq!(snapshot::encode_snapshot(&s), data);
            }
        }
        "lock" => {
            // Both envelope versions: each accepted plaintext re-encodes to itself.
            for version in [1, lock::LOCK_VERSION_WITH_OWNER] {
                if let Ok(l) = lock::decode_lock(data, version) {
                    assert_eq!(l.owner.is_some(), version >= lock::LOCK_VERSION_WITH_OWNER);
                    assert_eq!(lock::encode_lock(&l), data);
                }
            }
        }
        "hold" => {
            if let Ok(h) = hold::decode_hold(data) {
                assert_eq!(hold::encode_hold(&h), data);
            }
        }
        "audit" => {
            if let Ok(a) = audit::decode_audit(data) {
                assert_eq!(audit::encode_audit(&a), data);
            }
        }
        other => panic!("unknown fuzz target {other}"),
    }
}
