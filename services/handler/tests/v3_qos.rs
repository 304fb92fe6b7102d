//! MQTT 3.1.1 QoS 0/1/2 in both directions: granted QoS downgrade, packet ids and
//! acknowledgements on the wire, redelivery with DUP after reconnect, and QoS 2
//! duplicate suppression on the receive side.

mod support;

use std::time::Duration;

use rumqttc::QoS;
use throng_codec::{Packet, PubResp, Publish, QoS as WireQoS};

use support::v3::{Mqtt3, connect_packet, raw_connect, raw_subscribe, raw_v3};
use support::{RawClient, TestServer};

async fn recv_publish(raw: &mut RawClient) -> Publish {
    match raw.recv().await {
        Some(Packet::Publish(p)) => p,
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

fn resp(packet_id: u16) -> PubResp {
    PubResp {
        packet_id,
        ..PubResp::default()
    }
}

fn publish(topic: &str, qos: WireQoS, packet_id: Option<u16>, payload: &str) -> Packet {
    Packet::Publish(Publish {
        qos,
        topic: topic.into(),
        packet_id,
        payload: payload.to_string().into(),
        ..Publish::default()
    })
}

#[tokio::test]
async fn qos_levels_and_downgrade() {
    let server = TestServer::start().await;
    let mut sub2 = Mqtt3::connect(server.mqtt, "sub-q2").await;
    let mut sub1 = Mqtt3::connect(server.mqtt, "sub-q1").await;
    let mut sub0 = Mqtt3::connect(server.mqtt, "sub-q0").await;
    sub2.subscribe("q/t", QoS::ExactlyOnce).await;
    sub1.subscribe("q/t", QoS::AtLeastOnce).await;
    sub0.subscribe("q/t", QoS::AtMostOnce).await;

    let mut publisher = Mqtt3::connect(server.mqtt, "pub-q").await;
    let levels = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];
    for qos in levels {
        publisher
            .publish("q/t", qos, false, format!("{qos:?}").as_bytes())
            .await;
        for (sub, granted) in [
            (&mut sub2, QoS::ExactlyOnce),
            (&mut sub1, QoS::AtLeastOnce),
            (&mut sub0, QoS::AtMostOnce),
        ] {
            let got = sub.recv().await;
            assert_eq!(&got.payload[..], format!("{qos:?}").as_bytes());
            assert_eq!(
                got.qos as u8,
                (qos as u8).min(granted as u8),
                "delivered at min(publish, granted)"
            );
            assert!(!got.retain);
        }
    }
    for sub in [&mut sub2, &mut sub1, &mut sub0] {
        sub.assert_silent(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn wire_acks_carry_the_packet_id() {
    let server = TestServer::start().await;
    let mut sub = raw_v3(server.mqtt, "wire-sub").await;
    raw_subscribe(&mut sub, "w/t", WireQoS::ExactlyOnce).await;
    let mut publisher = raw_v3(server.mqtt, "wire-pub").await;

    publisher
        .send(&publish("w/t", WireQoS::AtLeastOnce, Some(77), "a"))
        .await;
    assert_eq!(publisher.recv().await, Some(Packet::PubAck(resp(77))));

    publisher
        .send(&publish("w/t", WireQoS::ExactlyOnce, Some(88), "b"))
        .await;
    assert_eq!(publisher.recv().await, Some(Packet::PubRec(resp(88))));
    publisher.send(&Packet::PubRel(resp(88))).await;
    assert_eq!(publisher.recv().await, Some(Packet::PubComp(resp(88))));

    // Outgoing side: ids are non-zero and distinct while in flight.
    let first = recv_publish(&mut sub).await;
    assert_eq!(
        (first.qos, &first.payload[..]),
        (WireQoS::AtLeastOnce, &b"a"[..])
    );
    let second = recv_publish(&mut sub).await;
    assert_eq!(
        (second.qos, &second.payload[..]),
        (WireQoS::ExactlyOnce, &b"b"[..])
    );
    let (id1, id2) = (first.packet_id.unwrap(), second.packet_id.unwrap());
    assert!(id1 != 0 && id2 != 0 && id1 != id2);
    assert!(!first.dup && !second.dup);

    sub.send(&Packet::PubAck(resp(id1))).await;
    sub.send(&Packet::PubRec(resp(id2))).await;
    assert_eq!(sub.recv().await, Some(Packet::PubRel(resp(id2))));
    sub.send(&Packet::PubComp(resp(id2))).await;
    sub.send(&Packet::PingReq).await;
    assert_eq!(sub.recv().await, Some(Packet::PingResp));
}

#[tokio::test]
async fn unacked_qos1_redelivered_with_dup_and_same_id() {
    let server = TestServer::start().await;
    let (mut sub, _) = raw_connect(server.mqtt, connect_packet("redeliver", false, 30)).await;
    raw_subscribe(&mut sub, "rd/t", WireQoS::AtLeastOnce).await;
    let mut publisher = raw_v3(server.mqtt, "rd-pub").await;
    publisher
        .send(&publish("rd/t", WireQoS::AtLeastOnce, Some(1), "again"))
        .await;
    assert_eq!(publisher.recv().await, Some(Packet::PubAck(resp(1))));

    let original = recv_publish(&mut sub).await;
    assert!(!original.dup);
    let id = original.packet_id.unwrap();
    drop(sub);
    server
        .wait_metric("throng_sessions{state=\"offline\"}", |v| v == 1.0)
        .await;

    let (mut sub, ack) = raw_connect(server.mqtt, connect_packet("redeliver", false, 30)).await;
    assert!(ack.session_present);
    let again = recv_publish(&mut sub).await;
    assert!(again.dup, "redelivery must set DUP");
    assert_eq!(again.packet_id, Some(id), "redelivery keeps the packet id");
    assert_eq!(&again.payload[..], b"again");
    assert_eq!(again.qos, WireQoS::AtLeastOnce);
    sub.send(&Packet::PubAck(resp(id))).await;
    sub.send(&Packet::PingReq).await;
    assert_eq!(sub.recv().await, Some(Packet::PingResp));
    drop(sub);
    server
        .wait_metric("throng_sessions{state=\"offline\"}", |v| v == 1.0)
        .await;

    // Acknowledged now: not sent a third time.
    let (mut sub, _) = raw_connect(server.mqtt, connect_packet("redeliver", false, 30)).await;
    sub.send(&Packet::PingReq).await;
    assert_eq!(sub.recv().await, Some(Packet::PingResp));
}

#[tokio::test]
async fn qos2_after_pubrec_resumes_with_pubrel() {
    let server = TestServer::start().await;
    let (mut sub, _) = raw_connect(server.mqtt, connect_packet("rel-resume", false, 30)).await;
    raw_subscribe(&mut sub, "rr/t", WireQoS::ExactlyOnce).await;
    let mut publisher = raw_v3(server.mqtt, "rr-pub").await;
    publisher
        .send(&publish("rr/t", WireQoS::ExactlyOnce, Some(3), "x"))
        .await;
    assert_eq!(publisher.recv().await, Some(Packet::PubRec(resp(3))));
    publisher.send(&Packet::PubRel(resp(3))).await;
    assert_eq!(publisher.recv().await, Some(Packet::PubComp(resp(3))));

    let got = recv_publish(&mut sub).await;
    let id = got.packet_id.unwrap();
    sub.send(&Packet::PubRec(resp(id))).await;
    assert_eq!(sub.recv().await, Some(Packet::PubRel(resp(id))));
    drop(sub);
    server
        .wait_metric("throng_sessions{state=\"offline\"}", |v| v == 1.0)
        .await;

    let (mut sub, _) = raw_connect(server.mqtt, connect_packet("rel-resume", false, 30)).await;
    assert_eq!(
        sub.recv().await,
        Some(Packet::PubRel(resp(id))),
        "after PUBREC the server resends PUBREL, not the PUBLISH"
    );
    sub.send(&Packet::PubComp(resp(id))).await;
    sub.send(&Packet::PingReq).await;
    assert_eq!(sub.recv().await, Some(Packet::PingResp));
}

#[tokio::test]
async fn qos2_duplicate_before_pubrel_delivered_once() {
    let server = TestServer::start().await;
    let mut sub = Mqtt3::connect(server.mqtt, "dedupe-sub").await;
    sub.subscribe("dd/t", QoS::ExactlyOnce).await;
    let mut publisher = raw_v3(server.mqtt, "dedupe-pub").await;

    publisher
        .send(&publish("dd/t", WireQoS::ExactlyOnce, Some(5), "once"))
        .await;
    assert_eq!(publisher.recv().await, Some(Packet::PubRec(resp(5))));
    let mut dup = publish("dd/t", WireQoS::ExactlyOnce, Some(5), "once");
    if let Packet::Publish(p) = &mut dup {
        p.dup = true;
    }
    publisher.send(&dup).await;
    assert_eq!(publisher.recv().await, Some(Packet::PubRec(resp(5))));
    publisher.send(&Packet::PubRel(resp(5))).await;
    assert_eq!(publisher.recv().await, Some(Packet::PubComp(resp(5))));

    let got = sub.recv().await;
    assert_eq!(&got.payload[..], b"once");
    sub.assert_silent(Duration::from_millis(500)).await;

    // The flow is complete: the id is free for a new message.
    publisher
        .send(&publish("dd/t", WireQoS::ExactlyOnce, Some(5), "twice"))
        .await;
    assert_eq!(publisher.recv().await, Some(Packet::PubRec(resp(5))));
    publisher.send(&Packet::PubRel(resp(5))).await;
    assert_eq!(publisher.recv().await, Some(Packet::PubComp(resp(5))));
    assert_eq!(&sub.recv().await.payload[..], b"twice");
}

#[tokio::test]
async fn unknown_pubrel_still_gets_pubcomp() {
    let server = TestServer::start().await;
    let mut client = raw_v3(server.mqtt, "stray-rel").await;
    client.send(&Packet::PubRel(resp(42))).await;
    assert_eq!(client.recv().await, Some(Packet::PubComp(resp(42))));
}

#[tokio::test]
async fn takeover_redelivers_unacked_to_new_connection() {
    let server = TestServer::start().await;
    let (mut first, _) = raw_connect(server.mqtt, connect_packet("hand-over", false, 30)).await;
    raw_subscribe(&mut first, "ho/t", WireQoS::AtLeastOnce).await;
    let mut publisher = raw_v3(server.mqtt, "ho-pub").await;
    publisher
        .send(&publish("ho/t", WireQoS::AtLeastOnce, Some(1), "pending"))
        .await;
    assert_eq!(publisher.recv().await, Some(Packet::PubAck(resp(1))));
    let original = recv_publish(&mut first).await;

    let (mut second, ack) = raw_connect(server.mqtt, connect_packet("hand-over", false, 30)).await;
    assert!(ack.session_present);
    let again = recv_publish(&mut second).await;
    assert!(again.dup);
    assert_eq!(again.packet_id, original.packet_id);
    assert_eq!(&again.payload[..], b"pending");
    assert!(first.closed_within(Duration::from_secs(3)).await);
}
