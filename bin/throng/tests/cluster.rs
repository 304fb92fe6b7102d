//! The cluster as one broker, end to end: real `throng distributor` ×2,
//! `throng handler` ×3 and `throng agent` processes, devices connecting through
//! the agent, publishers and subscribers on different handlers. Device to device
//! delivery (filters, QoS downgrade, order, exactly once, no-local), retained
//! messages cluster-wide (also after a handler restart, and cleared everywhere),
//! and shared subscriptions across handlers.
//!
//! Subscriptions reach the other handlers asynchronously, so before counting
//! anything each test probes: it publishes probe messages on the very topics it
//! will use, from the very publishers, until every subscriber that should get
//! them has. A handler forwards a topic through one distributor (the same one
//! while membership is stable), so a probe that arrived proves the path the
//! real messages take.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use throng_codec::{QoS, SubscriptionOptions};
use throng_topic::matches;

/// Publishes probes on `topic` from `publisher` until each of `receivers` got
/// one; every message read meanwhile must be a probe. Returns what each
/// receiver read.
fn probe(
    publisher: &mut Device,
    topic: &str,
    receivers: &mut [&mut Device],
) -> Vec<Vec<throng_codec::Publish>> {
    let deadline = Instant::now() + WAIT;
    let mut reached = vec![false; receivers.len()];
    let mut read = vec![Vec::new(); receivers.len()];
    for n in 0.. {
        if reached.iter().all(|r| *r) {
            return read;
        }
        let missing: Vec<&str> = receivers
            .iter()
            .zip(&reached)
            .filter(|(_, r)| !**r)
            .map(|(d, _)| d.id.as_str())
            .collect();
        assert!(
            Instant::now() < deadline,
            "probes from {} on {topic} never reached {missing:?}",
            publisher.id
        );
        publisher.publish(
            topic,
            format!("probe {n}").as_bytes(),
            QoS::AtLeastOnce,
            false,
        );
        for ((receiver, reached), read) in receivers.iter_mut().zip(&mut reached).zip(&mut read) {
            while !*reached && let Some(m) = receiver.next(Duration::from_millis(100)) {
                assert!(m.payload.starts_with(b"probe"), "{}: {m:?}", receiver.id);
                *reached = m.topic == topic;
                read.push(m);
            }
        }
    }
    unreachable!()
}

/// The messages a device receives until it has `n` that are not probes.
fn collect(device: &mut Device, n: usize) -> Vec<throng_codec::Publish> {
    let mut all = collect_all(device, n);
    all.retain(|m| !m.payload.starts_with(b"probe"));
    all
}

/// Every message a device receives, probes too, until `n` are not probes.
fn collect_all(device: &mut Device, n: usize) -> Vec<throng_codec::Publish> {
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    let mut real = 0;
    while real < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(m) = device.next(left) else {
            panic!("{}: {real} of {n} messages: {got:?}", device.id);
        };
        real += usize::from(!m.payload.starts_with(b"probe"));
        got.push(m);
    }
    got
}

/// Asserts that none of `devices` receives anything more (besides probes).
fn quiet(devices: &mut [&mut Device]) {
    for device in devices.iter_mut() {
        let late: Vec<_> = device
            .sync()
            .into_iter()
            .filter(|m| !m.payload.starts_with(b"probe"))
            .collect();
        assert!(late.is_empty(), "{}: unexpected {late:?}", device.id);
    }
    std::thread::sleep(QUIET);
    for device in devices.iter_mut() {
        while let Some(m) = device.next(Duration::from_millis(1)) {
            assert!(
                m.payload.starts_with(b"probe"),
                "{}: unexpected {m:?}",
                device.id
            );
        }
    }
}

struct Sub {
    device: Device,
    filter: &'static str,
    qos: QoS,
}

