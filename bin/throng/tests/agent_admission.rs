//! Admission at a real `throng agent` in front of three `throng handler`
//! processes: the blocklist (sources bound to 127.0.0.x, reloaded from its file),
//! per-IP connect rate and connection caps with their CONNACK codes, the address
//! a PROXY header names standing for the device, the CONNECT deadline, and
//! garbage first packets. Nothing refused reaches a handler.

mod common;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::time::{Duration, Instant};

use common::*;

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const BLOCKED: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 77));
const LATER_BLOCKED: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 78));

fn write_atomically(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// No handler ever saw a CONNECT.
fn handlers_untouched(handlers: &[Handler]) {
    for handler in handlers {
        assert_eq!(
            metric_sum(handler.admin, "throng_handler_connects_total"),
            0.0,
            "{} saw a connection",
            handler.id
        );
    }
}

#[test]
fn blocklisted_sources_are_closed_at_once_and_the_list_reloads() {
    let files = tempfile::tempdir().unwrap();
    let list = files.path().join("blocklist");
    write_atomically(&list, "# devices misbehaving\n127.0.0.77\n");
    let list_arg = list.display().to_string();
    // A long CONNECT deadline: a close within it is the blocklist, not the deadline.
    // No deferred accept: the agent meets a silent source at once.
    let cluster = Cluster::start(&[
        "--blocklist-file",
        &list_arg,
        "--connect-timeout",
        "30s",
        "--defer-accept",
        "0",
    ]);
    let agent = cluster.agent.mqtt;

    let mut blocked = tcp_from(BLOCKED, agent);
    let started = Instant::now();
    assert_eq!(
        read_until_closed(&mut blocked, Duration::from_secs(10)),
        ReadEnd::Closed(Vec::new()),
        "a blocked source is closed with nothing sent"
    );
    assert!(started.elapsed() < Duration::from_secs(5), "closed at once");
    assert_eq!(accepts(cluster.agent.admin, "blocked"), 1.0);

    let (mut local, ack) = Mqtt::handshake(tcp_from(LOCAL, agent), "allowed-1", v311(), true);
    assert_eq!(ack.code, 0);
    local.ping();
    let (later, ack) = Mqtt::handshake(tcp_from(LATER_BLOCKED, agent), "allowed-78", v311(), true);
    assert_eq!(ack.code, 0, "127.0.0.78 is not blocked yet");
    later.disconnect();

    write_atomically(&list, "127.0.0.77\n127.0.0.78/32 # added later\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut attempt = tcp_from(LATER_BLOCKED, agent);
        match read_until_closed(&mut attempt, Duration::from_millis(300)) {
            ReadEnd::Closed(got) => {
                assert!(got.is_empty(), "bytes sent to a blocked source: {got:?}");
                break;
            }
            ReadEnd::Open(got) => assert!(got.is_empty()),
        }
        assert!(
            Instant::now() < deadline,
            "the blocklist file change was not picked up within 10 s"
        );
    }
    assert_eq!(accepts(cluster.agent.admin, "blocked"), 2.0);

    // The rest of the world is unaffected, old connections and new.
    local.ping();
    let (mut again, ack) = Mqtt::handshake(tcp_from(LOCAL, agent), "allowed-2", v311(), true);
    assert_eq!(ack.code, 0);
    again.ping();
    assert_eq!(accepts(cluster.agent.admin, "admitted"), 3.0);
}

#[test]
fn connect_rate_and_per_ip_caps_answer_with_the_right_codes() {
    let dir = tempfile::tempdir().unwrap();
    let handlers = start_handlers(dir.path(), 3, false, &[]);

    // 0.5 connects per second with a burst of 2: the third connect in a row is
    // refused as long as it comes within 2 s of the first.
    let rated = start_agent(
        dir.path(),
        "rated",
        &handlers,
        &[
            "--per-ip-rate".into(),
            "0.5".into(),
            "--per-ip-burst".into(),
            "2".into(),
        ],
        false,
    );
    let first_connect = Instant::now();
    let mut one = Mqtt::connect(rated.mqtt, "rate-1", v5());
    let mut two = Mqtt::connect(rated.mqtt, "rate-2", v5());
    let (mut three, ack) = Mqtt::handshake(
        TcpStream::connect(rated.mqtt).unwrap(),
        "rate-3",
        v5(),
        true,
    );
    assert_eq!(ack.code, 0x9F, "v5: connection rate exceeded");
    three.expect_closed(Duration::from_secs(5));
    let (mut four, ack) = Mqtt::handshake(
        TcpStream::connect(rated.mqtt).unwrap(),
        "rate-4",
        v311(),
        true,
    );
    assert_eq!(ack.code, 0x03, "v3.1.1: server unavailable");
    assert!(!ack.session_present);
    four.expect_closed(Duration::from_secs(5));
    assert!(
        first_connect.elapsed() < Duration::from_secs(2),
        "too slow to test the rate: {:?}",
        first_connect.elapsed()
    );
    assert_eq!(accepts(rated.admin, "rate_limited"), 2.0);
    assert_eq!(accepts(rated.admin, "admitted"), 2.0);
    one.ping();
    two.ping();

    // The bucket refills: a connect is admitted again after 1 / rate.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (mut client, ack) = Mqtt::handshake(
            TcpStream::connect(rated.mqtt).unwrap(),
            "rate-5",
            v5(),
            true,
        );
        if ack.code == 0 {
            client.ping();
            break;
        }
        assert_eq!(ack.code, 0x9F);
        assert!(Instant::now() < deadline, "the bucket never refilled");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        first_connect.elapsed() >= Duration::from_secs(2),
        "admitted again after {:?}, before the bucket could refill",
        first_connect.elapsed()
    );

    // At most two connections at once from one address, three in all.
    let capped = start_agent(
        dir.path(),
        "capped",
        &handlers,
        &[
            "--max-connections-per-ip".into(),
            "2".into(),
            "--max-connections".into(),
            "3".into(),
        ],
        false,
    );
    let one = Mqtt::connect(capped.mqtt, "cap-1", v5());
    let mut two = Mqtt::connect(capped.mqtt, "cap-2", v5());
    let (mut three, ack) = Mqtt::handshake(
        TcpStream::connect(capped.mqtt).unwrap(),
        "cap-3",
        v5(),
        true,
    );
    assert_eq!(ack.code, 0x97, "v5: quota exceeded");
    three.expect_closed(Duration::from_secs(5));
    let (mut four, ack) = Mqtt::handshake(
        TcpStream::connect(capped.mqtt).unwrap(),
        "cap-4",
        v311(),
        true,
    );
    assert_eq!(ack.code, 0x03, "v3.1.1: server unavailable");
    four.expect_closed(Duration::from_secs(5));
    assert_eq!(accepts(capped.admin, "quota_exceeded"), 2.0);
    // Another source address has its own allowance.
    let (mut other, ack) = Mqtt::handshake(
        tcp_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9)), capped.mqtt),
        "cap-other",
        v5(),
        true,
    );
    assert_eq!(ack.code, 0);
    other.ping();
    // Three in all: a fourth address is refused too.
    let fourth = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10));
    let (mut busy, ack) = Mqtt::handshake(tcp_from(fourth, capped.mqtt), "cap-busy", v5(), true);
    assert_eq!(ack.code, 0x89, "v5: server busy");
    busy.expect_closed(Duration::from_secs(5));
    let (mut busy, ack) = Mqtt::handshake(tcp_from(fourth, capped.mqtt), "cap-busy", v311(), true);
    assert_eq!(ack.code, 0x03, "v3.1.1: server unavailable");
    busy.expect_closed(Duration::from_secs(5));
    assert_eq!(accepts(capped.admin, "over_capacity"), 2.0);
    // A slot frees when a connection ends.
    one.disconnect();
    wait_until("the closed connection leaves the agent", WAIT, || {
        agent_connections(capped.admin).0 == 2
    });
    let mut five = Mqtt::connect(capped.mqtt, "cap-5", v5());
    five.ping();
    two.ping();
    assert_eq!(accepts(capped.admin, "admitted"), 4.0);
    assert_eq!(accepts(capped.admin, "quota_exceeded"), 2.0);
    // Only what the agents admitted ever reached a handler.
    let reached: f64 = handlers
        .iter()
        .map(|h| metric_sum(h.admin, "throng_handler_connects_total"))
        .sum();
    assert_eq!(
        reached,
        accepts(rated.admin, "admitted") + accepts(capped.admin, "admitted")
    );
}

