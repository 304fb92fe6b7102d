//! Device publishes between handlers attached to a real distributor over real
//! gRPC on loopback: they cross handlers exactly once with their QoS and
//! properties, nothing is forwarded that no other handler wants, and shared
//! subscriptions give each message to one member cluster-wide.

#[path = "support/cluster.rs"]
mod harness;
mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use throng_codec::{PublishProperties, QoS};
use tokio::time::{Instant, sleep};

use harness::{DEVICE_ROUTED, Device, TestCluster, WAIT, eventually, message, wait_for_route};

fn properties(expiry: u32) -> PublishProperties {
    PublishProperties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(expiry),
        response_topic: Some("reply/to".into()),
        correlation_data: Some(bytes::Bytes::from_static(b"corr-1")),
        user_properties: vec![
            ("k".into(), "v".into()),
            ("k".into(), "w".into()),
            ("z".into(), "last".into()),
        ],
        content_type: Some("text/plain".into()),
        ..PublishProperties::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publishes_cross_handlers_once_with_qos_and_properties() {
    let cluster = TestCluster::start(3).await;
    let mut publisher = Device::connect(cluster.node(0).mqtt, "pub-1").await;
    let mut sub2 = Device::connect(cluster.node(1).mqtt, "sub-2").await;
    let mut sub3 = Device::connect(cluster.node(2).mqtt, "sub-3").await;
    // On the publisher's own handler: served locally, never echoed back.
    let mut sub1 = Device::connect(cluster.node(0).mqtt, "sub-1").await;
    sub1.subscribe("a/#", QoS::AtLeastOnce).await;
    sub2.subscribe("a/#", QoS::ExactlyOnce).await;
    sub3.subscribe("a/+", QoS::AtLeastOnce).await;
    wait_for_route(
        &mut publisher,
        "a/probe",
        &mut [&mut sub1, &mut sub2, &mut sub3],
    )
    .await;

    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let payload = format!("qos {}", qos as u8);
        let mut sent = message("a/x", payload.as_bytes(), qos);
        sent.properties = properties(120);
        publisher.publish(sent).await;
        for (sub, granted) in [
            (&mut sub1, QoS::AtLeastOnce),
            (&mut sub2, QoS::ExactlyOnce),
            (&mut sub3, QoS::AtLeastOnce),
        ] {
            let got = sub.recv().await;
            assert_eq!(got.topic, "a/x", "{}", sub.name);
            assert_eq!(&got.payload[..], payload.as_bytes(), "{}", sub.name);
            assert_eq!(got.qos, qos.min(granted), "{}: {payload}", sub.name);
            assert!(!got.retain && !got.dup, "{}: {got:?}", sub.name);
            let expected = properties(120);
            let props = &got.properties;
            assert_eq!(props.user_properties, expected.user_properties);
            assert_eq!(props.content_type, expected.content_type);
            assert_eq!(props.response_topic, expected.response_topic);
            assert_eq!(props.correlation_data, expected.correlation_data);
            assert_eq!(props.payload_format_indicator, Some(1));
            let expiry = props.message_expiry_interval.expect("expiry passed on");
            assert!(
                (100..=120).contains(&expiry),
                "{}: expiry {expiry}",
                sub.name
            );
            assert!(props.subscription_identifiers.is_empty());
        }
    }
    // Exactly once: no second copy anywhere.
    sub1.assert_quiet().await;
    sub2.assert_quiet().await;
    sub3.assert_quiet().await;

    // The expiry left shrinks while a message waits: a message for an offline
    // session on another handler, read 2 s later, has at most 118 s left.
    let (mut sub, _) = Device::connect_persistent(cluster.node(1).mqtt, "late-2", true).await;
    sub.subscribe("late/#", QoS::AtLeastOnce).await;
    wait_for_route(&mut publisher, "late/probe", &mut [&mut sub]).await;
    sub.disconnect().await;
    eventually("late-2's session to go offline", || {
        cluster.node(1).metric("throng_sessions{state=\"offline\"}") == 1.0
    })
    .await;
    let mut sent = message("late/x", b"waited", QoS::AtLeastOnce);
    sent.properties = properties(120);
    publisher.publish(sent).await;
    sleep(Duration::from_millis(2_100)).await;
    let (mut sub, present) =
        Device::connect_persistent(cluster.node(1).mqtt, "late-2", false).await;
    assert!(present);
    let got = sub.recv().await;
    assert_eq!(&got.payload[..], b"waited");
    let expiry = got.properties.message_expiry_interval.unwrap();
    assert!((100..=118).contains(&expiry), "expiry {expiry}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_is_forwarded_that_no_other_handler_wants() {
    let cluster = TestCluster::start(2).await;
    let (h1, distributor) = (cluster.node(0), &cluster.distributor);
    let mut local = Device::connect(h1.mqtt, "local-1").await;
    let mut remote = Device::connect(cluster.node(1).mqtt, "remote-2").await;
    let mut publisher = Device::connect(h1.mqtt, "pub-1").await;
    let mut remote_pub = Device::connect(cluster.node(1).mqtt, "pub-2").await;

    // A delivery reaching h1 proves h1 has its interest set (it comes first on
    // the stream); until then a handler forwards everything.
    local.subscribe("back/#", QoS::AtLeastOnce).await;
    wait_for_route(&mut remote_pub, "back/probe", &mut [&mut local]).await;
    local.subscribe("local/#", QoS::AtLeastOnce).await;
    remote.subscribe("seen/#", QoS::AtLeastOnce).await;
    wait_for_route(&mut publisher, "seen/probe", &mut [&mut remote]).await;
    // Everything forwarded so far has been routed once this arrives.
    publisher
        .publish(message("seen/sync", b"sync", QoS::AtLeastOnce))
        .await;
    assert_eq!(&remote.recv().await.payload[..], b"sync");
    let forwarded = h1.forwarded();
    let routed = distributor.metric(DEVICE_ROUTED);

    // Only a local subscriber, or nobody at all: not forwarded.
    publisher
        .publish(message("local/x", b"stay", QoS::AtLeastOnce))
        .await;
    assert_eq!(&local.recv().await.payload[..], b"stay");
    publisher
        .publish(message("nobody/x", b"void", QoS::ExactlyOnce))
        .await;
    assert_eq!(h1.forwarded(), forwarded);
    // A publish another handler wants is, and arrives behind the others.
    publisher
        .publish(message("seen/x", b"go", QoS::AtLeastOnce))
        .await;
    assert_eq!(&remote.recv().await.payload[..], b"go");
    assert_eq!(h1.forwarded(), forwarded + 1.0);
    assert_eq!(distributor.metric(DEVICE_ROUTED), routed + 1.0);
    remote.assert_quiet().await;
    local.assert_quiet().await;

    // Once the remote subscriber leaves, h1 stops forwarding seen/… (when its
    // interest update arrives; the count moves in the publish call itself).
    remote.disconnect().await;
    let mut i = 0;
    loop {
        let before = h1.forwarded();
        publisher
            .publish(message("seen/y", b"after", QoS::AtLeastOnce))
            .await;
        if h1.forwarded() == before {
            break;
        }
        i += 1;
        assert!(i < 300, "h1 still forwards seen/y");
        sleep(Duration::from_millis(50)).await;
    }
    let forwarded = h1.forwarded();
    for _ in 0..5 {
        publisher
            .publish(message("seen/y", b"after", QoS::AtLeastOnce))
            .await;
    }
    assert_eq!(h1.forwarded(), forwarded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_subscriptions_give_each_message_to_one_member_cluster_wide() {
    let cluster = TestCluster::start(3).await;
    let mut member2 = Device::connect(cluster.node(1).mqtt, "member-2").await;
    let mut member3 = Device::connect(cluster.node(2).mqtt, "member-3").await;
    member2.subscribe("$share/g/jobs/#", QoS::AtLeastOnce).await;
    member3.subscribe("$share/g/jobs/#", QoS::AtLeastOnce).await;
    let mut pub1 = Device::connect(cluster.node(0).mqtt, "pub-1").await;
    let mut pub2 = Device::connect(cluster.node(1).mqtt, "pub-2").await;
    // Both members are known to the distributor once each has had a probe.
    wait_for_route(&mut pub1, "jobs/probe", &mut [&mut member2, &mut member3]).await;

    // From a handler without members, and from one with a member (the
    // distributor picks there too: the copy comes back shared_only).
    for (publisher, from) in [(&mut pub1, "h1"), (&mut pub2, "h2")] {
        let sent: BTreeSet<String> = (0..20).map(|i| format!("{from}-{i}")).collect();
        for payload in &sent {
            publisher
                .publish(message("jobs/x", payload.as_bytes(), QoS::AtLeastOnce))
                .await;
        }
        let (mut got2, mut got3) = (Vec::new(), Vec::new());
        let deadline = Instant::now() + WAIT;
        while got2.len() + got3.len() < sent.len() {
            assert!(
                Instant::now() < deadline,
                "from {from}: only {got2:?} / {got3:?} arrived"
            );
            if let Some(p) = member2.recv_within(Duration::from_millis(50)).await {
                got2.push(String::from_utf8(p.payload.to_vec()).unwrap());
            }
            if let Some(p) = member3.recv_within(Duration::from_millis(50)).await {
                got3.push(String::from_utf8(p.payload.to_vec()).unwrap());
            }
        }
        member2.assert_quiet().await;
        member3.assert_quiet().await;
        let all: Vec<&String> = got2.iter().chain(&got3).collect();
        let unique: BTreeSet<String> = all.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            all.len(),
            unique.len(),
            "duplicates from {from}: {got2:?} {got3:?}"
        );
        assert_eq!(unique, sent, "from {from}");
        assert!(
            !got2.is_empty() && !got3.is_empty(),
            "from {from}: one member got everything: {got2:?} / {got3:?}"
        );
    }
}
