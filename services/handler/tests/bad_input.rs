//! Hostile and broken clients: packets before CONNECT, a second CONNECT, malformed
//! frames, oversized packets, a missing CONNECT, a subscription flood, and garbage;
//! each ends only the offending connection.

mod support;

use std::time::Duration;

use rumqttc::QoS;
use throng_codec::{Packet, Subscribe, SubscriptionOptions};
use throng_handler::HandlerConfig;

use support::v3::{Mqtt3, connect_bytes, connect_packet, raw_v3};
use support::{RawClient, TestServer};

const CLOSE: Duration = Duration::from_secs(3);

/// A raw v3.1.1 client that sends `bytes` after a good CONNECT must be cut off.
async fn assert_closes_after(server: &TestServer, name: &str, bytes: &[u8]) {
    let mut raw = raw_v3(server.mqtt, name).await;
    raw.send_bytes(bytes).await;
    assert!(
        raw.closed_within(CLOSE).await,
        "{name}: still open after {bytes:02x?}"
    );
}

#[tokio::test]
async fn publish_before_connect_closes() {
    let server = TestServer::start().await;
    let mut raw = RawClient::connect(server.mqtt, throng_codec::ProtocolVersion::V3_1_1).await;
    raw.send_bytes(&[0x30, 0x05, 0x00, 0x01, b't', b'h', b'i'])
        .await;
    assert_eq!(raw.recv().await, None, "no CONNACK, just a close");
    let mut raw = RawClient::connect(server.mqtt, throng_codec::ProtocolVersion::V3_1_1).await;
    raw.send_bytes(&[0xC0, 0x00]).await;
    assert_eq!(raw.recv().await, None, "PINGREQ before CONNECT closes too");
    assert_eq!(
        server
            .metric("throng_handler_connects_total{result=\"bad_first_packet\"}")
            .await,
        2.0
    );
}

#[tokio::test]
async fn second_connect_closes() {
    let server = TestServer::start().await;
    let mut raw = raw_v3(server.mqtt, "twice").await;
    raw.send(&connect_packet("twice", true, 30)).await;
    assert_eq!(
        raw.recv().await,
        None,
        "a second CONNECT is a protocol violation"
    );
}

#[tokio::test]
async fn malformed_packets_close() {
    let server = TestServer::start().await;
    let cases: &[(&str, &[u8])] = &[
        (
            "remaining-length-5-bytes",
            &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
        ),
        (
            "subscribe-reserved-flags",
            &[0x80, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00],
        ),
        ("pubrel-reserved-flags", &[0x60, 0x02, 0x00, 0x01]),
        ("pingreq-flags", &[0xC1, 0x00]),
        ("pingreq-with-body", &[0xC0, 0x01, 0x00]),
        ("publish-qos3", &[0x36, 0x05, 0x00, 0x01, b't', 0x00, 0x01]),
        (
            "invalid-utf8-topic",
            &[0x30, 0x05, 0x00, 0x03, 0xFF, 0xFE, 0xFD],
        ),
        ("nul-in-topic", &[0x30, 0x05, 0x00, 0x03, b'a', 0x00, b'b']),
        ("plus-in-topic", &[0x30, 0x05, 0x00, 0x03, b'a', b'/', b'+']),
        ("hash-in-topic", &[0x30, 0x05, 0x00, 0x03, b'a', b'/', b'#']),
        ("empty-topic", &[0x30, 0x03, 0x00, 0x00, b'x']),
        (
            "qos1-packet-id-0",
            &[0x32, 0x06, 0x00, 0x01, b't', 0x00, 0x00, b'x'],
        ),
        ("subscribe-no-filters", &[0x82, 0x02, 0x00, 0x01]),
        (
            "subscribe-qos3",
            &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x03],
        ),
        ("unsubscribe-no-filters", &[0xA2, 0x02, 0x00, 0x01]),
        ("connack-from-client", &[0x20, 0x02, 0x00, 0x00]),
        ("reserved-type-0", &[0x00, 0x00]),
        ("reserved-type-15-in-v3", &[0xF0, 0x00]),
        ("length-past-body-short", &[0x30, 0x02, 0x00, 0x05]),
    ];
    for (name, bytes) in cases {
        assert_closes_after(&server, name, bytes).await;
    }
    // The server is fine afterwards.
    let mut ok = raw_v3(server.mqtt, "after-malformed").await;
    ok.send(&Packet::PingReq).await;
    assert_eq!(ok.recv().await, Some(Packet::PingResp));
}

