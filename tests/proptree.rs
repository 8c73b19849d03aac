//! Property: for generated trees, restore(snapshot(tree)) == tree, metadata included, and a
//! second snapshot of the same tree adds nothing.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use vault::archiver::{SnapshotOptions, Source, snapshot};
use vault::backend::memory::MemoryBackend;
use vault::format::config::ChunkerParams;
use vault::format::key::KdfParams;
use vault::progress::NoProgress;
use vault::repo::lock::LockKind;
use vault::repo::{InitOptions, OpenOptions, Repository};
use vault::restorer::{RestoreOptions, restore};

use crate::support::{compare_trees, set_mtime};

#[derive(Debug, Clone)]
enum Entry {
    File {
        content: Vec<u8>,
        mode: u32,
    },
    Dir {
        children: Vec<(Vec<u8>, Entry)>,
        mode: u32,
    },
    Symlink(Vec<u8>),
}

fn name() -> impl Strategy<Value = Vec<u8>> {
    // Any bytes but '/' and NUL, not "." or "..": UTF-8 and not.
    proptest::collection::vec(
        any::<u8>().prop_filter("no / or NUL", |b| *b != b'/' && *b != 0),
        1..12,
    )
    .prop_filter("not . or ..", |n| n != b"." && n != b"..")
}

fn entry() -> impl Strategy<Value = Entry> {
    let leaf = prop_oneof![
        (
            proptest::collection::vec(any::<u8>(), 0..3000),
            0u32..0o7777
        )
            .prop_map(|(content, mode)| Entry::File {
                content,
                mode: mode | 0o600
            }),
        (1usize..200_000, any::<u8>()).prop_map(|(n, b)| Entry::File {
            content: vec![b; n],
            mode: 0o640
        }),
        name().prop_map(Entry::Symlink),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        (
            proptest::collection::btree_map(name(), inner, 0..5),
            0u32..0o7777,
        )
            .prop_map(|(m, mode)| Entry::Dir {
                children: m.into_iter().collect(),
                mode: mode | 0o700,
            })
    })
}

fn create(path: &Path, e: &Entry, t: &mut i64) {
    match e {
        Entry::File { content, mode } => {
            std::fs::write(path, content).unwrap();
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode)).unwrap();
        }
        Entry::Symlink(target) => {
            std::os::unix::fs::symlink(OsStr::from_bytes(target), path).unwrap()
        }
        Entry::Dir { children, mode } => {
            std::fs::create_dir(path).unwrap();
            for (n, c) in children {
                create(&path.join(OsStr::from_bytes(n)), c, t);
            }
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode)).unwrap();
        }
    }
    *t += 7;
    set_mtime(path, 1_500_000_000 + *t, (*t * 1_000_003) % 1_000_000_000);
}

fn repo() -> Repository {
    let init = InitOptions {
        chunker: ChunkerParams {
            min_size: 4096,
            avg_size: 16384,
            max_size: 65536,
        },
        kdf: KdfParams {
            m_cost_kib: 64,
            t_cost: 1,
            p_cost: 1,
        },
        pack_size: 1 << 20,
        ..InitOptions::default()
    };
    Repository::init(
        Arc::new(MemoryBackend::new()),
        b"pw",
        &init,
        OpenOptions::default(),
    )
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn restore_of_snapshot_is_identical(children in proptest::collection::btree_map(name(), entry(), 1..6)) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let mut t = 0;
        create(&src, &Entry::Dir { children: children.into_iter().collect(), mode: 0o755 }, &mut t);
        let repo = repo();
        let lock = repo.lock(LockKind::Shared, None).unwrap();
        let opts = SnapshotOptions { threads: 2, ..SnapshotOptions::default() };
        let first = snapshot(&repo, Source::Paths(vec![src.clone()]), &opts, &lock, &NoProgress).unwrap();
        let second = snapshot(&repo, Source::Paths(vec![src.clone()]), &opts, &lock, &NoProgress).unwrap();
        prop_assert_eq!(second.snapshot.summary.data_blobs, 0);
        prop_assert_eq!(second.snapshot.summary.bytes_read, 0);
        // The source's own tree is identical (ancestors like /tmp may change meanwhile).
        let t1 = vault::restorer::find_node(&repo, &first.snapshot.tree, &src).unwrap().subtree;
        let t2 = vault::restorer::find_node(&repo, &second.snapshot.tree, &src).unwrap().subtree;
        prop_assert_eq!(t1, t2);
        let target = dir.path().join("out");
        let ropts = RestoreOptions { target: target.clone(), ..RestoreOptions::default() };
        let sum = restore(&repo, &first.id, &ropts, &NoProgress).unwrap();
        prop_assert!(sum.errors.is_empty(), "{:?}", sum.errors);
        let diffs = compare_trees(&src, &target.join(src.strip_prefix("/").unwrap()));
        prop_assert!(diffs.is_empty(), "{}", diffs.join("\n"));
        // One file per batch: every batch is fetched while the walk collects the next one.
        let target = dir.path().join("out-small-batches");
        let ropts = RestoreOptions { target: target.clone(), batch_bytes: 1, ..RestoreOptions::default() };
        let sum = restore(&repo, &first.id, &ropts, &NoProgress).unwrap();
        prop_assert!(sum.errors.is_empty(), "{:?}", sum.errors);
        let diffs = compare_trees(&src, &target.join(src.strip_prefix("/").unwrap()));
        prop_assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    }
}

