//! Uplink: device publishes matching `uplink_filters` are appended to the
//! `throng:uplink` stream of a real `redis-server` with their fields.

mod support;

use std::time::Duration;

use redis::streams::StreamRangeReply;
use throng_codec::{Packet, QoS};
use throng_handler::HandlerConfig;

use support::TestServer;
use support::v5::{client, publish_packet};
use throng_testkit::RedisServer;

/// XRANGEs the uplink stream until it holds `n` entries (or 10 s pass).
async fn entries(redis: &RedisServer, n: usize) -> StreamRangeReply {
    let mut conn = redis.conn().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let reply: StreamRangeReply = redis::cmd("XRANGE")
            .arg("throng:uplink")
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await
            .unwrap();
        if reply.ids.len() >= n || tokio::time::Instant::now() >= deadline {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn field(id: &redis::streams::StreamId, name: &str) -> Option<Vec<u8>> {
    id.get::<Vec<u8>>(name)
}

#[tokio::test]
async fn matching_publishes_are_appended_with_their_fields() {
    let redis = RedisServer::start().await;
    let server = TestServer::with_config(HandlerConfig {
        uplink_filters: vec!["up/#".into()],
        redis_url: Some(redis.url()),
        ..HandlerConfig::default()
    })
    .await;
    let before = throng_downlink::unix_ms();
    let mut device = client(server.mqtt, "dev-uplink").await;

    let mut publish = publish_packet("up/a", b"hello", QoS::AtLeastOnce, 1);
    publish.properties.user_properties = vec![
        ("k".into(), "old".into()),
        ("src".into(), "sensor".into()),
        ("k".into(), "new".into()),
    ];
    publish.properties.content_type = Some("text/plain".into());
    device.send(&Packet::Publish(publish)).await;
    match device.recv().await {
        Some(Packet::PubAck(ack)) => assert_eq!(ack.packet_id, 1),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    let other = publish_packet("other/b", b"not for the uplink", QoS::AtLeastOnce, 2);
    device.send(&Packet::Publish(other)).await;
    match device.recv().await {
        Some(Packet::PubAck(ack)) => assert_eq!(ack.packet_id, 2),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    // A later matching publish marks the point by which `other/b` would have been
    // appended too (one writer, in order).
    let marker = publish_packet("up/marker", b"", QoS::AtMostOnce, 0);
    device.send(&Packet::Publish(marker)).await;

    let reply = entries(&redis, 2).await;
    let topics: Vec<Vec<u8>> = reply
        .ids
        .iter()
        .map(|id| field(id, "topic").unwrap())
        .collect();
    assert_eq!(topics, [b"up/a".to_vec(), b"up/marker".to_vec()]);
    let entry = &reply.ids[0];
    assert_eq!(field(entry, "client").unwrap(), b"dev-uplink");
    assert_eq!(field(entry, "payload").unwrap(), b"hello");
    assert_eq!(field(entry, "qos").unwrap(), b"1");
    assert_eq!(field(entry, "retain").unwrap(), b"0");
    assert_eq!(
        field(entry, "props").unwrap(),
        br#"{"k":"new","src":"sensor"}"#
    );
    assert_eq!(field(entry, "content_type").unwrap(), b"text/plain");
    assert_eq!(field(entry, "response_topic"), None);
    assert_eq!(field(entry, "correlation"), None);
    let ts: u64 = String::from_utf8(field(entry, "ts").unwrap())
        .unwrap()
        .parse()
        .unwrap();
    let after = throng_downlink::unix_ms();
    assert!(
        before <= ts && ts <= after,
        "ts {ts} not in {before}..={after}"
    );
    assert_eq!(field(&reply.ids[1], "qos").unwrap(), b"0");
    assert_eq!(field(&reply.ids[1], "props"), None);
    server.shutdown().await;
}

#[tokio::test]
async fn uplink_filters_are_validated() {
    let bad = HandlerConfig {
        uplink_filters: vec!["up/#/x".into()],
        redis_url: Some("redis://127.0.0.1:1/".into()),
        ..HandlerConfig::default()
    };
    assert!(bad.validate().is_err());
    let no_redis = HandlerConfig {
        uplink_filters: vec!["up/#".into()],
        ..HandlerConfig::default()
    };
    assert!(no_redis.validate().is_err());
}
