//! Hand-off between a real `throng agent` and three `throng handler` processes:
//! fd hand-off (the socket passed over a Unix socket, the agent keeps nothing),
//! the proxy relay's bounded memory under a subscriber that stops reading, SIGTERM
//! draining proxied connections over the grace period, and the largest CONNECT
//! with packets pipelined behind it carried by both modes.

mod common;

use std::collections::BTreeMap;
use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use throng_codec::QoS;

#[test]
fn fd_handoff_routes_to_owners_and_the_agent_keeps_nothing() {
    let cluster = Cluster::start_with(true, &[]);
    let admin = cluster.agent.admin;
    let ids = random_ids("fd-", 24);
    let owners: Vec<String> = ids.iter().map(|id| cluster.owner(id)).collect();
    let expected = with_zeros(&cluster.handlers, &tally(&owners));

    let mut clients: Vec<Mqtt> = ids
        .iter()
        .map(|id| Mqtt::connect(cluster.agent.mqtt, id, v311()))
        .collect();
    wait_until("handler gauges match /v1/owner", WAIT, || {
        cluster.handler_connections() == expected
    });
    // Once passed on, a socket is the handler's alone.
    wait_until("the agent holds no connection", WAIT, || {
        agent_connections(admin) == (0, BTreeMap::new())
            && metric(admin, "throng_agent_connections") == 0.0
    });
    for (handler, &n) in &expected {
        let routed = metric(
            admin,
            &format!("throng_agent_routed_total{{handler=\"{handler}\"}}"),
        );
        assert_eq!(routed, n as f64, "routed to {handler}");
    }
    assert_eq!(accepts(admin, "admitted"), 24.0);

    // The clients keep working with the agent out of the path.
    for client in &mut clients {
        client.ping();
    }
    let (sub, publisher) = pair_on_one_handler(&owners);
    let topic = format!("fd/{}", ids[sub]);
    clients[sub].subscribe(&topic, QoS::AtLeastOnce);
    clients[publisher].publish(&topic, b"over a passed socket", QoS::AtLeastOnce);
    let message = clients[sub].expect_publish();
    assert_eq!(
        (message.topic.as_str(), &message.payload[..]),
        (topic.as_str(), &b"over a passed socket"[..])
    );

    check_each_location(
        &cluster.handlers.iter().collect::<Vec<_>>(),
        clients
            .into_iter()
            .zip(ids)
            .zip(owners)
            .map(|((client, id), owner)| (client, id, owner))
            .collect(),
    );
}

/// Indexes of two clients with the same owner.
fn pair_on_one_handler(owners: &[String]) -> (usize, usize) {
    for i in 0..owners.len() {
        for j in i + 1..owners.len() {
            if owners[i] == owners[j] {
                return (i, j);
            }
        }
    }
    panic!("no two clients share a handler: {owners:?}");
}

/// A connection whose receive buffer is small, so backpressure reaches the
/// agent quickly once the client stops reading.
fn tcp_small_receive_buffer(addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    socket.connect(&addr.into()).unwrap();
    socket.into()
}

#[test]
fn a_subscriber_that_stops_reading_does_not_grow_the_agent() {
    const MESSAGES: usize = 64 * 1024;
    const PAYLOAD: usize = 1024;
    const BOUND_KIB: u64 = 20 * 1024;

    let cluster = Cluster::start(&[]);
    let (sub_id, pub_id, owner) = cluster.ids_on_one_handler("slow-");
    let handler = cluster.handler(&owner);
    let topic = "slow/flood";

    let (mut sub, ack) = Mqtt::handshake(
        tcp_small_receive_buffer(cluster.agent.mqtt),
        &sub_id,
        v311(),
        true,
    );
    assert_eq!(ack.code, 0);
    sub.subscribe(topic, QoS::AtMostOnce);
    // From here on the subscriber reads nothing until the flood is over.
    let mut publisher = Mqtt::connect(cluster.agent.mqtt, &pub_id, v311());

    let pid = cluster.agent.process.pid();
    let before = rss_kib(pid);
    let peak = Arc::new(AtomicU64::new(before));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };

    let payload = vec![0x5A; PAYLOAD];
    let mut batch = Vec::new();
    for _ in 0..1024 {
        batch.extend_from_slice(&encode(
            &publish_packet(topic, &payload, QoS::AtMostOnce),
            v311(),
        ));
    }
    publisher
        .stream
        .set_write_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    for _ in 0..MESSAGES / 1024 {
        publisher.stream.write_all(&batch).unwrap();
    }
    wait_until(
        "the handler received the whole flood",
        Duration::from_secs(120),
        || metric(handler.admin, "throng_messages_received_total") >= MESSAGES as f64,
    );
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let after = rss_kib(pid);
    let peak = peak.load(Ordering::Relaxed).max(after);

    let dropped = metric(
        handler.admin,
        "throng_messages_dropped_total{reason=\"queue_full\"}",
    );
    assert!(
        dropped > 0.0,
        "the subscriber never fell behind: nothing dropped at the handler"
    );
    assert!(
        peak - before < BOUND_KIB,
        "agent RSS grew from {before} KiB to {peak} KiB (after: {after} KiB) relaying \
         {} MiB to a subscriber that reads nothing",
        (MESSAGES * PAYLOAD) >> 20
    );

    // Both connections are still there: the publisher answers pings and the
    // subscriber, reading again, gets flood messages.
    publisher.ping();
    let message = sub.expect_publish();
    assert_eq!(message.topic, topic);
    assert_eq!(message.payload.len(), PAYLOAD);
}

