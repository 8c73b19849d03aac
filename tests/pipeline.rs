//! Library-level properties of the pipeline: thread count and read method never change what is
//! stored, and `check --verify-data` reads every pack exactly once (counted at the backend).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use vault::Result;
use vault::archiver::{ParentChoice, SnapshotOptions, Source, snapshot};
use vault::backend::memory::MemoryBackend;
use vault::backend::{Backend, ObjectInfo};
use vault::checker::{CheckOptions, Subset, check};
use vault::progress::NoProgress;
use vault::repo::lock::LockKind;
use vault::repo::{OpenOptions, Repository};

use crate::support::{init_repo as init, pseudo_random};

/// A backend that counts whole and ranged reads per path.
#[derive(Debug, Default)]
pub struct Counting {
    pub inner: MemoryBackend,
    pub reads: Mutex<HashMap<String, (u64, u64)>>,
}

impl Counting {
    pub fn take(&self) -> HashMap<String, (u64, u64)> {
        std::mem::take(&mut *self.reads.lock().unwrap())
    }
}

impl Backend for Counting {
    fn location(&self) -> String {
        "counting:".into()
    }
    fn read(&self, path: &str) -> Result<Vec<u8>> {
        self.reads.lock().unwrap().entry(path.into()).or_default().0 += 1;
        self.inner.read(path)
    }
    fn read_range(&self, path: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.reads.lock().unwrap().entry(path.into()).or_default().1 += 1;
        self.inner.read_range(path, offset, len)
    }
    fn write(&self, path: &str, data: &[u8]) -> Result<()> {
        self.inner.write(path, data)
    }
    fn delete(&self, path: &str) -> Result<()> {
        self.inner.delete(path)
    }
    fn list(&self, dir: &str) -> Result<Vec<ObjectInfo>> {
        self.inner.list(dir)
    }
    fn stat(&self, path: &str) -> Result<ObjectInfo> {
        self.inner.stat(path)
    }
}

fn sample_tree(root: &Path) -> std::path::PathBuf {
    let src = root.join("src");
    std::fs::create_dir_all(src.join("many")).unwrap();
    for i in 0..3 {
        std::fs::write(src.join(format!("big{i}")), pseudo_random(3_000_000, i)).unwrap();
    }
    for i in 0..300 {
        std::fs::write(
            src.join("many").join(format!("f{i}")),
            pseudo_random(2_000 + i * 37, 100 + i as u64),
        )
        .unwrap();
    }
    std::fs::write(src.join("text"), "text that compresses ".repeat(100_000)).unwrap();
    // Larger than one read batch: exercises the streaming window.
    std::fs::write(src.join("large"), pseudo_random(12_000_000, 42)).unwrap();
    src
}

#[test]
fn thread_count_and_mmap_do_not_change_ids_or_trees() {
    let dir = tempfile::tempdir().unwrap();
    let src = sample_tree(dir.path());
    let repo = init(Arc::new(MemoryBackend::new()), &dir.path().join("cache"));
    let lock = repo.lock(LockKind::Shared, None).unwrap();
    let run = |threads: usize, mmap: bool| {
        let opts = SnapshotOptions {
            threads,
            mmap,
            force: true,
            parent: ParentChoice::None,
            ..SnapshotOptions::default()
        };
        let out = snapshot(
            &repo,
            Source::Paths(vec![src.clone()]),
            &opts,
            &lock,
            &NoProgress,
        )
        .unwrap();
        let node = vault::restorer::find_node(&repo, &out.snapshot.tree, &src).unwrap();
        (node.subtree.unwrap(), out.snapshot.summary)
    };
    let (one, first) = run(1, false);
    assert!(first.data_blobs > 50);
    for (threads, mmap) in [(4, false), (2, true), (8, true)] {
        let (t, s) = run(threads, mmap);
        assert_eq!(
            t, one,
            "{threads} threads (mmap {mmap}) built a different tree"
        );
        assert_eq!(
            s.data_blobs, 0,
            "{threads} threads (mmap {mmap}) produced new blob ids"
        );
        assert_eq!(s.bytes_read, first.bytes_read);
    }
}

