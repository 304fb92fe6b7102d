//! Server-to-device deliveries through the hub: client targets tried in ring
//! order, topic targets waiting for every matching handler, and their outcomes.

mod support;

use std::sync::Arc;
use std::time::Duration;

use throng_distributor::{Hub, HubConfig, Outcome, Target};
use throng_proto::v1::{AckOutcome, Message};
use throng_ring::{Member, Ring};
use tokio::time::Instant;

use support::{
    Fake, client_of, hub_with, message, outcome, set, spawn_deliver, sync_set, topic_of,
};

/// A client id and the handlers of `ring` in the order it tries them: the
/// owner first.
fn client_and_candidates(ring: &[&str]) -> (String, Vec<String>) {
    let ring = Ring::new(ring.iter().map(|id| Member::new(*id, "")));
    let client = "device-42".to_owned();
    let order: Vec<String> = ring
        .candidates(&client)
        .into_iter()
        .map(|m| m.id.to_string())
        .collect();
    assert_eq!(*ring.owner(&client).unwrap().id, order[0]);
    (client, order)
}

const RING: [&str; 3] = ["h0", "h1", "h2"];

/// Attaches h0..h2; returns them in the client's candidate order.
fn ring_fakes(hub: &Arc<Hub>, order: &[String]) -> Vec<Fake> {
    order
        .iter()
        .map(|id| {
            let id: &'static str = RING.iter().find(|r| **r == id).unwrap();
            Fake::attach_expect_interest(hub, id).0
        })
        .collect()
}

/// A server-to-device message (the same every time, so copies compare equal).
fn client_message() -> Message {
    Message {
        message_id: "ingest-1".into(),
        origin_client_id: String::new(),
        ..message("down/cmd", "do it")
    }
}

#[tokio::test]
async fn client_deliveries_go_to_the_ring_owner_first() {
    let (hub, _ring) = hub_with(HubConfig::default(), &RING);
    let (client, order) = client_and_candidates(&RING);
    let mut fakes = ring_fakes(&hub, &order);

    // The owner accepts.
    let task = spawn_deliver(&hub, Target::Client(client.clone()), client_message());
    let got = fakes[0].next_delivery().await;
    assert_eq!(client_of(&got), client);
    assert_ne!(got.delivery_id, 0);
    assert_eq!(got.message.as_ref(), Some(&client_message()));
    fakes[0].ack(got.delivery_id, AckOutcome::Accepted, "");
    assert_eq!(outcome(task).await, Outcome::Accepted);
    fakes[1].assert_nothing();
    fakes[2].assert_nothing();

    // The owner has it queued for an offline session.
    let task = spawn_deliver(&hub, Target::Client(client.clone()), client_message());
    let got = fakes[0].next_delivery().await;
    fakes[0].ack(got.delivery_id, AckOutcome::Queued, "");
    assert_eq!(outcome(task).await, Outcome::Queued);

    // The owner does not know it: the next candidate is asked, and has it.
    let task = spawn_deliver(&hub, Target::Client(client.clone()), client_message());
    let got = fakes[0].next_delivery().await;
    fakes[0].ack(got.delivery_id, AckOutcome::UnknownClient, "no session");
    fakes[2].assert_nothing();
    let second = fakes[1].next_delivery().await;
    assert_eq!(client_of(&second), client);
    assert_ne!(second.delivery_id, got.delivery_id, "a new delivery id");
    fakes[1].ack(second.delivery_id, AckOutcome::Accepted, "");
    assert_eq!(outcome(task).await, Outcome::Accepted);
    fakes[2].assert_nothing();

    // Nobody knows it: undeliverable, after asking each in ring order.
    let task = spawn_deliver(&hub, Target::Client(client.clone()), client_message());
    for fake in &mut fakes {
        let got = fake.next_delivery().await;
        assert_eq!(client_of(&got), client);
        fake.ack(got.delivery_id, AckOutcome::UnknownClient, "no session");
    }
    assert!(matches!(outcome(task).await, Outcome::Undeliverable(_)));

    // A rejection is final: the others are not asked.
    let task = spawn_deliver(&hub, Target::Client(client.clone()), client_message());
    let got = fakes[0].next_delivery().await;
    fakes[0].ack(got.delivery_id, AckOutcome::Rejected, "session full");
    assert_eq!(
        outcome(task).await,
        Outcome::Rejected("session full".into())
    );
    fakes[1].assert_nothing();
    fakes[2].assert_nothing();

    // An ack for an unknown id (late, or made up) is ignored.
    fakes[0].ack(999_999, AckOutcome::Accepted, "");
}

