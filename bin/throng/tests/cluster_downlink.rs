//! Server-to-device and device-to-backend paths of the cluster, end to end with
//! real processes (two distributors, three handlers, an agent, a real
//! `redis-server`): the downlink stream delivered to ~200 devices while a
//! distributor is killed, `throng pub` to an offline persistent session, to
//! nobody and to a topic, the uplink stream, and malformed downlink entries.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use throng_codec::QoS;

fn args(flags: &[&str]) -> Vec<String> {
    flags.iter().map(|s| s.to_string()).collect()
}

fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// Sets the flag when dropped, so device threads stop even if the test panics.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// XADDs entries `range` (client `ids[target(k)]`, payload `m<k>`, QoS 1) in one pipeline.
fn xadd_batch(conn: &mut redis::Connection, ids: &[String], range: std::ops::Range<usize>) {
    let mut pipe = redis::pipe();
    for k in range {
        let payload = format!("m{k}");
        let fields = [
            ("client", ids[target(k, ids.len())].as_str()),
            ("payload", payload.as_str()),
            ("qos", "1"),
        ];
        pipe.xadd(DOWNLINK, "*", &fields).ignore();
    }
    pipe.query::<()>(conn).unwrap();
}

/// The device message `k` is for (a fixed scramble of `k`).
fn target(k: usize, devices: usize) -> usize {
    (k.wrapping_mul(2_654_435_761) ^ (k >> 3)) % devices
}

#[test]
fn downlink_reaches_every_device_while_a_distributor_is_killed() {
    const DEVICES: usize = 200;
    const MESSAGES: usize = 10_000;
    let started = Instant::now();
    let mut cluster = FullCluster::start(Setup {
        redis: true,
        distributor_args: args(&[
            "--reclaim-idle",
            "2s",
            "--ack-timeout",
            "1s",
            "--max-attempts",
            "50",
        ]),
        ..Setup::default()
    });
    let ids = random_ids("dl-", DEVICES);
    let owner_ids: Vec<String> = ids.iter().map(|id| cluster.owner(id)).collect();
    let owners = tally(&owner_ids);
    assert_eq!(
        owners.len(),
        3,
        "200 devices spread over 3 handlers: {owners:?}"
    );
    let devices: Vec<Device> = ids.iter().map(|id| cluster.connect(id, v311())).collect();
    let mut conn = cluster.redis_conn();

    let distinct = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let (counts, pending_at_kill) = std::thread::scope(|scope| {
        let _stop = StopOnDrop(&stop);
        let threads: Vec<_> = devices
            .into_iter()
            .map(|mut device| {
                let (distinct, stop) = (&distinct, &stop);
                scope.spawn(move || {
                    let topic = format!("$throng/downlink/{}", device.id);
                    let mut counts: HashMap<usize, u32> = HashMap::new();
                    let mut record = |m: throng_codec::Publish| {
                        assert_eq!(m.topic, topic);
                        assert_eq!(m.qos, QoS::AtLeastOnce, "{m:?}");
                        let k: usize = std::str::from_utf8(&m.payload[1..])
                            .unwrap()
                            .parse()
                            .unwrap();
                        let seen = counts.entry(k).or_insert(0);
                        *seen += 1;
                        if *seen == 1 {
                            distinct.fetch_add(1, Ordering::Relaxed);
                        }
                    };
                    while !stop.load(Ordering::Relaxed) {
                        if let Some(m) = device.next(Duration::from_millis(100)) {
                            record(m);
                        }
                    }
                    // Whatever the handler sent before the stop (late duplicates).
                    device.sync().into_iter().for_each(&mut record);
                    counts
                })
            })
            .collect();
        let healthy = || !threads.iter().any(|t| t.is_finished());

        xadd_batch(&mut conn, &ids, 0..MESSAGES / 2);
        wait_until("a first part delivered", WAIT, || {
            assert!(healthy(), "a device thread failed");
            distinct.load(Ordering::Relaxed) >= 1000
        });
        let victim = cluster
            .distributors
            .iter_mut()
            .find(|d| d.id == "d0")
            .unwrap();
        victim.process.kill_hard();
        let pending_at_kill = pending_by_consumer(&mut conn);
        xadd_batch(&mut conn, &ids, MESSAGES / 2..MESSAGES);
        wait_until("every message delivered", Duration::from_secs(90), || {
            assert!(healthy(), "a device thread failed");
            distinct.load(Ordering::Relaxed) == MESSAGES
        });
        wait_until("nothing pending and no lag", WAIT, || {
            group_state(&mut conn) == Some((0, Some(0)))
        });
        stop.store(true, Ordering::Relaxed);
        let counts: Vec<HashMap<usize, u32>> =
            threads.into_iter().map(|t| t.join().unwrap()).collect();
        (counts, pending_at_kill)
    });

    let mut duplicates = 0;
    for (device, counts) in counts.iter().enumerate() {
        let mut got: Vec<usize> = counts.keys().copied().collect();
        got.sort();
        let want: Vec<usize> = (0..MESSAGES)
            .filter(|&k| target(k, DEVICES) == device)
            .collect();
        assert_eq!(got, want, "messages of {}", ids[device]);
        duplicates += counts.values().map(|&n| n as usize - 1).sum::<usize>();
    }
    assert!(read_stream(&mut conn, DEAD).is_empty(), "dead letters");
    assert_eq!(pending_by_consumer(&mut conn), HashMap::new(), "XPENDING");
    // What d0 held when it died was taken over by d1 (XAUTOCLAIM).
    assert!(
        pending_at_kill.get("d0").is_some_and(|&n| n > 0),
        "d0 held nothing when killed: {pending_at_kill:?}"
    );
    let survivor = cluster.distributor("d1").admin;
    wait_until("d1 reports no lag and nothing pending", WAIT, || {
        metric(survivor, "throng_distributor_queue_lag") == 0.0
            && metric(survivor, "throng_distributor_pending") == 0.0
    });
    eprintln!(
        "downlink: {MESSAGES} messages to {DEVICES} devices {owners:?}; pending per consumer when d0 \
         was killed: {pending_at_kill:?}; duplicates: {duplicates}; {:?} in all",
        started.elapsed()
    );
}