/// A PROXY v1 line for a device at `source`.
fn proxy_v1(source: &str) -> Vec<u8> {
    format!("PROXY TCP4 {source} 127.0.0.1 40000 1883\r\n").into_bytes()
}

#[test]
fn proxy_protocol_source_is_the_address_admission_sees() {
    let files = tempfile::tempdir().unwrap();
    let list = files.path().join("blocklist");
    write_atomically(&list, "127.0.0.77\n");
    let list_arg = list.display().to_string();
    let cluster = Cluster::start(&[
        "--proxy-protocol",
        "--blocklist-file",
        &list_arg,
        "--max-connections-per-ip",
        "1",
    ]);
    let agent = cluster.agent.mqtt;
    let admin = cluster.agent.admin;

    // The load balancer (127.0.0.1) speaks for a blocked device.
    let mut blocked = TcpStream::connect(agent).unwrap();
    blocked.write_all(&proxy_v1("127.0.0.77")).unwrap();
    assert_eq!(
        read_until_closed(&mut blocked, Duration::from_secs(5)),
        ReadEnd::Closed(Vec::new())
    );
    assert_eq!(accepts(admin, "blocked"), 1.0);

    // A connection from the blocked address itself is judged by its header.
    let mut stream = tcp_from(BLOCKED, agent);
    stream.write_all(&proxy_v1("10.9.8.7")).unwrap();
    let (mut device, ack) = Mqtt::handshake(stream, "behind-lb-1", v5(), true);
    assert_eq!(ack.code, 0);
    device.ping();

    // Per-address caps count header addresses: 10.9.8.7 has its one connection.
    let mut stream = TcpStream::connect(agent).unwrap();
    let mut header = Vec::new();
    throng_proxy_protocol::encode_v2(
        &throng_proxy_protocol::ProxyHeader::proxied(
            "10.9.8.7:40001".parse().unwrap(),
            "127.0.0.1:1883".parse().unwrap(),
        ),
        &mut header,
    )
    .unwrap();
    stream.write_all(&header).unwrap();
    let (mut second, ack) = Mqtt::handshake(stream, "behind-lb-2", v5(), true);
    assert_eq!(ack.code, 0x97, "v5: quota exceeded for 10.9.8.7");
    second.expect_closed(Duration::from_secs(5));
    let mut stream = TcpStream::connect(agent).unwrap();
    stream.write_all(&proxy_v1("10.9.8.6")).unwrap();
    let (mut third, ack) = Mqtt::handshake(stream, "behind-lb-3", v5(), true);
    assert_eq!(ack.code, 0, "another device behind the same balancer");
    third.ping();

    // Without the header the connection is not served.
    let mut bare = Mqtt::over(TcpStream::connect(agent).unwrap(), v5());
    bare.send(&connect_packet("no-header", v5(), true));
    bare.expect_closed(Duration::from_secs(5));
    assert_eq!(accepts(admin, "bad_connect"), 1.0);
    assert_eq!(accepts(admin, "admitted"), 2.0);
    device.ping();
}

