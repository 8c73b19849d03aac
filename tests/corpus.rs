//! Replays the fuzz targets' seed corpus (`fuzz/corpus/<target>/`) through the same invariant
//! checks the fuzzers run, plus deterministic mutations of every seed (truncations and bit
//! flips), so CI covers every decoder without a fuzzer.

use std::path::PathBuf;

use vault::format::fuzzing::{TARGETS, check};

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

#[test]
fn every_target_has_seeds_and_they_pass() {
    for target in TARGETS {
        let dir = corpus_dir(target);
        let seeds: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        assert!(!seeds.is_empty(), "no seeds for {target}");
        for seed in seeds {
            let data = std::fs::read(&seed).unwrap();
            check(target, &data);
            for cut in 0..data.len().min(200) {
                check(target, &data[..cut]);
            }
            for bit in (0..data.len() * 8).step_by(7) {
                let mut m = data.clone();
                m[bit / 8] ^= 1 << (bit % 8);
                check(target, &m);
            }
        }
    }
}

#[test]
fn seeds_are_accepted_by_their_decoder() {
    // A seed that its decoder rejects exercises nothing beyond the first check.
    use vault::format::*;
    let accepted = |target: &str, d: &[u8]| -> bool {
        match target {
            "config" => config::decode_config(d).is_ok(),
            "key_file" => key::decode_key_file(d).is_ok(),
            "pack_header" => pack::decode_pack_header(d).is_ok(),
            "pack_trailer" => {
                d.len() >= 4 && pack::decode_trailer(&d[d.len() - 4..], d.len() as u64).is_ok()
            }
            "index" => index::decode_index(d).is_ok(),
            "tree" => tree::decode_tree(d).is_ok(),
            "snapshot" => snapshot::decode_snapshot(d).is_ok(),
            "lock" => lock::decode_lock(d, 1).is_ok() || lock::decode_lock(d, 2).is_ok(),
            "hold" => hold::decode_hold(d).is_ok(),
            "audit" => vault::format::audit::decode_audit(d).is_ok(),
            _ => false,
        }
    };
    for target in TARGETS {
        let any = std::fs::read_dir(corpus_dir(target))
            .unwrap()
            .any(|e| accepted(target, &std::fs::read(e.unwrap().path()).unwrap()));
        assert!(any, "no seed of {target} decodes");
    }
}
