//! MQTT 5.0 sessions and wills: clean start with session expiry, DISCONNECT's
//! session expiry rule, takeover, will delay, and which DISCONNECT sends the will.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use throng_codec::{Disconnect, Packet, PublishProperties, QoS, Will, reason};

use support::TestServer;
use support::v5::{
    assert_quiet, client, connect_packet, connect_with, expect_disconnect, expect_publish, opts,
    publish_packet, subscribe,
};

fn connect_with_expiry(
    id: &str,
    clean_start: bool,
    expiry: u32,
    will: Option<Will>,
) -> throng_codec::Connect {
    let mut connect = connect_packet(id);
    connect.clean_start = clean_start;
    connect.properties.session_expiry_interval = Some(expiry);
    connect.will = will;
    connect
}

fn will(topic: &str, delay: Option<u32>) -> Will {
    Will {
        topic: topic.into(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        delay_interval: delay,
        properties: PublishProperties::default(),
    }
}

fn disconnect(reason: u8) -> Packet {
    Packet::Disconnect(Disconnect {
        reason,
        ..Disconnect::default()
    })
}

#[tokio::test]
async fn expiry_zero_session_ends_at_disconnect() {
    let server = TestServer::start().await;
    let (mut c, ack) = connect_with(server.mqtt, connect_with_expiry("sx0", true, 0, None)).await;
    assert_eq!(ack.code, 0);
    subscribe(&mut c, 1, "sx0/t", opts(QoS::AtLeastOnce), None).await;
    c.send(&disconnect(reason::NORMAL_DISCONNECTION)).await;
    assert!(c.closed_within(Duration::from_secs(5)).await);
    let (_c, ack) = connect_with(server.mqtt, connect_with_expiry("sx0", false, 0, None)).await;
    assert_eq!(ack.code, 0);
    assert!(!ack.session_present, "session with expiry 0 survived");
}

#[tokio::test]
async fn expiry_two_seconds_resumes_then_expires() {
    let server = TestServer::start().await;
    let (mut c, _) = connect_with(server.mqtt, connect_with_expiry("sx2", true, 2, None)).await;
    subscribe(&mut c, 1, "sx2/t", opts(QoS::AtLeastOnce), None).await;
    c.send(&disconnect(reason::NORMAL_DISCONNECTION)).await;
    assert!(c.closed_within(Duration::from_secs(5)).await);

    // Within the expiry: the session and its subscription are still there.
    let (mut c, ack) = connect_with(server.mqtt, connect_with_expiry("sx2", false, 2, None)).await;
    assert!(ack.session_present);
    let mut publisher = client(server.mqtt, "sx2-pub").await;
    publisher
        .send(&Packet::Publish(publish_packet(
            "sx2/t",
            b"hi",
            QoS::AtMostOnce,
            0,
        )))
        .await;
    assert_eq!(expect_publish(&mut c).await.payload, &b"hi"[..]);

    c.send(&disconnect(reason::NORMAL_DISCONNECTION)).await;
    assert!(c.closed_within(Duration::from_secs(5)).await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_c, ack) = connect_with(server.mqtt, connect_with_expiry("sx2", false, 0, None)).await;
    assert!(!ack.session_present, "session outlived its expiry");
}

#[tokio::test]
async fn disconnect_setting_expiry_after_zero_is_protocol_error() {
    let server = TestServer::start().await;
    let (mut c, _) = connect_with(server.mqtt, connect_with_expiry("sxd", true, 0, None)).await;
    c.send(&Packet::Disconnect(Disconnect {
        reason: reason::NORMAL_DISCONNECTION,
        session_expiry_interval: Some(60),
        ..Disconnect::default()
    }))
    .await;
    expect_disconnect(&mut c, reason::PROTOCOL_ERROR).await;
}

#[tokio::test]
async fn takeover_sends_session_taken_over() {
    let server = TestServer::start().await;
    let mut old = client(server.mqtt, "twin").await;
    let mut new = client(server.mqtt, "twin").await;
    expect_disconnect(&mut old, reason::SESSION_TAKEN_OVER).await;
    new.send(&Packet::PingReq).await;
    assert_eq!(new.recv().await, Some(Packet::PingResp));
}

#[tokio::test]
async fn will_delay_postpones_the_will() {
    let server = TestServer::start().await;
    let mut watcher = client(server.mqtt, "wd-watch").await;
    subscribe(&mut watcher, 1, "wd/#", opts(QoS::AtLeastOnce), None).await;
    let connect = connect_with_expiry("wd", true, 10, Some(will("wd/gone", Some(1))));
    let (c, ack) = connect_with(server.mqtt, connect).await;
    assert_eq!(ack.code, 0);
    drop(c);
    let dropped = Instant::now();
    assert_quiet(&mut watcher, Duration::from_millis(700)).await;
    let publish = expect_publish(&mut watcher).await;
    let waited = dropped.elapsed();
    assert_eq!(publish.topic, "wd/gone");
    assert_eq!(publish.payload, &b"gone"[..]);
    assert!(
        waited >= Duration::from_millis(900),
        "will after {waited:?}"
    );
    assert!(waited < Duration::from_secs(3), "will after {waited:?}");
}

#[tokio::test]
async fn reconnect_within_will_delay_cancels_it() {
    let server = TestServer::start().await;
    let mut watcher = client(server.mqtt, "wc-watch").await;
    subscribe(&mut watcher, 1, "wc/#", opts(QoS::AtLeastOnce), None).await;
    let connect = connect_with_expiry("wc", true, 10, Some(will("wc/gone", Some(1))));
    let (c, _) = connect_with(server.mqtt, connect).await;
    drop(c);
    server
        .wait_metric("throng_handler_connections", |v| v == 1.0)
        .await;
    let (_c, ack) = connect_with(server.mqtt, connect_with_expiry("wc", false, 10, None)).await;
    assert!(ack.session_present);
    assert_quiet(&mut watcher, Duration::from_millis(1800)).await;
}

#[tokio::test]
async fn normal_disconnect_discards_will_and_0x04_sends_it() {
    let server = TestServer::start().await;
    let mut watcher = client(server.mqtt, "wn-watch").await;
    subscribe(&mut watcher, 1, "wn/#", opts(QoS::AtLeastOnce), None).await;

    let mut connect = connect_packet("wn-clean");
    connect.will = Some(will("wn/clean", None));
    let (mut c, _) = connect_with(server.mqtt, connect).await;
    c.send(&disconnect(reason::NORMAL_DISCONNECTION)).await;
    assert!(c.closed_within(Duration::from_secs(5)).await);
    assert_quiet(&mut watcher, Duration::from_millis(500)).await;

    let mut connect = connect_packet("wn-will");
    connect.will = Some(will("wn/will", None));
    let (mut c, _) = connect_with(server.mqtt, connect).await;
    c.send(&disconnect(reason::DISCONNECT_WITH_WILL)).await;
    assert!(c.closed_within(Duration::from_secs(5)).await);
    let publish = expect_publish(&mut watcher).await;
    assert_eq!(publish.topic, "wn/will");
    assert_eq!(publish.qos, QoS::AtLeastOnce);
}

#[tokio::test]
async fn will_properties_reach_the_subscriber() {
    let server = TestServer::start().await;
    let mut watcher = client(server.mqtt, "wp-watch").await;
    subscribe(&mut watcher, 1, "wp/#", opts(QoS::AtLeastOnce), None).await;
    let properties = PublishProperties {
        payload_format_indicator: Some(1),
        content_type: Some("text/plain".into()),
        response_topic: Some("wp/reply".into()),
        correlation_data: Some(Bytes::from_static(b"\x00\x01corr")),
        user_properties: vec![("k".into(), "v".into()), ("k".into(), "v2".into())],
        ..PublishProperties::default()
    };
    let mut w = will("wp/gone", None);
    w.properties = properties.clone();
    let mut connect = connect_packet("wp");
    connect.will = Some(w);
    let (c, _) = connect_with(server.mqtt, connect).await;
    drop(c);
    let publish = expect_publish(&mut watcher).await;
    assert_eq!(publish.topic, "wp/gone");
    assert_eq!(publish.properties, properties);
}