#[test]
fn silent_and_garbage_connections_are_closed() {
    // No deferred accept: the deadline starts at the TCP handshake.
    let cluster = Cluster::start(&["--connect-timeout", "1s", "--defer-accept", "0"]);
    let agent = cluster.agent.mqtt;
    let admin = cluster.agent.admin;

    // Never sends anything: closed at the deadline.
    let mut silent = TcpStream::connect(agent).unwrap();
    let started = Instant::now();
    assert_eq!(
        read_until_closed(&mut silent, Duration::from_secs(5)),
        ReadEnd::Closed(Vec::new())
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(3),
        "closed after {waited:?}, deadline 1 s"
    );
    assert_eq!(accepts(admin, "timeout"), 1.0);

    // Sends half a CONNECT and stalls: the deadline covers the whole packet.
    let mut stalled = TcpStream::connect(agent).unwrap();
    let connect = encode(&connect_packet("stalled", v311(), true), v311());
    stalled.write_all(&connect[..5]).unwrap();
    let started = Instant::now();
    assert_eq!(
        read_until_closed(&mut stalled, Duration::from_secs(5)),
        ReadEnd::Closed(Vec::new())
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(3),
        "closed after {waited:?}, deadline 1 s"
    );
    assert_eq!(accepts(admin, "timeout"), 2.0);

    // A PUBLISH first.
    let mut publish = TcpStream::connect(agent).unwrap();
    publish
        .write_all(&encode(
            &publish_packet("t", b"no connect", throng_codec::QoS::AtMostOnce),
            v311(),
        ))
        .unwrap();
    assert_eq!(
        read_until_closed(&mut publish, Duration::from_secs(5)),
        ReadEnd::Closed(Vec::new())
    );
    assert_eq!(accepts(admin, "bad_connect"), 1.0);

    // Random bytes (the first one not a CONNECT's).
    let mut noise = TcpStream::connect(agent).unwrap();
    let mut bytes = vec![0xDE];
    for word in random_ids("", 8) {
        bytes.extend_from_slice(word.as_bytes());
    }
    noise.write_all(&bytes).unwrap();
    assert_eq!(
        read_until_closed(&mut noise, Duration::from_secs(5)),
        ReadEnd::Closed(Vec::new())
    );
    assert_eq!(accepts(admin, "bad_connect"), 2.0);

    // A v5 CONNECT with the reserved flag set: malformed, told so, closed.
    let mut malformed = connect_packet_bytes_v5("bad-flags");
    malformed[9] |= 0x01;
    let (mut bad, ack) = {
        let mut client = Mqtt::over(TcpStream::connect(agent).unwrap(), v5());
        client.stream.write_all(&malformed).unwrap();
        match client.recv() {
            throng_codec::Packet::ConnAck(ack) => (client, ack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    };
    assert_eq!(ack.code, 0x81, "v5: malformed packet");
    bad.expect_closed(Duration::from_secs(5));
    assert_eq!(accepts(admin, "bad_connect"), 3.0);

    assert_eq!(accepts(admin, "timeout"), 2.0);
    assert_eq!(accepts(admin, "admitted"), 0.0);
    wait_until("nothing left in the agent", WAIT, || {
        metric(admin, "throng_agent_connections") == 0.0 && agent_connections(admin).0 == 0
    });
    handlers_untouched(&cluster.handlers);

    // The agent still serves well-behaved clients.
    let mut good = Mqtt::connect(agent, "after-garbage", v5());
    good.ping();
}

/// A v5 CONNECT with clean start and no properties; byte 9 is the flags byte.
fn connect_packet_bytes_v5(client_id: &str) -> Vec<u8> {
    let bytes = encode(&connect_packet(client_id, v5(), true), v5());
    assert_eq!(&bytes[2..9], b"\x00\x04MQTT\x05");
    bytes
}

#[test]
fn deferred_accept_holds_silent_connections_in_the_kernel_first() {
    // fd hand-off: there a CONNECT in hand at accept is handed off in the accept loop.
    let cluster = Cluster::start_with(true, &["--connect-timeout", "1s", "--defer-accept", "1"]);
    let agent = cluster.agent.mqtt;
    let admin = cluster.agent.admin;

    // Still closed, but only after the kernel's defer period and then the deadline.
    let mut silent = TcpStream::connect(agent).unwrap();
    let started = Instant::now();
    assert_eq!(
        read_until_closed(&mut silent, Duration::from_secs(15)),
        ReadEnd::Closed(Vec::new())
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1800) && waited < Duration::from_secs(10),
        "closed after {waited:?}: defer 1 s, then the 1 s deadline"
    );
    assert_eq!(accepts(admin, "timeout"), 1.0);

    // A device that sends its CONNECT a little late is accepted with it in hand: once
    // the link to its handler is open (the first time), handed off from the accept loop.
    for _ in 0..2 {
        let stream = TcpStream::connect(agent).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let (mut device, ack) = Mqtt::handshake(stream, "late-connect", v311(), true);
        assert_eq!(ack.code, 0);
        device.ping();
        device.disconnect();
    }
    assert!(metric_sum(admin, "throng_agent_fast_handoffs_total") >= 1.0);
}
