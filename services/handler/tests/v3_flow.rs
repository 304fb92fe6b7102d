//! MQTT 3.1.1 flow control towards a client: the in-flight window
//! (`receive_maximum`), a slow consumer whose socket is full, and many messages in
//! order.

mod support;

use std::time::Duration;

use rumqttc::QoS;
use throng_codec::{Packet, PubResp, Publish, QoS as WireQoS};
use throng_handler::HandlerConfig;

use support::v3::{Mqtt3, connect_packet, raw_small_rcvbuf, raw_subscribe, raw_v3};
use support::{RawClient, TestServer};

async fn recv_publish(raw: &mut RawClient) -> Publish {
    match raw.recv().await {
        Some(Packet::Publish(p)) => p,
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

#[tokio::test]
async fn inflight_window_holds_back_until_acked() {
    let server = TestServer::with_config(HandlerConfig {
        receive_maximum: 2,
        ..HandlerConfig::default()
    })
    .await;
    let mut sub = raw_v3(server.mqtt, "window").await;
    raw_subscribe(&mut sub, "win/t", WireQoS::AtLeastOnce).await;
    let mut publisher = Mqtt3::connect(server.mqtt, "win-pub").await;
    for i in 0..5 {
        publisher
            .publish("win/t", QoS::AtLeastOnce, false, format!("{i}").as_bytes())
            .await;
    }
    let a = recv_publish(&mut sub).await;
    let b = recv_publish(&mut sub).await;
    assert_eq!((&a.payload[..], &b.payload[..]), (&b"0"[..], &b"1"[..]));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), sub.recv())
            .await
            .is_err(),
        "a third message went out with two unacknowledged"
    );
    for (i, id) in [(2, a.packet_id), (3, b.packet_id)] {
        sub.send(&Packet::PubAck(PubResp {
            packet_id: id.unwrap(),
            ..PubResp::default()
        }))
        .await;
        let next = recv_publish(&mut sub).await;
        assert_eq!(next.payload, format!("{i}").as_bytes());
    }
}

#[tokio::test]
async fn many_qos1_messages_arrive_in_order() {
    let server = TestServer::with_config(HandlerConfig {
        receive_maximum: 16,
        max_queued_messages: 2000,
        ..HandlerConfig::default()
    })
    .await;
    let mut sub = Mqtt3::connect(server.mqtt, "order-sub").await;
    sub.subscribe("order/t", QoS::AtLeastOnce).await;
    let mut publisher = raw_v3(server.mqtt, "order-pub").await;
    let mut bytes = Vec::new();
    for i in 0..2000u16 {
        let packet = Packet::Publish(Publish {
            qos: WireQoS::AtLeastOnce,
            topic: "order/t".into(),
            packet_id: Some(i + 1),
            payload: i.to_string().into(),
            ..Publish::default()
        });
        throng_codec::encode(&packet, throng_codec::ProtocolVersion::V3_1_1, &mut bytes).unwrap();
    }
    publisher.send_bytes(&bytes).await;
    for i in 0..2000u16 {
        let got = sub.recv().await;
        assert_eq!(got.payload, i.to_string().as_bytes());
    }
}

/// Messages still in the stalled session's queue: at most its bound of 10.
async fn queued(server: &TestServer) -> f64 {
    let received = server.metric("throng_messages_received_total").await;
    let sent = server.metric("throng_messages_sent_total").await;
    let dropped = server
        .metric("throng_messages_dropped_total{reason=\"queue_full\"}")
        .await;
    let queued = received - sent - dropped;
    assert!(
        (0.0..=10.0).contains(&queued),
        "{queued} queued with a bound of 10"
    );
    queued
}

#[tokio::test]
async fn slow_consumer_is_bounded_and_others_unaffected() {
    let server = TestServer::with_config(HandlerConfig {
        max_queued_messages: 10,
        ..HandlerConfig::default()
    })
    .await;
    // Subscribes, then never reads its socket again.
    let mut stalled = raw_small_rcvbuf(server.mqtt).await;
    stalled.send(&connect_packet("stalled", true, 0)).await;
    assert!(matches!(stalled.recv().await, Some(Packet::ConnAck(_))));
    raw_subscribe(&mut stalled, "flood/#", WireQoS::AtMostOnce).await;
    let mut healthy = Mqtt3::connect(server.mqtt, "healthy").await;
    healthy.subscribe("calm/t", QoS::AtLeastOnce).await;

    let mut publisher = raw_v3(server.mqtt, "flooder").await;
    let payload = vec![b'z'; 64 * 1024];
    let mut frame = Vec::new();
    throng_codec::encode(
        &Packet::Publish(Publish {
            topic: "flood/t".into(),
            payload: payload.into(),
            ..Publish::default()
        }),
        throng_codec::ProtocolVersion::V3_1_1,
        &mut frame,
    )
    .unwrap();
    // 64 MiB at QoS 0, paced so the stalled connection's task keeps draining its
    // queue: far beyond socket buffers, the write high-water mark and the queue.
    for i in 0..1024 {
        publisher.send_bytes(&frame).await;
        if i % 8 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    publisher.send(&Packet::PingReq).await;
    assert_eq!(
        publisher.recv().await,
        Some(Packet::PingResp),
        "publisher not blocked"
    );
    server
        .wait_metric("throng_messages_received_total", |v| v == 1024.0)
        .await;
    // What went out sits in the kernel's buffers (a few MiB) and the 256 KiB
    // high-water mark; the rest must be dropped and counted, not buffered.
    let sent = server.metric("throng_messages_sent_total").await;
    let dropped = server
        .metric("throng_messages_dropped_total{reason=\"queue_full\"}")
        .await;
    assert!(
        sent < 200.0,
        "{sent} x 64 KiB buffered for a client that reads nothing"
    );
    assert!(dropped > 0.0);
    queued(&server).await;

    let mut other = Mqtt3::connect(server.mqtt, "calm-pub").await;
    other
        .publish("calm/t", QoS::AtLeastOnce, false, b"fine")
        .await;
    assert_eq!(&healthy.recv().await.payload[..], b"fine");
    drop(stalled);
}
