//! The internal hand-off listener: a PROXY v2 header from an agent (device address,
//! connection id, assigned client id), then MQTT. The assigned id replaces an empty
//! client id; anything but a header closes the connection.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use throng_codec::{Connect, Packet, ProtocolVersion};
use throng_proxy_protocol::{ProxyHeader, encode_v2};

use support::v3::{Mqtt3, connect_packet};
use support::{RawClient, TestServer};

const ASSIGNED: &str = "agent-assigned-1";

fn header() -> Vec<u8> {
    let src: SocketAddr = "203.0.113.7:51234".parse().unwrap();
    let dst: SocketAddr = "10.0.0.5:1883".parse().unwrap();
    let mut out = Vec::new();
    encode_v2(
        &ProxyHeader::proxied(src, dst)
            .with_conn_id(7)
            .with_assigned_client_id(ASSIGNED),
        &mut out,
    )
    .unwrap();
    out
}

fn v5_connect(client_id: &str) -> Packet {
    Packet::Connect(Box::new(Connect {
        protocol: Some(ProtocolVersion::V5),
        clean_start: true,
        keep_alive: 30,
        client_id: client_id.into(),
        ..Connect::default()
    }))
}

fn encoded(packet: &Packet, version: ProtocolVersion) -> Vec<u8> {
    let mut out = Vec::new();
    throng_codec::encode(packet, version, &mut out).unwrap();
    out
}

#[tokio::test]
async fn v5_empty_client_id_gets_agent_assigned_id() {
    let server = TestServer::start().await;
    let mut raw = RawClient::connect(server.handoff, ProtocolVersion::V5).await;
    raw.send_bytes(&header()).await;
    raw.send(&v5_connect("")).await;
    match raw.recv().await {
        Some(Packet::ConnAck(ack)) => {
            assert_eq!(ack.code, 0);
            assert_eq!(
                ack.properties.assigned_client_identifier.as_deref(),
                Some(ASSIGNED)
            );
        }
        other => panic!("expected CONNACK, got {other:?}"),
    }
    raw.send(&Packet::PingReq).await;
    assert_eq!(raw.recv().await, Some(Packet::PingResp));
    assert_eq!(
        server
            .metric("throng_handler_connects_total{result=\"accepted\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn given_client_id_wins_over_assigned() {
    let server = TestServer::start().await;
    let mut raw = RawClient::connect(server.handoff, ProtocolVersion::V5).await;
    raw.send_bytes(&header()).await;
    raw.send(&v5_connect("own-id")).await;
    match raw.recv().await {
        Some(Packet::ConnAck(ack)) => {
            assert_eq!(ack.code, 0);
            assert_eq!(ack.properties.assigned_client_identifier, None);
        }
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

#[tokio::test]
async fn header_and_connect_in_one_write() {
    let server = TestServer::start().await;
    let mut raw = RawClient::connect(server.handoff, ProtocolVersion::V5).await;
    let mut bytes = header();
    bytes.extend(encoded(&v5_connect(""), ProtocolVersion::V5));
    bytes.extend(encoded(&Packet::PingReq, ProtocolVersion::V5));
    raw.send_bytes(&bytes).await;
    match raw.recv().await {
        Some(Packet::ConnAck(ack)) => {
            assert_eq!(ack.code, 0);
            assert_eq!(
                ack.properties.assigned_client_identifier.as_deref(),
                Some(ASSIGNED)
            );
        }
        other => panic!("expected CONNACK, got {other:?}"),
    }
    assert_eq!(
        raw.recv().await,
        Some(Packet::PingResp),
        "packets after CONNECT in the same write are served"
    );
}

#[tokio::test]
async fn v3_empty_id_uses_assigned_id_as_session_id() {
    let server = TestServer::start().await;
    let mut raw = RawClient::connect(server.handoff, ProtocolVersion::V3_1_1).await;
    let mut bytes = header();
    bytes.extend(encoded(
        &connect_packet("", true, 30),
        ProtocolVersion::V3_1_1,
    ));
    raw.send_bytes(&bytes).await;
    match raw.recv().await {
        Some(Packet::ConnAck(ack)) => assert_eq!(ack.code, 0),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    // A direct client with the assigned id takes the session over.
    let _direct = Mqtt3::connect(server.mqtt, ASSIGNED).await;
    assert!(
        raw.closed_within(Duration::from_secs(3)).await,
        "the hand-off connection's session id must be the assigned one"
    );
}

#[tokio::test]
async fn garbage_instead_of_header_closes() {
    let server = TestServer::start().await;
    let mut raw = RawClient::connect(server.handoff, ProtocolVersion::V5).await;
    raw.send_bytes(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert_eq!(raw.recv().await, None);

    // MQTT without a header is not accepted on the hand-off port either.
    let mut raw = RawClient::connect(server.handoff, ProtocolVersion::V5).await;
    raw.send(&v5_connect("direct")).await;
    assert_eq!(raw.recv().await, None);

    // A broken v2 header: right signature, wrong version nibble.
    let mut bad = header();
    bad[12] = 0x31;
    let mut raw = RawClient::connect(server.handoff, ProtocolVersion::V5).await;
    raw.send_bytes(&bad).await;
    assert_eq!(raw.recv().await, None);

    server
        .wait_metric(
            "throng_handler_connects_total{result=\"bad_handoff\"}",
            |v| v == 3.0,
        )
        .await;
    assert_eq!(
        server
            .metric("throng_handler_connects_total{result=\"accepted\"}")
            .await,
        0.0
    );
}

#[tokio::test]
async fn header_without_connect_times_out() {
    let server = TestServer::with_config(throng_handler::HandlerConfig {
        connect_timeout: Duration::from_millis(300),
        ..Default::default()
    })
    .await;
    let mut raw = RawClient::connect(server.handoff, ProtocolVersion::V5).await;
    assert!(raw.closed_within(Duration::from_secs(2)).await, "no header");
    let mut raw = RawClient::connect(server.handoff, ProtocolVersion::V5).await;
    raw.send_bytes(&header()).await;
    assert!(
        raw.closed_within(Duration::from_secs(2)).await,
        "header, no CONNECT"
    );
}

#[tokio::test]
async fn shutdown_does_not_wait_for_a_missing_header() {
    let server = TestServer::start().await;
    let _idle = RawClient::connect(server.handoff, ProtocolVersion::V5).await;
    let mut half = RawClient::connect(server.handoff, ProtocolVersion::V5).await;
    half.send_bytes(&header()).await;
    server
        .wait_metric("throng_handler_connections", |v| v == 1.0)
        .await;
    // Default connect timeout and grace are 10 s each; shutdown must not wait for them.
    tokio::time::timeout(Duration::from_secs(3), server.shutdown())
        .await
        .expect("shutdown waited for sockets still in the header or CONNECT phase");
}