#[test]
fn throng_pub_reaches_offline_sessions_topics_and_reports_nobody() {
    let cluster = FullCluster::start(Setup::default());
    let grpc = cluster.distributor("d0").grpc;
    for (i, version) in [v311(), v5()].into_iter().enumerate() {
        let handler = format!("h{}", i + 1);
        let id = cluster.id_on(&handler, "away-");
        let (device, _) = Device::connect_persistent(cluster.agent.mqtt, &id, version, false);
        device.disconnect();
        let admin = cluster.handler(&handler).admin;
        wait_until(&format!("{id} offline on {handler}"), WAIT, || {
            metric(admin, "throng_sessions{state=\"offline\"}") == 1.0
        });
        let message_id = format!("away-{i}");
        let printed = throng_pub_expect(
            grpc,
            &[
                "--client",
                &id,
                "--qos",
                "1",
                "--payload",
                "while-away",
                "--message-id",
                &message_id,
            ],
            "queued",
        );
        assert_eq!(printed, format!("queued {message_id}\n"));

        let (mut device, present) =
            Device::connect_persistent(cluster.agent.mqtt, &id, version, true);
        assert!(present, "{id}: session present");
        let m = device.expect("the queued message");
        assert_eq!(m.topic, format!("$throng/downlink/{id}"));
        assert_eq!(
            (&m.payload[..], m.qos),
            (&b"while-away"[..], QoS::AtLeastOnce)
        );
        throng_pub_expect(
            grpc,
            &["--client", &id, "--qos", "1", "--payload", "online"],
            "accepted",
        );
        assert_eq!(&device.expect("the online message").payload[..], b"online");
        device.expect_quiet(QUIET);
        device.disconnect();
    }

    let nobody = random_ids("nobody-here-", 1).remove(0);
    let printed = throng_pub_expect(
        grpc,
        &["--client", &nobody, "--qos", "1", "--payload", "x"],
        "undeliverable",
    );
    assert!(printed.contains(&nobody), "{printed}");

    // A topic message reaches subscribers on the other handlers, through either
    // distributor once it knows their subscriptions (probed through it).
    let mut subs: Vec<Device> = ["h0", "h2"]
        .iter()
        .map(|h| {
            let mut device = cluster.connect(&cluster.id_on(h, "news-"), v5());
            device.subscribe("news/+", sub_qos(QoS::ExactlyOnce));
            device
        })
        .collect();
    for distributor in &cluster.distributors {
        let mut reached = [false; 2];
        wait_until(&format!("probes through {}", distributor.id), WAIT, || {
            throng_pub_expect(
                distributor.grpc,
                &["--topic", "news/today", "--payload", "probe"],
                "accepted",
            );
            for (sub, reached) in subs.iter_mut().zip(reached.iter_mut()) {
                while let Some(m) = sub.next(Duration::from_millis(100)) {
                    assert_eq!(&m.payload[..], b"probe");
                    *reached = true;
                }
            }
            reached.iter().all(|r| *r)
        });
        let payload = format!("news via {}", distributor.id);
        throng_pub_expect(
            distributor.grpc,
            &["--topic", "news/today", "--qos", "1", "--payload", &payload],
            "accepted",
        );
        for sub in &mut subs {
            let m = loop {
                let m = sub.expect("the topic message");
                if &m.payload[..] != b"probe" {
                    break m;
                }
            };
            assert_eq!(
                (m.topic.as_str(), &m.payload[..]),
                ("news/today", payload.as_bytes())
            );
            assert_eq!(m.qos, QoS::AtLeastOnce);
        }
    }
}

