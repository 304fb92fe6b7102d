//! Forward overload between handlers: QoS 1 forwards are never dropped (the
//! publisher pauses), QoS 0 ones are dropped at most once, and the queues stay bounded.

#[path = "support/cluster.rs"]
mod harness;
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use throng_codec::{Packet, ProtocolVersion, QoS};
use throng_distributor::HubConfig;
use throng_handler::HandlerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::sleep;

use harness::{Device, Node, TestCluster, WAIT, message, wait_for_route};

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