#[test]
fn sigterm_stops_accepting_and_drains_proxied_connections() {
    const GRACE: Duration = Duration::from_secs(3);
    let mut cluster = Cluster::start(&["--shutdown-grace", "3s"]);
    let (sub_id, pub_id, owner) = cluster.ids_on_one_handler("term-");
    let agent = cluster.agent.mqtt;
    let topic = format!("term/{sub_id}");
    let mut sub = Mqtt::connect(agent, &sub_id, v5());
    sub.subscribe(&topic, QoS::AtLeastOnce);
    let mut publisher = Mqtt::connect(agent, &pub_id, v5());

    let sent = Instant::now();
    cluster.agent.process.terminate();
    wait_until(
        "the agent refuses new connections",
        GRACE,
        || matches!(TcpStream::connect(agent), Err(err) if err.kind() == ErrorKind::ConnectionRefused),
    );
    // Inside the grace period the live connections still carry traffic both ways.
    sub.ping();
    publisher.publish(&topic, b"during the grace period", QoS::AtLeastOnce);
    let message = sub.expect_publish();
    assert_eq!(&message.payload[..], b"during the grace period");
    assert!(
        sent.elapsed() < GRACE,
        "the checks above must finish within the grace period, took {:?}",
        sent.elapsed()
    );

    // Then the agent closes them and exits 0.
    sub.expect_closed(GRACE + Duration::from_secs(5));
    let closed_after = sent.elapsed();
    assert!(
        closed_after >= GRACE - Duration::from_millis(100),
        "closed after {closed_after:?}, before the {GRACE:?} grace period ended"
    );
    publisher.expect_closed(Duration::from_secs(5));
    let status = cluster.agent.process.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "SIGTERM must exit 0, got {status}");
    let handler = cluster.handler(&owner);
    wait_until("the handler sees both connections end", WAIT, || {
        handler.connections() == 0.0
    });
}

#[test]
fn proxy_handoff_carries_a_largest_connect_and_the_packets_after_it() {
    largest_connect_then_pipelined(false);
}

#[test]
fn fd_handoff_carries_a_largest_connect_and_the_packets_after_it() {
    largest_connect_then_pipelined(true);
}