#[test]
fn devices_exchange_messages_across_handlers_as_on_one_broker() {
    let cluster = FullCluster::start(Setup::default());
    const PER_TOPIC: usize = 30;
    let plan = [
        ("h0", "fan/+/t", 0, v311()),
        ("h0", "fan/#", 1, v5()),
        ("h1", "fan/+/t", 1, v5()),
        ("h1", "fan/#", 2, v311()),
        ("h2", "fan/+/t", 2, v311()),
        ("h2", "fan/#", 0, v5()),
    ];
    let mut subs: Vec<Sub> = plan
        .iter()
        .enumerate()
        .map(|(i, &(handler, filter, qos, version))| {
            let id = cluster.id_on(handler, &format!("sub{i}-"));
            let mut device = cluster.connect(&id, version);
            device.subscribe(filter, sub_qos(qos_of(qos)));
            Sub {
                device,
                filter,
                qos: qos_of(qos),
            }
        })
        .collect();
    let mut unmatched = cluster.connect(&cluster.id_on("h1", "none-"), v311());
    unmatched.subscribe("fan/+/none", sub_qos(QoS::ExactlyOnce));
    // One publisher per handler, each on a topic both filters match and on one
    // only `fan/#` matches.
    let mut publishers: Vec<(Device, [String; 2])> = (0..3)
        .map(|i| {
            let id = cluster.id_on(&format!("h{i}"), &format!("pub{i}-"));
            let version = if i == 1 { v5() } else { v311() };
            let topics = [format!("fan/p{i}/t"), format!("fan/p{i}/deep/x")];
            (cluster.connect(&id, version), topics)
        })
        .collect();

    for (publisher, topics) in &mut publishers {
        for topic in topics.iter() {
            let mut receivers: Vec<&mut Device> = subs
                .iter_mut()
                .filter(|s| matches(s.filter, topic))
                .map(|s| &mut s.device)
                .collect();
            probe(publisher, topic, &mut receivers);
        }
    }
    let all_topics: Vec<String> = publishers.iter().flat_map(|(_, t)| t.clone()).collect();

    // Message `seq` of every topic is published at QoS seq % 3.
    for seq in 0..PER_TOPIC {
        for (publisher, topics) in &mut publishers {
            for topic in topics.iter() {
                let qos = qos_of((seq % 3) as u8);
                publisher.publish(topic, seq.to_string().as_bytes(), qos, false);
            }
        }
    }

    for sub in &mut subs {
        let expected: Vec<&String> = all_topics
            .iter()
            .filter(|t| matches(sub.filter, t))
            .collect();
        let got = collect(&mut sub.device, expected.len() * PER_TOPIC);
        let mut by_topic: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for m in &got {
            let seq: usize = std::str::from_utf8(&m.payload).unwrap().parse().unwrap();
            let want = qos_of((seq % 3) as u8).min(sub.qos);
            assert_eq!(m.qos, want, "{}: QoS of {} #{seq}", sub.device.id, m.topic);
            assert!(!m.retain && !m.dup, "{}: {m:?}", sub.device.id);
            by_topic.entry(&m.topic).or_default().push(seq);
        }
        let topics: Vec<&str> = by_topic.keys().copied().collect();
        let mut want_topics: Vec<&str> = expected.iter().map(|t| t.as_str()).collect();
        want_topics.sort();
        assert_eq!(topics, want_topics, "{} ({})", sub.device.id, sub.filter);
        for (topic, seqs) in by_topic {
            let want: Vec<usize> = (0..PER_TOPIC).collect();
            assert_eq!(seqs, want, "{}: order of {topic}", sub.device.id);
        }
    }
    let mut everyone: Vec<&mut Device> = subs.iter_mut().map(|s| &mut s.device).collect();
    quiet(&mut everyone);
    // Not even a probe reached the subscriber that matches nothing.
    unmatched.expect_quiet(QUIET);

    no_local_holds_across_handlers(&cluster);
}

