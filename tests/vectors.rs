//! Known-answer vectors in `format-spec/vectors/`, checked in both directions: encoding the
//! described value gives the recorded bytes, and decoding the recorded bytes gives the value.
//! `VAULT_WRITE_VECTORS=1 cargo test vectors` rewrites the files (only with a format change,
//! recorded in `format-spec/CHANGES.md`).

use std::path::PathBuf;

use serde_json::{Value, json};
use vault::crypto::{Cipher, IdHasher, MasterKey, blob_aad, derive_kek, gear_table, storage_hash};
use vault::format::config::{ChunkerParams, Compression, Config, decode_config, encode_config};
use vault::format::envelope::encode_header;
use vault::format::index::{Index, IndexPack, decode_index, encode_index};
use vault::format::key::{KdfParams, KeyBody, KeyFile, decode_key_file, encode_key_file};
use vault::format::pack::{PackEntry, decode_pack_header, encode_pack_header, encode_trailer};
use vault::format::snapshot::{Snapshot, Summary, decode_snapshot, encode_snapshot};
use vault::format::time::Timestamp;
use vault::format::tree::{ContentPart, Node, NodeKind, Tree, decode_tree, encode_tree};
use vault::format::{KIND_CONFIG, KIND_INDEX, KIND_PACK_HEADER, KIND_SNAPSHOT};
use vault::id::{BlobId, BlobType, IndexId, PackId, RepoId, SnapshotId};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("format-spec/vectors")
}

/// Compares with (or, when regenerating, writes) one vector file.
fn check(name: &str, computed: Value) {
    let path = dir().join(name);
    if std::env::var_os("VAULT_WRITE_VECTORS").is_some() {
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&computed).unwrap() + "\n",
        )
        .unwrap();
        return;
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let stored: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        stored, computed,
        "vector {name} does not match the implementation"
    );
}

fn stored(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join(name)).unwrap()).unwrap()
}

fn unhex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

fn seq(start: u8, n: usize) -> Vec<u8> {
    (0..n).map(|i| start.wrapping_add(i as u8)).collect()
}

fn master() -> MasterKey {
    let mut b = [0u8; 96];
    b.copy_from_slice(&seq(0, 96));
    MasterKey::from_bytes(&b)
}

fn nonce(byte: u8) -> [u8; 24] {
    [byte; 24]
}

/// `HEADER || SEAL(nonce)` for an envelope, as a reader would see it.
fn envelope(kind: u8, n: u8, plaintext: &[u8]) -> Vec<u8> {
    let header = encode_header(kind);
    let mut out = header.to_vec();
    out.extend(
        master()
            .cipher()
            .seal_with_nonce(&nonce(n), &header, plaintext),
    );
    out
}

fn open_envelope(kind: u8, bytes: &[u8]) -> Vec<u8> {
    let (h, rest) = vault::format::envelope::decode_header(bytes, kind).unwrap();
    master().cipher().open(h, rest).unwrap()
}

/// One lane (vault 0.4.0's default) and four (later defaults): both keys were also derived
/// with the reference implementation's `argon2` tool (`-id -t 2 -k 64 -p N -l 32`).
#[test]
fn kdf_vectors() {
    for (name, lanes) in [("kdf.json", 1), ("kdf_lanes.json", 4)] {
        let kdf = KdfParams {
            m_cost_kib: 64,
            t_cost: 2,
            p_cost: lanes,
        };
        let salt = seq(0x10, 16);
        let kek = derive_kek(b"vault test password", &salt, &kdf).unwrap();
        check(
            name,
            json!({
                "algorithm": "Argon2id v0x13, no secret, no associated data, 32-byte output",
                "password": "vault test password",
                "salt": hex::encode(&salt),
                "m_cost_kib": 64, "t_cost": 2, "p_cost": lanes,
                "key": hex::encode(&kek[..]),
            }),
        );
    }
}

#[test]
fn seal_and_blob_id_vectors() {
    let key: [u8; 32] = seq(0, 32).try_into().unwrap();
    let sealed =
        Cipher::new(&key).seal_with_nonce(&nonce(0xa0), b"additional data", b"plaintext to seal");
    if std::env::var_os("VAULT_WRITE_VECTORS").is_none() {
        let from_file = unhex(&stored("seal.json")["sealed"]);
        assert_eq!(
            Cipher::new(&key)
                .open(b"additional data", &from_file)
                .unwrap(),
            b"plaintext to seal"
        );
    }
    let hasher = IdHasher::from_key(seq(0x20, 32).try_into().unwrap());
    check(
        "seal.json",
        json!({
            "algorithm": "XChaCha20-Poly1305; sealed = nonce(24) || ciphertext || tag(16)",
            "key": hex::encode(key), "nonce": hex::encode(nonce(0xa0)),
            "aad": hex::encode(b"additional data"), "plaintext": hex::encode(b"plaintext to seal"),
            "sealed": hex::encode(&sealed),
        }),
    );
    let cases: Vec<Value> = [&b""[..], b"abc", &seq(0, 251)]
        .iter()
        .map(|d| json!({"data": hex::encode(d), "id": hasher.blob_id(d).to_hex()}))
        .collect();
    check(
        "blob_id.json",
        json!({"algorithm": "BLAKE3 keyed with id_key", "id_key": hex::encode(seq(0x20, 32)), "cases": cases,
               "storage_hash_of_abc": hex::encode(storage_hash(b"abc"))}),
    );
}

#[test]
fn chunker_vector() {
    let seed: [u8; 32] = seq(0x40, 32).try_into().unwrap();
    let gear = gear_table(&seed);
    let params = ChunkerParams {
        min_size: 4096,
        avg_size: 16384,
        max_size: 65536,
    };
    let chunker = vault::chunker::Chunker::new(params, gear.clone());
    let mut input = vec![0u8; 1 << 20];
    blake3::Hasher::new_keyed(&[0x11; 32])
        .finalize_xof()
        .fill(&mut input);
    let cuts = chunker.cut_all(&input);
    let (ms, ml) = chunker.masks();
    check(
        "chunker.json",
        json!({
            "chunker_seed": hex::encode(seed),
            "min": 4096, "avg": 16384, "max": 65536,
            "mask_s": format!("{ms:#018x}"), "mask_l": format!("{ml:#018x}"),
            "gear_first4": gear[..4].iter().map(|g| format!("{g:#018x}")).collect::<Vec<_>>(),
            "gear_last": format!("{:#018x}", gear[255]),
            "input": "first 1048576 bytes of the BLAKE3 XOF keyed with 32 bytes of 0x11 over empty input",
            "chunk_lengths": cuts,
        }),
    );
}

