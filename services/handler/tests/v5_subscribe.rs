//! MQTT 5.0 subscription options: No Local, Retain As Published, Retain Handling,
//! subscription identifiers; shared subscriptions with No Local; SUBACK and
//! UNSUBACK reason codes.

mod support;

use std::time::Duration;

use throng_codec::{Packet, QoS, Subscribe, SubscriptionOptions, Unsubscribe, reason};

use support::TestServer;
use support::v5::{
    assert_quiet, client, expect_disconnect, expect_publish, opts, publish_packet, subscribe,
};

const QUIET: Duration = Duration::from_millis(300);

fn retained(topic: &str, payload: &[u8]) -> Packet {
    let mut publish = publish_packet(topic, payload, QoS::AtMostOnce, 0);
    publish.retain = true;
    Packet::Publish(publish)
}

fn with(qos: QoS, f: impl FnOnce(&mut SubscriptionOptions)) -> SubscriptionOptions {
    let mut o = opts(qos);
    f(&mut o);
    o
}

#[tokio::test]
async fn no_local_suppresses_own_messages() {
    let server = TestServer::start().await;
    let mut me = client(server.mqtt, "nl-me").await;
    let mut other = client(server.mqtt, "nl-other").await;
    let nl = with(QoS::AtMostOnce, |o| o.no_local = true);
    subscribe(&mut me, 1, "nl/t", nl, None).await;
    subscribe(&mut other, 1, "nl/t", opts(QoS::AtMostOnce), None).await;
    me.send(&Packet::Publish(publish_packet(
        "nl/t",
        b"mine",
        QoS::AtMostOnce,
        0,
    )))
    .await;
    assert_eq!(expect_publish(&mut other).await.payload, &b"mine"[..]);
    assert_quiet(&mut me, QUIET).await;
    other
        .send(&Packet::Publish(publish_packet(
            "nl/t",
            b"theirs",
            QoS::AtMostOnce,
            0,
        )))
        .await;
    assert_eq!(expect_publish(&mut me).await.payload, &b"theirs"[..]);
}

#[tokio::test]
async fn retain_as_published_keeps_or_clears_the_flag() {
    let server = TestServer::start().await;
    let mut keep = client(server.mqtt, "rap-keep").await;
    let mut clear = client(server.mqtt, "rap-clear").await;
    let rap = with(QoS::AtMostOnce, |o| o.retain_as_published = true);
    subscribe(&mut keep, 1, "rap/t", rap, None).await;
    subscribe(&mut clear, 1, "rap/t", opts(QoS::AtMostOnce), None).await;
    let mut publisher = client(server.mqtt, "rap-pub").await;
    publisher.send(&retained("rap/t", b"live")).await;
    let kept = expect_publish(&mut keep).await;
    let cleared = expect_publish(&mut clear).await;
    assert!(kept.retain, "retain as published lost the flag");
    assert!(
        !cleared.retain,
        "live message kept RETAIN without the option"
    );
    // A retained message sent because of a new subscription always has RETAIN set.
    let mut late = client(server.mqtt, "rap-late").await;
    subscribe(&mut late, 1, "rap/t", opts(QoS::AtMostOnce), None).await;
    let publish = expect_publish(&mut late).await;
    assert!(publish.retain);
    assert_eq!(publish.payload, &b"live"[..]);
}

#[tokio::test]
async fn retain_handling_0_1_2() {
    let server = TestServer::start().await;
    let mut publisher = client(server.mqtt, "rh-pub").await;
    publisher.send(&retained("rh/t", b"kept")).await;
    publisher.send(&Packet::PingReq).await;
    assert_eq!(publisher.recv().await, Some(Packet::PingResp));

    let mut c = client(server.mqtt, "rh-sub").await;
    for (round, handling, expect) in [
        (1u16, 0u8, true),
        (2, 0, true),  // 0: on every subscribe, also a repeated one
        (3, 1, false), // 1: the subscription exists already
        (4, 2, false), // 2: never
    ] {
        let o = with(QoS::AtMostOnce, |o| o.retain_handling = handling);
        subscribe(&mut c, round, "rh/t", o, None).await;
        if expect {
            let publish = expect_publish(&mut c).await;
            assert!(publish.retain);
            assert_eq!(publish.payload, &b"kept"[..]);
        } else {
            assert_quiet(&mut c, QUIET).await;
        }
    }
    // 1 on a new subscription sends it; 2 on a new one does not.
    let o = with(QoS::AtMostOnce, |o| o.retain_handling = 1);
    subscribe(&mut c, 5, "rh/+", o, None).await;
    assert_eq!(expect_publish(&mut c).await.payload, &b"kept"[..]);
    let mut d = client(server.mqtt, "rh-sub-2").await;
    let o = with(QoS::AtMostOnce, |o| o.retain_handling = 2);
    subscribe(&mut d, 1, "rh/t", o, None).await;
    assert_quiet(&mut d, QUIET).await;
}

