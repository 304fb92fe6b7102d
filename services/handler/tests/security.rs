//! Authentication with a Mosquitto password file (made by `mosquitto_passwd`) and
//! authorization with a Mosquitto ACL file: CONNACK 0x04/0x05, SUBACK 0x80 for a
//! refused filter, refused publishes dropped, `%c`/`%u` pattern substitution.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rumqttc::{ConnectReturnCode, QoS, SubscribeReasonCode};
use throng_codec::{Connect, Packet, ProtocolVersion};
use throng_handler::HandlerConfig;

use support::TestServer;
use support::v3::{Mqtt3, connect_packet, options, raw_connect};

const ACL: &str = "\
# anonymous clients
topic read public/#

user alice
topic readwrite alice/#
topic read shared/#
topic write shared/alice

user bob
topic readwrite bob/#
topic read shared/#

pattern readwrite clients/%c/#
pattern read users/%u/inbox
";

/// Writes a password file with `mosquitto_passwd`; `None` when it is not installed.
fn password_file(dir: &Path, users: &[(&str, &str)]) -> Option<std::path::PathBuf> {
    let path = dir.join("passwd");
    for (i, (user, password)) in users.iter().enumerate() {
        let mut cmd = Command::new("mosquitto_passwd");
        cmd.arg("-b");
        if i == 0 {
            cmd.arg("-c");
        }
        match cmd.arg(&path).arg(user).arg(password).status() {
            Ok(status) => assert!(status.success(), "mosquitto_passwd failed"),
            Err(err) => {
                eprintln!("skipping: mosquitto_passwd not available ({err})");
                return None;
            }
        }
    }
    Some(path)
}

async fn login(
    server: &TestServer,
    id: &str,
    user: &str,
    password: &str,
) -> Result<Mqtt3, ConnectReturnCode> {
    let mut opts = options(server.mqtt, id);
    opts.set_credentials(user, password);
    Mqtt3::connect_with(opts).await.map(|(client, _)| client)
}

#[tokio::test]
async fn password_file_from_mosquitto_passwd() {
    let dir = tempfile::tempdir().unwrap();
    let Some(passwd) = password_file(dir.path(), &[("alice", "secret"), ("bob", "hunter2")]) else {
        return;
    };
    let server = TestServer::with_config(HandlerConfig {
        allow_anonymous: false,
        password_file: Some(passwd),
        ..HandlerConfig::default()
    })
    .await;

    let mut alice = login(&server, "a1", "alice", "secret")
        .await
        .expect("alice accepted");
    let mut bob = login(&server, "b1", "bob", "hunter2")
        .await
        .expect("bob accepted");
    bob.subscribe("any/t", QoS::AtLeastOnce).await;
    alice
        .publish("any/t", QoS::AtLeastOnce, false, b"hello")
        .await;
    assert_eq!(&bob.recv().await.payload[..], b"hello");

    for (user, password) in [
        ("alice", "wrong"),
        ("alice", ""),
        ("mallory", "secret"),
        ("bob", "secret"),
    ] {
        let refused = login(&server, "x", user, password).await.err();
        assert_eq!(
            refused,
            Some(ConnectReturnCode::BadUserNamePassword),
            "{user}/{password}"
        );
    }

    // Username without a password flag: bad credentials; no username: not authorized.
    let (mut raw, ack) = raw_connect(
        server.mqtt,
        Packet::Connect(Box::new(Connect {
            protocol: Some(ProtocolVersion::V3_1_1),
            clean_start: true,
            keep_alive: 30,
            client_id: "nopass".into(),
            username: Some("alice".into()),
            ..Connect::default()
        })),
    )
    .await;
    assert_eq!(ack.code, 0x04);
    assert_eq!(raw.recv().await, None);
    let (mut raw, ack) = raw_connect(server.mqtt, connect_packet("anon", true, 30)).await;
    assert_eq!(ack.code, 0x05);
    assert_eq!(raw.recv().await, None);
    assert_eq!(
        server
            .metric("throng_handler_connects_total{result=\"bad_credentials\"}")
            .await,
        5.0
    );
}

#[tokio::test]
async fn password_file_with_anonymous_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let Some(passwd) = password_file(dir.path(), &[("alice", "secret")]) else {
        return;
    };
    let server = TestServer::with_config(HandlerConfig {
        allow_anonymous: true,
        password_file: Some(passwd),
        ..HandlerConfig::default()
    })
    .await;
    let (_raw, ack) = raw_connect(server.mqtt, connect_packet("anon", true, 30)).await;
    assert_eq!(ack.code, 0, "anonymous allowed");
    let refused = login(&server, "x", "alice", "nope").await.err();
    assert_eq!(
        refused,
        Some(ConnectReturnCode::BadUserNamePassword),
        "a named client is still checked"
    );
}

async fn acl_server(dir: &Path) -> TestServer {
    let acl = dir.join("acl");
    std::fs::write(&acl, ACL).unwrap();
    TestServer::with_config(HandlerConfig {
        acl_file: Some(acl),
        ..HandlerConfig::default()
    })
    .await
}

