//! Content-defined chunking with FastCDC (`format-spec/10-chunking.md`).
//!
//! Cut points are found with the FastCDC 2020 algorithm (normalisation level 1) from the
//! `fastcdc` crate, driven with a gear table derived from the repository's secret chunker seed
//! rather than the public default table, so chunk boundaries (and therefore chunk sizes) do not
//! reveal which known files a repository holds. Pure: works on byte slices; reading the source is
//! the caller's job.

use fastcdc::v2020::{Normalization, cut_gear, select_masks};

use crate::format::config::ChunkerParams;

/// Finds chunk boundaries for one repository's parameters and gear table.
#[derive(Clone)]
pub struct Chunker {
    min: usize,
    avg: usize,
    max: usize,
    mask_s: u64,
    mask_l: u64,
    gear: Box<[u64; 256]>,
    gear_ls: Box<[u64; 256]>,
}

impl std::fmt::Debug for Chunker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Chunker({}/{}/{})", self.min, self.avg, self.max)
    }
}

impl Chunker {
    /// A chunker for validated `params` and a 256-entry gear table.
    pub fn new(params: ChunkerParams, gear: Box<[u64; 256]>) -> Self {
        let (mask_s, mask_l) = select_masks(params.avg_size as usize, Normalization::Level1);
        let mut gear_ls = Box::new([0u64; 256]);
        for (d, s) in gear_ls.iter_mut().zip(gear.iter()) {
            *d = s << 1;
        }
        Self {
            min: params.min_size as usize,
            avg: params.avg_size as usize,
            max: params.max_size as usize,
            mask_s,
            mask_l,
            gear,
            gear_ls,
        }
    }

    /// The largest chunk this chunker produces.
    pub fn max_size(&self) -> usize {
        self.max
    }

    /// The strict and relaxed masks in use (published in the spec's vectors).
    pub fn masks(&self) -> (u64, u64) {
        (self.mask_s, self.mask_l)
    }

    /// Length of the chunk that starts at `data[0]`. `eof` says that `data` holds everything
    /// left of the stream. Returns `None` when more input is needed to decide (fewer than
    /// `max_size` bytes buffered and not at the end).
    pub fn next_cut(&self, data: &[u8], eof: bool) -> Option<usize> {
        if data.is_empty() {
            return None;
        }
        if !eof && data.len() < self.max {
            return None;
        }
        let (_, len) = cut_gear(
            data,
            self.min,
            self.avg,
            self.max,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
            &self.gear[..],
            &self.gear_ls[..],
        );
        Some(len)
    }

    /// Splits a complete in-memory input into chunk lengths.
    pub fn cut_all(&self, mut data: &[u8]) -> Vec<usize> {
        let mut out = Vec::new();
        while let Some(n) = self.next_cut(data, true) {
            out.push(n);
            data = &data[n..];
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chunker(seed: u8) -> Chunker {
        let params = ChunkerParams {
            min_size: 2048,
            avg_size: 8192,
            max_size: 32768,
        };
        Chunker::new(params, crate::crypto::gear_table(&[seed; 32]))
    }

    fn pseudo_random(len: usize, seed: u8) -> Vec<u8> {
        let mut out = vec![0u8; len];
        blake3::Hasher::new_keyed(&[seed; 32])
            .finalize_xof()
            .fill(&mut out);
        out
    }

    #[test]
    fn sizes_respect_bounds_and_average() {
        let c = chunker(1);
        let data = pseudo_random(2 << 20, 9);
        let cuts = c.cut_all(&data);
        assert_eq!(cuts.iter().sum::<usize>(), data.len());
        for &n in &cuts[..cuts.len() - 1] {
            assert!((2048..=32768).contains(&n), "chunk of {n}");
        }
        let avg = data.len() / cuts.len();
        assert!((4096..16384).contains(&avg), "average {avg}");
    }

    #[test]
    fn seed_changes_boundaries() {
        let data = pseudo_random(1 << 20, 3);
        assert_ne!(chunker(1).cut_all(&data), chunker(2).cut_all(&data));
    }

    #[test]
    fn boundaries_resynchronise_after_an_insertion() {
        let c = chunker(1);
        let data = pseudo_random(1 << 20, 4);
        let mut edited = data[..1000].to_vec();
        edited.extend_from_slice(b"inserted bytes");
        edited.extend_from_slice(&data[1000..]);
        let ends = |cuts: Vec<usize>| {
            let mut pos = 0;
            cuts.into_iter()
                .map(|n| {
                    pos += n;
                    pos
                })
                .collect::<std::collections::HashSet<_>>()
        };
        let a = ends(c.cut_all(&data));
        let b: std::collections::HashSet<usize> = ends(c.cut_all(&edited))
            .into_iter()
            .map(|e| e - 14)
            .collect();
        let shared = a.intersection(&b).count();
        assert!(
            shared + 3 >= a.len(),
            "only {shared} of {} boundaries survived",
            a.len()
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn chunks_concatenate_to_the_input(len in 0usize..200_000, seed in any::<u8>()) {
            let c = chunker(seed);
            let data = pseudo_random(len, seed);
            let cuts = c.cut_all(&data);
            prop_assert_eq!(cuts.iter().sum::<usize>(), len);
            prop_assert!(cuts.iter().all(|&n| n > 0 && n <= 32768));
        }

        #[test]
        fn streaming_equals_whole_input(len in 0usize..150_000, window in 32768usize..70_000) {
            // Feeding the input in windows of at least max_size gives the same cuts.
            let c = chunker(5);
            let data = pseudo_random(len, 1);
            let whole = c.cut_all(&data);
            let mut got = Vec::new();
            let mut pos = 0;
            while pos < len {
                let end = (pos + window).min(len);
                let eof = end == len;
                match c.next_cut(&data[pos..end], eof) {
                    Some(n) => { got.push(n); pos += n; }
                    None => unreachable!("window is at least max_size"),
                }
            }
            prop_assert_eq!(got, whole);
        }
    }
}
