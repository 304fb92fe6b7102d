//! MQTT 5.0 CONNECT/CONNACK: refusal reason codes, the CONNACK properties the server
//! announces or imposes, AUTH after connect, and DISCONNECT 0x8B on shutdown.

mod support;

use std::time::Duration;

use bytes::Bytes;
use throng_codec::{Auth, ConnectProperties, Packet, reason};
use throng_handler::HandlerConfig;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use support::TestServer;
use support::v5::{client, connect_packet, connect_with, expect_disconnect};

/// CONNECT for protocol level 6, which no MQTT version defines.
fn connect_level_6() -> Vec<u8> {
    let mut body = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x06, 0x02, 0x00, 0x1e];
    body.extend_from_slice(&[0x00]); // what would be a v5 property length
    body.extend_from_slice(&[0x00, 0x02, b'l', b'6']);
    let mut frame = vec![0x10, body.len() as u8];
    frame.extend_from_slice(&body);
    frame
}

#[tokio::test]
async fn unknown_protocol_level_gets_v3_connack_0x01_and_close() {
    let server = TestServer::start().await;
    let mut stream = TcpStream::connect(server.mqtt).await.unwrap();
    stream.write_all(&connect_level_6()).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut got))
        .await
        .expect("server neither answered nor closed")
        .ok();
    // The server cannot know how a client of an unknown level parses a CONNACK, so
    // it answers in the 3.1.1 form with return code 0x01 (unacceptable protocol
    // version, MQTT-3.1.2-2) and closes; 5.0 §3.1.2.2 allows this for levels ≠ 5.
    assert_eq!(got, [0x20, 0x02, 0x00, 0x01]);
    assert_eq!(
        server
            .metric("throng_handler_connects_total{result=\"bad_protocol\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn client_id_too_long_is_0x85() {
    let server = TestServer::with_config(HandlerConfig {
        max_client_id_len: 8,
        ..HandlerConfig::default()
    })
    .await;
    let (mut c, ack) = connect_with(server.mqtt, connect_packet("much-too-long-id")).await;
    assert_eq!(ack.code, reason::CLIENT_IDENTIFIER_NOT_VALID);
    assert!(!ack.session_present);
    assert!(c.closed_within(Duration::from_secs(5)).await);
    // Exactly at the limit is fine.
    let (_c, ack) = connect_with(server.mqtt, connect_packet("12345678")).await;
    assert_eq!(ack.code, reason::SUCCESS);
}

#[tokio::test]
async fn bad_password_is_0x86_and_anonymous_off_is_0x87() {
    if !std::path::Path::new("/usr/bin/mosquitto_passwd").exists() {
        eprintln!("skipped: mosquitto_passwd not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    let status = std::process::Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(&file)
        .args(["alice", "s3cret"])
        .status()
        .unwrap();
    assert!(status.success());
    let server = TestServer::with_config(HandlerConfig {
        allow_anonymous: false,
        password_file: Some(file),
        ..HandlerConfig::default()
    })
    .await;
    let login = |user: Option<&str>, password: Option<&'static [u8]>| {
        let mut connect = connect_packet("auth-client");
        connect.username = user.map(String::from);
        connect.password = password.map(Bytes::from_static);
        connect_with(server.mqtt, connect)
    };
    let (mut c, ack) = login(Some("alice"), Some(b"wrong")).await;
    assert_eq!(ack.code, reason::BAD_USER_NAME_OR_PASSWORD);
    assert!(c.closed_within(Duration::from_secs(5)).await);
    let (_, ack) = login(Some("mallory"), Some(b"s3cret")).await;
    assert_eq!(ack.code, reason::BAD_USER_NAME_OR_PASSWORD);
    let (mut c, ack) = login(None, None).await;
    assert_eq!(ack.code, reason::NOT_AUTHORIZED);
    assert!(c.closed_within(Duration::from_secs(5)).await);
    let (_, ack) = login(Some("alice"), Some(b"s3cret")).await;
    assert_eq!(ack.code, reason::SUCCESS);
}

#[tokio::test]
async fn authentication_method_is_0x8c() {
    let server = TestServer::start().await;
    let mut connect = connect_packet("scram");
    connect.properties.authentication_method = Some("SCRAM-SHA-256".into());
    connect.properties.authentication_data = Some(Bytes::from_static(b"n,,n=user"));
    let (mut c, ack) = connect_with(server.mqtt, connect).await;
    assert_eq!(ack.code, reason::BAD_AUTHENTICATION_METHOD);
    assert!(c.closed_within(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn connack_announces_configured_limits() {
    let server = TestServer::with_config(HandlerConfig {
        receive_maximum: 7,
        max_packet_size: 4096,
        topic_alias_maximum: 3,
        ..HandlerConfig::default()
    })
    .await;
    let (_c, ack) = connect_with(server.mqtt, connect_packet("limits")).await;
    assert_eq!(ack.code, reason::SUCCESS);
    assert!(!ack.session_present);
    assert_eq!(ack.properties.receive_maximum, Some(7));
    assert_eq!(ack.properties.maximum_packet_size, Some(4096));
    assert_eq!(ack.properties.topic_alias_maximum, Some(3));
    // Nothing was imposed on this client.
    assert_eq!(ack.properties.assigned_client_identifier, None);
    assert_eq!(ack.properties.server_keep_alive, None);
    assert_eq!(ack.properties.session_expiry_interval, None);
}

#[tokio::test]
async fn empty_client_id_is_assigned_one() {
    let server = TestServer::start().await;
    let (mut a, ack_a) = connect_with(server.mqtt, connect_packet("")).await;
    let (_b, ack_b) = connect_with(server.mqtt, connect_packet("")).await;
    assert_eq!(ack_a.code, reason::SUCCESS);
    let id_a = ack_a
        .properties
        .assigned_client_identifier
        .expect("assigned id");
    let id_b = ack_b
        .properties
        .assigned_client_identifier
        .expect("assigned id");
    assert!(!id_a.is_empty());
    assert_ne!(id_a, id_b, "two anonymous clients got the same id");
    // The first connection was not taken over by the second.
    a.send(&Packet::PingReq).await;
    assert_eq!(a.recv().await, Some(Packet::PingResp));
}

#[tokio::test]
async fn server_keep_alive_lowers_a_long_keepalive() {
    let server = TestServer::with_config(HandlerConfig {
        max_keepalive: 10,
        ..HandlerConfig::default()
    })
    .await;
    let mut connect = connect_packet("ka-long");
    connect.keep_alive = 60;
    let (_c, ack) = connect_with(server.mqtt, connect).await;
    assert_eq!(ack.code, reason::SUCCESS);
    assert_eq!(ack.properties.server_keep_alive, Some(10));
    let mut connect = connect_packet("ka-short");
    connect.keep_alive = 5;
    let (_c, ack) = connect_with(server.mqtt, connect).await;
    assert_eq!(ack.properties.server_keep_alive, None);
}

#[tokio::test]
async fn session_expiry_capped_is_echoed() {
    let server = TestServer::with_config(HandlerConfig {
        max_session_expiry: Duration::from_secs(100),
        ..HandlerConfig::default()
    })
    .await;
    let mut connect = connect_packet("sx-long");
    connect.properties = ConnectProperties {
        session_expiry_interval: Some(1000),
        ..ConnectProperties::default()
    };
    let (_c, ack) = connect_with(server.mqtt, connect).await;
    assert_eq!(ack.properties.session_expiry_interval, Some(100));
    let mut connect = connect_packet("sx-short");
    connect.properties.session_expiry_interval = Some(50);
    let (_c, ack) = connect_with(server.mqtt, connect).await;
    assert_eq!(ack.properties.session_expiry_interval, None);
}

#[tokio::test]
async fn auth_after_connect_is_protocol_error() {
    let server = TestServer::start().await;
    let mut c = client(server.mqtt, "auth-late").await;
    c.send(&Packet::Auth(Auth {
        reason: reason::RE_AUTHENTICATE,
        authentication_method: Some("SCRAM-SHA-1".into()),
        ..Auth::default()
    }))
    .await;
    expect_disconnect(&mut c, reason::PROTOCOL_ERROR).await;
}

#[tokio::test]
async fn shutdown_sends_server_shutting_down() {
    let server = TestServer::start().await;
    let mut c = client(server.mqtt, "bye").await;
    let mut other = client(server.mqtt, "bye-2").await;
    let stop = tokio::spawn(server.shutdown());
    expect_disconnect(&mut c, reason::SERVER_SHUTTING_DOWN).await;
    expect_disconnect(&mut other, reason::SERVER_SHUTTING_DOWN).await;
    tokio::time::timeout(Duration::from_secs(5), stop)
        .await
        .expect("shutdown did not finish")
        .unwrap();
}

#[tokio::test]
async fn connect_larger_than_maximum_packet_size_is_0x95() {
    let server = TestServer::with_config(HandlerConfig {
        max_packet_size: 256,
        ..HandlerConfig::default()
    })
    .await;
    let mut connect = connect_packet("big-connect");
    connect.properties.user_properties = vec![("k".into(), "v".repeat(400))];
    let (mut c, ack) = connect_with(server.mqtt, connect).await;
    assert_eq!(ack.code, reason::PACKET_TOO_LARGE);
    assert!(c.closed_within(Duration::from_secs(5)).await);
}