fn sample_entries() -> Vec<(BlobType, Vec<u8>)> {
    vec![
        (
            BlobType::Data,
            b"first blob: short, stored uncompressed".to_vec(),
        ),
        (BlobType::Data, "compressible ".repeat(40).into_bytes()),
    ]
}

#[test]
fn pack_vector() {
    let m = master();
    let hasher = m.hasher();
    let mut body = Vec::new();
    let mut entries = Vec::new();
    for (i, (t, data)) in sample_entries().into_iter().enumerate() {
        let id = hasher.blob_id(&data);
        let payload = vault::compress::encode_payload(&data, Compression::Zstd(3));
        let sealed =
            m.cipher()
                .seal_with_nonce(&nonce(0xb0 + i as u8), &blob_aad(t, &id), &payload[24..]);
        entries.push(PackEntry {
            blob_type: t,
            id,
            offset: body.len() as u64,
            length: sealed.len() as u64,
            raw_length: data.len() as u64,
            frame: None,
        });
        body.extend(sealed);
    }
    let header_plain = encode_pack_header(&entries);
    assert_eq!(decode_pack_header(&header_plain).unwrap(), entries);
    let header = envelope(KIND_PACK_HEADER, 0xbf, &header_plain);
    let mut pack = body.clone();
    pack.extend(&header);
    pack.extend(encode_trailer(header.len()));
    if std::env::var_os("VAULT_WRITE_VECTORS").is_none() {
        // Read the stored pack the way a reader does: trailer, header, blobs.
        let v = stored("pack.json");
        let bytes = unhex(&v["pack"]);
        let n = bytes.len();
        let hl = u32::from_le_bytes(bytes[n - 4..].try_into().unwrap()) as usize;
        let plain = open_envelope(KIND_PACK_HEADER, &bytes[n - 4 - hl..n - 4]);
        let got = decode_pack_header(&plain).unwrap();
        for (e, (_, data)) in got.iter().zip(sample_entries()) {
            let sealed = &bytes[e.offset as usize..e.end() as usize];
            let p = m
                .cipher()
                .open(&blob_aad(e.blob_type, &e.id), sealed)
                .unwrap();
            assert_eq!(
                vault::compress::decode_payload(p, e.raw_length).unwrap(),
                data
            );
        }
    }
    seed("pack_trailer", &pack);
    check(
        "pack.json",
        json!({
            "master_key": hex::encode(&m.to_bytes()[..]),
            "blob_nonces": ["b0".repeat(24), "b1".repeat(24)], "header_nonce": "bf".repeat(24),
            "blobs": sample_entries().iter().map(|(t, d)| json!({"type": t.name(), "plaintext": hex::encode(d)})).collect::<Vec<_>>(),
            "header_plaintext": hex::encode(&header_plain),
            "pack": hex::encode(&pack),
            "pack_id": PackId(storage_hash(&pack)).to_hex(),
        }),
    );
}

/// A pack with a lone blob and a frame of three small data blobs (format 4, 6.3).
#[test]
fn frame_pack_vector() {
    use vault::crypto::frame_aad;
    use vault::format::pack::FrameSlot;
    let m = master();
    let hasher = m.hasher();
    let lone = b"a lone blob, stored on its own".to_vec();
    let members: Vec<Vec<u8>> = vec![
        b"# nginx.conf\nworker_processes auto;\n".to_vec(),
        b"# nginx.conf\nworker_processes 4;\n".to_vec(),
        "[mysqld]\nmax_connections = 200\n".repeat(3).into_bytes(),
    ];
    let mut body = Vec::new();
    let mut entries = Vec::new();
    let id = hasher.blob_id(&lone);
    let payload = vault::compress::encode_payload(&lone, Compression::Zstd(3));
    let sealed =
        m.cipher()
            .seal_with_nonce(&nonce(0xc0), &blob_aad(BlobType::Data, &id), &payload[24..]);
    entries.push(PackEntry {
        blob_type: BlobType::Data,
        id,
        offset: 0,
        length: sealed.len() as u64,
        raw_length: lone.len() as u64,
        frame: None,
    });
    body.extend(sealed);
    let frame_plain = members.concat();
    let frame_raw = frame_plain.len() as u64;
    let payload = vault::compress::encode_payload(&frame_plain, Compression::Zstd(3));
    let sealed = m.cipher().seal_with_nonce(
        &nonce(0xc1),
        &frame_aad(BlobType::Data, frame_raw),
        &payload[24..],
    );
    let mut inner = 0;
    for d in &members {
        entries.push(PackEntry {
            blob_type: BlobType::Data,
            id: hasher.blob_id(d),
            offset: body.len() as u64,
            length: sealed.len() as u64,
            raw_length: d.len() as u64,
            frame: Some(FrameSlot { inner, frame_raw }),
        });
        inner += d.len() as u64;
    }
    body.extend(sealed);
    let header_plain = encode_pack_header(&entries);
    assert_eq!(decode_pack_header(&header_plain).unwrap(), entries);
    let header = envelope(KIND_PACK_HEADER, 0xcf, &header_plain);
    let mut pack = body;
    pack.extend(&header);
    pack.extend(encode_trailer(header.len()));
    if std::env::var_os("VAULT_WRITE_VECTORS").is_none() {
        // Read the stored pack the way a reader does: header, then each member from its frame.
        let v = stored("frame_pack.json");
        let bytes = unhex(&v["pack"]);
        let n = bytes.len();
        let hl = u32::from_le_bytes(bytes[n - 4..].try_into().unwrap()) as usize;
        let plain = open_envelope(KIND_PACK_HEADER, &bytes[n - 4 - hl..n - 4]);
        let got = decode_pack_header(&plain).unwrap();
        assert_eq!(got.len(), 4);
        for (e, data) in got[1..].iter().zip(&members) {
            let f = e.frame.unwrap();
            let sealed = &bytes[e.offset as usize..e.end() as usize];
            let p = m
                .cipher()
                .open(&frame_aad(e.blob_type, f.frame_raw), sealed)
                .unwrap();
            let frame = vault::compress::decode_payload(p, f.frame_raw).unwrap();
            let member = &frame[f.inner as usize..(f.inner + e.raw_length) as usize];
            assert_eq!(member, &data[..]);
            assert_eq!(hasher.blob_id(member), e.id);
        }
        // A member that does not fill its frame, or a frame member of type tree, is refused.
        let mut short = got.clone();
        short.pop();
        assert!(decode_pack_header(&encode_pack_header(&short)).is_err());
        let mut tree = got.clone();
        tree[1].blob_type = BlobType::Tree;
        assert!(decode_pack_header(&encode_pack_header(&tree)).is_err());
    }
    check(
        "frame_pack.json",
        json!({
            "master_key": hex::encode(&m.to_bytes()[..]),
            "blob_nonce": "c0".repeat(24), "frame_nonce": "c1".repeat(24), "header_nonce": "cf".repeat(24),
            "lone_blob": hex::encode(&lone),
            "frame_members": members.iter().map(hex::encode).collect::<Vec<_>>(),
            "frame_aad": hex::encode(frame_aad(BlobType::Data, frame_raw)),
            "header_plaintext": hex::encode(&header_plain),
            "pack": hex::encode(&pack),
            "pack_id": PackId(storage_hash(&pack)).to_hex(),
        }),
    );
}