#[tokio::test]
async fn client_delivery_to_a_missing_owner_is_retried() {
    let (hub, _ring) = hub_with(HubConfig::default(), &RING);
    let (client, order) = client_and_candidates(&RING);
    let mut fakes = ring_fakes(&hub, &order);
    // The owner is not attached.
    let owner = fakes.remove(0);
    drop(owner);

    // The others do not have the session: not final, the owner may have it.
    let task = spawn_deliver(&hub, Target::Client(client.clone()), client_message());
    for fake in &mut fakes {
        let got = fake.next_delivery().await;
        fake.ack(got.delivery_id, AckOutcome::UnknownClient, "no session");
    }
    match outcome(task).await {
        Outcome::Retry(reason) => assert!(reason.contains(&order[0]), "{reason}"),
        other => panic!("expected Retry, got {other:?}"),
    }

    // The next candidate has it (the agent moved the device there): accepted.
    let task = spawn_deliver(&hub, Target::Client(client.clone()), client_message());
    let got = fakes[0].next_delivery().await;
    fakes[0].ack(got.delivery_id, AckOutcome::Accepted, "");
    assert_eq!(outcome(task).await, Outcome::Accepted);

    // Nobody attached at all.
    drop(fakes);
    let task = spawn_deliver(&hub, Target::Client(client), client_message());
    assert!(matches!(outcome(task).await, Outcome::Retry(_)));
}

#[tokio::test]
async fn client_delivery_without_an_ack_in_time_is_retried() {
    let ack_timeout = Duration::from_millis(300);
    let config = HubConfig {
        ack_timeout,
        ..HubConfig::default()
    };
    let (hub, _ring) = hub_with(config, &RING);
    let (client, order) = client_and_candidates(&RING);
    let mut fakes = ring_fakes(&hub, &order);

    let started = Instant::now();
    let task = spawn_deliver(&hub, Target::Client(client.clone()), client_message());
    let silent = fakes[0].next_delivery().await;
    for fake in &mut fakes[1..] {
        let got = fake.next_delivery().await;
        fake.ack(got.delivery_id, AckOutcome::UnknownClient, "no session");
    }
    match outcome(task).await {
        Outcome::Retry(reason) => assert!(reason.contains(&order[0]), "{reason}"),
        other => panic!("expected Retry, got {other:?}"),
    }
    assert!(started.elapsed() >= ack_timeout);
    // The late ack changes nothing (and does not panic).
    fakes[0].ack(silent.delivery_id, AckOutcome::Accepted, "");
}

#[tokio::test]
async fn a_handler_detaching_fails_its_waiting_deliveries_promptly() {
    // A long ack timeout: the outcome must come from the detach, not the timer.
    let config = HubConfig {
        ack_timeout: Duration::from_secs(60),
        ..HubConfig::default()
    };
    let (hub, _ring) = hub_with(config, &RING);
    let (client, order) = client_and_candidates(&RING);
    let mut fakes = ring_fakes(&hub, &order);

    let started = Instant::now();
    let task = spawn_deliver(&hub, Target::Client(client.clone()), client_message());
    fakes[0].next_delivery().await;
    let owner = fakes.remove(0);
    drop(owner);
    for fake in &mut fakes {
        let got = fake.next_delivery().await;
        fake.ack(got.delivery_id, AckOutcome::UnknownClient, "no session");
    }
    assert!(matches!(outcome(task).await, Outcome::Retry(_)));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_handler_reattaching_fails_the_deliveries_of_its_old_stream_promptly() {
    let config = HubConfig {
        ack_timeout: Duration::from_secs(60),
        ..HubConfig::default()
    };
    let (hub, _ring) = hub_with(config, &RING);
    let (client, order) = client_and_candidates(&RING);
    let mut fakes = ring_fakes(&hub, &order);

    let started = Instant::now();
    let task = spawn_deliver(&hub, Target::Client(client.clone()), client_message());
    fakes[0].next_delivery().await;
    // The owner's stream is replaced by a new one (the handler re-attached
    // before the distributor noticed the old stream was gone); the old one
    // then closes without acking.
    let old = fakes.remove(0);
    let (mut new_owner, _) = Fake::attach_expect_interest(&hub, old.id);
    drop(old);
    for fake in &mut fakes {
        let got = fake.next_delivery().await;
        fake.ack(got.delivery_id, AckOutcome::UnknownClient, "no session");
    }
    assert!(matches!(outcome(task).await, Outcome::Retry(_)));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );

    // The new stream serves the next one.
    let task = spawn_deliver(&hub, Target::Client(client), client_message());
    let got = new_owner.next_delivery().await;
    new_owner.ack(got.delivery_id, AckOutcome::Accepted, "");
    assert_eq!(outcome(task).await, Outcome::Accepted);
}

