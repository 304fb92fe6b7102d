//! MQTT 3.1.1 will messages: published when the network connection drops, on
//! keepalive timeout and on a protocol error; discarded on DISCONNECT.

mod support;

use std::time::{Duration, Instant};

use rumqttc::{LastWill, QoS};
use throng_codec::{Connect, Packet, ProtocolVersion, QoS as WireQoS, Will};

use support::TestServer;
use support::v3::{Mqtt3, options, raw_connect};

fn will_connect(client_id: &str, keep_alive: u16, topic: &str, retain: bool) -> Packet {
    Packet::Connect(Box::new(Connect {
        protocol: Some(ProtocolVersion::V3_1_1),
        clean_start: true,
        keep_alive,
        client_id: client_id.into(),
        will: Some(Will {
            topic: topic.into(),
            payload: "bye".into(),
            qos: WireQoS::AtLeastOnce,
            retain,
            ..Will::default()
        }),
        ..Connect::default()
    }))
}

async fn watcher(server: &TestServer, filter: &str) -> Mqtt3 {
    let mut watcher = Mqtt3::connect(server.mqtt, &format!("watch-{filter}")).await;
    watcher.subscribe(filter, QoS::AtLeastOnce).await;
    watcher
}

#[tokio::test]
async fn will_sent_when_socket_dropped() {
    let server = TestServer::start().await;
    let mut watch = watcher(&server, "will/drop").await;
    let mut opts = options(server.mqtt, "dropper");
    opts.set_last_will(LastWill::new("will/drop", "gone", QoS::AtLeastOnce, false));
    let (client, _) = Mqtt3::connect_with(opts).await.unwrap();
    client
        .client
        .publish("other", QoS::AtMostOnce, false, "x")
        .await
        .unwrap();
    drop(client);
    let got = watch.recv().await;
    assert_eq!(got.topic, "will/drop");
    assert_eq!(&got.payload[..], b"gone");
    assert_eq!(got.qos, QoS::AtLeastOnce);
    watch.assert_silent(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn will_sent_on_keepalive_timeout() {
    let server = TestServer::start().await;
    let mut watch = watcher(&server, "will/ka").await;
    let started = Instant::now();
    let (mut raw, ack) =
        raw_connect(server.mqtt, will_connect("silent", 1, "will/ka", false)).await;
    assert_eq!(ack.code, 0);
    // Time is under test: keepalive 1 s means closed after 1.5 s of silence.
    assert!(
        raw.closed_within(Duration::from_millis(2500)).await,
        "not closed by 2.5 s"
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1400),
        "closed too early: {elapsed:?}"
    );
    let got = watch.recv().await;
    assert_eq!(got.topic, "will/ka");
    assert_eq!(&got.payload[..], b"bye");
}

#[tokio::test]
async fn will_discarded_on_disconnect() {
    let server = TestServer::start().await;
    let mut watch = watcher(&server, "will/clean").await;
    let mut opts = options(server.mqtt, "polite");
    opts.set_last_will(LastWill::new("will/clean", "gone", QoS::AtLeastOnce, false));
    let (client, _) = Mqtt3::connect_with(opts).await.unwrap();
    client.disconnect().await;
    server
        .wait_metric("throng_handler_connections", |v| v == 1.0)
        .await;
    watch.assert_silent(Duration::from_secs(1)).await;

    // Raw DISCONNECT followed by the socket closing: still no will.
    let (mut raw, _) = raw_connect(
        server.mqtt,
        will_connect("polite-raw", 30, "will/clean", false),
    )
    .await;
    raw.send(&Packet::Disconnect(Default::default())).await;
    assert!(raw.closed_within(Duration::from_secs(2)).await);
    watch.assert_silent(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn will_sent_on_protocol_error() {
    let server = TestServer::start().await;
    let mut watch = watcher(&server, "will/proto").await;
    let (mut raw, _) =
        raw_connect(server.mqtt, will_connect("rude", 30, "will/proto", false)).await;
    raw.send(&will_connect("rude", 30, "will/proto", false))
        .await;
    assert!(
        raw.closed_within(Duration::from_secs(2)).await,
        "second CONNECT must close"
    );
    let got = watch.recv().await;
    assert_eq!(&got.payload[..], b"bye");
}

#[tokio::test]
async fn retained_will_is_stored() {
    let server = TestServer::start().await;
    let (raw, _) = raw_connect(server.mqtt, will_connect("ret-will", 30, "will/ret", true)).await;
    drop(raw);
    server
        .wait_metric("throng_retained_messages", |v| v == 1.0)
        .await;
    let mut late = Mqtt3::connect(server.mqtt, "will-late").await;
    late.subscribe("will/#", QoS::AtLeastOnce).await;
    let got = late.recv().await;
    assert_eq!(got.topic, "will/ret");
    assert!(got.retain);
    assert_eq!(&got.payload[..], b"bye");
}