fn sample_index() -> Index {
    Index {
        supersedes: vec![IndexId([0x33; 32])],
        packs: vec![IndexPack {
            id: PackId([0x44; 32]),
            size: 5000,
            blobs: vec![
                PackEntry {
                    blob_type: BlobType::Data,
                    id: BlobId([0x55; 32]),
                    offset: 0,
                    length: 1040,
                    raw_length: 2000,
                    frame: None,
                },
                PackEntry {
                    blob_type: BlobType::Data,
                    id: BlobId([0x66; 32]),
                    offset: 1040,
                    length: 300,
                    raw_length: 260,
                    frame: None,
                },
                // Two members of one frame (format 4): the frame's place, then each one's.
                PackEntry {
                    blob_type: BlobType::Data,
                    id: BlobId([0x67; 32]),
                    offset: 1340,
                    length: 420,
                    raw_length: 300,
                    frame: Some(vault::format::pack::FrameSlot {
                        inner: 0,
                        frame_raw: 500,
                    }),
                },
                PackEntry {
                    blob_type: BlobType::Data,
                    id: BlobId([0x68; 32]),
                    offset: 1340,
                    length: 420,
                    raw_length: 200,
                    frame: Some(vault::format::pack::FrameSlot {
                        inner: 300,
                        frame_raw: 500,
                    }),
                },
            ],
        }],
    }
}

fn sample_tree() -> Tree {
    let base = Node {
        mode: 0o644,
        uid: 1000,
        gid: 1000,
        user: "ann".into(),
        group: "staff".into(),
        mtime: Timestamp::new(1_700_000_000, 123_456_789),
        ctime: Timestamp::new(1_700_000_001, 5),
        inode: 42,
        device: 2049,
        nlink: 1,
        ..Node::default()
    };
    Tree {
        nodes: vec![
            Node {
                name: b"a-file".to_vec(),
                kind: NodeKind::File,
                size: 70_000,
                content: vec![
                    ContentPart::Chunk(BlobId([0x77; 32])),
                    ContentPart::Hole(65_536),
                ],
                xattrs: vec![(b"user.k".to_vec(), b"v".to_vec())],
                ..base.clone()
            },
            Node {
                name: b"b-dir".to_vec(),
                kind: NodeKind::Dir,
                mode: 0o1755,
                subtree: Some(BlobId([0x88; 32])),
                atime: Some(Timestamp::new(1_700_000_002, 0)),
                ..base.clone()
            },
            Node {
                name: b"c-link".to_vec(),
                kind: NodeKind::Symlink,
                mode: 0o777,
                link_target: b"a-file".to_vec(),
                ..base.clone()
            },
            Node {
                name: b"d-\xff\xfe".to_vec(),
                kind: NodeKind::CharDevice,
                rdev: 259,
                ..base
            },
        ],
    }
}

fn sample_snapshot() -> Snapshot {
    Snapshot {
        time: Timestamp::new(1_767_603_600, 250_000_000),
        tz_offset_secs: 3600,
        hostname: "db1".into(),
        username: "postgres".into(),
        uid: 26,
        gid: 26,
        paths: vec![b"/var/lib/dumps".to_vec()],
        tags: vec!["daily".into(), "db".into()],
        tree: BlobId([0x99; 32]),
        parent: Some(SnapshotId([0xaa; 32])),
        original: None,
        program_version: "vault 0.1.0".into(),
        summary: Summary {
            files_new: 1,
            total_files: 1,
            total_bytes: 2000,
            bytes_read: 2000,
            bytes_added: 2000,
            bytes_stored: 1040,
            data_blobs: 1,
            tree_blobs: 2,
            duration_ms: 12,
            ..Summary::default()
        },
    }
}

fn sample_config() -> Config {
    Config {
        repo_id: RepoId([0x12; 32]),
        created: Timestamp::new(1_767_600_000, 0),
        chunker: ChunkerParams {
            min_size: 512 * 1024,
            avg_size: 1 << 20,
            max_size: 8 << 20,
        },
        compression: Compression::Zstd(3),
        pack_size: 16 << 20,
    }
}

