//! MQTT 5.0 QoS flows in both directions: the acknowledgement packets and their
//! reason codes, the client's and the server's Receive Maximum, ACL refusals.

mod support;

use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS as RQoS;
use rumqttc::v5::mqttbytes::v5::Packet as RPacket;
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use throng_codec::{Packet, QoS, reason};
use throng_handler::HandlerConfig;

use support::TestServer;
use support::v5::{
    assert_quiet, client, connect_packet, connect_with, expect_disconnect, expect_publish, opts,
    publish_packet, resp, subscribe,
};

fn rumqtt(server: &TestServer, id: &str) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(id, "127.0.0.1", server.port());
    options.set_keep_alive(Duration::from_secs(30));
    AsyncClient::new(options, 16)
}

/// Polls until `want` packets matching `keep` arrived (bounded: 5 s).
async fn collect(
    events: &mut EventLoop,
    want: usize,
    keep: impl Fn(&RPacket) -> bool,
) -> Vec<RPacket> {
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), async {
        while got.len() < want {
            match events.poll().await.expect("connection error") {
                Event::Incoming(packet) if keep(&packet) => got.push(packet),
                _ => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {} of {want} packets: {got:?}", got.len()));
    got
}

#[tokio::test]
async fn qos_0_1_2_both_directions_with_rumqttc() {
    let server = TestServer::start().await;
    let (sub, mut sub_events) = rumqtt(&server, "rq-sub");
    let (publisher, mut pub_events) = rumqtt(&server, "rq-pub");
    sub.subscribe("rq/#", RQoS::ExactlyOnce).await.unwrap();
    let acks = collect(&mut sub_events, 1, |p| matches!(p, RPacket::SubAck(_))).await;
    let RPacket::SubAck(suback) = &acks[0] else {
        unreachable!()
    };
    assert_eq!(
        format!("{:?}", suback.return_codes),
        "[Success(ExactlyOnce)]"
    );
    collect(&mut pub_events, 1, |p| matches!(p, RPacket::ConnAck(_))).await;

    for (i, qos) in [RQoS::AtMostOnce, RQoS::AtLeastOnce, RQoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        publisher
            .publish(format!("rq/{i}"), qos, false, format!("m{i}"))
            .await
            .unwrap();
    }
    let sub_task = tokio::spawn(async move {
        collect(&mut sub_events, 3, |p| matches!(p, RPacket::Publish(_))).await
    });
    let acks = collect(&mut pub_events, 2, |p| {
        matches!(p, RPacket::PubAck(_) | RPacket::PubComp(_))
    })
    .await;
    assert!(matches!(&acks[0], RPacket::PubAck(a) if a.pkid == 1));
    assert!(matches!(&acks[1], RPacket::PubComp(c) if c.pkid == 2));
    let mut received: Vec<(String, RQoS, String)> = sub_task
        .await
        .unwrap()
        .into_iter()
        .map(|p| match p {
            RPacket::Publish(p) => (
                String::from_utf8(p.topic.to_vec()).unwrap(),
                p.qos,
                String::from_utf8(p.payload.to_vec()).unwrap(),
            ),
            _ => unreachable!(),
        })
        .collect();
    received.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        received,
        vec![
            ("rq/0".into(), RQoS::AtMostOnce, "m0".into()),
            ("rq/1".into(), RQoS::AtLeastOnce, "m1".into()),
            ("rq/2".into(), RQoS::ExactlyOnce, "m2".into()),
        ]
    );
}

#[tokio::test]
async fn qos2_exact_packet_flow_both_directions() {
    let server = TestServer::start().await;
    let mut sub = client(server.mqtt, "q2-sub").await;
    assert_eq!(
        subscribe(&mut sub, 1, "q2/t", opts(QoS::ExactlyOnce), None)
            .await
            .codes,
        [reason::GRANTED_QOS_2]
    );
    let mut publisher = client(server.mqtt, "q2-pub").await;
    publisher
        .send(&Packet::Publish(publish_packet(
            "q2/t",
            b"once",
            QoS::ExactlyOnce,
            7,
        )))
        .await;
    assert_eq!(publisher.recv().await, Some(Packet::PubRec(resp(7))));
    // A resend before PUBREL is acknowledged again but not routed again.
    let mut dup = publish_packet("q2/t", b"once", QoS::ExactlyOnce, 7);
    dup.dup = true;
    publisher.send(&Packet::Publish(dup)).await;
    assert_eq!(publisher.recv().await, Some(Packet::PubRec(resp(7))));
    publisher.send(&Packet::PubRel(resp(7))).await;
    assert_eq!(publisher.recv().await, Some(Packet::PubComp(resp(7))));

    let publish = expect_publish(&mut sub).await;
    assert_eq!(publish.qos, QoS::ExactlyOnce);
    assert_eq!(publish.payload, &b"once"[..]);
    assert!(!publish.dup);
    let id = publish.packet_id.expect("qos 2 has a packet id");
    sub.send(&Packet::PubRec(resp(id))).await;
    assert_eq!(sub.recv().await, Some(Packet::PubRel(resp(id))));
    sub.send(&Packet::PubComp(resp(id))).await;
    assert_quiet(&mut sub, Duration::from_millis(300)).await;

    // PUBREL for an unknown id: PUBCOMP 0x92.
    publisher.send(&Packet::PubRel(resp(99))).await;
    let mut expected = resp(99);
    expected.reason = reason::PACKET_IDENTIFIER_NOT_FOUND;
    assert_eq!(publisher.recv().await, Some(Packet::PubComp(expected)));
}

#[tokio::test]
async fn client_receive_maximum_limits_in_flight() {
    let server = TestServer::start().await;
    let mut connect = connect_packet("rm-sub");
    connect.properties.receive_maximum = Some(2);
    let (mut sub, _) = connect_with(server.mqtt, connect).await;
    subscribe(&mut sub, 1, "rm/t", opts(QoS::AtLeastOnce), None).await;
    let mut publisher = client(server.mqtt, "rm-pub").await;
    for i in 1..=4u16 {
        let payload = [b'0' + i as u8];
        publisher
            .send(&Packet::Publish(publish_packet(
                "rm/t",
                &payload,
                QoS::AtLeastOnce,
                i,
            )))
            .await;
        assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    }
    let first = expect_publish(&mut sub).await;
    let second = expect_publish(&mut sub).await;
    assert_eq!(
        (&first.payload[..], &second.payload[..]),
        (&b"1"[..], &b"2"[..])
    );
    assert_quiet(&mut sub, Duration::from_millis(400)).await;
    sub.send(&Packet::PubAck(resp(first.packet_id.unwrap())))
        .await;
    let third = expect_publish(&mut sub).await;
    assert_eq!(third.payload, &b"3"[..]);
    assert_quiet(&mut sub, Duration::from_millis(400)).await;
    sub.send(&Packet::PubAck(resp(second.packet_id.unwrap())))
        .await;
    assert_eq!(expect_publish(&mut sub).await.payload, &b"4"[..]);
}

#[tokio::test]
async fn puback_no_matching_subscribers() {
    let server = TestServer::start().await;
    let mut publisher = client(server.mqtt, "nm-pub").await;
    publisher
        .send(&Packet::Publish(publish_packet(
            "nobody/here",
            b"x",
            QoS::AtLeastOnce,
            3,
        )))
        .await;
    let mut expected = resp(3);
    expected.reason = reason::NO_MATCHING_SUBSCRIBERS;
    assert_eq!(publisher.recv().await, Some(Packet::PubAck(expected)));
}

#[tokio::test]
async fn acl_refusal_is_0x87_for_puback_and_pubrec() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "user u\ntopic readwrite allowed/#\n").unwrap();
    let server = TestServer::with_config(HandlerConfig {
        acl_file: Some(acl),
        ..HandlerConfig::default()
    })
    .await;
    let login = |id: &str| {
        let mut connect = connect_packet(id);
        connect.username = Some("u".into());
        connect_with(server.mqtt, connect)
    };
    let (mut sub, _) = login("acl-sub").await;
    subscribe(&mut sub, 1, "allowed/#", opts(QoS::AtLeastOnce), None).await;
    let (mut c, ack) = login("acl-pub").await;
    assert_eq!(ack.code, 0);

    let refused = |id: u16| {
        let mut r = resp(id);
        r.reason = reason::NOT_AUTHORIZED;
        r
    };
    c.send(&Packet::Publish(publish_packet(
        "denied/x",
        b"no",
        QoS::AtLeastOnce,
        1,
    )))
    .await;
    assert_eq!(c.recv().await, Some(Packet::PubAck(refused(1))));
    c.send(&Packet::Publish(publish_packet(
        "denied/x",
        b"no",
        QoS::ExactlyOnce,
        2,
    )))
    .await;
    assert_eq!(c.recv().await, Some(Packet::PubRec(refused(2))));
    // The refused QoS 2 flow ended at PUBREC: the id is free again.
    c.send(&Packet::Publish(publish_packet(
        "allowed/x",
        b"yes",
        QoS::ExactlyOnce,
        2,
    )))
    .await;
    assert_eq!(c.recv().await, Some(Packet::PubRec(resp(2))));
    c.send(&Packet::PubRel(resp(2))).await;
    assert_eq!(c.recv().await, Some(Packet::PubComp(resp(2))));
    let publish = expect_publish(&mut sub).await;
    assert_eq!(publish.topic, "allowed/x");
    assert_quiet(&mut sub, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn server_receive_maximum_exceeded_is_0x93() {
    let server = TestServer::with_config(HandlerConfig {
        receive_maximum: 2,
        ..HandlerConfig::default()
    })
    .await;
    let mut c = client(server.mqtt, "rmx").await;
    for id in 1..=2u16 {
        c.send(&Packet::Publish(publish_packet(
            "rmx/t",
            b"x",
            QoS::ExactlyOnce,
            id,
        )))
        .await;
        let mut expected = resp(id);
        expected.reason = reason::NO_MATCHING_SUBSCRIBERS;
        assert_eq!(c.recv().await, Some(Packet::PubRec(expected)));
    }
    c.send(&Packet::Publish(publish_packet(
        "rmx/t",
        b"x",
        QoS::ExactlyOnce,
        3,
    )))
    .await;
    expect_disconnect(&mut c, reason::RECEIVE_MAXIMUM_EXCEEDED).await;
}

#[tokio::test]
async fn pubrec_error_ends_the_flow_and_frees_the_window() {
    let server = TestServer::start().await;
    let mut connect = connect_packet("pre-sub");
    connect.properties.receive_maximum = Some(1);
    let (mut sub, _) = connect_with(server.mqtt, connect).await;
    subscribe(&mut sub, 1, "pre/t", opts(QoS::ExactlyOnce), None).await;
    let mut publisher = client(server.mqtt, "pre-pub").await;
    for (id, payload) in [(1u16, b"a"), (2, b"b")] {
        publisher
            .send(&Packet::Publish(publish_packet(
                "pre/t",
                payload,
                QoS::ExactlyOnce,
                id,
            )))
            .await;
        assert!(matches!(publisher.recv().await, Some(Packet::PubRec(_))));
        publisher.send(&Packet::PubRel(resp(id))).await;
        assert!(matches!(publisher.recv().await, Some(Packet::PubComp(_))));
    }
    let first = expect_publish(&mut sub).await;
    assert_eq!(first.payload, &b"a"[..]);
    assert_quiet(&mut sub, Duration::from_millis(300)).await;
    let mut refused = resp(first.packet_id.unwrap());
    refused.reason = reason::UNSPECIFIED_ERROR;
    sub.send(&Packet::PubRec(refused)).await;
    // No PUBREL for a refused message; the next one takes its place.
    let second = expect_publish(&mut sub).await;
    assert_eq!(second.payload, &b"b"[..]);
    assert_quiet(&mut sub, Duration::from_millis(300)).await;
}
