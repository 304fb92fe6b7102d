//! MQTT 5.0 PUBLISH properties: topic aliases both ways, message expiry, both
//! Maximum Packet Sizes, pass-through of application properties, and Request
//! Problem Information 0.

mod support;

use std::time::Duration;

use bytes::Bytes;
use throng_codec::{Packet, PublishProperties, QoS, SubscriptionOptions, reason};
use throng_handler::HandlerConfig;

use support::TestServer;
use support::v5::{
    assert_quiet, client, connect_packet, connect_with, expect_disconnect, expect_publish, opts,
    publish_packet, resp, subscribe,
};

fn aliased(topic: &str, alias: u16, payload: &[u8]) -> Packet {
    let mut publish = publish_packet(topic, payload, QoS::AtMostOnce, 0);
    publish.properties.topic_alias = Some(alias);
    Packet::Publish(publish)
}

#[tokio::test]
async fn inbound_topic_alias_is_resolved() {
    let server = TestServer::start().await;
    let mut sub = client(server.mqtt, "ta-sub").await;
    subscribe(&mut sub, 1, "ta/#", opts(QoS::AtMostOnce), None).await;
    let mut publisher = client(server.mqtt, "ta-pub").await;
    publisher.send(&aliased("ta/one", 1, b"first")).await;
    publisher.send(&aliased("", 1, b"second")).await;
    for payload in [&b"first"[..], b"second"] {
        let publish = expect_publish(&mut sub).await;
        assert_eq!(publish.topic, "ta/one");
        assert_eq!(publish.payload, payload);
        // This subscriber takes no aliases: none may be sent to it.
        assert_eq!(publish.properties.topic_alias, None);
    }
}

#[tokio::test]
async fn topic_alias_zero_or_above_maximum_is_0x94() {
    let server = TestServer::with_config(HandlerConfig {
        topic_alias_maximum: 3,
        ..HandlerConfig::default()
    })
    .await;
    let mut c = client(server.mqtt, "ta-zero").await;
    // Our encoder refuses alias 0, so the frame is written by hand: PUBLISH QoS 0,
    // topic "ta/x", properties [Topic Alias 0], payload "x".
    c.send_bytes(&[
        0x30, 0x0B, 0x00, 0x04, b't', b'a', b'/', b'x', 0x03, 0x23, 0x00, 0x00, b'x',
    ])
    .await;
    expect_disconnect(&mut c, reason::TOPIC_ALIAS_INVALID).await;
    let mut c = client(server.mqtt, "ta-big").await;
    c.send(&aliased("ta/x", 3, b"x")).await;
    c.send(&aliased("ta/x", 4, b"x")).await;
    expect_disconnect(&mut c, reason::TOPIC_ALIAS_INVALID).await;
}

#[tokio::test]
async fn unknown_alias_with_empty_topic_is_protocol_error() {
    let server = TestServer::start().await;
    let mut c = client(server.mqtt, "ta-unknown").await;
    c.send(&aliased("", 2, b"x")).await;
    expect_disconnect(&mut c, reason::PROTOCOL_ERROR).await;
}

#[tokio::test]
async fn outbound_topic_alias_for_a_client_that_takes_them() {
    let server = TestServer::start().await;
    let mut connect = connect_packet("tao-sub");
    connect.properties.topic_alias_maximum = Some(5);
    let (mut sub, _) = connect_with(server.mqtt, connect).await;
    subscribe(&mut sub, 1, "tao/#", opts(QoS::AtMostOnce), None).await;
    let mut publisher = client(server.mqtt, "tao-pub").await;
    for payload in [b"1", b"2"] {
        publisher
            .send(&Packet::Publish(publish_packet(
                "tao/long/topic/name",
                payload,
                QoS::AtMostOnce,
                0,
            )))
            .await;
    }
    let first = expect_publish(&mut sub).await;
    assert_eq!(first.topic, "tao/long/topic/name");
    let alias = first
        .properties
        .topic_alias
        .expect("first carries an alias");
    assert!((1..=5).contains(&alias));
    let second = expect_publish(&mut sub).await;
    assert_eq!(second.topic, "");
    assert_eq!(second.properties.topic_alias, Some(alias));
    assert_eq!(second.payload, &b"2"[..]);
}

