//! Routing of device forwards through the hub: to the other matching handlers
//! only, backpressure on full handler channels, and shared subscriptions.

mod support;

use std::sync::Arc;
use std::time::Duration;

use throng_distributor::{Hub, HubConfig};
use throng_proto::v1::{Forward, Message};
use tokio::task::JoinHandle;
use tokio::time::timeout;

use support::{Fake, WAIT, as_delivery, forward_now, hub, hub_with, message, topic_of};

#[tokio::test]
async fn forwards_go_to_the_other_matching_handlers_only() {
    let hub = hub();
    let (mut a, _) = Fake::attach_expect_interest(&hub, "a");
    let (mut b, _) = Fake::attach_expect_interest(&hub, "b");
    let (mut c, _) = Fake::attach_expect_interest(&hub, "c");
    let (mut d, _) = Fake::attach_expect_interest(&hub, "d");
    a.add("a/+");
    b.add("a/+");
    c.add("a/#");
    d.add("other");
    for fake in [&mut a, &mut b, &mut c, &mut d] {
        fake.drain();
    }

    let sent = Message {
        user_properties: vec![throng_proto::v1::UserProperty {
            key: "k".into(),
            value: "v".into(),
        }],
        content_type: Some("text/plain".into()),
        ..message("a/x", "hello")
    };
    a.forward(sent.clone());
    for fake in [&mut b, &mut c] {
        let got = fake.delivery_now();
        assert_eq!(got.delivery_id, 0, "device traffic wants no ack");
        assert_eq!(topic_of(&got), "a/x");
        assert_eq!(got.message.as_ref(), Some(&sent));
        assert!(got.share_groups.is_empty());
        assert!(!got.shared_only && !got.retained_sync);
    }
    a.assert_nothing();
    d.assert_nothing();

    // A handler holding the filter itself still gets the others' publishes.
    b.forward(message("a/y", "from b"));
    for fake in [&mut a, &mut c] {
        assert_eq!(topic_of(&fake.delivery_now()), "a/y");
    }
    b.assert_nothing();
    d.assert_nothing();

    // No match: nobody.
    a.forward(message("b/x", "nobody"));
    for fake in [&mut a, &mut b, &mut c, &mut d] {
        fake.assert_nothing();
    }
    // A forward without a message is ignored.
    forward_now(&a.attachment, None, false);
    for fake in [&mut a, &mut b, &mut c, &mut d] {
        fake.assert_nothing();
    }
}

/// A hub whose handler channels hold `capacity` messages, with handlers "a"
/// (the publisher) and "b" (subscribed to `t`), their first messages drained.
fn full_channel_setup(capacity: usize) -> (Arc<Hub>, Fake, Fake) {
    let config = HubConfig {
        handler_channel: capacity,
        ..HubConfig::default()
    };
    let (hub, _ring) = hub_with(config, &[]);
    let (mut a, _) = Fake::attach_expect_interest(&hub, "a");
    let (mut b, _) = Fake::attach_expect_interest(&hub, "b");
    b.add("t");
    a.drain();
    b.drain();
    (hub, a, b)
}

/// Forwards `message` from `from` in a task: it may wait for room.
fn spawn_forward(from: &Arc<Fake>, message: Message) -> JoinHandle<()> {
    let from = from.clone();
    tokio::spawn(async move {
        from.attachment
            .forward(Forward {
                message: Some(message),
                retain_copy: false,
            })
            .await;
    })
}

fn qos0(topic: &str, payload: &str) -> Message {
    Message {
        qos: 0,
        ..message(topic, payload)
    }
}