#[test]
fn object_vectors_both_directions() {
    let cases: Vec<(&str, u8, u8, Vec<u8>)> = vec![
        (
            "config.json",
            KIND_CONFIG,
            0xc0,
            encode_config(&sample_config()),
        ),
        (
            "index.json",
            KIND_INDEX,
            0xc1,
            encode_index(&sample_index()),
        ),
        (
            "snapshot.json",
            KIND_SNAPSHOT,
            0xc2,
            encode_snapshot(&sample_snapshot()),
        ),
        ("tree.json", 0, 0, encode_tree(&sample_tree())),
    ];
    for (name, kind, n, plain) in cases {
        if std::env::var_os("VAULT_WRITE_VECTORS").is_none() {
            let v = stored(name);
            let file_plain = unhex(&v["plaintext"]);
            match name {
                "config.json" => assert_eq!(decode_config(&file_plain).unwrap(), sample_config()),
                "index.json" => assert_eq!(decode_index(&file_plain).unwrap(), sample_index()),
                "snapshot.json" => {
                    assert_eq!(decode_snapshot(&file_plain).unwrap(), sample_snapshot())
                }
                _ => assert_eq!(decode_tree(&file_plain).unwrap(), sample_tree()),
            }
            if kind != 0 {
                assert_eq!(open_envelope(kind, &unhex(&v["object"])), file_plain);
            }
        }
        let mut v = json!({"plaintext": hex::encode(&plain)});
        if kind != 0 {
            v["master_key"] = json!(hex::encode(&master().to_bytes()[..]));
            v["nonce"] = json!(hex::encode(nonce(n)));
            v["object"] = json!(hex::encode(envelope(kind, n, &plain)));
        } else {
            v["blob_id"] = json!(master().hasher().blob_id(&plain).to_hex());
        }
        check(name, v);
    }
}

/// Hold and lock objects (locks in both envelope versions), both directions.
#[test]
fn hold_and_lock_vectors() {
    use vault::format::hold::{Hold, decode_hold, encode_hold};
    use vault::format::lock::{Lock, LockOwner, decode_lock, encode_lock};
    use vault::format::{KIND_HOLD, KIND_LOCK};
    let hold = Hold {
        snapshot: SnapshotId([0x5a; 32]),
        reason: "ticket 4711".into(),
        created: Timestamp::new(1_767_603_600, 7),
        hostname: "db1".into(),
        username: "backup".into(),
    };
    let v1 = Lock {
        exclusive: false,
        hostname: "db1".into(),
        username: "backup".into(),
        pid: 4242,
        uid: 1000,
        created: Timestamp::new(1_767_603_600, 0),
        refreshed: Timestamp::new(1_767_603_900, 0),
        owner: None,
    };
    let v2 = Lock {
        exclusive: true,
        owner: Some(LockOwner {
            boot_id: "c3d0016a8a58456e97d804dc7f32a95c".into(),
            pid_ns: 4_026_531_836,
            start_ticks: 39_344,
        }),
        ..v1.clone()
    };
    // A version-1 lock envelope, as older writers made it.
    let lock_v1_object = {
        let mut header = encode_header(KIND_LOCK);
        header[6] = 1;
        let mut out = header.to_vec();
        out.extend(
            master()
                .cipher()
                .seal_with_nonce(&nonce(0xd1), &header, &encode_lock(&v1)),
        );
        out
    };
    if std::env::var_os("VAULT_WRITE_VECTORS").is_none() {
        let v = stored("hold.json");
        assert_eq!(decode_hold(&unhex(&v["plaintext"])).unwrap(), hold);
        assert_eq!(
            open_envelope(KIND_HOLD, &unhex(&v["object"])),
            unhex(&v["plaintext"])
        );
        let v = stored("lock.json");
        for (key, version, lock) in [("version_1", 1u8, &v1), ("version_2", 2u8, &v2)] {
            let plain = unhex(&v[key]["plaintext"]);
            assert_eq!(&decode_lock(&plain, version).unwrap(), lock);
            let object = unhex(&v[key]["object"]);
            assert_eq!(object[6], version);
            assert_eq!(open_envelope(KIND_LOCK, &object), plain);
        }
        // A version-2 plaintext is not a valid version-1 plaintext and vice versa.
        assert!(decode_lock(&unhex(&v["version_2"]["plaintext"]), 1).is_err());
        assert!(decode_lock(&unhex(&v["version_1"]["plaintext"]), 2).is_err());
    }
    check(
        "hold.json",
        json!({
            "master_key": hex::encode(&master().to_bytes()[..]),
            "nonce": hex::encode(nonce(0xd0)),
            "plaintext": hex::encode(encode_hold(&hold)),
            "object": hex::encode(envelope(KIND_HOLD, 0xd0, &encode_hold(&hold))),
        }),
    );
    check(
        "lock.json",
        json!({
            "master_key": hex::encode(&master().to_bytes()[..]),
            "version_1": {
                "nonce": hex::encode(nonce(0xd1)),
                "plaintext": hex::encode(encode_lock(&v1)),
                "object": hex::encode(&lock_v1_object),
            },
            "version_2": {
                "nonce": hex::encode(nonce(0xd2)),
                "plaintext": hex::encode(encode_lock(&v2)),
                "object": hex::encode(envelope(KIND_LOCK, 0xd2, &encode_lock(&v2))),
            },
        }),
    );
}

