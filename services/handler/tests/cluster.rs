//! Handlers in one process attached to a real distributor over real gRPC on
//! loopback, with MQTT 5 devices on different handlers: device publishes cross
//! handlers exactly once with their properties, nothing is forwarded that no
//! other handler wants, retained messages and shared subscriptions work
//! cluster-wide, the ingest API reaches devices, the cluster recovers from a
//! distributor restart, and two distributors split the work without duplicates.
//!
//! Interest propagates asynchronously: tests wait for it with route probes
//! (`wait_for_route`) or with acknowledged ingest messages (`sync_through`).

#[path = "support/cluster.rs"]
mod harness;
mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use throng_codec::{Packet, ProtocolVersion, PublishProperties, QoS};
use throng_distributor::HubConfig;
use throng_handler::HandlerConfig;
use throng_proto::v1::ingest_client::IngestClient;
use throng_proto::v1::{PublishOutcome, PublishRequest, PublishResult, UserProperty};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, sleep};
use tonic::transport::Channel;

use harness::{
    Device, Node, TestCluster, TestDistributor, WAIT, distributor_ring, eventually, handler_ring,
    message, wait_for_route,
};

const DEVICE_ROUTED: &str = "throng_distributor_routed_total{kind=\"device\"}";

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

async fn publish(
    ingest: &mut IngestClient<Channel>,
    request: PublishRequest,
) -> (PublishOutcome, PublishResult) {
    let result = ingest
        .publish(request)
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    (result.outcome(), result)
}

fn ingest_request(client_id: &str, topic: &str, payload: &str, message_id: &str) -> PublishRequest {
    PublishRequest {
        client_id: client_id.to_owned(),
        topic: topic.to_owned(),
        payload: payload.as_bytes().to_vec().into(),
        qos: 1,
        message_id: message_id.to_owned(),
        user_properties: vec![UserProperty {
            key: "from".into(),
            value: "backend".into(),
        }],
        content_type: Some("application/json".into()),
        ..PublishRequest::default()
    }
}

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

/// Forward queue limit of the overload tests: small, so one read of a burst is over it.
const FORWARD_LIMIT: usize = 64;
/// Messages per burst in the overload tests.
const BURST: usize = 10_000;
/// Bytes a connection reads per read (the handler's read scratch buffer).
const READ_BYTES: usize = 64 * 1024;

/// Two handlers with a small forward limit (and session queues roomy enough that
/// the subscriber's handler drops nothing) behind a distributor with small
/// handler channels: a burst from one device overloads the path to the other.
async fn overload_cluster() -> TestCluster {
    let handler = HandlerConfig {
        forward_queue_limit: FORWARD_LIMIT,
        max_queued_messages: 4 * BURST,
        ..HandlerConfig::default()
    };
    let hub = HubConfig {
        handler_channel: 16,
        ..HubConfig::default()
    };
    TestCluster::start_with(2, handler, hub).await
}

fn burst_payload(i: usize) -> String {
    format!("{i:06}")
}

/// Writes `BURST` publishes on `topic` at once (packet ids 1..) and reads the
/// acknowledgements of QoS 1 ones as they come, while sampling the forwards
/// queued on `node`. Returns the PUBACK reason codes and the largest sample.
async fn burst(device: &mut Device, node: &Node, topic: &str, qos: QoS) -> (Vec<u8>, usize) {
    let mut bytes = Vec::new();
    for i in 0..BURST {
        let mut publish = message(topic, burst_payload(i).as_bytes(), qos);
        publish.packet_id = (qos != QoS::AtMostOnce).then_some(i as u16 + 1);
        throng_codec::encode(&Packet::Publish(publish), ProtocolVersion::V5, &mut bytes).unwrap();
    }
    let done = AtomicBool::new(false);
    let (mut reader, mut writer) = device.raw.stream.split();
    let write = async {
        writer.write_all(&bytes).await.unwrap();
        if qos == QoS::AtMostOnce {
            // The answer to a PINGREQ comes after every publish before it.
            let mut ping = Vec::new();
            throng_codec::encode(&Packet::PingReq, ProtocolVersion::V5, &mut ping).unwrap();
            writer.write_all(&ping).await.unwrap();
        }
    };
    let read = async {
        let mut buf = bytes::BytesMut::new();
        let mut codes = Vec::new();
        let expected = if qos == QoS::AtMostOnce { 1 } else { BURST };
        while codes.len() < expected {
            let packet = loop {
                if let Some(packet) =
                    throng_codec::read_packet(&mut buf, ProtocolVersion::V5, usize::MAX).unwrap()
                {
                    break packet;
                }
                let n = tokio::time::timeout(WAIT, reader.read_buf(&mut buf))
                    .await
                    .expect("the handler answers within WAIT")
                    .unwrap();
                assert!(n > 0, "publisher's connection closed");
            };
            match packet {
                Packet::PubAck(ack) => {
                    assert_eq!(ack.packet_id as usize, codes.len() + 1, "PUBACKs in order");
                    codes.push(ack.reason);
                }
                Packet::PingResp if qos == QoS::AtMostOnce => codes.push(0),
                other => panic!("publisher: unexpected {other:?}"),
            }
        }
        done.store(true, Ordering::SeqCst);
        codes
    };
    let sample = async {
        let mut max = 0;
        while !done.load(Ordering::SeqCst) {
            max = max.max(node.handler.forward_queued());
            sleep(Duration::from_millis(1)).await;
        }
        max
    };
    let ((), codes, max) = tokio::join!(write, read, sample);
    (codes, max)
}