#[test]
fn verify_data_reads_every_pack_exactly_once_and_subsets_partition_them() {
    let dir = tempfile::tempdir().unwrap();
    let src = sample_tree(dir.path());
    let backend = Arc::new(Counting::default());
    let repo = init(backend.clone(), &dir.path().join("cache"));
    {
        let lock = repo.lock(LockKind::Shared, None).unwrap();
        snapshot(
            &repo,
            Source::Paths(vec![src]),
            &SnapshotOptions::default(),
            &lock,
            &NoProgress,
        )
        .unwrap();
    }
    let packs: Vec<String> = backend
        .list("data")
        .unwrap()
        .into_iter()
        .map(|o| o.path)
        .collect();
    assert!(packs.len() >= 8, "want several packs, got {}", packs.len());
    // A fresh session and cache, as a cron job would have.
    let reopen = |name: &str| {
        Repository::open(
            backend.clone(),
            b"pw",
            OpenOptions {
                cache_root: Some(dir.path().join(name)),
                ..Default::default()
            },
        )
        .unwrap()
    };
    backend.take();
    let report = check(
        &reopen("c1"),
        &CheckOptions {
            verify_data: Some(Subset::All),
            threads: 2,
        },
        &NoProgress,
    )
    .unwrap();
    assert!(report.is_ok(), "{:?}", report.errors);
    let reads = backend.take();
    for p in &packs {
        assert_eq!(
            reads.get(p),
            Some(&(1, 0)),
            "pack {p} was not read exactly once"
        );
    }
    assert_eq!(report.stats.packs_read as usize, packs.len());
    // Weekly cron over five runs with a persistent cache: the parts' verification reads
    // together cover every pack once (tree packs are already cached for the walk).
    let weekly = reopen("weekly");
    assert!(
        check(
            &weekly,
            &CheckOptions {
                verify_data: None,
                threads: 2
            },
            &NoProgress
        )
        .unwrap()
        .is_ok()
    );
    backend.take();
    let mut seen: HashMap<String, u64> = HashMap::new();
    for n in 1..=5 {
        let opts = CheckOptions {
            verify_data: Some(Subset::Part { n, m: 5 }),
            threads: 2,
        };
        let r = check(&weekly, &opts, &NoProgress).unwrap();
        assert!(r.is_ok(), "{:?}", r.errors);
        for (path, (full, _)) in backend.take() {
            if path.starts_with("data/") {
                *seen.entry(path).or_default() += full;
            }
        }
    }
    for p in &packs {
        assert_eq!(
            seen.get(p),
            Some(&1),
            "parts 1/5..5/5 read {p} {:?} times",
            seen.get(p)
        );
    }
}

/// Batched index lookups (a restore plans each batch with one) answer exactly what one lookup
/// per blob answers: blobs of both types, in no particular order, across several groups of
/// the batched call, absent ids and the same id twice.
#[test]
fn batched_index_lookups_match_single_lookups() {
    use vault::id::{BlobId, BlobType};
    let r = crate::support::TestRepo::new();
    let src = sample_tree(&r.scratch("data"));
    r.snapshot(&[&src]);
    let repo = r.library();
    let index = repo.index().unwrap();
    let mut all = Vec::new();
    index
        .for_each_blob(|t, id, _| {
            all.push((t, id));
            Ok(())
        })
        .unwrap();
    for t in [BlobType::Data, BlobType::Tree] {
        let mut ids: Vec<BlobId> = all
            .iter()
            .filter(|(bt, _)| *bt == t)
            .map(|(_, id)| *id)
            .collect();
        let stored = ids.len();
        assert!(stored > 0);
        ids.reverse();
        ids.push(BlobId([0xab; 32]));
        ids.push(ids[0]);
        // The other type's ids are absent under this type.
        ids.extend(
            all.iter()
                .filter(|(bt, _)| *bt != t)
                .map(|(_, id)| *id)
                .take(3),
        );
        let got = index.get_many(t, &ids).unwrap();
        assert_eq!(got.len(), ids.len());
        for (id, loc) in ids.iter().zip(&got) {
            assert_eq!(*loc, index.get(t, id).unwrap(), "{t:?} {id}");
        }
        assert_eq!(got.iter().filter(|l| l.is_some()).count(), stored + 1);
    }
    assert!(all.iter().filter(|(t, _)| *t == BlobType::Data).count() > 256);
}