#[tokio::test]
async fn message_expiry_drops_stale_and_reduces_interval() {
    let server = TestServer::start().await;
    let mut connect = connect_packet("mx-sub");
    connect.properties.session_expiry_interval = Some(60);
    let (mut sub, _) = connect_with(server.mqtt, connect.clone()).await;
    subscribe(&mut sub, 1, "mx/t", opts(QoS::AtLeastOnce), None).await;
    drop(sub);
    server
        .wait_metric("throng_sessions{state=\"offline\"}", |v| v == 1.0)
        .await;

    let mut publisher = client(server.mqtt, "mx-pub").await;
    for (id, secs, payload) in [(1, 1, &b"short"[..]), (2, 10, b"long")] {
        let mut publish = publish_packet("mx/t", payload, QoS::AtLeastOnce, id);
        publish.properties.message_expiry_interval = Some(secs);
        publisher.send(&Packet::Publish(publish)).await;
        assert_eq!(publisher.recv().await, Some(Packet::PubAck(resp(id))));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    connect.clean_start = false;
    let (mut sub, ack) = connect_with(server.mqtt, connect).await;
    assert!(ack.session_present);
    let publish = expect_publish(&mut sub).await;
    assert_eq!(publish.payload, &b"long"[..]);
    let left = publish.properties.message_expiry_interval.expect("expiry");
    assert!((1..=8).contains(&left), "expiry sent on as {left}");
    assert_quiet(&mut sub, Duration::from_millis(300)).await;
    assert_eq!(
        server
            .metric("throng_messages_dropped_total{reason=\"expired\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn server_maximum_packet_size_is_enforced() {
    let server = TestServer::with_config(HandlerConfig {
        max_packet_size: 1024,
        ..HandlerConfig::default()
    })
    .await;
    let mut c = client(server.mqtt, "mps").await;
    c.send(&Packet::Publish(publish_packet(
        "mps/t",
        &[b'x'; 900],
        QoS::AtMostOnce,
        0,
    )))
    .await;
    c.send(&Packet::PingReq).await;
    assert_eq!(c.recv().await, Some(Packet::PingResp));
    c.send(&Packet::Publish(publish_packet(
        "mps/t",
        &[b'x'; 2000],
        QoS::AtMostOnce,
        0,
    )))
    .await;
    expect_disconnect(&mut c, reason::PACKET_TOO_LARGE).await;
}

#[tokio::test]
async fn client_maximum_packet_size_drops_larger_messages() {
    let server = TestServer::start().await;
    let mut connect = connect_packet("cmps-sub");
    connect.properties.maximum_packet_size = Some(200);
    let (mut sub, _) = connect_with(server.mqtt, connect).await;
    subscribe(&mut sub, 1, "cmps/t", opts(QoS::AtLeastOnce), None).await;
    let mut publisher = client(server.mqtt, "cmps-pub").await;
    for (id, payload) in [(1, vec![b'L'; 500]), (2, b"small".to_vec())] {
        publisher
            .send(&Packet::Publish(publish_packet(
                "cmps/t",
                &payload,
                QoS::AtLeastOnce,
                id,
            )))
            .await;
        assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    }
    let publish = expect_publish(&mut sub).await;
    assert_eq!(publish.payload, &b"small"[..]);
    assert_quiet(&mut sub, Duration::from_millis(300)).await;
    assert_eq!(
        server
            .metric("throng_messages_dropped_total{reason=\"too_large\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn application_properties_pass_through() {
    let server = TestServer::start().await;
    let mut sub = client(server.mqtt, "pt-sub").await;
    subscribe(&mut sub, 1, "pt/t", opts(QoS::AtLeastOnce), None).await;
    let mut publisher = client(server.mqtt, "pt-pub").await;
    let properties = PublishProperties {
        payload_format_indicator: Some(1),
        response_topic: Some("pt/reply".into()),
        correlation_data: Some(Bytes::from_static(b"\xffcorr\x00")),
        content_type: Some("application/json".into()),
        user_properties: vec![
            ("b".into(), "2".into()),
            ("a".into(), "1".into()),
            ("b".into(), "3".into()),
        ],
        ..PublishProperties::default()
    };
    let mut publish = publish_packet("pt/t", b"{}", QoS::AtLeastOnce, 1);
    publish.properties = properties.clone();
    publisher.send(&Packet::Publish(publish)).await;
    let got = expect_publish(&mut sub).await;
    assert_eq!(got.payload, &b"{}"[..]);
    assert_eq!(got.properties, properties);
}

#[tokio::test]
async fn request_problem_information_zero_still_works() {
    let server = TestServer::start().await;
    let mut connect = connect_packet("rpi");
    connect.properties.request_problem_information = Some(false);
    let (mut c, ack) = connect_with(server.mqtt, connect).await;
    assert_eq!(ack.code, 0);
    let suback = subscribe(&mut c, 1, "rpi/#/bad", SubscriptionOptions::default(), None).await;
    assert_eq!(suback.codes, [reason::TOPIC_FILTER_INVALID]);
    assert_eq!(suback.reason_string, None);
    assert!(suback.user_properties.is_empty());
    subscribe(&mut c, 2, "rpi/t", opts(QoS::AtLeastOnce), None).await;
    c.send(&Packet::Publish(publish_packet(
        "rpi/none",
        b"x",
        QoS::AtLeastOnce,
        5,
    )))
    .await;
    let Some(Packet::PubAck(ack)) = c.recv().await else {
        panic!("expected PUBACK")
    };
    assert_eq!(ack.reason, reason::NO_MATCHING_SUBSCRIBERS);
    assert_eq!(ack.reason_string, None);
    assert!(ack.user_properties.is_empty());
    c.send(&Packet::Publish(publish_packet(
        "rpi/t",
        b"y",
        QoS::AtLeastOnce,
        6,
    )))
    .await;
    // Own message (no No Local) and the PUBACK, in either order.
    let mut seen = Vec::new();
    for _ in 0..2 {
        match c.recv().await {
            Some(Packet::Publish(p)) => seen.push(format!("publish {}", p.topic)),
            Some(Packet::PubAck(a)) => {
                assert_eq!(a.reason_string, None);
                seen.push(format!("puback {}", a.reason));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    seen.sort();
    assert_eq!(seen, ["puback 0", "publish rpi/t"]);
    let unsuback = {
        c.send(&Packet::Unsubscribe(throng_codec::Unsubscribe {
            packet_id: 9,
            filters: vec!["rpi/none".into()],
            ..Default::default()
        }))
        .await;
        c.recv().await
    };
    let Some(Packet::UnsubAck(unsuback)) = unsuback else {
        panic!("expected UNSUBACK")
    };
    assert_eq!(unsuback.codes, [reason::NO_SUBSCRIPTION_EXISTED]);
    assert_eq!(unsuback.reason_string, None);
}

#[tokio::test]
async fn dropped_oversized_message_does_not_consume_an_alias() {
    let server = TestServer::start().await;
    let mut connect = connect_packet("tal-sub");
    connect.properties.topic_alias_maximum = Some(5);
    connect.properties.maximum_packet_size = Some(200);
    let (mut sub, _) = connect_with(server.mqtt, connect).await;
    subscribe(&mut sub, 1, "tal/t", opts(QoS::AtMostOnce), None).await;
    let mut publisher = client(server.mqtt, "tal-pub").await;
    for payload in [vec![b'L'; 500], b"small".to_vec()] {
        publisher
            .send(&Packet::Publish(publish_packet(
                "tal/t",
                &payload,
                QoS::AtMostOnce,
                0,
            )))
            .await;
    }
    // The client never saw the topic with an alias, so it must come in full.
    let publish = expect_publish(&mut sub).await;
    assert_eq!(publish.payload, &b"small"[..]);
    assert_eq!(publish.topic, "tal/t");
}

#[tokio::test]
async fn outbound_aliases_stop_at_the_clients_maximum() {
    let server = TestServer::start().await;
    let mut connect = connect_packet("tam-sub");
    connect.properties.topic_alias_maximum = Some(1);
    let (mut sub, _) = connect_with(server.mqtt, connect).await;
    subscribe(&mut sub, 1, "tam/#", opts(QoS::AtMostOnce), None).await;
    let mut publisher = client(server.mqtt, "tam-pub").await;
    for topic in ["tam/a", "tam/b", "tam/b", "tam/a"] {
        publisher
            .send(&Packet::Publish(publish_packet(
                topic,
                topic.as_bytes(),
                QoS::AtMostOnce,
                0,
            )))
            .await;
    }
    let mut seen = Vec::new();
    for _ in 0..4 {
        let p = expect_publish(&mut sub).await;
        if let Some(alias) = p.properties.topic_alias {
            assert_eq!(alias, 1, "alias above the client's maximum");
        }
        seen.push((p.topic, p.properties.topic_alias, p.payload));
    }
    assert_eq!(seen[0].0, "tam/a");
    assert_eq!(seen[0].1, Some(1));
    assert_eq!((seen[1].0.as_str(), seen[1].1), ("tam/b", None));
    assert_eq!((seen[2].0.as_str(), seen[2].1), ("tam/b", None));
    assert_eq!((seen[3].0.as_str(), seen[3].1), ("", Some(1)));
    assert_eq!(seen[3].2, &b"tam/a"[..]);
}