/// Hard links whose members fall into different batches (the first member's batch is still
/// being fetched when the walk meets the next member, or already settled), beside read-only
/// directories whose metadata must wait for their files: restored identical with batches of
/// one file and with the default batches, and no temporary file is left behind.
#[test]
fn hard_links_and_directory_metadata_across_batches() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let mut t = 0i64;
    for d in 0..6 {
        let sub = src.join(format!("d{d}"));
        std::fs::create_dir_all(&sub).unwrap();
        for f in 0..5 {
            let p = sub.join(format!("f{f}"));
            std::fs::write(&p, format!("{d}/{f}").repeat(1 + 300 * f)).unwrap();
            t += 1;
            set_mtime(&p, 1_600_000_000 + t, 0);
        }
    }
    // Group A: first member early, later members in later directories; group B: all in one.
    std::fs::hard_link(src.join("d0/f1"), src.join("d2/link-a")).unwrap();
    std::fs::hard_link(src.join("d0/f1"), src.join("d5/link-a")).unwrap();
    std::fs::hard_link(src.join("d3/f4"), src.join("d3/link-b")).unwrap();
    for d in 0..6 {
        let sub = src.join(format!("d{d}"));
        set_mtime(&sub, 1_600_001_000 + d, 0);
        if d % 2 == 1 {
            std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o555)).unwrap();
        }
    }
    let repo = repo();
    let lock = repo.lock(LockKind::Shared, None).unwrap();
    let opts = SnapshotOptions {
        threads: 2,
        ..SnapshotOptions::default()
    };
    let snap = snapshot(
        &repo,
        Source::Paths(vec![src.clone()]),
        &opts,
        &lock,
        &NoProgress,
    )
    .unwrap();
    for batch_bytes in [1, 1 << 30] {
        let target = dir.path().join(format!("out-{batch_bytes}"));
        let ropts = RestoreOptions {
            target: target.clone(),
            batch_bytes,
            ..RestoreOptions::default()
        };
        let sum = restore(&repo, &snap.id, &ropts, &NoProgress).unwrap();
        assert!(sum.errors.is_empty(), "{:?}", sum.errors);
        assert_eq!(sum.hardlinks, 3, "batch_bytes {batch_bytes}");
        let restored = target.join(src.strip_prefix("/").unwrap());
        let diffs = compare_trees(&src, &restored);
        assert!(
            diffs.is_empty(),
            "batch_bytes {batch_bytes}: {}",
            diffs.join("\n")
        );
        for d in 0..6 {
            let sub = restored.join(format!("d{d}"));
            let leftovers: Vec<_> = std::fs::read_dir(&sub)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .filter(|n| n.as_bytes().starts_with(b".vault-restore-"))
                .collect();
            assert!(leftovers.is_empty(), "{leftovers:?} in {}", sub.display());
            std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    for d in 0..6 {
        let sub = src.join(format!("d{d}"));
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}