/// A pack of tree blobs: the sample tree and an empty tree, compressed or not as the
/// payload rule decides, sealed with the master key, ids keyed with its `id_key`.
#[test]
fn tree_pack_vector() {
    let m = master();
    let trees = [encode_tree(&sample_tree()), encode_tree(&Tree::default())];
    let mut body = Vec::new();
    let mut entries = Vec::new();
    for (i, plain) in trees.iter().enumerate() {
        let id = m.hasher().blob_id(plain);
        let payload = vault::compress::encode_payload(plain, Compression::Zstd(3));
        let sealed = m.cipher().seal_with_nonce(
            &nonce(0xe0 + i as u8),
            &blob_aad(BlobType::Tree, &id),
            &payload[24..],
        );
        entries.push(PackEntry {
            blob_type: BlobType::Tree,
            id,
            offset: body.len() as u64,
            length: sealed.len() as u64,
            raw_length: plain.len() as u64,
            frame: None,
        });
        body.extend(sealed);
    }
    let header = envelope(KIND_PACK_HEADER, 0xef, &encode_pack_header(&entries));
    let mut pack = body;
    pack.extend(&header);
    pack.extend(encode_trailer(header.len()));
    if std::env::var_os("VAULT_WRITE_VECTORS").is_none() {
        let v = stored("tree_pack.json");
        let bytes = unhex(&v["pack"]);
        let n = bytes.len();
        let hl = u32::from_le_bytes(bytes[n - 4..].try_into().unwrap()) as usize;
        let got = decode_pack_header(&open_envelope(KIND_PACK_HEADER, &bytes[n - 4 - hl..n - 4]))
            .unwrap();
        assert_eq!(got.len(), 2);
        for (e, plain) in got.iter().zip(&trees) {
            assert_eq!(e.blob_type, BlobType::Tree);
            let p = m
                .cipher()
                .open(
                    &blob_aad(BlobType::Tree, &e.id),
                    &bytes[e.offset as usize..e.end() as usize],
                )
                .unwrap();
            let tree = vault::compress::decode_payload(p, e.raw_length).unwrap();
            assert_eq!(&tree, plain);
            assert_eq!(m.hasher().blob_id(&tree), e.id);
            decode_tree(&tree).unwrap();
        }
    }
    check(
        "tree_pack.json",
        json!({
            "master_key": hex::encode(&m.to_bytes()[..]),
            "blob_nonces": ["e0".repeat(24), "e1".repeat(24)], "header_nonce": "ef".repeat(24),
            "tree_plaintexts": trees.iter().map(hex::encode).collect::<Vec<_>>(),
            "blob_ids": entries.iter().map(|e| e.id.to_hex()).collect::<Vec<_>>(),
            "pack": hex::encode(&pack),
            "pack_id": PackId(storage_hash(&pack)).to_hex(),
        }),
    );
}

#[test]
fn key_file_vector() {
    let kdf = KdfParams {
        m_cost_kib: 64,
        t_cost: 1,
        p_cost: 1,
    };
    let mut kf = KeyFile {
        kdf,
        salt: seq(0x70, 16),
        created: Timestamp::new(1_767_600_000, 0),
        hostname: "host".into(),
        username: "user".into(),
        capabilities: 0,
        body: KeyBody::Master(Vec::new()),
    };
    let kek = derive_kek(b"password", &kf.salt, &kdf).unwrap();
    kf.body = KeyBody::Master(Cipher::new(&kek).seal_with_nonce(
        &nonce(0xd0),
        &kf.aad(),
        &master().to_bytes()[..],
    ));
    let bytes = encode_key_file(&kf);
    if std::env::var_os("VAULT_WRITE_VECTORS").is_none() {
        let file = unhex(&stored("key_file.json")["key_file"]);
        let id = vault::id::KeyId(storage_hash(&file));
        let opened = vault::repo::keys::open_key_bytes(&file, b"password", id)
            .unwrap()
            .unwrap();
        assert_eq!(opened.to_bytes()[..], master().to_bytes()[..]);
        assert!(
            vault::repo::keys::open_key_bytes(&file, b"wrong", id)
                .unwrap()
                .is_none()
        );
        assert_eq!(decode_key_file(&file).unwrap(), kf);
    }
    seed("key_file", &bytes);
    check(
        "key_file.json",
        json!({"password": "password", "master_key": hex::encode(&master().to_bytes()[..]),
               "nonce": hex::encode(nonce(0xd0)), "key_file": hex::encode(&bytes)}),
    );
    // An append-only key: envelope version 2, capabilities after the username.
    let mut ao = kf.clone();
    ao.capabilities = vault::format::key::CAP_APPEND_ONLY;
    ao.body = KeyBody::Master(Cipher::new(&kek).seal_with_nonce(
        &nonce(0xd1),
        &ao.aad(),
        &master().to_bytes()[..],
    ));
    let ao_bytes = encode_key_file(&ao);
    assert_eq!(ao_bytes[6], 2);
    if std::env::var_os("VAULT_WRITE_VECTORS").is_none() {
        let file = unhex(&stored("key_file_append_only.json")["key_file"]);
        let id = vault::id::KeyId(storage_hash(&file));
        assert!(
            vault::repo::keys::open_key_bytes(&file, b"password", id)
                .unwrap()
                .is_some()
        );
        assert_eq!(decode_key_file(&file).unwrap(), ao);
        // The capability byte is authenticated: clearing it breaks the seal.
        let mut forged = ao.clone();
        forged.capabilities = 0;
        let mut forged_bytes = forged.aad();
        let KeyBody::Master(sealed) = &ao.body else {
            unreachable!()
        };
        forged_bytes.extend_from_slice(sealed);
        assert!(
            vault::repo::keys::open_key_bytes(&forged_bytes, b"password", id)
                .unwrap()
                .is_none()
        );
    }
    check(
        "key_file_append_only.json",
        json!({"password": "password", "master_key": hex::encode(&master().to_bytes()[..]),
               "nonce": hex::encode(nonce(0xd1)), "capabilities": 1, "key_file": hex::encode(&ao_bytes)}),
    );
}

