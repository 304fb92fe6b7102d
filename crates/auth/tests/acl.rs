//! ACL file semantics: global, per-user, pattern and deny rules; filter coverage.

use throng_auth::{AclFile, AuthError, ClientInfo, ParseErrorKind};

const ACL: &str = "\
# global rules: anonymous clients only (as in Mosquitto)
topic read public/#
topic deny public/secret
topic readwrite shared/chat

user alice
topic sensors/#
topic read config/+
topic deny sensors/private/#

user bob
topic write sensors/bob/+/temp
topic read sensors/+/temp

# patterns apply to every user
pattern readwrite clients/%c/#
pattern read users/%u/inbox
pattern write users/%u/outbox/%c
pattern deny clients/%c/locked
";

fn acl() -> AclFile {
    AclFile::parse(ACL).unwrap()
}

const ANON: ClientInfo<'static> = ClientInfo {
    client_id: "anon-1",
    username: None,
};
const ALICE: ClientInfo<'static> = ClientInfo {
    client_id: "a1",
    username: Some("alice"),
};
const BOB: ClientInfo<'static> = ClientInfo {
    client_id: "b1",
    username: Some("bob"),
};

#[test]
fn publish_table() {
    let acl = acl();
    let cases: &[(ClientInfo<'_>, &str, bool)] = &[
        (ANON, "public/news", false),
        (ANON, "shared/chat", true),
        (ANON, "sensors/x", false),
        (ALICE, "sensors/kitchen/temp", true),
        (ALICE, "sensors", true),
        (ALICE, "sensors/private/key", false),
        (ALICE, "config/a", false),
        // global rules are for anonymous clients only
        (ALICE, "shared/chat", false),
        (BOB, "shared/chat", false),
        (BOB, "sensors/bob/kitchen/temp", true),
        (BOB, "sensors/bob/kitchen/humidity", false),
        (BOB, "sensors/alice/kitchen/temp", false),
        (ALICE, "sensors/+/temp", false),
        (ALICE, "sensors/#", false),
        (ALICE, "", false),
        (ALICE, "clients/a1/status", true),
        (ALICE, "clients/b1/status", false),
        (ALICE, "clients/a1/locked", false),
        (ANON, "clients/anon-1/x", true),
        (ALICE, "users/alice/outbox/a1", true),
        (ALICE, "users/alice/outbox/b1", false),
        (ALICE, "users/alice/inbox", false),
    ];
    for (client, topic, expected) in cases {
        assert_eq!(
            acl.can_publish(client, topic),
            *expected,
            "{client:?} {topic}"
        );
    }
}

#[test]
fn receive_table() {
    let acl = acl();
    let cases: &[(ClientInfo<'_>, &str, bool)] = &[
        (ANON, "public/news", true),
        (ANON, "public", true),
        (ANON, "public/secret", false),
        (ANON, "public/secret/sub", true),
        // global rules are for anonymous clients only
        (ALICE, "public/news", false),
        (BOB, "public/news", false),
        (ALICE, "config/a", true),
        (ALICE, "config/a/b", false),
        (ALICE, "sensors/private", false),
        (BOB, "sensors/alice/temp", true),
        (BOB, "sensors/bob/kitchen/temp", false),
        (ALICE, "users/alice/inbox", true),
        (BOB, "users/alice/inbox", false),
        (ANON, "users//inbox", false),
        (ALICE, "users/bob/outbox/a1", false),
    ];
    for (client, topic, expected) in cases {
        assert_eq!(
            acl.can_receive(client, topic),
            *expected,
            "{client:?} {topic}"
        );
    }
}

#[test]
fn subscribe_requires_coverage() {
    let acl = acl();
    let cases: &[(ClientInfo<'_>, &str, bool)] = &[
        (ANON, "public/#", true),
        (ANON, "public/+", true),
        (ANON, "public/+/x/#", true),
        // a deny narrower than the filter does not block the subscription;
        // can_receive filters those messages at delivery time.
        (ANON, "public/secret/#", true),
        (ANON, "public/secret", false),
        (ANON, "#", false),
        (ANON, "+/news", false),
        (ALICE, "sensors/+/temp", true),
        (ALICE, "sensors/#", true),
        (ALICE, "sensors/private/#", false),
        (ALICE, "sensors/private/+", false),
        (ALICE, "config/+", true),
        (ALICE, "config/#", false),
        (ALICE, "config/x", true),
        (BOB, "sensors/+/temp", true),
        (BOB, "sensors/#", false),
        (BOB, "sensors/+/+", false),
        (ALICE, "clients/a1/#", true),
        (ALICE, "clients/+/status", false),
        (ALICE, "clients/a1/locked", false),
        (ALICE, "sensors/#/x", false),
        (ALICE, "sensors/a+", false),
        (ALICE, "", false),
    ];
    for (client, filter, expected) in cases {
        assert_eq!(
            acl.can_subscribe(client, filter),
            *expected,
            "{client:?} {filter}"
        );
    }
}

#[test]
fn username_pattern_never_matches_anonymous() {
    let acl = AclFile::parse(
        "pattern readwrite u/%u/#\npattern deny d/%u\ntopic d/#\nuser carol\ntopic d/#",
    )
    .unwrap();
    let anon = ClientInfo::new("c", None);
    assert!(!acl.can_publish(&anon, "u/%u/x"));
    assert!(!acl.can_subscribe(&anon, "u/+/x"));
    assert!(
        acl.can_publish(&anon, "d/x"),
        "deny pattern with %u ignored"
    );
    let carol = ClientInfo::new("c", Some("carol"));
    assert!(acl.can_publish(&carol, "u/carol/x"));
    assert!(acl.can_publish(&carol, "d/x"));
    assert!(!acl.can_publish(&carol, "d/carol"));
}

#[test]
fn unsafe_substitutions_fail_closed() {
    let acl = AclFile::parse("pattern readwrite c/%c/#\npattern deny x/%c\ntopic x/#").unwrap();
    for client_id in ["a/b", "+", "#", "a+b"] {
        let client = ClientInfo::new(client_id, None);
        assert!(!acl.can_publish(&client, "c/a/b/z"), "{client_id}");
        assert!(!acl.can_subscribe(&client, "c/+/#"), "{client_id}");
        assert!(
            !acl.can_publish(&client, "x/y"),
            "deny pattern fails closed"
        );
    }
    let ok = ClientInfo::new("percent%u", Some("u"));
    assert!(
        acl.can_publish(&ok, "c/percent%u/z"),
        "values are not re-substituted"
    );
    // `topic x/#` is a global rule, so only an anonymous client holds that grant;
    // a safe `%c` leaves the deny pattern narrow enough not to cover x/y.
    let ok_anon = ClientInfo::new("percent%u", None);
    assert!(acl.can_publish(&ok_anon, "x/y"));
    assert!(!acl.can_publish(&ok_anon, "x/percent%u"));
}

#[test]
fn user_sections_merge_and_unknown_users_get_patterns_only() {
    let acl = AclFile::parse(
        "topic g\nuser a\ntopic one\nuser b\ntopic two\nuser a\ntopic three\npattern p/%u",
    )
    .unwrap();
    let a = ClientInfo::new("1", Some("a"));
    let z = ClientInfo::new("2", Some("z"));
    let anon = ClientInfo::new("3", None);
    assert!(acl.can_publish(&a, "one") && acl.can_publish(&a, "three"));
    assert!(acl.can_publish(&a, "p/a"));
    assert!(!acl.can_publish(&a, "two"));
    assert!(
        !acl.can_publish(&a, "g"),
        "named users do not get global rules"
    );
    assert!(
        acl.can_publish(&z, "p/z"),
        "unknown users still get patterns"
    );
    assert!(!acl.can_publish(&z, "g") && !acl.can_publish(&z, "one"));
    assert!(!acl.can_publish(&z, "two") && !acl.can_publish(&z, "three"));
    assert!(
        acl.can_publish(&anon, "g"),
        "anonymous clients get global rules"
    );
    assert!(!acl.can_publish(&anon, "one") && !acl.can_publish(&anon, "p/"));
}

#[test]
fn parses_access_words_and_spaces() {
    let acl =
        AclFile::parse("  topic   READ   a b/c  \n\ttopic\twrite\tx\nuser  spaced name \ntopic y")
            .unwrap();
    let anon = ClientInfo::new("c", None);
    assert!(acl.can_receive(&anon, "a b/c"));
    assert!(!acl.can_publish(&anon, "a b/c"));
    assert!(acl.can_publish(&anon, "x"));
    assert!(acl.can_publish(&ClientInfo::new("c", Some("spaced name")), "y"));
}

#[test]
fn empty_acl_denies_everything() {
    let acl = AclFile::parse("# nothing\n").unwrap();
    assert!(!acl.can_publish(&ALICE, "a"));
    assert!(!acl.can_subscribe(&ALICE, "#"));
    assert!(!acl.can_receive(&ALICE, "a"));
}

#[test]
fn dollar_topics_need_explicit_rules() {
    let acl = AclFile::parse("topic read #\ntopic read $SYS/broker/#").unwrap();
    assert!(!acl.can_receive(&ANON, "$SYS/x"));
    assert!(!acl.can_subscribe(&ANON, "$SYS/#"));
    assert!(acl.can_subscribe(&ANON, "#"));
    assert!(acl.can_subscribe(&ANON, "$SYS/broker/+"));
}

#[test]
fn parse_errors_name_the_line() {
    let cases = [
        ("user", ParseErrorKind::Missing("user name")),
        ("topic", ParseErrorKind::Missing("topic")),
        ("topic read", ParseErrorKind::Missing("topic")),
        ("pattern deny   ", ParseErrorKind::Missing("topic")),
        (
            "topic read a/#/b",
            ParseErrorKind::InvalidTopic("a/#/b".into(), "`#` must be the whole last level"),
        ),
        (
            "pattern a+",
            ParseErrorKind::InvalidTopic("a+".into(), "`+` must be a whole level"),
        ),
        (
            "topics read a",
            ParseErrorKind::UnknownDirective("topics".into()),
        ),
        ("allow a", ParseErrorKind::UnknownDirective("allow".into())),
    ];
    for (line, kind) in cases {
        let text = format!("topic ok\n# comment\n{line}\n");
        match AclFile::parse(&text) {
            Err(AuthError::Parse {
                path: None,
                line: 3,
                kind: got,
            }) => assert_eq!(got, kind, "{line}"),
            other => panic!("{line}: {other:?}"),
        }
    }
}

#[test]
fn load_reports_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("acl");
    std::fs::write(&path, "topic a\nbogus\n").unwrap();
    let message = AclFile::load(&path).unwrap_err().to_string();
    assert!(
        message.starts_with(&format!("{}: line 2: ", path.display())),
        "{message}"
    );
    std::fs::write(&path, ACL).unwrap();
    assert!(
        AclFile::load(&path)
            .unwrap()
            .can_publish(&ALICE, "sensors/a")
    );
    assert!(matches!(
        AclFile::load(dir.path().join("nope")),
        Err(AuthError::Io { .. })
    ));
}
