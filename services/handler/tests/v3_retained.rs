//! MQTT 3.1.1 retained messages: set, replace, clear with an empty payload, delivery
//! with the RETAIN flag on subscribe (also through wildcards), RETAIN cleared on
//! live delivery, and the `throng_retained_messages` gauge.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use rumqttc::QoS;

use support::TestServer;
use support::v3::Mqtt3;

const GAUGE: &str = "throng_retained_messages";

#[tokio::test]
async fn set_replace_clear() {
    let server = TestServer::start().await;
    let mut publisher = Mqtt3::connect(server.mqtt, "ret-pub").await;
    publisher
        .publish("ret/a", QoS::AtLeastOnce, true, b"v1")
        .await;
    assert_eq!(server.metric(GAUGE).await, 1.0);
    publisher
        .publish("ret/a", QoS::AtLeastOnce, true, b"v2")
        .await;
    assert_eq!(server.metric(GAUGE).await, 1.0, "replace keeps one message");

    let mut sub = Mqtt3::connect(server.mqtt, "ret-sub").await;
    sub.subscribe("ret/a", QoS::AtLeastOnce).await;
    let got = sub.recv().await;
    assert_eq!(&got.payload[..], b"v2", "the newest retained message wins");
    assert!(got.retain, "retained delivery on subscribe sets RETAIN");
    assert_eq!(got.qos, QoS::AtLeastOnce);
    sub.assert_silent(Duration::from_millis(300)).await;

    // Clearing: the empty message still reaches live subscribers, then is gone.
    publisher
        .publish("ret/a", QoS::AtLeastOnce, true, b"")
        .await;
    let cleared = sub.recv().await;
    assert!(cleared.payload.is_empty());
    assert_eq!(server.metric(GAUGE).await, 0.0);

    let mut late = Mqtt3::connect(server.mqtt, "ret-late").await;
    late.subscribe("ret/a", QoS::AtLeastOnce).await;
    late.assert_silent(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn live_delivery_clears_retain_flag() {
    let server = TestServer::start().await;
    let mut sub = Mqtt3::connect(server.mqtt, "live-sub").await;
    sub.subscribe("live/t", QoS::AtLeastOnce).await;
    let mut publisher = Mqtt3::connect(server.mqtt, "live-pub").await;
    publisher
        .publish("live/t", QoS::AtLeastOnce, true, b"now")
        .await;
    let got = sub.recv().await;
    assert_eq!(&got.payload[..], b"now");
    assert!(
        !got.retain,
        "3.1.1 [MQTT-3.3.1-9]: RETAIN is 0 for a message sent to an established subscription"
    );
}

#[tokio::test]
async fn wildcard_subscribe_gets_every_matching_retained() {
    let server = TestServer::start().await;
    let mut publisher = Mqtt3::connect(server.mqtt, "wild-pub").await;
    for (topic, qos) in [
        ("home/kitchen/temp", QoS::AtLeastOnce),
        ("home/hall/temp", QoS::AtMostOnce),
        ("home/kitchen/hum", QoS::ExactlyOnce),
        ("away/kitchen/temp", QoS::AtLeastOnce),
    ] {
        publisher.publish(topic, qos, true, topic.as_bytes()).await;
    }
    publisher.sync().await;
    server.wait_metric(GAUGE, |v| v == 4.0).await;

    let mut plus = Mqtt3::connect(server.mqtt, "wild-plus").await;
    plus.subscribe("home/+/temp", QoS::ExactlyOnce).await;
    let mut topics = BTreeSet::new();
    for _ in 0..2 {
        let got = plus.recv().await;
        assert!(got.retain);
        assert_eq!(got.payload, got.topic.as_bytes());
        let expected_qos = if got.topic == "home/hall/temp" {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        assert_eq!(
            got.qos, expected_qos,
            "retained QoS is min(message, granted)"
        );
        topics.insert(got.topic);
    }
    assert_eq!(
        topics,
        BTreeSet::from([
            "home/hall/temp".to_string(),
            "home/kitchen/temp".to_string()
        ])
    );
    plus.assert_silent(Duration::from_millis(300)).await;

    let mut hash = Mqtt3::connect(server.mqtt, "wild-hash").await;
    hash.subscribe("#", QoS::AtMostOnce).await;
    let mut all = BTreeSet::new();
    for _ in 0..4 {
        let got = hash.recv().await;
        assert!(got.retain);
        assert_eq!(got.qos, QoS::AtMostOnce);
        all.insert(got.topic);
    }
    assert_eq!(all.len(), 4);
    hash.assert_silent(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn retained_survives_publisher_and_gauge_counts_topics() {
    let server = TestServer::start().await;
    let mut publisher = Mqtt3::connect(server.mqtt, "gauge-pub").await;
    for i in 0..3 {
        publisher
            .publish(&format!("g/{i}"), QoS::AtLeastOnce, true, b"x")
            .await;
    }
    // A non-retained publish does not touch the store.
    publisher
        .publish("g/3", QoS::AtLeastOnce, false, b"x")
        .await;
    assert_eq!(server.metric(GAUGE).await, 3.0);
    // Clearing a topic that holds nothing changes nothing.
    publisher.publish("g/9", QoS::AtLeastOnce, true, b"").await;
    assert_eq!(server.metric(GAUGE).await, 3.0);
    publisher.disconnect().await;

    let mut sub = Mqtt3::connect(server.mqtt, "gauge-sub").await;
    sub.subscribe("g/1", QoS::AtLeastOnce).await;
    assert_eq!(&sub.recv().await.topic, "g/1");
    assert_eq!(server.metric(GAUGE).await, 3.0);
}
