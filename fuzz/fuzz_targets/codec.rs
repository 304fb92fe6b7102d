//! Fuzz target for the MQTT codec: frames the input with `check`, decodes it
//! under every protocol version, and re-encodes and re-decodes whatever
//! decodes. The body is shared with the stable corpus test in
//! `crates/codec/tests/corpus.rs`; seed with `crates/codec/tests/corpus/`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    throng_codec::fuzz_one(data);
});
