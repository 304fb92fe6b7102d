//! Fuzz target for the PROXY protocol v1/v2 parser (agent and hand-off listener
//! input). The body is shared with the stable corpus test in
//! `crates/proxy-protocol/tests/corpus.rs`; seed with `crates/proxy-protocol/tests/corpus/`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    throng_proxy_protocol::fuzz_one(data);
});