/// A version-3 key file: the password seals the ring seal key, which seals a ring of two
/// epochs; the ring seal key is derived from the ring authority and the salt.
#[test]
fn key_file_ring_vector() {
    use vault::format::key::{Ring, encode_ring};
    let kdf = KdfParams {
        m_cost_kib: 64,
        t_cost: 1,
        p_cost: 1,
    };
    let ring = Ring {
        id_key: seq(32, 32).try_into().unwrap(),
        chunker_seed: seq(64, 32).try_into().unwrap(),
        authority: Some(seq(0xa0, 32).try_into().unwrap()),
        epochs: vec![
            (1, seq(0xc0, 32).try_into().unwrap()),
            (0, seq(0, 32).try_into().unwrap()),
        ],
        write_only: None,
    };
    let key = MasterKey::from_ring(&ring, 1);
    let mut kf = KeyFile {
        kdf,
        salt: seq(0x70, 16),
        created: Timestamp::new(1_767_600_000, 0),
        hostname: "host".into(),
        username: "user".into(),
        capabilities: 0,
        body: KeyBody::Ring {
            sealed_ring_key: Vec::new(),
            epoch: 1,
            sealed_ring: Vec::new(),
        },
    };
    let ring_key = key.ring_seal_key(&kf.salt).unwrap();
    // The derivation, spelled out: BLAKE3 derive_key(context, authority || salt).
    let mut m = seq(0xa0, 32);
    m.extend(seq(0x70, 16));
    assert_eq!(
        ring_key[..],
        blake3::derive_key(vault::crypto::RING_SEAL_CONTEXT, &m)[..]
    );
    let kek = derive_kek(b"password", &kf.salt, &kdf).unwrap();
    let sealed_ring_key = Cipher::new(&kek).seal_with_nonce(&nonce(0xd2), &kf.aad(), &ring_key[..]);
    let plain = encode_ring(&ring);
    let sealed_ring = Cipher::new(&ring_key).seal_with_nonce(&nonce(0xd3), &kf.ring_aad(1), &plain);
    kf.body = KeyBody::Ring {
        sealed_ring_key,
        epoch: 1,
        sealed_ring,
    };
    let bytes = encode_key_file(&kf);
    assert_eq!(bytes[6], 3);
    if std::env::var_os("VAULT_WRITE_VECTORS").is_none() {
        let file = unhex(&stored("key_file_ring.json")["key_file"]);
        assert_eq!(decode_key_file(&file).unwrap(), kf);
        let id = vault::id::KeyId(storage_hash(&file));
        let opened = vault::repo::keys::open_key_bytes(&file, b"password", id)
            .unwrap()
            .unwrap();
        assert_eq!(opened.epoch(), 1);
        assert_eq!(opened.retired_epochs(), vec![0]);
        assert!(opened.has_authority());
        assert!(
            vault::repo::keys::open_key_bytes(&file, b"wrong", id)
                .unwrap()
                .is_none()
        );
        // The public epoch is authenticated: changing it breaks the ring's seal.
        let mut forged = kf.clone();
        if let KeyBody::Ring { epoch, .. } = &mut forged.body {
            *epoch = 2;
        }
        let forged = encode_key_file(&forged);
        assert!(vault::repo::keys::open_key_bytes(&forged, b"password", id).is_err());
    }
    check(
        "key_file_ring.json",
        json!({"password": "password", "ring_authority": hex::encode(seq(0xa0, 32)),
               "ring_seal_key": hex::encode(&ring_key[..]), "ring": hex::encode(&plain[..]),
               "nonce_ring_seal_key": hex::encode(nonce(0xd2)), "nonce_ring": hex::encode(nonce(0xd3)),
               "key_file": hex::encode(&bytes)}),
    );
}

/// A re-sealed snapshot: flag 0x01 in the header, the name bound into the seal.
#[test]
fn resealed_envelope_vector() {
    use vault::format::envelope::{decode_header, header_is_resealed, resealed_header};
    let name = seq(0x50, 32);
    let plaintext = b"snapshot plaintext".to_vec();
    let header = resealed_header(&encode_header(KIND_SNAPSHOT));
    assert_eq!(&header, b"VAULTS\x01\x01");
    let mut aad = header.to_vec();
    aad.extend_from_slice(&name);
    let key: [u8; 32] = seq(0xc0, 32).try_into().unwrap();
    let mut object = header.to_vec();
    object.extend(Cipher::new(&key).seal_with_nonce(&nonce(0xd4), &aad, &plaintext));
    let (h, rest) = decode_header(&object, KIND_SNAPSHOT).unwrap();
    assert!(header_is_resealed(h));
    assert_eq!(Cipher::new(&key).open(&aad, rest).unwrap(), plaintext);
    // Without the name (or under another name) the seal does not open.
    assert!(Cipher::new(&key).open(h, rest).is_err());
    check(
        "resealed.json",
        json!({"encryption_key": hex::encode(key), "name": hex::encode(&name),
               "plaintext": hex::encode(&plaintext), "nonce": hex::encode(nonce(0xd4)),
               "object": hex::encode(&object)}),
    );
}

/// Two chained audit records: the second names the first by the BLAKE3 of its stored bytes.
#[test]
fn audit_vectors() {
    use vault::format::KIND_AUDIT;
    use vault::format::audit::{AuditRecord, decode_audit, encode_audit};
    let first = AuditRecord {
        writer: [0x3c; 32],
        seq: 0,
        prev: None,
        time: Timestamp::new(1_767_603_600, 250),
        hostname: "db1".into(),
        username: "backup".into(),
        profile: "db".into(),
        command: "snapshot".into(),
        args: vec![
            "vault".into(),
            "--profile".into(),
            "db".into(),
            "snapshot".into(),
        ],
        exit_code: 0,
        error: String::new(),
        snapshots: vec![[0x5a; 32]],
        bytes: 1_048_576,
        summary: "snapshot 5a5a5a5a saved".into(),
        truncations: vec![],
        acknowledged: vec![],
    };
    let first_object = envelope(KIND_AUDIT, 0xe0, &encode_audit(&first));
    let first_name = vault::crypto::storage_hash(&first_object);
    let second = AuditRecord {
        seq: 1,
        prev: Some(first_name),
        time: Timestamp::new(1_767_607_200, 0),
        command: "prune".into(),
        args: vec!["vault".into(), "prune".into()],
        exit_code: 1,
        error: "the repository is locked".into(),
        snapshots: vec![],
        bytes: 0,
        summary: String::new(),
        truncations: vec![([0x77; 32], 41)],
        acknowledged: vec![([0x78; 32], 3, 5)],
        ..first.clone()
    };
    let second_object = envelope(KIND_AUDIT, 0xe1, &encode_audit(&second));
    if std::env::var_os("VAULT_WRITE_VECTORS").is_none() {
        let v = stored("audit.json");
        for (key, rec) in [("first", &first), ("second", &second)] {
            let plain = unhex(&v[key]["plaintext"]);
            assert_eq!(&decode_audit(&plain).unwrap(), rec);
            let object = unhex(&v[key]["object"]);
            assert_eq!(open_envelope(KIND_AUDIT, &object), plain);
            assert_eq!(
                hex::encode(vault::crypto::storage_hash(&object)),
                v[key]["name"].as_str().unwrap()
            );
        }
        assert_eq!(
            decode_audit(&unhex(&v["second"]["plaintext"]))
                .unwrap()
                .prev,
            Some(vault::crypto::storage_hash(&unhex(&v["first"]["object"])))
        );
    }
    let entry = |n: u8, rec: &AuditRecord, object: &[u8]| {
        json!({
            "nonce": hex::encode(nonce(n)),
            "plaintext": hex::encode(encode_audit(rec)),
            "object": hex::encode(object),
            "name": hex::encode(vault::crypto::storage_hash(object)),
        })
    };
    check(
        "audit.json",
        json!({
            "master_key": hex::encode(&master().to_bytes()[..]),
            "first": entry(0xe0, &first, &first_object),
            "second": entry(0xe1, &second, &second_object),
        }),
    );
}

