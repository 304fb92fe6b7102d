//! Password file parsing, verification and error reporting.

use std::num::NonZeroU32;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest as _, Sha512};
use throng_auth::{AuthError, ParseErrorKind, PasswordFile, hash_password};

/// Written by `mosquitto_passwd -c -b` (2.0, `$7$`, 101 iterations), password "secret".
const MOSQUITTO_PBKDF2: &str = "alice:$7$101$S1J64sldS6TBX8NY$q+rDQt6v8wF0eno3oceNLpo0/zWBM4w20O3T45UPKb0/WwCR02jR2Ddz7jhBC7lnFuOsSr5NjP17LpO5oW+ibQ==";
/// Written by `mosquitto_passwd -H sha512 -c -b`, password "pässword".
const MOSQUITTO_SHA512: &str = "bob:$6$wdjgDjLNhrHGv4I1$cpKmoMtclial+8MrcWhmYa82Nu0Fm80yFdCy9w9E/wFRfqWqP+2p5A82/q3a9fzVEuxpL/6tf0c9UdYV/1bEgA==";

fn parse_error(text: &str) -> (usize, ParseErrorKind) {
    match PasswordFile::parse(text) {
        Err(AuthError::Parse {
            path: None,
            line,
            kind,
        }) => (line, kind),
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn verifies_mosquitto_generated_lines() {
    let file = PasswordFile::parse(&format!(
        "# users\n\n{MOSQUITTO_PBKDF2}\r\n   \n{MOSQUITTO_SHA512}\n"
    ))
    .unwrap();
    assert_eq!(file.len(), 2);
    assert!(file.verify("alice", b"secret"));
    assert!(!file.verify("alice", b"Secret"));
    assert!(!file.verify("alice", b""));
    assert!(file.verify("bob", "pässword".as_bytes()));
    assert!(!file.verify("bob", b"password"));
    assert!(!file.verify("carol", b"secret"));
    assert!(!file.verify("Alice", b"secret"));
}

#[test]
fn sha512_vector_computed_here() {
    let salt = b"0123456789ab";
    let digest = Sha512::new()
        .chain_update(b"correct horse")
        .chain_update(salt)
        .finalize();
    let line = format!("u:$6${}${}", STANDARD.encode(salt), STANDARD.encode(digest));
    let file = PasswordFile::parse(&line).unwrap();
    assert!(file.verify("u", b"correct horse"));
    assert!(!file.verify("u", b"correct horse "));
}

#[test]
fn hash_password_output_is_accepted() {
    let hash = hash_password(b"s3cret", NonZeroU32::new(1000).unwrap());
    assert!(hash.starts_with("$7$1000$"));
    let file = PasswordFile::parse(&format!("dave:{hash}\n")).unwrap();
    assert!(file.verify("dave", b"s3cret"));
    assert!(!file.verify("dave", b"s3cre"));
}

#[test]
fn usernames_may_contain_spaces() {
    let (_, hash) = MOSQUITTO_PBKDF2.split_once(':').unwrap();
    let file = PasswordFile::parse(&format!("name with space:{hash}")).unwrap();
    assert!(file.verify("name with space", b"secret"));
    assert!(file.contains_user("name with space"));
}

#[test]
fn rejects_plaintext_and_names_the_line() {
    let text = format!("# header\n{MOSQUITTO_PBKDF2}\nmallory:hunter2\n");
    assert_eq!(parse_error(&text), (3, ParseErrorKind::PlaintextPassword));
    let message = PasswordFile::parse(&text).unwrap_err().to_string();
    assert!(message.contains("line 3"), "{message}");
    assert!(
        !message.contains("hunter2"),
        "never echo a password: {message}"
    );
}

#[test]
fn rejects_malformed_lines() {
    let (_, pbkdf2) = MOSQUITTO_PBKDF2.split_once(':').unwrap();
    let hash_b64 = pbkdf2.rsplit('$').next().unwrap();
    let cases = [
        ("no separator here", ParseErrorKind::MissingSeparator),
        (":$6$c2FsdA==$aGFzaA==", ParseErrorKind::EmptyUsername),
        ("u:", ParseErrorKind::PlaintextPassword),
        (
            "u:$5$rounds=5000$salt$hash",
            ParseErrorKind::UnknownHashFormat,
        ),
        (
            "u:$2y$10$abcdefghijklmnopqrstuv",
            ParseErrorKind::UnknownHashFormat,
        ),
        ("u:$$", ParseErrorKind::UnknownHashFormat),
        (
            "u:$7$101$c2FsdA==",
            ParseErrorKind::MalformedHash("wrong number of fields"),
        ),
        (
            "u:$6$a$b$c",
            ParseErrorKind::MalformedHash("wrong number of fields"),
        ),
        (
            &format!("u:$7$0$c2FsdA==${hash_b64}"),
            ParseErrorKind::MalformedHash("iterations must be 1..=4294967295"),
        ),
        (
            &format!("u:$7$+5$c2FsdA==${hash_b64}"),
            ParseErrorKind::MalformedHash("iterations is not a number"),
        ),
        (
            &format!("u:$7$101$!!!${hash_b64}"),
            ParseErrorKind::MalformedHash("salt is not valid base64"),
        ),
        (
            &format!("u:$7$101$${hash_b64}"),
            ParseErrorKind::MalformedHash("empty salt"),
        ),
        (
            "u:$7$101$c2FsdA==$aGFzaA==",
            ParseErrorKind::MalformedHash("hash is not 64 bytes"),
        ),
        (
            "u:$6$c2FsdA==$not base64",
            ParseErrorKind::MalformedHash("hash is not valid base64"),
        ),
    ];
    for (line, kind) in cases {
        let text = format!("# first\n\n{line}\n");
        assert_eq!(parse_error(&text), (3, kind), "{line}");
    }
}

#[test]
fn rejects_duplicate_users() {
    let text = format!("{MOSQUITTO_PBKDF2}\n{MOSQUITTO_PBKDF2}\n");
    assert_eq!(
        parse_error(&text),
        (2, ParseErrorKind::DuplicateUser("alice".into()))
    );
}

#[test]
fn load_reports_path_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("passwd");
    std::fs::write(&path, format!("{MOSQUITTO_PBKDF2}\nbob:plain\n")).unwrap();
    let err = PasswordFile::load(&path).unwrap_err();
    let AuthError::Parse {
        path: Some(err_path),
        line,
        kind,
    } = &err
    else {
        panic!("expected a parse error with a path, got {err:?}");
    };
    assert_eq!((err_path, *line), (&path, 2));
    assert_eq!(kind, &ParseErrorKind::PlaintextPassword);
    assert_eq!(
        err.to_string(),
        format!(
            "{}: line 2: plaintext password; hash the file with `mosquitto_passwd -U`",
            path.display()
        )
    );

    let missing = dir.path().join("absent");
    let err = PasswordFile::load(&missing).unwrap_err();
    assert!(matches!(&err, AuthError::Io { path, .. } if path == &missing));

    std::fs::write(&path, format!("{MOSQUITTO_SHA512}\n")).unwrap();
    assert!(
        PasswordFile::load(&path)
            .unwrap()
            .verify("bob", "pässword".as_bytes())
    );
}

#[test]
fn debug_does_not_leak_hashes() {
    let file = PasswordFile::parse(MOSQUITTO_PBKDF2).unwrap();
    assert_eq!(format!("{file:?}"), "PasswordFile { users: 1 }");
}
