//! The `fd` hand-off listener: an agent on the same host passes a device's TCP
//! socket over a Unix socket (SCM_RIGHTS) with the bytes it already read and an
//! assigned client id; the handler serves the device on that very socket.

mod support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use bytes::BytesMut;
use throng_codec::{Packet, ProtocolVersion, QoS};
use throng_handler::HandlerConfig;
use throng_handoff::HandoffMeta;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

use support::v5::{self, assert_quiet, expect_publish, opts, publish_packet, subscribe};
use support::{RawClient, TestServer};

const ASSIGNED: &str = "fd-assigned-1";

/// Plays the agent: accepts a device on its own TCP listener, reads what the
/// device sent until `packets` whole packets are in, and hands the socket over
/// `link`. Returns the device's client end.
async fn hand_off(
    link: &UnixStream,
    packets: &[Packet],
    version: ProtocolVersion,
    conn_id: u64,
    assigned: Option<&str>,
) -> RawClient {
    let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut client = RawClient::connect(front.local_addr().unwrap(), version).await;
    let (mut device, peer) = front.accept().await.unwrap();
    let mut out = Vec::new();
    for packet in packets {
        throng_codec::encode(packet, version, &mut out).unwrap();
    }
    client.send_bytes(&out).await;
    let mut already_read = BytesMut::new();
    while already_read.len() < out.len() {
        device.read_buf(&mut already_read).await.unwrap();
    }
    assert_whole_packets(&already_read, version, packets.len());
    let meta = HandoffMeta {
        conn_id,
        peer,
        local: device.local_addr().unwrap(),
        assigned_client_id: assigned.map(str::to_string),
    };
    // The test's only copy of the device's socket goes with the hand-off.
    throng_handoff::send(link, device.into_std().unwrap(), &meta, &already_read).unwrap();
    client
}

fn assert_whole_packets(bytes: &[u8], version: ProtocolVersion, expected: usize) {
    let mut buf = BytesMut::from(bytes);
    let mut count = 0;
    while throng_codec::read_packet(&mut buf, version, usize::MAX)
        .unwrap()
        .is_some()
    {
        count += 1;
    }
    assert_eq!((count, buf.len()), (expected, 0));
}

fn link(server: &TestServer) -> UnixStream {
    let link = UnixStream::connect(&server.fd_handoff).unwrap();
    link.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    link
}

fn v3_connect(client_id: &str) -> Packet {
    support::v3::connect_packet(client_id, true, 30)
}

fn v5_connect(client_id: &str) -> Packet {
    Packet::Connect(Box::new(v5::connect_packet(client_id)))
}

