//! MQTT 3.1.1 topic matching: `+` and `#`, `$`-topics hidden from leading
//! wildcards, one copy at the highest QoS for overlapping subscriptions, and shared
//! subscriptions (`$share/{group}/{filter}`) spreading messages over members.

mod support;

use std::time::Duration;

use rumqttc::{QoS, SubscribeReasonCode};

use support::TestServer;
use support::v3::Mqtt3;

async fn subscribed(server: &TestServer, id: &str, filters: &[(&str, QoS)]) -> Mqtt3 {
    let mut client = Mqtt3::connect(server.mqtt, id).await;
    for (filter, qos) in filters {
        let codes = client.subscribe(filter, *qos).await;
        assert_eq!(codes, vec![SubscribeReasonCode::Success(*qos)], "{filter}");
    }
    client
}

/// Topics of every PUBLISH until 500 ms pass without one.
async fn drain(client: &mut Mqtt3) -> Vec<String> {
    let mut topics = Vec::new();
    while let Some(p) = client.recv_within(Duration::from_millis(500)).await {
        topics.push(p.topic);
    }
    topics
}

#[tokio::test]
async fn plus_and_hash_wildcards() {
    let server = TestServer::start().await;
    let mut plus = subscribed(&server, "w-plus", &[("a/+/c", QoS::AtLeastOnce)]).await;
    let mut hash = subscribed(&server, "w-hash", &[("a/#", QoS::AtLeastOnce)]).await;
    let mut exact = subscribed(&server, "w-exact", &[("a/b", QoS::AtLeastOnce)]).await;
    let mut publisher = Mqtt3::connect(server.mqtt, "w-pub").await;
    for topic in ["a/b/c", "a/x/c", "a/b", "a", "a/b/c/d", "b/b/c", "a//c"] {
        publisher
            .publish(topic, QoS::AtLeastOnce, false, topic.as_bytes())
            .await;
    }
    assert_eq!(drain(&mut plus).await, ["a/b/c", "a/x/c", "a//c"]);
    assert_eq!(
        drain(&mut hash).await,
        ["a/b/c", "a/x/c", "a/b", "a", "a/b/c/d", "a//c"],
        "a/# also matches the parent level a"
    );
    assert_eq!(drain(&mut exact).await, ["a/b"]);
}

#[tokio::test]
async fn dollar_topics_not_matched_by_leading_wildcards() {
    let server = TestServer::start().await;
    let mut hash = subscribed(&server, "d-hash", &[("#", QoS::AtLeastOnce)]).await;
    let mut plus = subscribed(&server, "d-plus", &[("+/x", QoS::AtLeastOnce)]).await;
    let mut explicit = subscribed(&server, "d-explicit", &[("$app/#", QoS::AtLeastOnce)]).await;
    let mut sys = subscribed(&server, "d-sys", &[("$SYS/#", QoS::AtLeastOnce)]).await;
    let mut publisher = Mqtt3::connect(server.mqtt, "d-pub").await;
    publisher
        .publish("$SYS/x", QoS::AtLeastOnce, false, b"s")
        .await;
    publisher
        .publish("$app/x", QoS::AtLeastOnce, false, b"a")
        .await;
    publisher
        .publish("plain/x", QoS::AtLeastOnce, false, b"p")
        .await;

    assert_eq!(&explicit.recv().await.topic, "$app/x");
    assert_eq!(
        &hash.recv().await.topic,
        "plain/x",
        "# must skip $SYS/x and $app/x"
    );
    assert_eq!(
        &plus.recv().await.topic,
        "plain/x",
        "+/x must skip $SYS/x and $app/x"
    );
    // Clients may not publish into $SYS.
    for client in [&mut hash, &mut plus, &mut explicit, &mut sys] {
        client.assert_silent(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn overlapping_subscriptions_one_copy_at_highest_qos() {
    let server = TestServer::start().await;
    let mut sub = subscribed(
        &server,
        "overlap",
        &[
            ("o/+", QoS::AtMostOnce),
            ("o/#", QoS::ExactlyOnce),
            ("o/t", QoS::AtLeastOnce),
        ],
    )
    .await;
    let mut publisher = Mqtt3::connect(server.mqtt, "o-pub").await;
    publisher
        .publish("o/t", QoS::ExactlyOnce, false, b"1")
        .await;
    let got = sub.recv().await;
    assert_eq!(got.qos, QoS::ExactlyOnce);
    sub.assert_silent(Duration::from_millis(500)).await;

    // Resubscribing replaces the QoS of the same filter.
    sub.subscribe("o/#", QoS::AtMostOnce).await;
    publisher
        .publish("o/t", QoS::ExactlyOnce, false, b"2")
        .await;
    let got = sub.recv().await;
    assert_eq!(&got.payload[..], b"2");
    assert_eq!(got.qos, QoS::AtLeastOnce, "o/t at QoS 1 is now the highest");
    sub.assert_silent(Duration::from_millis(500)).await;
    assert_eq!(server.metric("throng_subscriptions").await, 3.0);
}

#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let server = TestServer::start().await;
    let mut sub = subscribed(&server, "unsub", &[("u/t", QoS::AtLeastOnce)]).await;
    sub.client.unsubscribe("u/t").await.unwrap();
    sub.sync().await;
    let mut publisher = Mqtt3::connect(server.mqtt, "u-pub").await;
    publisher
        .publish("u/t", QoS::AtLeastOnce, false, b"x")
        .await;
    sub.assert_silent(Duration::from_millis(500)).await;
    // sync() subscribed to its own topic; u/t is gone.
    assert_eq!(server.metric("throng_subscriptions").await, 1.0);
}

#[tokio::test]
async fn shared_subscription_spreads_messages() {
    let server = TestServer::start().await;
    let mut one = subscribed(&server, "share-1", &[("$share/g/s/t", QoS::AtLeastOnce)]).await;
    let mut two = subscribed(&server, "share-2", &[("$share/g/s/t", QoS::AtLeastOnce)]).await;
    let mut plain = subscribed(&server, "share-plain", &[("s/t", QoS::AtLeastOnce)]).await;
    let mut publisher = Mqtt3::connect(server.mqtt, "share-pub").await;
    for i in 0..20 {
        publisher
            .publish("s/t", QoS::AtLeastOnce, false, format!("{i}").as_bytes())
            .await;
    }
    let mut seen = Vec::new();
    let mut counts = [0usize; 2];
    for (n, client) in [&mut one, &mut two].into_iter().enumerate() {
        while let Some(p) = client.recv_within(Duration::from_millis(500)).await {
            assert_eq!(p.topic, "s/t");
            seen.push(String::from_utf8(p.payload.to_vec()).unwrap());
            counts[n] += 1;
        }
    }
    seen.sort_by_key(|s| s.parse::<u32>().unwrap());
    let expected: Vec<String> = (0..20).map(|i| i.to_string()).collect();
    assert_eq!(seen, expected, "each message to exactly one member");
    assert!(
        counts[0] > 0 && counts[1] > 0,
        "both members get some: {counts:?}"
    );
    for i in 0..20 {
        assert_eq!(plain.recv().await.payload, format!("{i}").as_bytes());
    }
}