/// MQTT 5 no-local: two no-local subscribers on different handlers publish;
/// each gets the other's messages, never its own; a watcher on the third
/// handler gets both.
fn no_local_holds_across_handlers(cluster: &FullCluster) {
    let no_local = SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        no_local: true,
        ..SubscriptionOptions::default()
    };
    let mut a = cluster.connect(&cluster.id_on("h0", "nl-a-"), v5());
    let mut b = cluster.connect(&cluster.id_on("h1", "nl-b-"), v5());
    let mut watcher = cluster.connect(&cluster.id_on("h2", "nl-w-"), v5());
    a.subscribe("nl/#", no_local);
    b.subscribe("nl/#", no_local);
    watcher.subscribe("nl/#", sub_qos(QoS::AtLeastOnce));
    let (topic_a, topic_b) = ("nl/a", "nl/b");
    // Everything a and b ever read is kept: not even a probe may come back.
    let mut read_by_b = probe(&mut a, topic_a, &mut [&mut b, &mut watcher]).remove(0);
    let mut read_by_a = probe(&mut b, topic_b, &mut [&mut a, &mut watcher]).remove(0);
    for i in 0..5 {
        let (pa, pb) = (format!("a{i}"), format!("b{i}"));
        a.publish(topic_a, pa.as_bytes(), QoS::AtLeastOnce, false);
        b.publish(topic_b, pb.as_bytes(), QoS::AtLeastOnce, false);
    }
    // Sorted real payloads: a duplicate shows.
    let payloads = |got: &[throng_codec::Publish]| -> Vec<String> {
        let mut out: Vec<String> = got
            .iter()
            .filter(|m| !m.payload.starts_with(b"probe"))
            .map(|m| String::from_utf8(m.payload.to_vec()).unwrap())
            .collect();
        out.sort();
        out
    };
    let of = |prefixes: &str| -> Vec<String> {
        let mut out: Vec<String> = prefixes
            .chars()
            .flat_map(|p| (0..5).map(move |i| format!("{p}{i}")))
            .collect();
        out.sort();
        out
    };
    assert_eq!(payloads(&collect(&mut watcher, 10)), of("ab"));
    read_by_a.extend(collect_all(&mut a, 5));
    read_by_b.extend(collect_all(&mut b, 5));
    quiet(&mut [&mut watcher]);
    for (device, read, other) in [
        (&mut a, &mut read_by_a, topic_b),
        (&mut b, &mut read_by_b, topic_a),
    ] {
        read.extend(device.sync());
        while let Some(m) = device.next(QUIET) {
            read.push(m);
        }
        assert!(
            read.iter().all(|m| m.topic == other),
            "{} got its own publish back: {read:?}",
            device.id
        );
    }
    assert_eq!(payloads(&read_by_a), of("b"));
    assert_eq!(payloads(&read_by_b), of("a"));
}

/// Waits until every handler holds `n` retained messages.
fn wait_retained(cluster: &FullCluster, n: f64) {
    wait_until(
        &format!("{n} retained message(s) on every handler"),
        WAIT,
        || {
            cluster
                .handlers
                .iter()
                .all(|h| metric(h.admin, "throng_retained_messages") == n)
        },
    );
}

/// Subscribes a new device on `handler` to `ret/#` and returns what it gets
/// before a ping round trip comes back, after `expect` messages.
fn retained_seen_on(cluster: &FullCluster, handler: &str, expect: usize) -> Vec<(String, String)> {
    let id = cluster.id_on(handler, "ret-sub-");
    let admin = cluster.handler(handler).admin;
    let accepted = || metric(admin, "throng_handler_connects_total{result=\"accepted\"}");
    let before = accepted();
    let mut device = cluster.connect(&id, v311());
    wait_until(&format!("{id} accepted by {handler}"), WAIT, || {
        accepted() == before + 1.0
    });
    device.subscribe("ret/#", sub_qos(QoS::AtLeastOnce));
    let mut got = Vec::new();
    for _ in 0..expect {
        let m = device.expect("a retained message");
        assert!(m.retain, "{handler}: {m:?} without RETAIN");
        got.push((m.topic, String::from_utf8(m.payload.to_vec()).unwrap()));
    }
    device.expect_quiet(QUIET);
    device.disconnect();
    got
}

