//! Runs the seed corpus in `tests/corpus/` through `fuzz_one` and checks each
//! file's expected outcome from its name: `valid-*`, `partial-*`, `invalid-*`.

use std::path::Path;

use throng_handoff::{decode_frame, fuzz_one};

#[test]
fn seed_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    entries.sort();
    assert!(
        entries.len() >= 15,
        "corpus at {} is missing seeds",
        dir.display()
    );
    for path in entries {
        let name = path.file_name().unwrap().to_str().unwrap();
        let data = std::fs::read(&path).unwrap();
        fuzz_one(&data);
        let outcome = decode_frame(&data);
        let as_expected = match name.split('-').next() {
            Some("valid") => matches!(outcome, Ok(Some(_))),
            Some("partial") => matches!(outcome, Ok(None)),
            Some("invalid") => outcome.is_err(),
            _ => panic!("corpus file {name} needs a valid-/partial-/invalid- prefix"),
        };
        assert!(as_expected, "{name}: {outcome:?}");
    }
}

#[test]
fn every_truncation_of_a_valid_seed_is_partial() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let data = std::fs::read(dir.join("valid-v4-assigned-id")).unwrap();
    for cut in 0..data.len() {
        assert!(
            matches!(decode_frame(&data[..cut]), Ok(None)),
            "cut at {cut}"
        );
        fuzz_one(&data[..cut]);
    }
}
