//! Fuzz target: safetally::fuzz::config (what it reads and why is there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| safetally::fuzz::config(data));
