//! Fuzz target: safetally::fuzz::ledger (what it reads and why is there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| safetally::fuzz::ledger(data));
