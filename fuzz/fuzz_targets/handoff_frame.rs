//! Fuzz target for the fd hand-off frame parser (what a handler reads from an
//! agent). The body is shared with `crates/handoff/tests/corpus.rs`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    throng_handoff::fuzz_one(data);
});
