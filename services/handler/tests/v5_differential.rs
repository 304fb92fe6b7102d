//! Differential test: one scripted MQTT 5.0 scenario against throng and against a
//! real Mosquitto on a free port; the packets each client observes (types, flags,
//! reason codes, topics, payloads) must be the same.

mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use throng_codec::{Disconnect, Packet, QoS, Subscribe, Unsubscribe, Will, reason};

use support::v5::{
    client, connect_packet, connect_with, opts, publish_packet, recv_within, resp, subscribe,
};
use support::{RawClient, TestServer};

const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// A Mosquitto process, killed on drop.
struct Mosquitto {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_mosquitto() -> Mosquitto {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
    )
    .unwrap();
    let child = Command::new(MOSQUITTO)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mosquitto = Mosquitto {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        _dir: dir,
    };
    // Bounded readiness poll on the external process's port.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(mosquitto.addr)
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "mosquitto did not listen"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    mosquitto
}

/// What a client observed, one line per packet.
#[derive(Default)]
struct Log(Vec<String>);

impl Log {
    /// Receives the next packet, logs it and returns it.
    async fn next(&mut self, who: &str, c: &mut RawClient) -> Packet {
        let packet = c.recv().await.expect("connection closed");
        self.0.push(format!("{who} {}", summary(&packet)));
        packet
    }

    /// Logs that nothing arrived for a while (or what did).
    async fn quiet(&mut self, who: &str, c: &mut RawClient) {
        let line = match recv_within(c, Duration::from_millis(300)).await {
            None => "quiet".to_string(),
            Some(None) => "closed".to_string(),
            Some(Some(packet)) => summary(&packet),
        };
        self.0.push(format!("{who} {line}"));
    }
}

fn summary(packet: &Packet) -> String {
    match packet {
        Packet::ConnAck(a) => format!("CONNACK sp={} code={:#04x}", a.session_present, a.code),
        Packet::Publish(p) => format!(
            "PUBLISH {} {:?} qos={} retain={} dup={} pid={} ids={:?}",
            p.topic,
            String::from_utf8_lossy(&p.payload),
            p.qos as u8,
            p.retain,
            p.dup,
            p.packet_id.is_some(),
            p.properties.subscription_identifiers,
        ),
        Packet::PubAck(r) => format!("PUBACK {:#04x}", r.reason),
        Packet::PubRec(r) => format!("PUBREC {:#04x}", r.reason),
        Packet::PubRel(r) => format!("PUBREL {:#04x}", r.reason),
        Packet::PubComp(r) => format!("PUBCOMP {:#04x}", r.reason),
        Packet::SubAck(a) => format!("SUBACK {:02x?}", a.codes),
        Packet::UnsubAck(a) => format!("UNSUBACK {:02x?}", a.codes),
        Packet::Disconnect(d) => format!("DISCONNECT {:#04x}", d.reason),
        other => format!("{other:?}"),
    }
}

fn publish(topic: &str, payload: &[u8], qos: QoS, id: u16, retain: bool) -> Packet {
    let mut p = publish_packet(topic, payload, qos, id);
    p.retain = retain;
    Packet::Publish(p)
}

/// Receives a PUBLISH at the subscriber and acknowledges it as its QoS requires.
async fn take_publish(log: &mut Log, s: &mut RawClient) {
    let Packet::Publish(p) = log.next("S", s).await else {
        return;
    };
    match (p.qos, p.packet_id) {
        (QoS::AtLeastOnce, Some(id)) => s.send(&Packet::PubAck(resp(id))).await,
        (QoS::ExactlyOnce, Some(id)) => {
            s.send(&Packet::PubRec(resp(id))).await;
            log.next("S", s).await;
            s.send(&Packet::PubComp(resp(id))).await;
        }
        _ => {}
    }
}