#[tokio::test]
async fn qos1_forwards_wait_for_room_and_qos0_ones_are_dropped() {
    let (hub, a, mut b) = full_channel_setup(2);
    a.forward(message("t", "1"));
    a.forward(message("t", "2"));
    // The channel is full: QoS 0 is dropped at once and counted ...
    a.forward(qos0("t", "dropped"));
    assert_eq!(hub.metrics().forward_dropped.get(), 1);
    // ... QoS 1 waits for room instead of being dropped.
    let a = Arc::new(a);
    let waiting = spawn_forward(&a, message("t", "3"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "a qos 1 forward must wait for room");
    let mut got = Vec::new();
    for _ in 0..3 {
        let delivery = b.next_delivery().await;
        got.push(String::from_utf8(delivery.message.unwrap().payload.to_vec()).unwrap());
    }
    assert_eq!(got, ["1", "2", "3"]);
    timeout(WAIT, waiting)
        .await
        .expect("sent once there was room")
        .unwrap();
    assert_eq!(hub.metrics().forward_dropped.get(), 1);
    b.assert_quiet().await;
}

#[tokio::test]
async fn a_forward_waiting_on_a_handler_that_detaches_gives_up() {
    let (hub, a, b) = full_channel_setup(1);
    a.forward(message("t", "1"));
    let a = Arc::new(a);
    let waiting = spawn_forward(&a, message("t", "2"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiting.is_finished());
    // Only the attachment goes (the stream reader ended); the response stream,
    // with the receiver, is still held by someone.
    let Fake {
        attachment, out, ..
    } = b;
    drop(attachment);
    timeout(WAIT, waiting)
        .await
        .expect("no wait after detach")
        .unwrap();
    assert_eq!(hub.metrics().forward_dropped.get(), 1);
    drop(out);
}

#[tokio::test]
async fn a_forward_waiting_on_a_replaced_stream_gives_up() {
    let (hub, a, b) = full_channel_setup(1);
    a.forward(message("t", "1"));
    let a = Arc::new(a);
    let waiting = spawn_forward(&a, message("t", "2"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiting.is_finished());
    // "b" attaches again before its old stream is noticed gone.
    let (_new_b, _) = Fake::attach_expect_interest(&hub, "b");
    timeout(WAIT, waiting)
        .await
        .expect("no wait after replacement")
        .unwrap();
    drop(b);
}

#[tokio::test]
async fn shared_subscriptions_are_served_by_one_handler_cluster_wide() {
    let hub = hub();
    let (mut a, _) = Fake::attach_expect_interest(&hub, "a");
    let (mut b, _) = Fake::attach_expect_interest(&hub, "b");
    let (mut c, _) = Fake::attach_expect_interest(&hub, "c");
    a.add_shared("g", "jobs/#");
    b.add_shared("g", "jobs/#");
    for fake in [&mut a, &mut b, &mut c] {
        fake.drain();
    }
    let share = vec!["$share/g/jobs/#".to_owned()];

    let (mut to_a, mut to_b) = (0, 0);
    for i in 0..100 {
        c.forward(message(&format!("jobs/{i}"), "job"));
        let got_a = a.drain();
        let got_b = b.drain();
        c.assert_nothing();
        let (got, which) = match (got_a.len(), got_b.len()) {
            (1, 0) => (got_a, &mut to_a),
            (0, 1) => (got_b, &mut to_b),
            _ => panic!("job {i}: expected exactly one of a/b, got a={got_a:?} b={got_b:?}"),
        };
        *which += 1;
        let got = as_delivery("a|b", got.into_iter().next().unwrap());
        assert_eq!(topic_of(&got), format!("jobs/{i}"));
        assert_eq!(got.share_groups, share);
        assert!(!got.shared_only);
        assert_eq!(got.delivery_id, 0);
    }
    assert_eq!(to_a + to_b, 100);
    assert!(to_a > 0 && to_b > 0, "a={to_a} b={to_b}");

    // A's own publish: when A is picked it gets the copy back, marked shared_only
    // (it already served its ordinary subscribers); when B is picked B serves it.
    let (mut back_to_a, mut to_b) = (0, 0);
    for i in 0..10 {
        a.forward(message("jobs/own", &i.to_string()));
        let got_a = a.drain();
        let got_b = b.drain();
        c.assert_nothing();
        match (got_a.len(), got_b.len()) {
            (1, 0) => {
                let got = as_delivery("a", got_a.into_iter().next().unwrap());
                assert!(got.shared_only, "{got:?}");
                assert_eq!(got.share_groups, share);
                back_to_a += 1;
            }
            (0, 1) => {
                let got = as_delivery("b", got_b.into_iter().next().unwrap());
                assert!(!got.shared_only, "{got:?}");
                assert_eq!(got.share_groups, share);
                to_b += 1;
            }
            _ => panic!("own publish {i}: a={got_a:?} b={got_b:?}"),
        }
    }
    assert!(back_to_a > 0 && to_b > 0, "a={back_to_a} b={to_b}");

    // An ordinary subscriber and a group on one handler: one copy carrying the pick.
    c.add("jobs/#");
    a.drain();
    b.drain();
    let mut group_served = 0;
    for i in 0..4 {
        a.forward(message("jobs/mixed", &i.to_string()));
        let got = c.delivery_now();
        assert!(!got.shared_only);
        assert!(got.share_groups.is_empty(), "c is not in group g: {got:?}");
        // a or b still serves the group.
        group_served += a.drain().len() + b.drain().len();
    }
    assert_eq!(group_served, 4);
}
