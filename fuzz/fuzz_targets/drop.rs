//! Fuzz target: safetally::fuzz::drop (what it reads and why is there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| safetally::fuzz::drop(data));
