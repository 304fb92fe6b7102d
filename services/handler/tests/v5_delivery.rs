//! MQTT 5.0 delivery details: redelivery after resuming a session, QoS downgrade,
//! shared subscriptions, retained-message expiry and identifiers, keepalive
//! timeout, and the session-expiry side of wills.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use throng_codec::{Disconnect, Packet, PublishProperties, QoS, Will, reason};
use throng_handler::HandlerConfig;

use support::TestServer;
use support::v5::{
    assert_quiet, client, connect_packet, connect_with, expect_disconnect, expect_publish, opts,
    publish_packet, resp, subscribe,
};

const QUIET: Duration = Duration::from_millis(300);

fn persistent(id: &str, clean_start: bool) -> throng_codec::Connect {
    let mut connect = connect_packet(id);
    connect.clean_start = clean_start;
    connect.properties.session_expiry_interval = Some(60);
    connect
}

#[tokio::test]
async fn resumed_session_redelivers_with_dup_then_pubrel() {
    let server = TestServer::start().await;
    let (mut sub, _) = connect_with(server.mqtt, persistent("rd", true)).await;
    subscribe(&mut sub, 1, "rd/#", opts(QoS::ExactlyOnce), None).await;
    let mut publisher = client(server.mqtt, "rd-pub").await;
    publisher
        .send(&Packet::Publish(publish_packet(
            "rd/1",
            b"one",
            QoS::AtLeastOnce,
            1,
        )))
        .await;
    let first = expect_publish(&mut sub).await;
    publisher
        .send(&Packet::Publish(publish_packet(
            "rd/2",
            b"two",
            QoS::ExactlyOnce,
            2,
        )))
        .await;
    let second = expect_publish(&mut sub).await;
    let id2 = second.packet_id.unwrap();
    sub.send(&Packet::PubRec(resp(id2))).await;
    assert_eq!(sub.recv().await, Some(Packet::PubRel(resp(id2))));
    drop(sub); // neither PUBACK nor PUBCOMP sent

    let (mut sub, ack) = connect_with(server.mqtt, persistent("rd", false)).await;
    assert!(ack.session_present);
    let again = expect_publish(&mut sub).await;
    assert!(again.dup, "redelivery without DUP");
    assert_eq!(again.packet_id, first.packet_id);
    assert_eq!(
        (again.topic.as_str(), &again.payload[..]),
        ("rd/1", &b"one"[..])
    );
    assert_eq!(sub.recv().await, Some(Packet::PubRel(resp(id2))));
    sub.send(&Packet::PubAck(resp(first.packet_id.unwrap())))
        .await;
    sub.send(&Packet::PubComp(resp(id2))).await;
    assert_quiet(&mut sub, QUIET).await;
}

#[tokio::test]
async fn delivery_qos_is_the_lower_of_publish_and_subscription() {
    let server = TestServer::start().await;
    let mut sub1 = client(server.mqtt, "dg-1").await;
    let mut sub0 = client(server.mqtt, "dg-0").await;
    subscribe(&mut sub1, 1, "dg/t", opts(QoS::AtLeastOnce), None).await;
    subscribe(&mut sub0, 1, "dg/t", opts(QoS::AtMostOnce), None).await;
    let mut publisher = client(server.mqtt, "dg-pub").await;
    publisher
        .send(&Packet::Publish(publish_packet(
            "dg/t",
            b"x",
            QoS::ExactlyOnce,
            1,
        )))
        .await;
    let p1 = expect_publish(&mut sub1).await;
    assert_eq!(p1.qos, QoS::AtLeastOnce);
    assert!(p1.packet_id.is_some());
    let p0 = expect_publish(&mut sub0).await;
    assert_eq!(p0.qos, QoS::AtMostOnce);
    assert_eq!(p0.packet_id, None);
}

#[tokio::test]
async fn shared_subscription_delivers_each_message_once_and_no_retained() {
    let server = TestServer::start().await;
    let mut publisher = client(server.mqtt, "sh-pub").await;
    let mut retained = publish_packet("sh/t", b"old", QoS::AtMostOnce, 0);
    retained.retain = true;
    publisher.send(&Packet::Publish(retained)).await;
    let mut a = client(server.mqtt, "sh-a").await;
    let mut b = client(server.mqtt, "sh-b").await;
    for c in [&mut a, &mut b] {
        let ack = subscribe(c, 1, "$share/g/sh/t", opts(QoS::AtLeastOnce), None).await;
        assert_eq!(ack.codes, [reason::GRANTED_QOS_1]);
    }
    for i in 1..=4u16 {
        publisher
            .send(&Packet::Publish(publish_packet(
                "sh/t",
                &[b'0' + i as u8],
                QoS::AtLeastOnce,
                i,
            )))
            .await;
        assert_eq!(publisher.recv().await, Some(Packet::PubAck(resp(i))));
    }
    let mut got = Vec::new();
    for (name, c) in [("a", &mut a), ("b", &mut b)] {
        let mut n = 0;
        while let Some(Some(Packet::Publish(p))) = support::v5::recv_within(c, QUIET).await {
            assert!(
                !p.retain,
                "{name} got a retained message on a shared subscription"
            );
            c.send(&Packet::PubAck(resp(p.packet_id.unwrap()))).await;
            got.push(p.payload[0]);
            n += 1;
        }
        assert!(n >= 1, "member {name} got nothing");
    }
    got.sort_unstable();
    assert_eq!(got, b"1234");
}