#[tokio::test]
async fn acl_refused_subscription_gets_0x80() {
    let dir = tempfile::tempdir().unwrap();
    let server = acl_server(dir.path()).await;
    let mut alice = login(&server, "alice-dev", "alice", "x").await.unwrap();
    assert_eq!(
        alice.subscribe("bob/#", QoS::AtLeastOnce).await,
        vec![SubscribeReasonCode::Failure]
    );
    assert_eq!(
        alice.subscribe("alice/#", QoS::AtLeastOnce).await,
        vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    // The codes of one SUBACK come back in filter order.
    assert_eq!(
        alice
            .subscribe_many(&[
                ("alice/x", QoS::ExactlyOnce),
                ("bob/x", QoS::AtLeastOnce),
                ("shared/y", QoS::AtMostOnce),
            ])
            .await,
        vec![
            SubscribeReasonCode::Success(QoS::ExactlyOnce),
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Success(QoS::AtMostOnce),
        ]
    );
    let mut anon = Mqtt3::connect(server.mqtt, "anon-sub").await;
    assert_eq!(
        anon.subscribe("public/news", QoS::AtLeastOnce).await,
        vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    assert_eq!(
        anon.subscribe("alice/#", QoS::AtLeastOnce).await,
        vec![SubscribeReasonCode::Failure],
        "rules of user sections never apply to anonymous clients"
    );
    assert_eq!(
        alice.subscribe("public/news", QoS::AtLeastOnce).await,
        vec![SubscribeReasonCode::Failure],
        "anonymous rules never apply to named clients"
    );
    assert_eq!(server.metric("throng_subscriptions").await, 4.0);
}

#[tokio::test]
async fn acl_refused_publish_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let server = acl_server(dir.path()).await;
    let mut alice = login(&server, "alice-1", "alice", "x").await.unwrap();
    let mut bob = login(&server, "bob-1", "bob", "x").await.unwrap();
    bob.subscribe("bob/#", QoS::AtLeastOnce).await;
    bob.subscribe("shared/#", QoS::AtLeastOnce).await;
    alice.subscribe("shared/#", QoS::AtLeastOnce).await;

    // alice may not write bob/…: acknowledged (3.1.1 cannot refuse) but not routed.
    alice
        .publish("bob/inbox", QoS::AtLeastOnce, false, b"no")
        .await;
    alice
        .publish("shared/alice", QoS::AtLeastOnce, false, b"yes")
        .await;
    let got = bob.recv().await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("shared/alice", &b"yes"[..])
    );
    // alice's own read rule covers shared/# too.
    assert_eq!(&alice.recv().await.payload[..], b"yes");

    // bob has read-only access to shared/#.
    bob.publish("shared/bob", QoS::AtLeastOnce, false, b"ro")
        .await;
    alice.assert_silent(Duration::from_millis(500)).await;
    bob.assert_silent(Duration::from_millis(100)).await;
    assert_eq!(
        server
            .metric("throng_messages_dropped_total{reason=\"not_authorized\"}")
            .await,
        2.0
    );
}

#[tokio::test]
async fn acl_pattern_substitution() {
    let dir = tempfile::tempdir().unwrap();
    let server = acl_server(dir.path()).await;
    let mut dev = login(&server, "dev1", "alice", "x").await.unwrap();
    assert_eq!(
        dev.subscribe("clients/dev1/#", QoS::AtLeastOnce).await,
        vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)],
        "%c is the client id"
    );
    assert_eq!(
        dev.subscribe("clients/dev2/#", QoS::AtLeastOnce).await,
        vec![SubscribeReasonCode::Failure]
    );
    assert_eq!(
        dev.subscribe("users/alice/inbox", QoS::AtLeastOnce).await,
        vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)],
        "%u is the username"
    );
    assert_eq!(
        dev.subscribe("users/bob/inbox", QoS::AtLeastOnce).await,
        vec![SubscribeReasonCode::Failure]
    );

    // Publishing: dev2 (bob) may write clients/dev2/… but not clients/dev1/….
    let mut other = login(&server, "dev2", "bob", "x").await.unwrap();
    other
        .publish("clients/dev1/cmd", QoS::AtLeastOnce, false, b"no")
        .await;
    other
        .publish("users/alice/inbox", QoS::AtLeastOnce, false, b"ro")
        .await;
    dev.assert_silent(Duration::from_millis(500)).await;
    dev.publish("clients/dev1/cmd", QoS::AtLeastOnce, false, b"own")
        .await;
    assert_eq!(&dev.recv().await.payload[..], b"own");

    // Anonymous clients get the patterns with their client id, and %u matches nothing.
    let mut anon = Mqtt3::connect(server.mqtt, "dev3").await;
    assert_eq!(
        anon.subscribe("clients/dev3/x", QoS::AtMostOnce).await,
        vec![SubscribeReasonCode::Success(QoS::AtMostOnce)]
    );
}