#[test]
fn retained_messages_are_cluster_wide() {
    let mut cluster = FullCluster::start(Setup::default());
    let mut publisher = cluster.connect(&cluster.id_on("h0", "ret-pub-"), v311());
    publisher.publish("ret/a", b"v1", QoS::AtLeastOnce, true);
    wait_retained(&cluster, 1.0);
    for handler in ["h1", "h2", "h0"] {
        let got = retained_seen_on(&cluster, handler, 1);
        assert_eq!(got, [("ret/a".to_owned(), "v1".to_owned())], "{handler}");
    }

    // A handler restarted after the publish gets the retained set from the
    // distributors when it attaches again.
    cluster.restart_handler("h2");
    wait_retained(&cluster, 1.0);
    let got = retained_seen_on(&cluster, "h2", 1);
    assert_eq!(got, [("ret/a".to_owned(), "v1".to_owned())], "restarted h2");

    // An empty retained payload clears it on every handler and distributor.
    publisher.publish("ret/a", b"", QoS::AtLeastOnce, true);
    wait_retained(&cluster, 0.0);
    for handler in ["h0", "h1", "h2"] {
        assert!(
            retained_seen_on(&cluster, handler, 0).is_empty(),
            "{handler}"
        );
    }
    publisher.publish("ret/b", b"v2", QoS::AtLeastOnce, true);
    wait_retained(&cluster, 1.0);
    cluster.restart_handler("h1");
    wait_retained(&cluster, 1.0);
    let got = retained_seen_on(&cluster, "h1", 1);
    assert_eq!(got, [("ret/b".to_owned(), "v2".to_owned())], "restarted h1");
    assert_eq!(
        metric(cluster.handler("h1").admin, "throng_retained_messages"),
        1.0
    );
}

#[test]
fn a_shared_subscription_spans_handlers() {
    let cluster = FullCluster::start(Setup::default());
    // The publisher's handler holds a member: the distributor may pick it back.
    share_round(&cluster, "g3", &["h0", "h1", "h2"], "h1");
    // It holds none: only its interest set makes it forward.
    share_round(&cluster, "g2", &["h0", "h2"], "h1");
}

/// Members of `$share/<group>/<group>/#` on `handlers`, 60 QoS 1 publishes from
/// a client on `publisher_on`: each is received by exactly one member, and more
/// than one member gets some.
fn share_round(cluster: &FullCluster, group: &str, handlers: &[&str], publisher_on: &str) {
    const N: usize = 60;
    let filter = format!("$share/{group}/{group}/#");
    let topic = format!("{group}/run");
    let mut members: Vec<Device> = handlers
        .iter()
        .map(|h| {
            let mut device = cluster.connect(&cluster.id_on(h, "member-"), v5());
            device.subscribe(&filter, sub_qos(QoS::AtLeastOnce));
            device
        })
        .collect();
    let mut publisher = cluster.connect(&cluster.id_on(publisher_on, "jobs-pub-"), v311());
    // Every member is known to the distributor the publisher's handler uses for
    // this topic once each has received a probe (members are picked in turn).
    {
        let mut receivers: Vec<&mut Device> = members.iter_mut().collect();
        probe(&mut publisher, &topic, &mut receivers);
    }
    for i in 0..N {
        let payload = format!("job{i}");
        publisher.publish(&topic, payload.as_bytes(), QoS::AtLeastOnce, false);
    }
    let mut received: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let deadline = Instant::now() + WAIT;
    let total = |r: &BTreeMap<String, Vec<String>>| r.values().map(Vec::len).sum::<usize>();
    while total(&received) < N {
        assert!(Instant::now() < deadline, "{group}: only {received:?}");
        for member in &mut members {
            while let Some(m) = member.next(Duration::from_millis(20)) {
                if !m.payload.starts_with(b"probe") {
                    assert_eq!(m.qos, QoS::AtLeastOnce);
                    let payload = String::from_utf8(m.payload.to_vec()).unwrap();
                    received.entry(member.id.clone()).or_default().push(payload);
                }
            }
        }
    }
    let mut everyone: Vec<&mut Device> = members.iter_mut().collect();
    quiet(&mut everyone);
    let mut all: Vec<&String> = received.values().flatten().collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), N, "{group}: lost or duplicated: {received:?}");
    assert_eq!(total(&received), N, "{group}: duplicated: {received:?}");
    assert!(
        received.len() > 1,
        "{group}: one member got everything: {received:?}"
    );
}