async fn scenario(addr: SocketAddr) -> Vec<String> {
    let mut log = Log::default();
    let mut p = client(addr, "diff-pub").await;
    p.send(&publish("diff/r", b"r1", QoS::AtLeastOnce, 1, true))
        .await;
    log.next("P", &mut p).await;

    let mut s = client(addr, "diff-sub").await;
    let mut all = opts(QoS::ExactlyOnce);
    all.retain_as_published = true;
    let mut nl = opts(QoS::AtLeastOnce);
    nl.no_local = true;
    s.send(&Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![("diff/#".into(), all), ("nl/x".into(), nl)],
        ..Subscribe::default()
    }))
    .await;
    log.next("S", &mut s).await;
    take_publish(&mut log, &mut s).await;

    p.send(&publish("diff/a", b"a", QoS::AtLeastOnce, 2, false))
        .await;
    log.next("P", &mut p).await;
    take_publish(&mut log, &mut s).await;

    p.send(&publish("diff/b", b"b", QoS::ExactlyOnce, 3, false))
        .await;
    log.next("P", &mut p).await;
    p.send(&Packet::PubRel(resp(3))).await;
    log.next("P", &mut p).await;
    take_publish(&mut log, &mut s).await;

    p.send(&publish("diff/r", b"r2", QoS::AtMostOnce, 0, true))
        .await;
    take_publish(&mut log, &mut s).await;

    s.send(&publish("nl/x", b"own", QoS::AtMostOnce, 0, false))
        .await;
    log.quiet("S", &mut s).await;
    p.send(&publish("nl/x", b"other", QoS::AtLeastOnce, 4, false))
        .await;
    log.next("P", &mut p).await;
    take_publish(&mut log, &mut s).await;

    s.send(&Packet::Unsubscribe(Unsubscribe {
        packet_id: 2,
        filters: vec!["diff/#".into(), "diff/none".into()],
        ..Unsubscribe::default()
    }))
    .await;
    log.next("S", &mut s).await;
    p.send(&publish("diff/c", b"c", QoS::AtLeastOnce, 5, false))
        .await;
    log.next("P", &mut p).await;
    log.quiet("S", &mut s).await;

    // Clean up the retained message so the broker ends as it began.
    p.send(&publish("diff/r", b"", QoS::AtMostOnce, 0, true))
        .await;
    p.send(&Packet::PingReq).await;
    log.next("P", &mut p).await;
    log.0
}

/// Session resume with queued messages, a will sent by DISCONNECT 0x04, and a
/// session ended by DISCONNECT's Session Expiry Interval 0.
async fn session_scenario(addr: SocketAddr) -> Vec<String> {
    let mut log = Log::default();
    let persistent = |clean_start: bool| {
        let mut c = connect_packet("diff2-sub");
        c.clean_start = clean_start;
        c.properties.session_expiry_interval = Some(60);
        c
    };
    let (mut s, ack) = connect_with(addr, persistent(true)).await;
    log.0.push(format!("S {}", summary(&Packet::ConnAck(ack))));
    subscribe(&mut s, 1, "d2/#", opts(QoS::AtLeastOnce), Some(5)).await;
    s.send(&Packet::Disconnect(Disconnect::default())).await;
    assert!(s.closed_within(Duration::from_secs(5)).await);

    let mut p = client(addr, "diff2-pub").await;
    for (id, topic, qos) in [
        (1, "d2/a", QoS::AtLeastOnce),
        (2, "d2/b", QoS::ExactlyOnce),
        (0, "d2/c", QoS::AtMostOnce),
    ] {
        p.send(&publish(topic, topic.as_bytes(), qos, id, false))
            .await;
        if qos == QoS::ExactlyOnce {
            log.next("P", &mut p).await;
            p.send(&Packet::PubRel(resp(id))).await;
        }
        if qos != QoS::AtMostOnce {
            log.next("P", &mut p).await;
        }
    }
    p.send(&Packet::PingReq).await;
    log.next("P", &mut p).await;

    let (mut s, ack) = connect_with(addr, persistent(false)).await;
    log.0.push(format!("S {}", summary(&Packet::ConnAck(ack))));
    take_publish(&mut log, &mut s).await;
    take_publish(&mut log, &mut s).await;
    log.quiet("S", &mut s).await;

    let mut connect = connect_packet("diff2-will");
    connect.will = Some(Will {
        topic: "d2/will".into(),
        payload: bytes::Bytes::from_static(b"w"),
        qos: QoS::AtLeastOnce,
        ..Will::default()
    });
    let (mut w, _) = connect_with(addr, connect).await;
    w.send(&Packet::Disconnect(Disconnect {
        reason: reason::DISCONNECT_WITH_WILL,
        ..Disconnect::default()
    }))
    .await;
    take_publish(&mut log, &mut s).await;

    s.send(&Packet::Disconnect(Disconnect {
        session_expiry_interval: Some(0),
        ..Disconnect::default()
    }))
    .await;
    assert!(s.closed_within(Duration::from_secs(5)).await);
    let (_s, ack) = connect_with(addr, persistent(false)).await;
    log.0.push(format!("S {}", summary(&Packet::ConnAck(ack))));
    log.0
}

async fn compare(run: impl AsyncFn(SocketAddr) -> Vec<String>) {
    if !std::path::Path::new(MOSQUITTO).exists() {
        eprintln!("skipped: {MOSQUITTO} not installed");
        return;
    }
    let mosquitto = start_mosquitto().await;
    let reference = run(mosquitto.addr).await;
    let server = TestServer::start().await;
    let ours = run(server.mqtt).await;
    // Sanity: the script really exercised something.
    assert!(reference.len() > 8, "{reference:#?}");
    assert_eq!(
        ours, reference,
        "throng (left) differs from mosquitto (right)"
    );
}

#[tokio::test]
async fn same_packets_as_mosquitto() {
    compare(scenario).await;
}

#[tokio::test]
async fn same_session_and_will_packets_as_mosquitto() {
    compare(session_scenario).await;
}