#[tokio::test]
async fn subscription_identifiers_on_overlapping_subscriptions() {
    let server = TestServer::start().await;
    let mut c = client(server.mqtt, "sid").await;
    subscribe(&mut c, 1, "sid/#", opts(QoS::AtMostOnce), Some(1)).await;
    subscribe(&mut c, 2, "sid/t", opts(QoS::AtLeastOnce), Some(2)).await;
    let mut publisher = client(server.mqtt, "sid-pub").await;
    publisher
        .send(&Packet::Publish(publish_packet(
            "sid/other",
            b"one",
            QoS::AtLeastOnce,
            1,
        )))
        .await;
    let publish = expect_publish(&mut c).await;
    assert_eq!(publish.properties.subscription_identifiers, [1]);
    assert_eq!(publish.qos, QoS::AtMostOnce);
    publisher
        .send(&Packet::Publish(publish_packet(
            "sid/t",
            b"both",
            QoS::AtLeastOnce,
            2,
        )))
        .await;
    let publish = expect_publish(&mut c).await;
    assert_eq!(publish.payload, &b"both"[..]);
    assert_eq!(publish.qos, QoS::AtLeastOnce);
    let mut ids = publish.properties.subscription_identifiers.clone();
    ids.sort_unstable();
    assert_eq!(ids, [1, 2]);
    assert_quiet(&mut c, QUIET).await;
}

#[tokio::test]
async fn shared_subscription_with_no_local_is_protocol_error() {
    let server = TestServer::start().await;
    let mut c = client(server.mqtt, "share-nl").await;
    c.send(&Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![(
            "$share/g/s/t".into(),
            with(QoS::AtMostOnce, |o| o.no_local = true),
        )],
        ..Subscribe::default()
    }))
    .await;
    expect_disconnect(&mut c, reason::PROTOCOL_ERROR).await;
}

#[tokio::test]
async fn invalid_filter_is_0x8f_next_to_a_valid_one() {
    let server = TestServer::start().await;
    let mut c = client(server.mqtt, "badfilter").await;
    c.send(&Packet::Subscribe(Subscribe {
        packet_id: 4,
        filters: vec![
            ("ok/+".into(), opts(QoS::AtLeastOnce)),
            ("a/#/b".into(), opts(QoS::AtLeastOnce)),
        ],
        ..Subscribe::default()
    }))
    .await;
    let Some(Packet::SubAck(ack)) = c.recv().await else {
        panic!("expected SUBACK")
    };
    assert_eq!(ack.packet_id, 4);
    assert_eq!(
        ack.codes,
        [reason::GRANTED_QOS_1, reason::TOPIC_FILTER_INVALID]
    );
}

#[tokio::test]
async fn unsuback_success_and_no_subscription_existed() {
    let server = TestServer::start().await;
    let mut c = client(server.mqtt, "unsub").await;
    subscribe(&mut c, 1, "un/t", opts(QoS::AtMostOnce), None).await;
    c.send(&Packet::Unsubscribe(Unsubscribe {
        packet_id: 2,
        filters: vec!["un/t".into(), "un/never".into()],
        ..Unsubscribe::default()
    }))
    .await;
    let Some(Packet::UnsubAck(ack)) = c.recv().await else {
        panic!("expected UNSUBACK")
    };
    assert_eq!(ack.packet_id, 2);
    assert_eq!(
        ack.codes,
        [reason::SUCCESS, reason::NO_SUBSCRIPTION_EXISTED]
    );
    // The subscription is really gone.
    c.send(&Packet::Publish(publish_packet(
        "un/t",
        b"x",
        QoS::AtLeastOnce,
        3,
    )))
    .await;
    let Some(Packet::PubAck(puback)) = c.recv().await else {
        panic!("expected PUBACK")
    };
    assert_eq!(puback.reason, reason::NO_MATCHING_SUBSCRIBERS);
    assert_quiet(&mut c, QUIET).await;
}

#[tokio::test]
async fn retain_handling_1_after_unsubscribe_is_new_again() {
    let server = TestServer::start().await;
    let mut publisher = client(server.mqtt, "rhu-pub").await;
    publisher.send(&retained("rhu/t", b"kept")).await;
    publisher.send(&Packet::PingReq).await;
    assert_eq!(publisher.recv().await, Some(Packet::PingResp));
    let mut c = client(server.mqtt, "rhu").await;
    let o = with(QoS::AtMostOnce, |o| o.retain_handling = 1);
    subscribe(&mut c, 1, "rhu/t", o, None).await;
    assert_eq!(expect_publish(&mut c).await.payload, &b"kept"[..]);
    c.send(&Packet::Unsubscribe(Unsubscribe {
        packet_id: 2,
        filters: vec!["rhu/t".into()],
        ..Unsubscribe::default()
    }))
    .await;
    assert!(matches!(c.recv().await, Some(Packet::UnsubAck(_))));
    subscribe(&mut c, 3, "rhu/t", o, None).await;
    assert_eq!(expect_publish(&mut c).await.payload, &b"kept"[..]);
}
