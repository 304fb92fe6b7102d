//! Files written by the real `mosquitto_passwd` verify with `PasswordFile`.

use std::path::Path;
use std::process::Command;

use throng_auth::PasswordFile;

const TOOL: &str = "/usr/bin/mosquitto_passwd";

fn run(args: &[&str]) {
    let status = Command::new(TOOL)
        .args(args)
        .status()
        .expect("run mosquitto_passwd");
    assert!(
        status.success(),
        "mosquitto_passwd {args:?} failed: {status}"
    );
}

#[test]
fn mosquitto_passwd_files_verify() {
    if !Path::new(TOOL).exists() {
        println!("skipping: {TOOL} not installed (apt-get install -y mosquitto)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    let file = file.to_str().unwrap();
    run(&["-c", "-b", file, "alice", "correct horse"]);
    run(&["-b", file, "bob", "pässwörd:with$odd#chars"]);
    run(&["-H", "sha512", "-b", file, "legacy", "old-style"]);
    run(&["-b", file, "empty", ""]);

    let text = std::fs::read_to_string(file).unwrap();
    assert!(text.contains("alice:$7$"), "{text}");
    assert!(text.contains("legacy:$6$"), "{text}");

    let passwords = PasswordFile::load(file).unwrap();
    assert_eq!(passwords.len(), 4);
    assert!(passwords.verify("alice", b"correct horse"));
    assert!(!passwords.verify("alice", b"correct horse "));
    assert!(passwords.verify("bob", "pässwörd:with$odd#chars".as_bytes()));
    assert!(!passwords.verify("bob", b"passwoerd"));
    assert!(passwords.verify("legacy", b"old-style"));
    assert!(!passwords.verify("legacy", b"new-style"));
    assert!(passwords.verify("empty", b""));
    assert!(!passwords.verify("empty", b"x"));
    assert!(!passwords.verify("nobody", b""));
}

#[test]
fn mosquitto_passwd_upgrades_plaintext_that_we_rejected() {
    if !Path::new(TOOL).exists() {
        println!("skipping: {TOOL} not installed (apt-get install -y mosquitto)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    std::fs::write(&file, "carol:plain-text\n").unwrap();
    assert!(PasswordFile::load(&file).is_err());
    run(&["-U", file.to_str().unwrap()]);
    let passwords = PasswordFile::load(&file).unwrap();
    assert!(passwords.verify("carol", b"plain-text"));
}