#[tokio::test]
async fn topic_deliveries_wait_for_every_matching_handler() {
    let config = HubConfig {
        ack_timeout: Duration::from_millis(500),
        ..HubConfig::default()
    };
    let (hub, _ring) = hub_with(config, &[]);
    let (mut a, _) = Fake::attach_expect_interest(&hub, "a");
    let (mut b, _) = Fake::attach_expect_interest(&hub, "b");
    let (mut c, _) = Fake::attach_expect_interest(&hub, "c");
    a.add("t/#");
    b.add("t/+");
    c.add("other");
    for fake in [&mut a, &mut b, &mut c] {
        fake.drain();
    }
    let topic_message = || Message {
        origin_client_id: String::new(),
        ..message("t/1", "broadcast")
    };

    // Both matching handlers accept: accepted, only once both acked.
    let task = spawn_deliver(&hub, Target::Topic, topic_message());
    let got_a = a.next_delivery().await;
    let got_b = b.next_delivery().await;
    for got in [&got_a, &got_b] {
        assert_eq!(topic_of(got), "t/1");
        assert_ne!(got.delivery_id, 0);
        assert_eq!(got.message.as_ref(), Some(&topic_message()));
    }
    assert_ne!(got_a.delivery_id, got_b.delivery_id);
    a.ack(got_a.delivery_id, AckOutcome::Accepted, "");
    tokio::task::yield_now().await;
    assert!(!task.is_finished(), "finished before b acked");
    b.ack(got_b.delivery_id, AckOutcome::Queued, "");
    assert_eq!(outcome(task).await, Outcome::Accepted);
    c.assert_nothing();

    // One rejecting: rejected, naming it.
    let task = spawn_deliver(&hub, Target::Topic, topic_message());
    let got_a = a.next_delivery().await;
    let got_b = b.next_delivery().await;
    a.ack(got_a.delivery_id, AckOutcome::Accepted, "");
    b.ack(got_b.delivery_id, AckOutcome::Rejected, "quota");
    match outcome(task).await {
        Outcome::Rejected(reason) => assert!(reason.contains('b') && reason.contains("quota")),
        other => panic!("expected Rejected, got {other:?}"),
    }

    // One silent: retried after the ack timeout.
    let task = spawn_deliver(&hub, Target::Topic, topic_message());
    let got_a = a.next_delivery().await;
    let _silent = b.next_delivery().await;
    a.ack(got_a.delivery_id, AckOutcome::Accepted, "");
    assert!(matches!(outcome(task).await, Outcome::Retry(_)));

    // No subscriber: accepted at once.
    let task = spawn_deliver(&hub, Target::Topic, message("nobody/here", "x"));
    assert_eq!(outcome(task).await, Outcome::Accepted);
    for fake in [&mut a, &mut b, &mut c] {
        fake.assert_nothing();
    }

    // A shared group is served by one member; a retained topic message goes to
    // every handler (each stores it) and is replayed to later ones.
    a.add_shared("g", "s/#");
    b.add_shared("g", "s/#");
    for fake in [&mut a, &mut b, &mut c] {
        fake.drain();
    }
    let task = spawn_deliver(
        &hub,
        Target::Topic,
        Message {
            retain: true,
            ..message("s/1", "kept")
        },
    );
    let mut groups = Vec::new();
    for fake in [&mut a, &mut b, &mut c] {
        let got = fake.next_delivery().await;
        assert_ne!(got.delivery_id, 0);
        groups.extend(got.share_groups.clone());
        fake.ack(got.delivery_id, AckOutcome::Accepted, "");
    }
    assert_eq!(groups, vec!["$share/g/s/#".to_owned()]);
    assert_eq!(outcome(task).await, Outcome::Accepted);
    let (mut d, _) = Fake::attach_expect_interest(&hub, "d");
    assert_eq!(sync_set(&mut d, 1).await, set(&["s/1=kept"]));
}
