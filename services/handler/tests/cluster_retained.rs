//! Retained messages in a cluster: stored on every handler, given to a handler
//! joining later from the distributor's store, and cleared everywhere.

#[path = "support/cluster.rs"]
mod harness;
mod support;

use throng_codec::QoS;

use harness::{Device, Node, TestCluster, distributor_ring, message};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retained_messages_reach_subscribers_on_every_handler() {
    let cluster = TestCluster::start(3).await;
    let mut publisher = Device::connect(cluster.node(0).mqtt, "pub-1").await;
    let mut sent = message("ret/1", b"kept", QoS::AtLeastOnce);
    sent.retain = true;
    sent.properties.content_type = Some("text/plain".into());
    sent.properties.user_properties = vec![("u".into(), "p".into())];
    publisher.publish(sent).await;
    // Every handler stores it (nobody subscribes yet).
    for node in &cluster.nodes {
        node.wait_retained(1).await;
    }
    for (i, node) in cluster.nodes.iter().enumerate().skip(1) {
        let mut sub = Device::connect(node.mqtt, &format!("ret-sub-{i}")).await;
        sub.subscribe("ret/#", QoS::ExactlyOnce).await;
        let got = sub.recv().await;
        assert_eq!(got.topic, "ret/1");
        assert_eq!(&got.payload[..], b"kept");
        assert!(got.retain);
        assert_eq!(got.qos, QoS::AtLeastOnce);
        assert_eq!(got.properties.content_type.as_deref(), Some("text/plain"));
        assert_eq!(
            got.properties.user_properties,
            vec![("u".into(), "p".into())]
        );
        sub.assert_quiet().await;
    }

    // A handler joining later gets it from the distributor's store.
    let (_tx, ring) = distributor_ring(&[("d0", cluster.distributor.addr)]);
    let late = Node::start("h4", ring).await;
    late.wait_attached(1).await;
    late.wait_retained(1).await;
    let mut sub = Device::connect(late.mqtt, "ret-sub-4").await;
    sub.subscribe("ret/+", QoS::AtLeastOnce).await;
    let got = sub.recv().await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("ret/1", &b"kept"[..])
    );
    assert!(got.retain);

    // An empty retained publish clears it everywhere.
    let mut clear = message("ret/1", b"", QoS::AtLeastOnce);
    clear.retain = true;
    publisher.publish(clear).await;
    for node in cluster.nodes.iter().chain([&late]) {
        node.wait_retained(0).await;
    }
    let mut sub = Device::connect(cluster.node(2).mqtt, "ret-sub-after").await;
    sub.subscribe("ret/#", QoS::AtLeastOnce).await;
    sub.assert_quiet().await;
}
