//! Fuzz target: the audit record decoder never panics and re-encodes what it accepts byte for
//! byte.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vault::format::fuzzing::check("audit", data);
});