/// Writes the fuzz seed corpus from the samples above (only when regenerating vectors); in
/// normal runs checks that the stored seeds still decode to the samples.
#[test]
fn fuzz_seeds() {
    use vault::format::hold::{Hold, encode_hold};
    use vault::format::lock::{Lock, encode_lock};
    let lock = Lock {
        exclusive: true,
        hostname: "h".into(),
        username: "u".into(),
        pid: 4242,
        uid: 0,
        created: Timestamp::new(1, 2),
        refreshed: Timestamp::new(3, 4),
        owner: Some(vault::format::lock::LockOwner {
            boot_id: "c3d0016a8a58456e97d804dc7f32a95c".into(),
            pid_ns: 4026531836,
            start_ticks: 39344,
        }),
    };
    let hold = Hold {
        snapshot: SnapshotId([0xab; 32]),
        reason: "case 17".into(),
        created: Timestamp::new(5, 6),
        hostname: "h".into(),
        username: "u".into(),
    };
    let member = |id: u8, inner: u64, raw_length: u64| PackEntry {
        blob_type: BlobType::Data,
        id: BlobId([id; 32]),
        offset: 100,
        length: 80,
        raw_length,
        frame: Some(vault::format::pack::FrameSlot {
            inner,
            frame_raw: 150,
        }),
    };
    let entries = vec![
        PackEntry {
            blob_type: BlobType::Data,
            id: BlobId([1; 32]),
            offset: 0,
            length: 100,
            raw_length: 90,
            frame: None,
        },
        member(2, 0, 100),
        member(3, 100, 50),
    ];
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("config", encode_config(&sample_config())),
        ("pack_header", encode_pack_header(&entries)),
        ("index", encode_index(&sample_index())),
        ("tree", encode_tree(&sample_tree())),
        ("snapshot", encode_snapshot(&sample_snapshot())),
        ("lock", encode_lock(&lock)),
        ("hold", encode_hold(&hold)),
        (
            "audit",
            vault::format::audit::encode_audit(&vault::format::audit::AuditRecord {
                writer: [1; 32],
                seq: 1,
                prev: Some([2; 32]),
                time: Timestamp::new(7, 8),
                command: "snapshot".into(),
                args: vec!["vault".into()],
                snapshots: vec![[3; 32]],
                truncations: vec![([4; 32], 5)],
                acknowledged: vec![([6; 32], 7, 9)],
                ..Default::default()
            }),
        ),
    ];
    for (target, bytes) in seeds {
        seed(target, &bytes);
    }
}

/// Writes (when regenerating) or checks one fuzz seed.
fn seed(target: &str, bytes: &[u8]) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
        .join("sample");
    if std::env::var_os("VAULT_WRITE_VECTORS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
    } else {
        assert_eq!(
            std::fs::read(&path).unwrap(),
            bytes,
            "seed {target} is stale"
        );
    }
}

/// Write-only keys (4.8): an epoch key derives the shared key and the reader key pair; a
/// write-only session seals an envelope to the reader; a write-only key file's ring holds only
/// the shared key and the reader's public key.
#[test]
fn sealed_to_reader_vectors() {
    use vault::crypto::{
        Session, reader_secret_of, sealed_to_reader_key, shared_key_of, x25519_public,
    };
    use vault::format::envelope::{FLAG_SEALED_TO_READER, decode_header};
    let epoch_key: [u8; 32] = seq(0xc0, 32).try_into().unwrap();
    let shared = shared_key_of(&epoch_key);
    assert_eq!(
        shared,
        blake3::derive_key(vault::crypto::SHARED_KEY_CONTEXT, &epoch_key)
    );
    let reader_secret = reader_secret_of(&epoch_key);
    let reader_public = x25519_public(&reader_secret);
    let ephemeral_secret: [u8; 32] = seq(0x33, 32).try_into().unwrap();
    let session = Session::with_secret(ephemeral_secret, &reader_public).unwrap();
    // The reader derives the same key from its secret and the ephemeral public key.
    let dh = x25519_dalek::StaticSecret::from(reader_secret)
        .diffie_hellman(&x25519_dalek::PublicKey::from(session.ephemeral_public));
    let key =
        sealed_to_reader_key(dh.as_bytes(), &session.ephemeral_public, &reader_public).unwrap();
    let plaintext = b"snapshot written by a write-only host".to_vec();
    let mut header = encode_header(KIND_SNAPSHOT);
    header[7] |= FLAG_SEALED_TO_READER;
    let mut object = header.to_vec();
    object.extend_from_slice(&session.ephemeral_public);
    let aad = object.clone();
    object.extend(
        session
            .cipher()
            .seal_with_nonce(&nonce(0xd5), &aad, &plaintext),
    );
    let (h, rest) = decode_header(&object, KIND_SNAPSHOT).unwrap();
    assert_eq!(h[7], 0x02);
    assert_eq!(
        Cipher::new(&key).open(&aad, &rest[32..]).unwrap(),
        plaintext
    );
    // A write-only ring: no epochs, the shared key and the reader's public key.
    let ring = vault::format::key::Ring {
        id_key: seq(32, 32).try_into().unwrap(),
        chunker_seed: seq(64, 32).try_into().unwrap(),
        authority: None,
        epochs: Vec::new(),
        write_only: Some((shared, reader_public)),
    };
    let ring_bytes = vault::format::key::encode_ring(&ring);
    assert_eq!(
        vault::format::key::decode_ring(&ring_bytes, 3).unwrap(),
        ring
    );
    check(
        "sealed_to_reader.json",
        json!({"epoch_key": hex::encode(epoch_key), "shared_key": hex::encode(shared),
               "reader_secret": hex::encode(reader_secret), "reader_public": hex::encode(reader_public),
               "ephemeral_secret": hex::encode(ephemeral_secret),
               "ephemeral_public": hex::encode(session.ephemeral_public),
               "x25519": hex::encode(dh.as_bytes()), "key": hex::encode(&key[..]),
               "nonce": hex::encode(nonce(0xd5)), "plaintext": hex::encode(&plaintext),
               "object": hex::encode(&object), "write_only_ring": hex::encode(&ring_bytes[..])}),
    );
}

