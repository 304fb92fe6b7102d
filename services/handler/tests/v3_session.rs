//! MQTT 3.1.1 persistent sessions (clean session 0): subscriptions and QoS 1/2
//! messages survive a disconnect, QoS 0 does not, the offline queue is bounded,
//! and the session expires after `max_session_expiry`.

mod support;

use std::time::Duration;

use rumqttc::QoS;
use throng_handler::HandlerConfig;

use support::TestServer;
use support::v3::{Mqtt3, options};

const OFFLINE: &str = "throng_sessions{state=\"offline\"}";

async fn persistent(server: &TestServer, id: &str) -> (Mqtt3, bool) {
    let mut opts = options(server.mqtt, id);
    opts.set_clean_session(false);
    Mqtt3::connect_with(opts).await.expect("connect refused")
}

/// Subscribes `id` persistently to `filter`, then disconnects and waits until the
/// server holds the session offline.
async fn park(server: &TestServer, id: &str, filter: &str, qos: QoS, offline_before: f64) {
    let (mut client, _) = persistent(server, id).await;
    let codes = client.subscribe(filter, qos).await;
    assert_eq!(codes.len(), 1);
    client.disconnect().await;
    server
        .wait_metric(OFFLINE, |v| v == offline_before + 1.0)
        .await;
}

#[tokio::test]
async fn subscriptions_survive_reconnect() {
    let server = TestServer::start().await;
    park(&server, "keep-subs", "ps/t", QoS::AtLeastOnce, 0.0).await;

    let (mut client, present) = persistent(&server, "keep-subs").await;
    assert!(present);
    let mut publisher = Mqtt3::connect(server.mqtt, "ps-pub").await;
    publisher
        .publish("ps/t", QoS::AtLeastOnce, false, b"live")
        .await;
    let got = client.recv().await;
    assert_eq!(got.topic, "ps/t");
    assert_eq!(&got.payload[..], b"live");
    assert_eq!(got.qos, QoS::AtLeastOnce);
}

#[tokio::test]
async fn offline_qos1_and_qos2_delivered_qos0_dropped() {
    let server = TestServer::start().await;
    park(&server, "offline-rx", "off/#", QoS::ExactlyOnce, 0.0).await;

    let mut publisher = Mqtt3::connect(server.mqtt, "off-pub").await;
    publisher
        .publish("off/q1", QoS::AtLeastOnce, false, b"one")
        .await;
    publisher
        .publish("off/q2", QoS::ExactlyOnce, false, b"two")
        .await;
    publisher
        .publish("off/q0", QoS::AtMostOnce, false, b"zero")
        .await;
    publisher.sync().await;
    server
        .wait_metric(
            "throng_messages_dropped_total{reason=\"offline_qos0\"}",
            |v| v == 1.0,
        )
        .await;

    let (mut client, present) = persistent(&server, "offline-rx").await;
    assert!(present);
    let first = client.recv().await;
    assert_eq!(
        (first.topic.as_str(), &first.payload[..], first.qos),
        ("off/q1", &b"one"[..], QoS::AtLeastOnce)
    );
    let second = client.recv().await;
    assert_eq!(
        (second.topic.as_str(), &second.payload[..], second.qos),
        ("off/q2", &b"two"[..], QoS::ExactlyOnce)
    );
    client.assert_silent(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn offline_queue_is_bounded() {
    let server = TestServer::with_config(HandlerConfig {
        max_queued_messages: 5,
        ..HandlerConfig::default()
    })
    .await;
    park(&server, "bounded", "bq/t", QoS::AtLeastOnce, 0.0).await;

    let mut publisher = Mqtt3::connect(server.mqtt, "bq-pub").await;
    for i in 0..8 {
        publisher
            .publish("bq/t", QoS::AtLeastOnce, false, format!("m{i}").as_bytes())
            .await;
    }
    assert_eq!(
        server
            .metric("throng_messages_dropped_total{reason=\"queue_full\"}")
            .await,
        3.0
    );

    let (mut client, _) = persistent(&server, "bounded").await;
    for i in 0..5 {
        let got = client.recv().await;
        assert_eq!(
            &got.payload[..],
            format!("m{i}").as_bytes(),
            "oldest kept, in order"
        );
    }
    client.assert_silent(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn persistent_session_expires() {
    let server = TestServer::with_config(HandlerConfig {
        max_session_expiry: Duration::from_secs(1),
        ..HandlerConfig::default()
    })
    .await;
    park(&server, "expiring", "exp/t", QoS::AtLeastOnce, 0.0).await;
    assert_eq!(server.metric("throng_subscriptions").await, 1.0);

    // Time itself is under test here: the session must be gone after 1 s.
    server.wait_metric(OFFLINE, |v| v == 0.0).await;
    assert_eq!(server.metric("throng_subscriptions").await, 0.0);

    let (mut client, present) = persistent(&server, "expiring").await;
    assert!(!present, "expired session must not be resumed");
    let mut publisher = Mqtt3::connect(server.mqtt, "exp-pub").await;
    publisher
        .publish("exp/t", QoS::AtLeastOnce, false, b"late")
        .await;
    client.assert_silent(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn session_resumed_before_expiry() {
    let server = TestServer::with_config(HandlerConfig {
        max_session_expiry: Duration::from_secs(2),
        ..HandlerConfig::default()
    })
    .await;
    park(&server, "early", "early/t", QoS::AtLeastOnce, 0.0).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (client, present) = persistent(&server, "early").await;
    assert!(present);
    client.disconnect().await;
    // The first expiry timer is stale now; the session lives 2 s from the second
    // disconnect, so it is still there 1.8 s after the first one.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (_client, present) = persistent(&server, "early").await;
    assert!(present, "a stale expiry timer ended the resumed session");
}