async fn expect_connack(client: &mut RawClient) -> throng_codec::ConnAck {
    match client.recv().await {
        Some(Packet::ConnAck(ack)) => ack,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

#[tokio::test]
async fn v5_empty_id_gets_the_assigned_id_and_publishes_and_subscribes() {
    let server = TestServer::start().await;
    let link = link(&server);
    let mut device = hand_off(
        &link,
        &[v5_connect("")],
        ProtocolVersion::V5,
        7,
        Some(ASSIGNED),
    )
    .await;
    let ack = expect_connack(&mut device).await;
    assert_eq!(ack.code, 0, "{ack:?}");
    assert_eq!(
        ack.properties.assigned_client_identifier.as_deref(),
        Some(ASSIGNED)
    );

    // Device to device, both ways, with a client on the plain MQTT port.
    let mut direct = v5::client(server.mqtt, "direct").await;
    subscribe(&mut device, 1, "fd/in", opts(QoS::AtLeastOnce), None).await;
    subscribe(&mut direct, 1, "fd/out", opts(QoS::AtMostOnce), None).await;
    direct
        .send(&Packet::Publish(publish_packet(
            "fd/in",
            b"down",
            QoS::AtMostOnce,
            0,
        )))
        .await;
    assert_eq!(&expect_publish(&mut device).await.payload[..], b"down");
    device
        .send(&Packet::Publish(publish_packet(
            "fd/out",
            b"up",
            QoS::AtMostOnce,
            0,
        )))
        .await;
    assert_eq!(&expect_publish(&mut direct).await.payload[..], b"up");
    assert_eq!(
        server
            .metric("throng_handler_connects_total{result=\"accepted\"}")
            .await,
        2.0
    );

    // The handler closes the socket after DISCONNECT and the device sees the close:
    // no copy of the socket was left open on the agent's side.
    device.send(&Packet::Disconnect(Default::default())).await;
    assert!(device.closed_within(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn one_link_carries_many_hand_offs() {
    let server = TestServer::start().await;
    let link = link(&server);
    let mut devices = Vec::new();
    for i in 0..6u64 {
        let (version, connect) = if i % 2 == 0 {
            (ProtocolVersion::V5, v5_connect(&format!("dev-{i}")))
        } else {
            (ProtocolVersion::V3_1_1, v3_connect(&format!("dev-{i}")))
        };
        let assigned = format!("unused-{i}");
        let mut device = hand_off(&link, &[connect], version, i, Some(&assigned)).await;
        let ack = expect_connack(&mut device).await;
        assert_eq!(ack.code, 0, "device {i}: {ack:?}");
        assert_eq!(
            ack.properties.assigned_client_identifier, None,
            "a client's own id wins over the assigned one"
        );
        devices.push(device);
    }
    // A v3 device publishes to a v5 device, both handed off over the same link.
    let (first, rest) = devices.split_at_mut(1);
    subscribe(&mut first[0], 1, "fd/many", opts(QoS::AtMostOnce), None).await;
    rest[0]
        .send(&Packet::Publish(publish_packet(
            "fd/many",
            b"hi",
            QoS::AtMostOnce,
            0,
        )))
        .await;
    assert_eq!(&expect_publish(&mut first[0]).await.payload[..], b"hi");
    assert_eq!(
        server
            .metric("throng_handler_connects_total{result=\"accepted\"}")
            .await,
        6.0
    );
}

#[tokio::test]
async fn v3_empty_id_uses_the_assigned_id_as_session_id() {
    let server = TestServer::start().await;
    let link = link(&server);
    let mut device = hand_off(
        &link,
        &[v3_connect("")],
        ProtocolVersion::V3_1_1,
        1,
        Some(ASSIGNED),
    )
    .await;
    assert_eq!(expect_connack(&mut device).await.code, 0);
    // A direct client with the assigned id takes the session over.
    let _direct = support::v3::Mqtt3::connect(server.mqtt, ASSIGNED).await;
    assert!(
        device.closed_within(Duration::from_secs(3)).await,
        "the handed-off connection's session id must be the assigned one"
    );
}

#[tokio::test]
async fn packets_read_past_connect_are_served() {
    let server = TestServer::start().await;
    let link = link(&server);
    let packets = [v5_connect("eager"), Packet::PingReq];
    let mut device = hand_off(&link, &packets, ProtocolVersion::V5, 1, None).await;
    assert_eq!(expect_connack(&mut device).await.code, 0);
    assert_eq!(device.recv().await, Some(Packet::PingResp));
}

#[tokio::test]
async fn bad_hand_offs_are_counted() {
    let server = TestServer::start().await;
    let mut link = link(&server);
    let bad = "throng_handler_connects_total{result=\"bad_handoff\"}";

    // A well-formed frame with no socket: refused, and the link reads on.
    let meta = HandoffMeta {
        conn_id: 1,
        peer: "203.0.113.7:5000".parse().unwrap(),
        local: "127.0.0.1:1883".parse().unwrap(),
        assigned_client_id: None,
    };
    link.write_all(&throng_handoff::encode_frame(&meta, b"").unwrap())
        .unwrap();
    server.wait_metric(bad, |v| v == 1.0).await;
    let mut device = hand_off(
        &link,
        &[v5_connect("after-bad")],
        ProtocolVersion::V5,
        2,
        None,
    )
    .await;
    assert_eq!(expect_connack(&mut device).await.code, 0);

    // Garbage: refused, and the handler drops the link.
    link.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    server.wait_metric(bad, |v| v == 2.0).await;
    assert_link_closed(&mut link);
    // The device handed off before is unaffected.
    device.send(&Packet::PingReq).await;
    assert_eq!(device.recv().await, Some(Packet::PingResp));
}

#[tokio::test]
async fn hand_offs_wait_for_a_connection_permit() {
    // Like the TCP accept loops (each holds the permit for its next connection),
    // the link waits for a permit before it reads the next hand-off. With the two
    // TCP listeners' permits, three leave room for one handed-off device.
    let server = TestServer::with_config(HandlerConfig {
        max_connections: 3,
        ..HandlerConfig::default()
    })
    .await;
    let link = link(&server);
    let mut first = hand_off(&link, &[v5_connect("first")], ProtocolVersion::V5, 1, None).await;
    assert_eq!(expect_connack(&mut first).await.code, 0);
    let mut second = hand_off(&link, &[v5_connect("second")], ProtocolVersion::V5, 2, None).await;
    assert_quiet(&mut second, Duration::from_millis(300)).await;
    first.send(&Packet::Disconnect(Default::default())).await;
    assert!(first.closed_within(Duration::from_secs(5)).await);
    assert_eq!(expect_connack(&mut second).await.code, 0);
}

#[tokio::test]
async fn shutdown_does_not_wait_for_idle_links() {
    let server = TestServer::start().await;
    let mut link = link(&server);
    let mut device = hand_off(&link, &[v5_connect("idle")], ProtocolVersion::V5, 1, None).await;
    assert_eq!(expect_connack(&mut device).await.code, 0);
    tokio::time::timeout(Duration::from_secs(5), server.shutdown())
        .await
        .expect("shutdown with an idle agent link");
    assert_link_closed(&mut link);
    assert!(device.closed_within(Duration::from_secs(1)).await);
}

/// The handler closed its end (a reset when it left bytes unread).
fn assert_link_closed(link: &mut UnixStream) {
    let mut buf = [0u8; 1];
    match link.read(&mut buf) {
        Ok(0) => {}
        Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("link still open: {other:?}"),
    }
}
