//! Runs the fuzz body (`fuzz_one`) over every file of the seed corpus in
//! `tests/corpus/`, which is how CI exercises the fuzz target on stable.
//!
//! The seeds are defined here; regenerate the files after changing them with
//! `cargo test -p throng-codec --test corpus -- --ignored write_corpus`.

use std::path::PathBuf;
use throng_codec::{ProtocolVersion, check, decode, fuzz_one};

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// File name and content of every seed: valid frames for each version,
/// streams of several frames, and invalid or truncated frames.
fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let connect_v311 =
        b"\x10\x1f\x00\x04MQTT\x04\xce\x00\x0a\x00\x02c1\x00\x03w/t\x00\x03bye\x00\x01u\x00\x02pw";
    let connect_v5 = b"\x10\x22\x00\x04MQTT\x05\x34\x00\x00\x03\x21\x00\x14\x00\x01c\x09\x18\x00\x00\x00\x05\x03\x00\x01t\x00\x01w\x00\x02hi";
    let publish_v5 = b"\x32\x16\x00\x03a/b\x00\x0a\x0c\x23\x00\x05\x01\x01\x26\x00\x01k\x00\x01vhi";
    let subscribe_v5 = b"\x82\x09\x00\x01\x02\x0b\x07\x00\x01t\x2d";
    let connack_v5 = b"\x20\x08\x00\x00\x05\x21\x00\x0a\x24\x01";
    let auth_v5 = b"\xf0\x0f\x18\x0d\x15\x00\x05SCRAM\x16\x00\x02\x01\x02";
    let stream_v311 = [
        &b"\x10\x14\x00\x04MQTT\x04\x02\x00\x3c\x00\x08mosq-pub"[..],
        b"\x82\x0e\x00\x0a\x00\x03a/b\x01\x00\x03c/#\x02",
        b"\x3d\x09\x00\x03a/b\x00\x07hi",
        b"\x40\x02\x00\x01\x62\x02\x00\x01\xa2\x07\x00\x02\x00\x03a/b\xc0\x00\xe0\x00",
    ]
    .concat();
    let acks_v311 = b"\x90\x04\x00\x0a\x01\x80\xb0\x02\x00\x02\xd0\x00\x20\x02\x01\x00";
    let acks_v5 = [
        &b"\x50\x09\x00\x02\x87\x05\x1f\x00\x02no\xb0\x04\x00\x02\x00\x11"[..],
        b"\xe0\x07\x00\x05\x11\x00\x00\x00\x00\xe0\x01\x8e",
    ]
    .concat();
    vec![
        (
            "connect-v31",
            b"\x10\x10\x00\x06MQIsdp\x03\x02\x00\x3c\x00\x02c1".to_vec(),
        ),
        ("connect-v311-will", connect_v311.to_vec()),
        ("connect-v5-will-props", connect_v5.to_vec()),
        ("publish-v5-props", publish_v5.to_vec()),
        ("subscribe-v5", subscribe_v5.to_vec()),
        ("connack-v5", connack_v5.to_vec()),
        ("auth-v5", auth_v5.to_vec()),
        ("stream-v311", stream_v311),
        ("acks-v311", acks_v311.to_vec()),
        ("acks-v5", acks_v5),
        (
            "invalid-duplicate-property",
            b"\x30\x0a\x00\x01a\x06\x23\x00\x01\x23\x00\x02".to_vec(),
        ),
        (
            "invalid-subscribe-options",
            b"\x82\x07\x00\x01\x00\x00\x01a\x30".to_vec(),
        ),
        (
            "invalid-connect-flags",
            b"\x10\x0c\x00\x04MQTT\x04\x03\x00\x00\x00\x00".to_vec(),
        ),
        ("invalid-varint", b"\x30\xff\xff\xff\xff\x01".to_vec()),
        ("truncated-connect", connect_v5[..20].to_vec()),
    ]
}

#[test]
fn seeds_pass_the_fuzz_body() {
    for (name, data) in seeds() {
        fuzz_one(&data);
        let on_disk = std::fs::read(corpus_dir().join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}; run the ignored write_corpus test"));
        assert_eq!(
            on_disk, data,
            "{name} is stale; run the ignored write_corpus test"
        );
    }
}

#[test]
fn valid_seeds_decode() {
    for (name, data) in seeds() {
        if name.starts_with("invalid") || name.starts_with("truncated") {
            continue;
        }
        let version = if name.contains("v5") {
            ProtocolVersion::V5
        } else {
            ProtocolVersion::V3_1_1
        };
        let mut rest = &data[..];
        while !rest.is_empty() {
            let len = check(rest, usize::MAX).unwrap().expect("whole frames");
            if let Err(e) = decode(&rest[..len], version) {
                panic!("{name}: {e} in {:02x?}", &rest[..len]);
            }
            rest = &rest[len..];
        }
    }
}

#[test]
fn corpus_files_pass_the_fuzz_body() {
    let mut files = 0;
    for entry in std::fs::read_dir(corpus_dir()).expect("corpus directory") {
        let path = entry.expect("corpus entry").path();
        fuzz_one(&std::fs::read(&path).expect("corpus file"));
        files += 1;
    }
    assert!(files >= 12, "only {files} corpus files");
}

#[test]
#[ignore = "writes tests/corpus/; run by hand after changing the seeds"]
fn write_corpus() {
    std::fs::create_dir_all(corpus_dir()).unwrap();
    for (name, data) in seeds() {
        std::fs::write(corpus_dir().join(name), data).unwrap();
    }
}