/// Behind a load balancer (PROXY header), a device sends in one write a CONNECT of
/// the largest size the agent accepts (64 KiB, a big will), then SUBSCRIBE and
/// PUBLISH without waiting for CONNACK: whatever the agent read past the CONNECT
/// must reach the handler with it.
fn largest_connect_then_pipelined(fd: bool) {
    let cluster = Cluster::start_with(fd, &["--proxy-protocol"]);
    let id = "pipelined";
    let owner = cluster.owner(id);
    let connect = connect_of_size(id, 64 * 1024);
    let topic = "pipe/echo";
    let mut bytes = b"PROXY TCP4 10.1.1.1 127.0.0.1 40000 1883\r\n".to_vec();
    bytes.extend_from_slice(&connect);
    bytes.extend_from_slice(&encode(
        &throng_codec::Packet::Subscribe(throng_codec::Subscribe {
            packet_id: 1,
            filters: vec![(
                topic.to_owned(),
                throng_codec::SubscriptionOptions::default(),
            )],
            ..throng_codec::Subscribe::default()
        }),
        v311(),
    ));
    for i in 0..8u8 {
        bytes.extend_from_slice(&encode(
            &publish_packet(topic, &[i; 200], QoS::AtMostOnce),
            v311(),
        ));
    }
    let mut client = Mqtt::over(TcpStream::connect(cluster.agent.mqtt).unwrap(), v311());
    client.stream.write_all(&bytes).unwrap();
    match client.recv() {
        throng_codec::Packet::ConnAck(ack) => assert_eq!(ack.code, 0, "CONNACK {ack:?}"),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    match client.recv() {
        throng_codec::Packet::SubAck(ack) => assert_eq!(ack.codes, vec![0]),
        other => panic!("expected SUBACK, got {other:?}"),
    }
    for i in 0..8u8 {
        let message = client.expect_publish();
        assert_eq!(
            (message.topic.as_str(), &message.payload[..]),
            (topic, &[i; 200][..])
        );
    }
    assert_eq!(
        metric_sum(cluster.agent.admin, "throng_agent_handoff_failures_total"),
        0.0,
        "the owner {owner} should have taken it at once"
    );
    let on_owner = [(owner.clone(), 1)].into_iter().collect();
    assert_eq!(
        cluster.handler_connections(),
        with_zeros(&cluster.handlers, &on_owner)
    );
}

/// A v3.1.1 CONNECT of exactly `size` bytes (the will payload makes up the rest).
fn connect_of_size(client_id: &str, size: usize) -> Vec<u8> {
    let with_will = |payload_len: usize| {
        encode(
            &throng_codec::Packet::Connect(Box::new(throng_codec::Connect {
                protocol: Some(v311()),
                clean_start: true,
                keep_alive: 60,
                client_id: client_id.to_owned(),
                will: Some(throng_codec::Will {
                    topic: "will/pipelined".to_owned(),
                    payload: vec![b'w'; payload_len].into(),
                    ..throng_codec::Will::default()
                }),
                ..throng_codec::Connect::default()
            })),
            v311(),
        )
    };
    // Same remaining-length width (3 bytes) as the final packet.
    let overhead = with_will(size / 2).len() - size / 2;
    let connect = with_will(size - overhead);
    assert_eq!(connect.len(), size);
    connect
}

#[test]
fn fd_handoff_refuses_a_connect_size_it_cannot_pass_on() {
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<String> = [
        "agent",
        "--mqtt-listen",
        &free_addr().to_string(),
        "--handlers",
        "h0=127.0.0.1:1",
        "--handoff",
        "fd",
        "--fd-handoff-dir",
        &dir.path().display().to_string(),
        "--max-connect-size",
        "70000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut agent = Running::spawn("agent", dir.path(), &args);
    let status = agent.wait_exit(Duration::from_secs(10));
    assert!(!status.success());
    let output = agent.output();
    assert!(output.contains("--max-connect-size"), "output: {output}");
}

/// A CONNECT already in the socket buffer when the agent accepts is handed off
/// from the accept loop (counted as fast); one that arrives in pieces after the
/// accept waits in a task and still gets through. With one pending-CONNECT permit
/// held by the slow device, the fast one waits in the listen backlog with its
/// CONNECT already there. A first device opens the link to the fast one's handler;
/// the slow one goes to another handler, so that link is idle when the fast one comes.
#[test]
fn fd_handoff_fast_for_a_connect_already_there_and_waits_for_one_in_pieces() {
    let cluster = Cluster::start_with(true, &["--max-pending-connects", "1"]);
    let admin = cluster.agent.admin;
    let ids = random_ids("fast-", 32);
    let owners: Vec<String> = ids.iter().map(|id| cluster.owner(id)).collect();
    let with_first = |same: bool| (1..ids.len()).find(|&i| (owners[i] == owners[0]) == same);
    let fast_id = &ids[with_first(true).unwrap()];
    let slow_id = &ids[with_first(false).unwrap()];
    let mut opener = Mqtt::connect(cluster.agent.mqtt, &ids[0], v311());
    opener.ping();
    let slow_connect = encode(&connect_packet(slow_id, v311(), true), v311());
    let mut slow = Mqtt::over(TcpStream::connect(cluster.agent.mqtt).unwrap(), v311());
    slow.stream.write_all(&slow_connect[..3]).unwrap();
    wait_until("the agent accepted the slow device", WAIT, || {
        metric(admin, "throng_agent_connections") == 1.0
    });
    let mut fast = Mqtt::over(TcpStream::connect(cluster.agent.mqtt).unwrap(), v311());
    let fast_connect = encode(&connect_packet(fast_id, v311(), true), v311());
    fast.stream.write_all(&fast_connect).unwrap();
    for piece in slow_connect[3..].chunks(4) {
        std::thread::sleep(Duration::from_millis(10));
        slow.stream.write_all(piece).unwrap();
    }
    for client in [&mut slow, &mut fast] {
        match client.recv() {
            throng_codec::Packet::ConnAck(ack) => assert_eq!(ack.code, 0, "CONNACK {ack:?}"),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        client.ping();
    }
    assert_eq!(accepts(admin, "admitted"), 3.0);
    assert_eq!(metric(admin, "throng_agent_fast_handoffs_total"), 1.0);
}