#[test]
fn device_publishes_matching_the_uplink_filter_reach_the_uplink_stream() {
    let cluster = FullCluster::start(Setup {
        redis: true,
        handler_args: args(&["--uplink-filter", "up/#", "--redis-url", "{redis}"]),
        ..Setup::default()
    });
    let mut conn = cluster.redis_conn();
    let before = unix_ms();
    let first = cluster.id_on("h0", "sensor-");
    let second = cluster.id_on("h2", "sensor-");
    let mut a = cluster.connect(&first, v311());
    let mut b = cluster.connect(&second, v5());
    a.publish("up/x", b"reading-1", QoS::AtLeastOnce, false);
    a.publish("other/x", b"private", QoS::AtLeastOnce, false);
    a.publish("up/q0", b"reading-0", QoS::AtMostOnce, false);
    // Last from the same handler: once it is in the stream, so is anything before it.
    a.publish("up/y/z", b"reading-2", QoS::ExactlyOnce, false);
    b.publish("other/y", b"private", QoS::ExactlyOnce, false);
    b.publish("up/b", b"reading-b", QoS::ExactlyOnce, true);
    wait_until(
        "the last publish of each device in the uplink stream",
        WAIT,
        || {
            let entries = read_stream(&mut conn, UPLINK);
            ["up/y/z", "up/b"]
                .iter()
                .all(|last| entries.iter().any(|e| e.field("topic") == *last))
        },
    );
    let after = unix_ms();
    let entries = read_stream(&mut conn, UPLINK);
    let mut by_client: BTreeMap<&str, Vec<(&str, &str, &str, &str)>> = BTreeMap::new();
    for entry in &entries {
        let ts: u128 = entry.field("ts").parse().unwrap();
        assert!((before..=after).contains(&ts), "ts {ts} of {entry:?}");
        by_client.entry(entry.field("client")).or_default().push((
            entry.field("topic"),
            entry.field("payload"),
            entry.field("qos"),
            entry.field("retain"),
        ));
    }
    let want: BTreeMap<&str, Vec<(&str, &str, &str, &str)>> = [
        (
            first.as_str(),
            vec![
                ("up/x", "reading-1", "1", "0"),
                ("up/q0", "reading-0", "0", "0"),
                ("up/y/z", "reading-2", "2", "0"),
            ],
        ),
        (second.as_str(), vec![("up/b", "reading-b", "2", "1")]),
    ]
    .into();
    assert_eq!(by_client, want);
}

#[test]
fn malformed_downlink_entries_are_dead_lettered_without_blocking_the_stream() {
    let cluster = FullCluster::start(Setup {
        redis: true,
        ..Setup::default()
    });
    let mut conn = cluster.redis_conn();
    let id = cluster.id_on("h1", "target-");
    let mut device = cluster.connect(&id, v311());
    let bad_qos = xadd(
        &mut conn,
        DOWNLINK,
        &[
            ("client", id.as_str()),
            ("payload", "bad-qos"),
            ("qos", "7"),
        ],
    );
    let no_target = xadd(
        &mut conn,
        DOWNLINK,
        &[("payload", "no-target"), ("qos", "1")],
    );
    xadd(
        &mut conn,
        DOWNLINK,
        &[("client", id.as_str()), ("payload", "good"), ("qos", "1")],
    );
    let m = device.expect("the valid entry");
    assert_eq!(
        (m.topic, &m.payload[..]),
        (format!("$throng/downlink/{id}"), &b"good"[..])
    );

    wait_until("2 dead letters", WAIT, || {
        read_stream(&mut conn, DEAD).len() >= 2
    });
    let dead: HashMap<String, Entry> = read_stream(&mut conn, DEAD)
        .into_iter()
        .map(|e| (e.field("entry").to_owned(), e))
        .collect();
    assert_eq!(dead.len(), 2, "{dead:?}");
    let reason = |entry: &str| dead[entry].field("reason").to_owned();
    assert!(reason(&bad_qos).starts_with("malformed"), "{dead:?}");
    assert!(reason(&bad_qos).contains("qos"), "{dead:?}");
    assert!(reason(&no_target).starts_with("malformed"), "{dead:?}");
    for entry in dead.values() {
        entry.field("attempts");
    }
    device.expect_quiet(QUIET);
    wait_until("nothing pending and no lag", WAIT, || {
        group_state(&mut conn) == Some((0, Some(0)))
    });
    wait_until("the distributors count 2 dead letters", WAIT, || {
        cluster
            .distributors
            .iter()
            .map(|d| metric(d.admin, "throng_distributor_dead_letters_total"))
            .sum::<f64>()
            == 2.0
    });
}
