//! vault: a content-addressed, deduplicating, encrypted backup engine.
//!
//! Layers, bottom to top (a layer uses only layers below it):
//!
//! * L0 — [`id`], [`error`], [`progress`]: typed ids, the error type, progress hooks.
//! * L1 — [`format`], [`crypto`], [`compress`], [`chunker`]: pure, deterministic byte
//!   transformations; no I/O, no threads.
//! * L1' — [`backend`] (opaque byte stores over OpenDAL) and [`source`] (the files to back up).
//! * L2 — [`repo`]: where bytes, crypto and storage meet (keys, packs, index, cache, locks).
//! * L3 — [`archiver`], [`restorer`], [`checker`], [`pruner`], [`repairer`]: the engines behind
//!   the commands.
//!
//! The normative description of every byte vault writes is in `format-spec/`.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod anomaly;
pub mod archiver;
pub mod backend;
pub(crate) mod buffers;
pub mod checker;
pub mod chunker;
pub mod compress;
pub mod crypto;
pub mod diff;
pub mod error;
pub mod format;
pub mod id;
pub mod mount;
pub mod progress;
pub mod pruner;
pub mod quote;
pub(crate) mod readahead;
pub mod rekey;
pub mod repairer;
pub mod repo;
pub mod restorer;
pub mod rewriter;
pub mod search;
pub mod source;
pub mod stats;

pub use error::{Error, ErrorKind, ObjectRef, Result};
