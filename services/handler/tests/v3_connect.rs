//! MQTT 3.1/3.1.1 CONNECT: CONNACK return codes, the session present flag, keepalive
//! enforcement and limits, and session takeover.

mod support;

use std::time::Duration;

use rumqttc::{ConnectReturnCode, QoS};
use throng_codec::{Connect, Packet, ProtocolVersion, Publish, Subscribe, SubscriptionOptions};
use throng_handler::HandlerConfig;

use support::v3::{Mqtt3, connect_bytes, connect_packet, options, raw_connect};
use support::{RawClient, TestServer};

#[tokio::test]
async fn unsupported_protocol_level_gets_0x01_and_close() {
    let server = TestServer::start().await;
    let mut raw = RawClient::connect(server.mqtt, ProtocolVersion::V3_1_1).await;
    raw.send_bytes(&connect_bytes(b"MQTT", 6, 0x02, "level6"))
        .await;
    match raw.recv().await {
        Some(Packet::ConnAck(ack)) => {
            assert_eq!(ack.code, 0x01);
            assert!(!ack.session_present);
        }
        other => panic!("expected CONNACK 0x01, got {other:?}"),
    }
    assert_eq!(
        raw.recv().await,
        None,
        "connection must close after refusal"
    );
    assert_eq!(
        server
            .metric("throng_handler_connects_total{result=\"bad_protocol\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn empty_client_id_needs_clean_session() {
    let server = TestServer::start().await;
    let (mut raw, ack) = raw_connect(server.mqtt, connect_packet("", false, 30)).await;
    assert_eq!(
        ack.code, 0x02,
        "empty id with clean session 0: identifier rejected"
    );
    assert_eq!(raw.recv().await, None);

    let (mut raw, ack) = raw_connect(server.mqtt, connect_packet("", true, 30)).await;
    assert_eq!(ack.code, 0x00, "empty id with clean session 1 is accepted");
    assert!(!ack.session_present);
    raw.send(&Packet::PingReq).await;
    assert_eq!(raw.recv().await, Some(Packet::PingResp));
}

#[tokio::test]
async fn anonymous_refused_with_0x05_when_disallowed() {
    let server = TestServer::with_config(HandlerConfig {
        allow_anonymous: false,
        ..HandlerConfig::default()
    })
    .await;
    let (mut raw, ack) = raw_connect(server.mqtt, connect_packet("anon", true, 30)).await;
    assert_eq!(ack.code, 0x05);
    assert_eq!(raw.recv().await, None);
    let refused = Mqtt3::connect_with(options(server.mqtt, "anon2"))
        .await
        .err();
    assert_eq!(refused, Some(ConnectReturnCode::NotAuthorized));
    assert_eq!(
        server
            .metric("throng_handler_connects_total{result=\"not_authorized\"}")
            .await,
        2.0
    );
    assert_eq!(
        server.metric("throng_sessions{state=\"online\"}").await,
        0.0
    );
}

#[tokio::test]
async fn session_present_flag() {
    let server = TestServer::start().await;
    let mut opts = options(server.mqtt, "sp-client");
    opts.set_clean_session(false);
    let (client, present) = Mqtt3::connect_with(opts.clone()).await.unwrap();
    assert!(!present, "first persistent connect: no session yet");
    client.disconnect().await;

    let (client, present) = Mqtt3::connect_with(opts.clone()).await.unwrap();
    assert!(present, "persistent session must be resumed");
    client.disconnect().await;

    opts.set_clean_session(true);
    let (client, present) = Mqtt3::connect_with(opts.clone()).await.unwrap();
    assert!(!present, "clean session never has a session present");
    client.disconnect().await;

    // The clean session discarded the old one.
    opts.set_clean_session(false);
    let (_client, present) = Mqtt3::connect_with(opts).await.unwrap();
    assert!(!present, "a clean session must discard the stored one");
}

#[tokio::test]
async fn mqtt_3_1_mqisdp_is_accepted_and_works() {
    let server = TestServer::start().await;
    let (mut raw, ack) = raw_connect(
        server.mqtt,
        Packet::Connect(Box::new(Connect {
            protocol: Some(ProtocolVersion::V3_1),
            clean_start: true,
            keep_alive: 30,
            client_id: "old-client".into(),
            ..Connect::default()
        })),
    )
    .await;
    assert_eq!(ack.code, 0);
    raw.send(&Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![(
            "old/t".into(),
            SubscriptionOptions {
                qos: throng_codec::QoS::AtLeastOnce,
                ..Default::default()
            },
        )],
        ..Subscribe::default()
    }))
    .await;
    match raw.recv().await {
        Some(Packet::SubAck(ack)) => assert_eq!(ack.codes, vec![1]),
        other => panic!("expected SUBACK, got {other:?}"),
    }
    let mut publisher = Mqtt3::connect(server.mqtt, "new-client").await;
    publisher
        .publish("old/t", QoS::AtLeastOnce, false, b"hi")
        .await;
    match raw.recv().await {
        Some(Packet::Publish(p)) => {
            assert_eq!(p.topic, "old/t");
            assert_eq!(&p.payload[..], b"hi");
            assert_eq!(p.qos, throng_codec::QoS::AtLeastOnce);
        }
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

#[tokio::test]
async fn keepalive_enforced_at_one_and_a_half_times() {
    let server = TestServer::start().await;
    let (mut raw, ack) = raw_connect(server.mqtt, connect_packet("ka2", true, 2)).await;
    assert_eq!(ack.code, 0);
    // 2 s keepalive: the server must wait 3 s of silence.
    assert!(
        !raw.closed_within(Duration::from_millis(2500)).await,
        "closed before 1.5 x keepalive"
    );
    assert!(
        raw.closed_within(Duration::from_millis(1500)).await,
        "not closed after 1.5 x keepalive"
    );
}

#[tokio::test]
async fn keepalive_traffic_keeps_connection_open() {
    let server = TestServer::start().await;
    let (mut raw, _) = raw_connect(server.mqtt, connect_packet("ka-ping", true, 1)).await;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        raw.send(&Packet::PingReq).await;
        assert_eq!(raw.recv().await, Some(Packet::PingResp));
    }
}

#[tokio::test]
async fn keepalive_zero_is_never_enforced() {
    let server = TestServer::start().await;
    let (mut raw, ack) = raw_connect(server.mqtt, connect_packet("ka0", true, 0)).await;
    assert_eq!(ack.code, 0);
    assert!(!raw.closed_within(Duration::from_secs(3)).await);
    raw.send(&Packet::PingReq).await;
    assert_eq!(raw.recv().await, Some(Packet::PingResp));
}

#[tokio::test]
async fn keepalive_above_max_is_refused_for_v3() {
    let server = TestServer::with_config(HandlerConfig {
        max_keepalive: 60,
        ..HandlerConfig::default()
    })
    .await;
    let (mut raw, ack) = raw_connect(server.mqtt, connect_packet("ka-big", true, 61)).await;
    assert_eq!(ack.code, 0x02, "v3 cannot be told a lower keepalive");
    assert_eq!(raw.recv().await, None);
    let (_raw, ack) = raw_connect(server.mqtt, connect_packet("ka-ok", true, 60)).await;
    assert_eq!(ack.code, 0);
}

#[tokio::test]
async fn takeover_closes_first_and_session_continues() {
    let server = TestServer::start().await;
    let mut opts = options(server.mqtt, "taker");
    opts.set_clean_session(false);
    let (mut first, _) = Mqtt3::connect_with(opts.clone()).await.unwrap();
    first.subscribe("take/t", QoS::AtLeastOnce).await;

    let (mut second, present) = Mqtt3::connect_with(opts).await.unwrap();
    assert!(present, "takeover keeps the session");
    assert!(
        first.closed_within(Duration::from_secs(3)).await,
        "first connection must be closed"
    );

    let mut publisher = Mqtt3::connect(server.mqtt, "take-pub").await;
    publisher
        .publish("take/t", QoS::AtLeastOnce, false, b"after")
        .await;
    let got = second.recv().await;
    assert_eq!(got.topic, "take/t");
    assert_eq!(&got.payload[..], b"after");
    second
        .publish("take/echo", QoS::AtLeastOnce, false, b"x")
        .await;
    assert_eq!(
        server.metric("throng_sessions{state=\"online\"}").await,
        2.0
    );
    first.assert_silent(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn raw_second_connection_same_id_kicks_first() {
    let server = TestServer::start().await;
    let (mut first, _) = raw_connect(server.mqtt, connect_packet("dup-id", false, 30)).await;
    let (mut second, ack) = raw_connect(server.mqtt, connect_packet("dup-id", false, 30)).await;
    assert_eq!(ack.code, 0);
    assert!(ack.session_present);
    assert!(first.closed_within(Duration::from_secs(3)).await);
    second
        .send(&Packet::Publish(Publish {
            qos: throng_codec::QoS::AtLeastOnce,
            topic: "dup/t".into(),
            packet_id: Some(9),
            payload: "p".into(),
            ..Publish::default()
        }))
        .await;
    match second.recv().await {
        Some(Packet::PubAck(ack)) => assert_eq!(ack.packet_id, 9),
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

#[tokio::test]
async fn over_long_client_id_refused_with_0x02() {
    let server = TestServer::with_config(HandlerConfig {
        max_client_id_len: 64,
        ..HandlerConfig::default()
    })
    .await;
    let long = "x".repeat(65);
    let (mut raw, ack) = raw_connect(server.mqtt, connect_packet(&long, true, 30)).await;
    assert_eq!(ack.code, 0x02);
    assert_eq!(raw.recv().await, None);
    let (_raw, ack) = raw_connect(server.mqtt, connect_packet(&long[..64], true, 30)).await;
    assert_eq!(ack.code, 0);
}

#[tokio::test]
async fn packets_in_the_connect_write_are_served_after_connack() {
    let server = TestServer::start().await;
    let mut raw = RawClient::connect(server.mqtt, ProtocolVersion::V3_1_1).await;
    let mut bytes = Vec::new();
    let v = ProtocolVersion::V3_1_1;
    throng_codec::encode(&connect_packet("eager", true, 30), v, &mut bytes).unwrap();
    throng_codec::encode(&Packet::PingReq, v, &mut bytes).unwrap();
    throng_codec::encode(&Packet::PingReq, v, &mut bytes).unwrap();
    raw.send_bytes(&bytes).await;
    assert!(matches!(raw.recv().await, Some(Packet::ConnAck(ack)) if ack.code == 0));
    assert_eq!(raw.recv().await, Some(Packet::PingResp));
    assert_eq!(raw.recv().await, Some(Packet::PingResp));
}
