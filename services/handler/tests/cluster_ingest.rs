//! The ingest API of a distributor reaching devices on any handler: by client id
//! (accepted, idempotent by message id, undeliverable, queued offline) and by topic.

#[path = "support/cluster.rs"]
mod harness;
mod support;

use std::time::Duration;

use throng_codec::QoS;
use throng_proto::v1::PublishOutcome;
use tokio::time::Instant;

use harness::{Device, TestCluster, WAIT, eventually, ingest_request, publish};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_ingest_api_reaches_devices_on_any_handler() {
    let cluster = TestCluster::start(3).await;
    let mut ingest = cluster.distributor.ingest().await;
    let mut device = Device::connect(cluster.node(1).mqtt, "dev-1").await;

    let (outcome, result) = publish(
        &mut ingest,
        ingest_request("dev-1", "cmd/dev-1", "{\"n\":1}", "m-1"),
    )
    .await;
    assert_eq!(outcome, PublishOutcome::Accepted, "{result:?}");
    assert_eq!(result.message_id, "m-1");
    let got = device.recv().await;
    assert_eq!(got.topic, "cmd/dev-1");
    assert_eq!(&got.payload[..], b"{\"n\":1}");
    assert_eq!(got.qos, QoS::AtLeastOnce);
    assert_eq!(
        got.properties.user_properties,
        vec![("from".into(), "backend".into())]
    );
    assert_eq!(
        got.properties.content_type.as_deref(),
        Some("application/json")
    );

    // The same message id again: the same answer, not a second delivery.
    let (outcome, _) = publish(
        &mut ingest,
        ingest_request("dev-1", "cmd/dev-1", "{\"n\":1}", "m-1"),
    )
    .await;
    assert_eq!(outcome, PublishOutcome::Accepted);
    device.assert_quiet().await;

    // Nobody has this client.
    let (outcome, result) = publish(
        &mut ingest,
        ingest_request("ghost", "cmd/ghost", "x", "m-2"),
    )
    .await;
    assert_eq!(outcome, PublishOutcome::Undeliverable, "{result:?}");

    // An offline persistent session: queued, delivered on reconnect.
    let (parked, _) = Device::connect_persistent(cluster.node(2).mqtt, "dev-p", true).await;
    parked.disconnect().await;
    eventually("dev-p's session to go offline", || {
        cluster.node(2).metric("throng_sessions{state=\"offline\"}") == 1.0
    })
    .await;
    let (outcome, result) = publish(
        &mut ingest,
        ingest_request("dev-p", "cmd/dev-p", "later", "m-3"),
    )
    .await;
    assert_eq!(outcome, PublishOutcome::Queued, "{result:?}");
    let (mut parked, present) =
        Device::connect_persistent(cluster.node(2).mqtt, "dev-p", false).await;
    assert!(present);
    let got = parked.recv().await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("cmd/dev-p", &b"later"[..])
    );
    parked.assert_quiet().await;
    // QoS 0 is not queued for an offline session: refused.
    parked.disconnect().await;
    eventually("dev-p's session to go offline again", || {
        cluster.node(2).metric("throng_sessions{state=\"offline\"}") == 1.0
    })
    .await;
    let mut qos0 = ingest_request("dev-p", "cmd/dev-p", "now or never", "m-5");
    qos0.qos = 0;
    let (outcome, result) = publish(&mut ingest, qos0).await;
    assert_eq!(outcome, PublishOutcome::Rejected, "{result:?}");

    // A topic publish reaches every subscriber on every handler.
    let mut sub1 = Device::connect(cluster.node(0).mqtt, "news-1").await;
    let mut sub3 = Device::connect(cluster.node(2).mqtt, "news-3").await;
    sub1.subscribe("news/#", QoS::AtLeastOnce).await;
    sub3.subscribe("news/#", QoS::AtMostOnce).await;
    // The distributor must know both subscriptions first; a topic publish
    // with nobody subscribed is also ACCEPTED, so poll by delivery.
    let mut probe = ingest_request("", "news/probe", "probe", "");
    probe.qos = 0;
    let deadline = Instant::now() + WAIT;
    while sub1.probes == 0 || sub3.probes == 0 {
        assert!(Instant::now() < deadline, "topic probes never reached both");
        let (outcome, _) = publish(&mut ingest, probe.clone()).await;
        assert_eq!(outcome, PublishOutcome::Accepted);
        let until = Instant::now() + Duration::from_millis(50);
        sub1.pump_until(until).await;
        sub3.pump_until(until).await;
    }
    let (outcome, _) = publish(
        &mut ingest,
        ingest_request("", "news/today", "headline", "m-4"),
    )
    .await;
    assert_eq!(outcome, PublishOutcome::Accepted);
    for (sub, qos) in [(&mut sub1, QoS::AtLeastOnce), (&mut sub3, QoS::AtMostOnce)] {
        let got = sub.recv().await;
        assert_eq!(
            (got.topic.as_str(), &got.payload[..]),
            ("news/today", &b"headline"[..])
        );
        assert_eq!(got.qos, qos);
        sub.assert_quiet().await;
    }
}