#[tokio::test]
async fn retained_message_expires_and_carries_subscription_id() {
    let server = TestServer::start().await;
    let mut publisher = client(server.mqtt, "rx-pub").await;
    for (topic, secs) in [("rx/short", 1), ("rx/long", 30)] {
        let mut p = publish_packet(topic, topic.as_bytes(), QoS::AtMostOnce, 0);
        p.retain = true;
        p.properties.message_expiry_interval = Some(secs);
        publisher.send(&Packet::Publish(p)).await;
    }
    publisher.send(&Packet::PingReq).await;
    assert_eq!(publisher.recv().await, Some(Packet::PingResp));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut sub = client(server.mqtt, "rx-sub").await;
    subscribe(&mut sub, 1, "rx/#", opts(QoS::AtLeastOnce), Some(42)).await;
    let p = expect_publish(&mut sub).await;
    assert_eq!(p.topic, "rx/long");
    assert!(p.retain);
    assert_eq!(p.properties.subscription_identifiers, [42]);
    let left = p.properties.message_expiry_interval.unwrap();
    assert!((1..=28).contains(&left), "expiry sent on as {left}");
    assert_quiet(&mut sub, QUIET).await;
}

#[tokio::test]
async fn resubscribe_replaces_the_subscription_identifier() {
    let server = TestServer::start().await;
    let mut c = client(server.mqtt, "rs").await;
    subscribe(&mut c, 1, "rs/t", opts(QoS::AtMostOnce), Some(7)).await;
    subscribe(&mut c, 2, "rs/t", opts(QoS::AtMostOnce), None).await;
    let mut publisher = client(server.mqtt, "rs-pub").await;
    publisher
        .send(&Packet::Publish(publish_packet(
            "rs/t",
            b"x",
            QoS::AtMostOnce,
            0,
        )))
        .await;
    let p = expect_publish(&mut c).await;
    assert!(p.properties.subscription_identifiers.is_empty());
    assert_quiet(&mut c, QUIET).await;
}

#[tokio::test]
async fn keepalive_timeout_is_0x8d() {
    let server = TestServer::with_config(HandlerConfig {
        max_keepalive: 1,
        ..HandlerConfig::default()
    })
    .await;
    let mut connect = connect_packet("ka");
    connect.keep_alive = 1;
    let (mut c, ack) = connect_with(server.mqtt, connect).await;
    assert_eq!(ack.properties.server_keep_alive, None);
    let started = Instant::now();
    expect_disconnect(&mut c, reason::KEEP_ALIVE_TIMEOUT).await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1000), "after {waited:?}");
}

#[tokio::test]
async fn disconnect_with_expiry_zero_ends_the_session() {
    let server = TestServer::start().await;
    let (mut c, _) = connect_with(server.mqtt, persistent("dz", true)).await;
    c.send(&Packet::Disconnect(Disconnect {
        session_expiry_interval: Some(0),
        ..Disconnect::default()
    }))
    .await;
    assert!(c.closed_within(Duration::from_secs(5)).await);
    let (_c, ack) = connect_with(server.mqtt, persistent("dz", false)).await;
    assert!(!ack.session_present);
}

#[tokio::test]
async fn will_goes_out_when_session_expires_before_its_delay() {
    let server = TestServer::start().await;
    let mut watcher = client(server.mqtt, "we-watch").await;
    subscribe(&mut watcher, 1, "we/#", opts(QoS::AtLeastOnce), None).await;
    let mut connect = connect_packet("we");
    connect.properties.session_expiry_interval = Some(1);
    connect.will = Some(Will {
        topic: "we/gone".into(),
        payload: Bytes::from_static(b"bye"),
        qos: QoS::AtLeastOnce,
        retain: true,
        delay_interval: Some(30),
        properties: PublishProperties::default(),
    });
    let (c, _) = connect_with(server.mqtt, connect).await;
    drop(c);
    let started = Instant::now();
    let p = expect_publish(&mut watcher).await;
    assert_eq!(p.topic, "we/gone");
    assert!(started.elapsed() >= Duration::from_millis(800));
    // The will was retained: a later subscriber gets it.
    let mut late = client(server.mqtt, "we-late").await;
    subscribe(&mut late, 1, "we/gone", opts(QoS::AtLeastOnce), None).await;
    let p = expect_publish(&mut late).await;
    assert!(p.retain);
    assert_eq!(p.payload, &b"bye"[..]);
}

#[tokio::test]
async fn resume_respects_the_new_receive_maximum() {
    let server = TestServer::start().await;
    let (mut sub, _) = connect_with(server.mqtt, persistent("rmr", true)).await;
    subscribe(&mut sub, 1, "rmr/t", opts(QoS::AtLeastOnce), None).await;
    let mut publisher = client(server.mqtt, "rmr-pub").await;
    for i in 1..=3u16 {
        publisher
            .send(&Packet::Publish(publish_packet(
                "rmr/t",
                &[b'0' + i as u8],
                QoS::AtLeastOnce,
                i,
            )))
            .await;
        expect_publish(&mut sub).await;
    }
    drop(sub); // three unacknowledged

    let mut connect = persistent("rmr", false);
    connect.properties.receive_maximum = Some(1);
    let (mut sub, ack) = connect_with(server.mqtt, connect).await;
    assert!(ack.session_present);
    // MQTT-3.3.4-9: never more unacknowledged PUBLISHes than the client allows, even
    // when resending (MQTT-4.4.0-1 keeps the original ids and order).
    for expected in [b"1", b"2", b"3"] {
        let p = expect_publish(&mut sub).await;
        assert_eq!(p.payload, &expected[..]);
        assert!(p.dup);
        assert_quiet(&mut sub, QUIET).await;
        sub.send(&Packet::PubAck(resp(p.packet_id.unwrap()))).await;
    }
}