#[tokio::test]
async fn invalid_filter_is_never_granted() {
    let server = TestServer::start().await;
    for filter in ["a#", "a/b+", "#/a", ""] {
        let mut raw = raw_v3(server.mqtt, "bad-filter").await;
        raw.send(&Packet::Subscribe(Subscribe {
            packet_id: 4,
            filters: vec![(filter.into(), SubscriptionOptions::default())],
            ..Subscribe::default()
        }))
        .await;
        // 3.1.1 allows either answer: a close (protocol violation) or SUBACK 0x80.
        match raw.recv().await {
            None => {}
            Some(Packet::SubAck(ack)) => assert_eq!(ack.codes, vec![0x80], "{filter:?}"),
            Some(other) => panic!("{filter:?}: unexpected {other:?}"),
        }
    }
    assert_eq!(server.metric("throng_subscriptions").await, 0.0);
}

#[tokio::test]
async fn malformed_connect_closes() {
    let server = TestServer::start().await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("bad-protocol-name", connect_bytes(b"MQTX", 4, 0x02, "c")),
        (
            "reserved-connect-flag",
            connect_bytes(b"MQTT", 4, 0x03, "c"),
        ),
        (
            "password-without-username",
            connect_bytes(b"MQTT", 4, 0x42, "c"),
        ),
        (
            "will-qos-without-will",
            connect_bytes(b"MQTT", 4, 0x0A, "c"),
        ),
        ("truncated", vec![0x10, 0x04, 0x00, 0x04, b'M', b'Q']),
    ];
    for (name, bytes) in cases {
        let mut raw = RawClient::connect(server.mqtt, throng_codec::ProtocolVersion::V3_1_1).await;
        raw.send_bytes(&bytes).await;
        loop {
            match raw.recv().await {
                None => break,
                Some(Packet::ConnAck(ack)) => assert_ne!(ack.code, 0, "{name} accepted"),
                Some(other) => panic!("{name}: unexpected {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn oversized_packets_close() {
    let server = TestServer::with_config(HandlerConfig {
        max_packet_size: 1024,
        ..HandlerConfig::default()
    })
    .await;
    let mut watcher = Mqtt3::connect(server.mqtt, "big-watch").await;
    watcher.subscribe("big", QoS::AtMostOnce).await;

    let mut frame = vec![0x30, 0xD0, 0x0F, 0x00, 0x03, b'b', b'i', b'g'];
    frame.resize(3 + 2000, b'x');
    assert_closes_after(&server, "oversized-publish", &frame).await;
    watcher.assert_silent(Duration::from_millis(300)).await;

    // Only the header announces the size: the close must not wait for the body.
    assert_closes_after(&server, "oversized-header-only", &frame[..8]).await;

    // An oversized CONNECT is refused too.
    let mut raw = RawClient::connect(server.mqtt, throng_codec::ProtocolVersion::V3_1_1).await;
    raw.send_bytes(&[0x10, 0xD0, 0x0F, 0x00, 0x04, b'M', b'Q', b'T', b'T'])
        .await;
    assert!(raw.closed_within(CLOSE).await);

    // A packet just under the limit is fine.
    let mut ok = raw_v3(server.mqtt, "fits").await;
    let mut fits = vec![0x30, 0xF3, 0x07, 0x00, 0x03, b'b', b'i', b'g'];
    fits.resize(3 + 1011, b'y');
    assert_eq!(fits.len(), 1014);
    ok.send_bytes(&fits).await;
    let got = watcher.recv().await;
    assert_eq!(got.payload.len(), 1006);
}

#[tokio::test]
async fn connect_timeout_closes_and_counts() {
    let server = TestServer::with_config(HandlerConfig {
        connect_timeout: Duration::from_millis(300),
        ..HandlerConfig::default()
    })
    .await;
    let mut silent = RawClient::connect(server.mqtt, throng_codec::ProtocolVersion::V3_1_1).await;
    let mut partial = RawClient::connect(server.mqtt, throng_codec::ProtocolVersion::V3_1_1).await;
    partial.send_bytes(&[0x10, 0x10, 0x00]).await;
    assert!(
        silent.closed_within(Duration::from_secs(2)).await,
        "no CONNECT: must close"
    );
    assert!(
        partial.closed_within(Duration::from_secs(2)).await,
        "half a CONNECT: must close"
    );
    server
        .wait_metric("throng_handler_connects_total{result=\"timeout\"}", |v| {
            v == 2.0
        })
        .await;
    server
        .wait_metric("throng_handler_connections", |v| v == 0.0)
        .await;
}

#[tokio::test]
async fn subscription_flood_hits_quota() {
    let server = TestServer::with_config(HandlerConfig {
        max_subscriptions_per_session: 100,
        ..HandlerConfig::default()
    })
    .await;
    let mut flooder = raw_v3(server.mqtt, "flooder").await;
    let mut bytes = Vec::new();
    for packet in 0..20u16 {
        let filters = (0..100)
            .map(|i| {
                (
                    format!("flood/{packet}/{i}"),
                    SubscriptionOptions {
                        qos: throng_codec::QoS::AtLeastOnce,
                        ..Default::default()
                    },
                )
            })
            .collect();
        let subscribe = Packet::Subscribe(Subscribe {
            packet_id: packet + 1,
            filters,
            ..Subscribe::default()
        });
        throng_codec::encode(
            &subscribe,
            throng_codec::ProtocolVersion::V3_1_1,
            &mut bytes,
        )
        .unwrap();
    }
    flooder.send_bytes(&bytes).await;
    let (mut granted, mut refused) = (0, 0);
    for packet in 0..20u16 {
        match flooder.recv().await {
            Some(Packet::SubAck(ack)) => {
                assert_eq!(ack.packet_id, packet + 1);
                assert_eq!(ack.codes.len(), 100);
                for code in ack.codes {
                    match code {
                        1 => granted += 1,
                        0x80 => refused += 1,
                        other => panic!("unexpected SUBACK code {other:#x}"),
                    }
                }
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }
    assert_eq!((granted, refused), (100, 1900));
    assert_eq!(server.metric("throng_subscriptions").await, 100.0);

    // The flooder's granted subscriptions work, and others are served normally.
    let mut sub = Mqtt3::connect(server.mqtt, "calm-sub").await;
    sub.subscribe("calm/t", QoS::AtLeastOnce).await;
    let mut publisher = Mqtt3::connect(server.mqtt, "calm-pub").await;
    publisher
        .publish("calm/t", QoS::AtLeastOnce, false, b"ok")
        .await;
    assert_eq!(&sub.recv().await.payload[..], b"ok");
    publisher
        .publish("flood/0/0", QoS::AtMostOnce, false, b"f")
        .await;
    match flooder.recv().await {
        Some(Packet::Publish(p)) => assert_eq!(p.topic, "flood/0/0"),
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

#[tokio::test]
async fn garbage_does_not_disturb_other_clients() {
    let server = TestServer::start().await;
    let mut sub = Mqtt3::connect(server.mqtt, "bystander").await;
    sub.subscribe("calm/#", QoS::AtLeastOnce).await;
    let mut publisher = Mqtt3::connect(server.mqtt, "steady").await;

    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut garbage = vec![0u8; 4096];
    for byte in garbage.iter_mut() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        *byte = seed as u8;
    }
    for round in 0..5 {
        // Garbage instead of CONNECT, and garbage after a good CONNECT.
        let mut raw = RawClient::connect(server.mqtt, throng_codec::ProtocolVersion::V3_1_1).await;
        raw.send_bytes(&garbage[round * 100..]).await;
        assert!(raw.closed_within(CLOSE).await);
        // After CONNECT the garbage may announce a long frame the server waits for;
        // the noisy client then just goes away.
        let mut raw = raw_v3(server.mqtt, &format!("noisy-{round}")).await;
        let _ = raw.stream.try_write(&garbage[round * 7..]);
        let _ = raw.closed_within(Duration::from_millis(100)).await;
        drop(raw);

        publisher
            .publish(
                "calm/t",
                QoS::AtLeastOnce,
                false,
                format!("{round}").as_bytes(),
            )
            .await;
        assert_eq!(sub.recv().await.payload, format!("{round}").as_bytes());
    }
    server
        .wait_metric("throng_handler_connections", |v| v == 2.0)
        .await;
}
