//! Distributors coming and going: handlers re-attach after a distributor restart
//! (subscriptions and retained messages replayed), and two distributors share
//! the work without duplicates.

#[path = "support/cluster.rs"]
mod harness;
mod support;

use std::time::Duration;

use throng_codec::QoS;
use throng_proto::v1::PublishOutcome;
use throng_proto::v1::ingest_client::IngestClient;
use tokio::time::{Instant, sleep};
use tonic::transport::Channel;

use harness::{
    DEVICE_ROUTED, Device, Node, TestCluster, TestDistributor, distributor_ring, eventually,
    handler_ring, ingest_request, message, publish, wait_for_route,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn handlers_reattach_after_a_distributor_restart() {
    let mut cluster = TestCluster::start(3).await;
    let mut publisher = Device::connect(cluster.node(0).mqtt, "pub-1").await;
    let mut sub = Device::connect(cluster.node(1).mqtt, "sub-2").await;
    sub.subscribe("r/#", QoS::AtLeastOnce).await;
    wait_for_route(&mut publisher, "r/probe", &mut [&mut sub]).await;
    // A retained message with a 20 s expiry, which every handler stores.
    let published = Instant::now();
    let mut kept = message("keep/1", b"kept", QoS::AtLeastOnce);
    kept.retain = true;
    kept.properties.message_expiry_interval = Some(20);
    publisher.publish(kept).await;
    for node in &cluster.nodes {
        node.wait_retained(1).await;
    }

    let addr = cluster.distributor.addr;
    cluster.distributor.crash();
    for node in &cluster.nodes {
        node.wait_attached(0).await;
    }
    // Let the retained message age before the handlers replay it.
    sleep(Duration::from_secs(5)).await;
    cluster.distributor =
        TestDistributor::start("d0", addr, handler_ring(&["h1", "h2", "h3"])).await;
    cluster.wait_all_attached().await;

    // The snapshot came with the new stream: h2's subscription is routed again.
    wait_for_route(&mut publisher, "r/probe", &mut [&mut sub]).await;
    publisher
        .publish(message("r/x", b"again", QoS::AtLeastOnce))
        .await;
    let got = sub.recv().await;
    assert_eq!(&got.payload[..], b"again");
    sub.assert_quiet().await;

    // The replayed retained message keeps its expiry counted from publication:
    // a handler joining now gets about 15 s left, not less. (h1 replayed it on
    // attach, ahead of the ack that answers this.)
    let mut ingest = cluster.distributor.ingest().await;
    sync_through(&mut ingest, &mut publisher).await;
    let (_tx, ring) = distributor_ring(&[("d0", addr)]);
    let late = Node::start("h4", ring).await;
    late.wait_attached(1).await;
    late.wait_retained(1).await;
    let mut late_sub = Device::connect(late.mqtt, "late-4").await;
    late_sub.subscribe("keep/#", QoS::AtLeastOnce).await;
    let got = late_sub.recv().await;
    assert_eq!(&got.payload[..], b"kept");
    let left = f64::from(got.properties.message_expiry_interval.unwrap());
    let age = published.elapsed().as_secs_f64();
    // Rounded up to whole seconds; a replay counting the expiry from the
    // replay instead would leave about 5 s less.
    assert!(
        left >= 20.0 - age - 1.0 && left <= 20.0 - 5.0 + 1.0,
        "expiry left {left} s for a message {age:.1} s old with a 20 s expiry"
    );
}

/// Sends a client-targeted message to `device` through `ingest` and waits for it.
/// Its ACCEPTED answer is the handler's ack, sent behind everything the handler
/// told that distributor before (subscription changes, retained copies); its
/// arrival follows everything that distributor sent the handler before
/// (interest updates). So both directions of that stream are caught up.
async fn sync_through(ingest: &mut IngestClient<Channel>, device: &mut Device) {
    let (outcome, result) = publish(ingest, ingest_request(&device.name, "sync/x", "s", "")).await;
    assert_eq!(outcome, PublishOutcome::Accepted, "{result:?}");
    let got = device.recv().await;
    assert_eq!(got.topic, "sync/x", "{}", device.name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_distributors_share_the_work_without_duplicates() {
    let ids = ["h1", "h2", "h3"];
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let d0 = TestDistributor::start("d0", any, handler_ring(&ids)).await;
    let d1 = TestDistributor::start("d1", any, handler_ring(&ids)).await;
    let (_tx, ring) = distributor_ring(&[("d0", d0.addr), ("d1", d1.addr)]);
    let mut nodes = Vec::new();
    for id in ids {
        nodes.push(Node::start(id, ring.clone()).await);
    }
    for node in &nodes {
        node.wait_attached(2).await;
    }
    eventually("both distributors to see every handler", || {
        d0.attached() == 3 && d1.attached() == 3
    })
    .await;
    let mut ingest0 = d0.ingest().await;
    let mut ingest1 = d1.ingest().await;
    let mut publisher = Device::connect(nodes[0].mqtt, "pub-1").await;
    let mut sub = Device::connect(nodes[1].mqtt, "sub-2").await;
    sub.subscribe("m/#", QoS::AtLeastOnce).await;
    for ingest in [&mut ingest0, &mut ingest1] {
        // The distributor has h2's subscription, and h1 the interest update.
        sync_through(ingest, &mut sub).await;
        sync_through(ingest, &mut publisher).await;
    }

    // Topics spread over both distributors; each message arrives once.
    let sent: Vec<String> = (0..20).map(|i| format!("m/{i}")).collect();
    for topic in &sent {
        publisher
            .publish(message(topic, topic.as_bytes(), QoS::AtLeastOnce))
            .await;
    }
    let mut got = Vec::new();
    for _ in &sent {
        got.push(sub.recv().await.topic);
    }
    sub.assert_quiet().await;
    got.sort();
    let mut expected = sent.clone();
    expected.sort();
    assert_eq!(got, expected);
    let (routed0, routed1) = (d0.metric(DEVICE_ROUTED), d1.metric(DEVICE_ROUTED));
    assert_eq!(routed0 + routed1, 20.0);
    assert!(routed0 > 0.0 && routed1 > 0.0, "{routed0} / {routed1}");

    // The same message id through the other distributor (as after a distributor
    // failed before it heard the ack): the handler recognises it.
    let (outcome, _) = publish(
        &mut ingest0,
        ingest_request("sub-2", "cmd/x", "once", "dup-1"),
    )
    .await;
    assert_eq!(outcome, PublishOutcome::Accepted);
    assert_eq!(&sub.recv().await.payload[..], b"once");
    let (outcome, _) = publish(
        &mut ingest1,
        ingest_request("sub-2", "cmd/x", "once", "dup-1"),
    )
    .await;
    assert_eq!(outcome, PublishOutcome::Accepted);
    sub.assert_quiet().await;

    // A retained publish is routed by one distributor and copied to the other:
    // a handler attached to either one only gets it.
    let mut kept = message("keep/1", b"kept", QoS::AtLeastOnce);
    kept.retain = true;
    publisher.publish(kept).await;
    // Stored by the routing distributor (before it delivered), and by the
    // other once it acks what h1 sent after the copy.
    for node in &nodes {
        node.wait_retained(1).await;
    }
    for ingest in [&mut ingest0, &mut ingest1] {
        sync_through(ingest, &mut publisher).await;
    }
    for (id, distributor) in [("h4", &d0), ("h5", &d1)] {
        let (_tx, ring) = distributor_ring(&[(distributor.distributor.id(), distributor.addr)]);
        let late = Node::start(id, ring).await;
        late.wait_attached(1).await;
        late.wait_retained(1).await;
        let mut device = Device::connect(late.mqtt, &format!("late-{id}")).await;
        device.subscribe("keep/#", QoS::AtLeastOnce).await;
        let got = device.recv().await;
        assert_eq!(
            (got.topic.as_str(), &got.payload[..]),
            ("keep/1", &b"kept"[..])
        );
        assert!(got.retain);
    }
}
