//! Integration tests: one binary, one module per concern (faster to build than many binaries).

mod support;

mod appendonly;
mod backends;
mod cli_basics;
mod corpus;
mod corruption;
mod explore;
mod failclosed;
mod frames;
mod ops;
pub mod pg;
mod pipeline;
mod pitr;
mod proptree;
mod prune;
mod rekey;
mod roundtrip;
mod security;
mod servers;
mod strict;
mod torture;
mod vectors;
mod writeonly;