/// An archived WAL file (chapter 15): envelope kind `W`, name-bound (flag 0x01), the name's
/// BLAKE3 in the additional data, a stored (uncompressed) payload.
#[test]
fn wal_object_vector() {
    use vault::format::envelope::{FLAG_RESEALED, decode_header};
    use vault::format::wal::{WalObject, decode_wal, encode_wal};
    let name = "000000010000000000000003";
    let plain = encode_wal(&WalObject {
        name: name.into(),
        pushed: Timestamp::new(1_767_600_000, 0),
        raw_length: 8,
        payload: [&[0u8][..], b"WAL data"].concat(),
    });
    let mut header = encode_header(vault::format::KIND_WAL);
    header[7] |= FLAG_RESEALED;
    let mut aad = header.to_vec();
    aad.extend_from_slice(blake3::hash(name.as_bytes()).as_bytes());
    let key: [u8; 32] = seq(0, 32).try_into().unwrap();
    let mut object = header.to_vec();
    object.extend(Cipher::new(&key).seal_with_nonce(&nonce(0xd6), &aad, &plain));
    let (h, rest) = decode_header(&object, vault::format::KIND_WAL).unwrap();
    assert_eq!(h, b"VAULTW\x01\x01");
    let opened = Cipher::new(&key).open(&aad, rest).unwrap();
    assert_eq!(decode_wal(&opened).unwrap().name, name);
    check(
        "wal.json",
        json!({"encryption_key": hex::encode(key), "name": name,
               "plaintext": hex::encode(&plain), "nonce": hex::encode(nonce(0xd6)),
               "object": hex::encode(&object)}),
    );
}

/// XChaCha20-Poly1305 as vault seals it agrees with an independent implementation (OpenSSL's
/// ChaCha20-Poly1305 through Python's `cryptography`, with HChaCha20 written out in Python) at
/// every length around the wide code paths (the AVX-512 and AVX2 backends handle 16 and 8
/// blocks of 64 bytes at a time, then a tail), and each side opens the other's output.
#[test]
fn sealing_matches_an_independent_implementation_at_every_length() {
    const SCRIPT: &str = r#"
import sys
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

def rotl(v, c):
    return ((v << c) & 0xffffffff) | (v >> (32 - c))

def hchacha20(key, nonce16):
    s = [0x61707865, 0x3320646e, 0x79622d32, 0x6b206574]
    s += [int.from_bytes(key[i:i + 4], "little") for i in range(0, 32, 4)]
    s += [int.from_bytes(nonce16[i:i + 4], "little") for i in range(0, 16, 4)]
    def qr(a, b, c, d):
        s[a] = (s[a] + s[b]) & 0xffffffff; s[d] = rotl(s[d] ^ s[a], 16)
        s[c] = (s[c] + s[d]) & 0xffffffff; s[b] = rotl(s[b] ^ s[c], 12)
        s[a] = (s[a] + s[b]) & 0xffffffff; s[d] = rotl(s[d] ^ s[a], 8)
        s[c] = (s[c] + s[d]) & 0xffffffff; s[b] = rotl(s[b] ^ s[c], 7)
    for _ in range(10):
        qr(0, 4, 8, 12); qr(1, 5, 9, 13); qr(2, 6, 10, 14); qr(3, 7, 11, 15)
        qr(0, 5, 10, 15); qr(1, 6, 11, 12); qr(2, 7, 8, 13); qr(3, 4, 9, 14)
    return b"".join(w.to_bytes(4, "little") for w in s[0:4] + s[12:16])

key, nonce, aad = (bytes.fromhex(a) for a in sys.argv[1:4])
aead = ChaCha20Poly1305(hchacha20(key, nonce[:16]))
for n in sys.argv[4:]:
    plain = bytes((i * 7 + 3) % 256 for i in range(int(n)))
    print((nonce + aead.encrypt(b"\0" * 4 + nonce[16:], plain, aad)).hex())
"#;
    let key: [u8; 32] = seq(0x55, 32).try_into().unwrap();
    let n = nonce(0x3c);
    let aad = b"frame aad";
    let lengths = [
        0usize, 1, 63, 64, 65, 511, 512, 513, 1023, 1024, 1025, 1088, 4113, 70_001, 1_048_579,
    ];
    let out = std::process::Command::new(crate::servers::program("python3"))
        .arg("-c")
        .arg(SCRIPT)
        .args([hex::encode(key), hex::encode(n), hex::encode(aad)])
        .args(lengths.iter().map(|l| l.to_string()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: Vec<Vec<u8>> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| hex::decode(l).unwrap())
        .collect();
    assert_eq!(theirs.len(), lengths.len());
    let cipher = Cipher::new(&key);
    for (len, theirs) in lengths.iter().zip(theirs) {
        let plain: Vec<u8> = (0..*len).map(|i| (i * 7 + 3) as u8).collect();
        let ours = cipher.seal_with_nonce(&n, aad, &plain);
        assert!(ours == theirs, "length {len}: the sealed bytes differ");
        assert_eq!(cipher.open(aad, &theirs).unwrap(), plain, "length {len}");
    }
}