/// The most forwards one handler may hold: the limit, plus the publishes one
/// read can bring before the connection stops reading.
fn forward_bound(topic: &str) -> usize {
    let mut smallest = Vec::new();
    let publish = message(topic, burst_payload(0).as_bytes(), QoS::AtMostOnce);
    throng_codec::encode(
        &Packet::Publish(publish),
        ProtocolVersion::V5,
        &mut smallest,
    )
    .unwrap();
    FORWARD_LIMIT + READ_BYTES / smallest.len() + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn qos1_forwards_are_never_dropped_under_overload() {
    let cluster = overload_cluster().await;
    let mut publisher = Device::connect(cluster.node(0).mqtt, "flood-pub").await;
    let mut subscriber = Device::connect(cluster.node(1).mqtt, "flood-sub").await;
    subscriber.subscribe("flood/+", QoS::AtLeastOnce).await;
    wait_for_route(&mut publisher, "flood/probe", &mut [&mut subscriber]).await;

    let (codes, max_queued) =
        burst(&mut publisher, cluster.node(0), "flood/t", QoS::AtLeastOnce).await;
    // Not "no matching subscribers": another handler has one.
    assert!(codes.iter().all(|c| *c == 0), "PUBACK reasons {:?}", {
        let mut odd: Vec<u8> = codes.iter().copied().filter(|c| *c != 0).collect();
        odd.dedup();
        odd
    });
    let mut got = Vec::with_capacity(BURST);
    for _ in 0..BURST {
        let publish = subscriber.recv().await;
        got.push(String::from_utf8(publish.payload.to_vec()).unwrap());
    }
    let expected: Vec<String> = (0..BURST).map(burst_payload).collect();
    assert!(got == expected, "not every message exactly once in order");
    subscriber.assert_quiet().await;

    let h1 = cluster.node(0);
    assert_eq!(
        h1.metric("throng_messages_dropped_total{reason=\"forward_full\"}"),
        0.0
    );
    assert_eq!(
        cluster
            .distributor
            .metric("throng_distributor_forward_dropped_total"),
        0.0
    );
    // The overload was real: the publisher was paused, and the queue stayed bounded.
    assert!(h1.metric("throng_handler_forward_paused_total") >= 1.0);
    assert!(
        max_queued <= forward_bound("flood/t"),
        "{max_queued} forwards queued, bound {}",
        forward_bound("flood/t")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn qos0_forwards_under_overload_are_dropped_at_most_once_and_bounded() {
    let cluster = overload_cluster().await;
    let mut publisher = Device::connect(cluster.node(0).mqtt, "flood0-pub").await;
    let mut subscriber = Device::connect(cluster.node(1).mqtt, "flood0-sub").await;
    subscriber.subscribe("flood/+", QoS::AtLeastOnce).await;
    wait_for_route(&mut publisher, "flood/probe", &mut [&mut subscriber]).await;

    let (_, max_queued) = burst(&mut publisher, cluster.node(0), "flood/t", QoS::AtMostOnce).await;
    assert!(
        max_queued <= forward_bound("flood/t"),
        "{max_queued} forwards queued, bound {}",
        forward_bound("flood/t")
    );
    // A QoS 1 marker travels behind the burst on the same ordered path.
    publisher
        .publish(message("flood/t", b"end", QoS::AtLeastOnce))
        .await;
    let mut got = Vec::new();
    loop {
        let publish = subscriber.recv().await;
        if &publish.payload[..] == b"end" {
            break;
        }
        got.push(String::from_utf8(publish.payload.to_vec()).unwrap());
    }
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "QoS 0 arrived twice or out of order"
    );
    let dropped = cluster
        .node(0)
        .metric("throng_messages_dropped_total{reason=\"forward_full\"}")
        + cluster
            .distributor
            .metric("throng_distributor_forward_dropped_total")
        + cluster
            .node(1)
            .metric("throng_messages_dropped_total{reason=\"queue_full\"}");
    assert_eq!(
        got.len() as f64 + dropped,
        BURST as f64,
        "every drop counted"
    );
}
