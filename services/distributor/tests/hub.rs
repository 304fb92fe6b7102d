//! The hub driven directly by fake handlers attached in-process: interest sets,
//! routing of device forwards (ordinary, shared, retained), and server-to-device
//! deliveries with their acks and outcomes.
//!
//! Everything the hub does on `apply_delta` / `forward` / detach is queued
//! synchronously, so "nothing arrived" is checked by draining what is ready.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use throng_distributor::hub::{Attachment, Outbound};
use throng_distributor::{DistributorMetrics, Hub, HubConfig, Outcome, Target};
use throng_proto::v1::{
    Ack, AckOutcome, Delivery, DistributorMessage, Forward, InterestUpdate, Message,
    SubscriptionChange, SubscriptionDelta, SubscriptionOp, delivery, distributor_message,
};
use throng_ring::{Member, Ring};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

/// How long a message the test expects may take to arrive (the machine is shared).
const WAIT: Duration = Duration::from_secs(10);

fn hub_with(config: HubConfig, ring: &[&str]) -> (Arc<Hub>, watch::Sender<Arc<Ring>>) {
    let ring = Ring::new(ring.iter().map(|id| Member::new(*id, "")));
    let (tx, rx) = watch::channel(Arc::new(ring));
    (Hub::new(config, DistributorMetrics::default(), rx), tx)
}

fn hub() -> Arc<Hub> {
    hub_with(HubConfig::default(), &[]).0
}

/// A fake handler: its attachment and what the hub sends it.
struct Fake {
    id: &'static str,
    attachment: Attachment,
    out: Outbound,
}

impl Fake {
    fn attach(hub: &Arc<Hub>, id: &'static str) -> Fake {
        let (attachment, out) = hub.attach(id);
        Fake {
            id,
            attachment,
            out,
        }
    }

    /// Attaches and consumes the first message, which must be a replacing
    /// interest update; returns its set.
    fn attach_expect_interest(hub: &Arc<Hub>, id: &'static str) -> (Fake, BTreeSet<String>) {
        let mut fake = Fake::attach(hub, id);
        // Sent before attach returns, ahead of anything else.
        let first = match fake.out.recv().now_or_never() {
            Some(Some(DistributorMessage {
                kind: Some(distributor_message::Kind::InterestUpdate(update)),
            })) => update,
            other => panic!("{id}: expected the interest set first, got {other:?}"),
        };
        assert!(first.replace, "{id}: first interest update must replace");
        assert!(first.removed.is_empty(), "{id}: {first:?}");
        (fake, first.added.into_iter().collect())
    }

    /// Every message already queued towards this handler.
    fn drain(&mut self) -> Vec<DistributorMessage> {
        let mut out = Vec::new();
        while let Some(Some(message)) = self.out.recv().now_or_never() {
            out.push(message);
        }
        out
    }

    fn assert_nothing(&mut self) {
        let got = self.drain();
        assert!(got.is_empty(), "{}: expected nothing, got {got:?}", self.id);
    }

    /// The one interest update queued now (and nothing else).
    fn interest(&mut self) -> InterestUpdate {
        let mut got = self.drain();
        assert_eq!(
            got.len(),
            1,
            "{}: expected one interest update, got {got:?}",
            self.id
        );
        match got.pop().unwrap().kind {
            Some(distributor_message::Kind::InterestUpdate(update)) => update,
            other => panic!("{}: expected an interest update, got {other:?}", self.id),
        }
    }

    /// Asserts the queued messages are exactly one incremental update with these changes.
    fn expect_update(&mut self, added: &[&str], removed: &[&str]) {
        let update = self.interest();
        assert!(!update.replace, "{}: {update:?}", self.id);
        assert_eq!(
            sorted(&update.added),
            sorted_strs(added),
            "{}: added",
            self.id
        );
        assert_eq!(
            sorted(&update.removed),
            sorted_strs(removed),
            "{}: removed",
            self.id
        );
    }

    /// The one delivery queued now (and nothing else).
    fn delivery_now(&mut self) -> Delivery {
        let mut got = self.drain();
        assert_eq!(
            got.len(),
            1,
            "{}: expected one delivery, got {got:?}",
            self.id
        );
        as_delivery(self.id, got.pop().unwrap())
    }

    /// The next message, which must be a delivery (waits up to `WAIT`).
    async fn next_delivery(&mut self) -> Delivery {
        let message = timeout(WAIT, self.out.recv())
            .await
            .unwrap_or_else(|_| panic!("{}: no delivery within {WAIT:?}", self.id))
            .expect("outbound open while attached");
        as_delivery(self.id, message)
    }

    /// Nothing arrives within a short window (for work the hub does in a task).
    async fn assert_quiet(&mut self) {
        if let Ok(message) = timeout(Duration::from_millis(200), self.out.recv()).await {
            panic!("{}: expected silence, got {message:?}", self.id);
        }
    }

    fn delta(&self, changes: Vec<SubscriptionChange>, full_snapshot: bool) {
        self.attachment.apply_delta(SubscriptionDelta {
            changes,
            full_snapshot,
        });
    }

    fn add(&self, filter: &str) {
        self.delta(vec![change(filter, None, SubscriptionOp::Add)], false);
    }

    fn remove(&self, filter: &str) {
        self.delta(vec![change(filter, None, SubscriptionOp::Remove)], false);
    }

    fn add_shared(&self, group: &str, filter: &str) {
        self.delta(
            vec![change(filter, Some(group), SubscriptionOp::Add)],
            false,
        );
    }

    /// Forwards a device publish; it must not have to wait (room everywhere).
    fn forward(&self, message: Message) {
        forward_now(&self.attachment, Some(message), false);
    }

    fn retain_copy(&self, message: Message) {
        forward_now(&self.attachment, Some(message), true);
    }

    fn ack(&self, delivery_id: u64, outcome: AckOutcome, reason: &str) {
        self.attachment.ack(Ack {
            delivery_id,
            outcome: outcome.into(),
            reason: reason.to_owned(),
        });
    }
}

/// Runs a forward that must not wait (outside tokio's cooperative budget,
/// which would make a ready channel look full after many operations).
fn forward_now(attachment: &Attachment, message: Option<Message>, retain_copy: bool) {
    let forward = attachment.forward(Forward {
        message,
        retain_copy,
    });
    tokio::task::unconstrained(forward)
        .now_or_never()
        .expect("forward done without waiting");
}

fn as_delivery(id: &str, message: DistributorMessage) -> Delivery {
    match message.kind {
        Some(distributor_message::Kind::Delivery(delivery)) => delivery,
        other => panic!("{id}: expected a delivery, got {other:?}"),
    }
}

fn sorted(items: &[String]) -> Vec<String> {
    let mut items = items.to_vec();
    items.sort();
    items
}

fn sorted_strs(items: &[&str]) -> Vec<String> {
    sorted(&items.iter().map(|s| s.to_string()).collect::<Vec<_>>())
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn change(filter: &str, group: Option<&str>, op: SubscriptionOp) -> SubscriptionChange {
    SubscriptionChange {
        filter: filter.to_owned(),
        share_group: group.map(str::to_owned),
        qos: 1,
        op: op.into(),
        ..SubscriptionChange::default()
    }
}

fn message(topic: &str, payload: &str) -> Message {
    Message {
        topic: topic.to_owned(),
        payload: payload.as_bytes().to_vec().into(),
        qos: 1,
        message_id: format!("m-{topic}-{payload}"),
        origin_client_id: "device".to_owned(),
        published_at_unix_ms: 1_000_000,
        ..Message::default()
    }
}

fn retained(topic: &str, payload: &str, published_at_unix_ms: i64) -> Message {
    Message {
        retain: true,
        published_at_unix_ms,
        ..message(topic, payload)
    }
}

fn topic_of(delivery: &Delivery) -> &str {
    match &delivery.target {
        Some(delivery::Target::Topic(topic)) => topic,
        other => panic!("expected a topic target, got {other:?}"),
    }
}

fn client_of(delivery: &Delivery) -> &str {
    match &delivery.target {
        Some(delivery::Target::ClientId(client)) => client,
        other => panic!("expected a client target, got {other:?}"),
    }
}

fn spawn_deliver(hub: &Arc<Hub>, target: Target, message: Message) -> JoinHandle<Outcome> {
    let hub = hub.clone();
    tokio::spawn(async move { hub.deliver(target, message).await })
}

async fn outcome(task: JoinHandle<Outcome>) -> Outcome {
    timeout(WAIT * 3, task)
        .await
        .expect("deliver finishes")
        .expect("deliver task")
}

#[tokio::test]
async fn interest_sets_follow_the_other_handlers_subscriptions() {
    let hub = hub();
    let (mut a, interest) = Fake::attach_expect_interest(&hub, "a");
    assert!(interest.is_empty(), "{interest:?}");
    let (mut b, interest) = Fake::attach_expect_interest(&hub, "b");
    assert!(interest.is_empty());
    let (mut c, interest) = Fake::attach_expect_interest(&hub, "c");
    assert!(interest.is_empty());
    assert_eq!(
        hub.attached(),
        vec![Arc::from("a"), Arc::from("b"), Arc::from("c")]
    );

    // B subscribes: everyone else becomes interested; B is not told about itself.
    b.add("a/+");
    a.expect_update(&["a/+"], &[]);
    c.expect_update(&["a/+"], &[]);
    b.assert_nothing();

    // C holds it too: now B has someone else to forward to; A and C already knew.
    c.add("a/+");
    b.expect_update(&["a/+"], &[]);
    a.assert_nothing();
    c.assert_nothing();

    // A second subscription on the same handler changes nothing anywhere.
    c.add("a/+");
    for fake in [&mut a, &mut b, &mut c] {
        fake.assert_nothing();
    }

    // B leaves: only C loses interest (nobody but C holds it); A still has C.
    b.remove("a/+");
    c.expect_update(&[], &["a/+"]);
    a.assert_nothing();
    b.assert_nothing();

    // Removing what is not held is a no-op.
    b.remove("a/+");
    for fake in [&mut a, &mut b, &mut c] {
        fake.assert_nothing();
    }

    // A handler attaching now is told the whole set at once.
    let (mut d, interest) = Fake::attach_expect_interest(&hub, "d");
    assert_eq!(interest, set(&["a/+"]));

    // C detaches (its two subscriptions go with it): nobody holds a/+ any more.
    drop(c);
    a.expect_update(&[], &["a/+"]);
    b.expect_update(&[], &["a/+"]);
    d.expect_update(&[], &["a/+"]);
    assert_eq!(
        hub.attached(),
        vec![Arc::from("a"), Arc::from("b"), Arc::from("d")]
    );

    // A shared subscription counts under its bare filter.
    d.add_shared("g", "jobs/#");
    a.expect_update(&["jobs/#"], &[]);
    b.expect_update(&["jobs/#"], &[]);
    d.assert_nothing();
}

#[tokio::test]
async fn a_snapshot_replaces_what_the_handler_had() {
    let hub = hub();
    let (mut a, _) = Fake::attach_expect_interest(&hub, "a");
    let (b_old, _) = Fake::attach_expect_interest(&hub, "b");
    b_old.delta(
        vec![
            change("x/1", None, SubscriptionOp::Add),
            change("x/2", None, SubscriptionOp::Add),
        ],
        true,
    );
    a.expect_update(&["x/1", "x/2"], &[]);
    a.add("mine");

    // B re-attaches (its old stream is stale): its new stream starts with the
    // full interest set; its index entries stay until its snapshot arrives.
    let (mut b, interest) = Fake::attach_expect_interest(&hub, "b");
    assert_eq!(interest, set(&["mine"]));
    a.assert_nothing();
    b.delta(
        vec![
            change("x/2", None, SubscriptionOp::Add),
            change("x/3", Some("g"), SubscriptionOp::Add),
        ],
        true,
    );
    a.expect_update(&["x/3"], &["x/1"]);
    b.assert_nothing();

    // The stale stream closing afterwards does not detach the new one.
    drop(b_old);
    a.assert_nothing();
    assert_eq!(hub.attached(), vec![Arc::from("a"), Arc::from("b")]);
    b.forward(message("mine", "p"));
    assert_eq!(topic_of(&a.delivery_now()), "mine");

    // An empty snapshot clears everything the handler had.
    b.delta(Vec::new(), true);
    a.expect_update(&[], &["x/2", "x/3"]);

    // An invalid entry refuses the whole snapshot (what was held stays).
    b.delta(vec![change("ok", None, SubscriptionOp::Add)], true);
    a.expect_update(&["ok"], &[]);
    b.delta(
        vec![
            change("other", None, SubscriptionOp::Add),
            change("bad/#/x", None, SubscriptionOp::Add),
        ],
        true,
    );
    a.assert_nothing();
    b.forward(message("x", "p"));
    a.assert_nothing();
    a.forward(message("ok", "p"));
    assert_eq!(topic_of(&b.delivery_now()), "ok");
}

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

#[tokio::test]
async fn retained_messages_are_stored_and_replayed_on_attach() {
    let hub = hub();
    let (mut a, _) = Fake::attach_expect_interest(&hub, "a");
    let (mut b, _) = Fake::attach_expect_interest(&hub, "b");
    let (mut c, _) = Fake::attach_expect_interest(&hub, "c");
    c.add("r/#");
    a.drain();
    b.drain();

    // Delivered to every other handler (B has no subscription but stores it).
    let first = retained("r/1", "v1", 2_000);
    a.forward(first.clone());
    for fake in [&mut b, &mut c] {
        let got = fake.delivery_now();
        assert_eq!(topic_of(&got), "r/1");
        assert_eq!(got.message.as_ref(), Some(&first));
        assert!(!got.retained_sync && !got.shared_only);
        assert_eq!(got.delivery_id, 0);
    }
    a.assert_nothing();
    a.forward(retained("r/keep", "k", 2_000));
    b.drain();
    c.drain();

    // A handler attaching later gets both, as retained_sync.
    let (mut d, _) = Fake::attach_expect_interest(&hub, "d");
    assert_eq!(
        sync_set(&mut d, 2).await,
        set(&["r/1=v1", "r/keep=k"]),
        "d replays"
    );
    d.assert_quiet().await;

    // An older copy (a handler replaying what it held) does not overwrite it, and
    // a retain_copy is stored only, never routed.
    b.retain_copy(retained("r/1", "stale", 1_000));
    for fake in [&mut a, &mut b, &mut c, &mut d] {
        fake.assert_nothing();
    }
    let (mut e, _) = Fake::attach_expect_interest(&hub, "e");
    assert_eq!(sync_set(&mut e, 2).await, set(&["r/1=v1", "r/keep=k"]));
    e.assert_quiet().await;

    // A newer copy replaces it.
    b.retain_copy(retained("r/1", "v2", 3_000));
    a.assert_nothing();
    let (mut f, _) = Fake::attach_expect_interest(&hub, "f");
    assert_eq!(sync_set(&mut f, 2).await, set(&["r/1=v2", "r/keep=k"]));

    // An empty payload clears it, and is itself delivered to everyone else.
    a.forward(retained("r/1", "", 4_000));
    for fake in [&mut b, &mut c, &mut d, &mut e, &mut f] {
        let got = fake.delivery_now();
        assert_eq!(topic_of(&got), "r/1");
        assert!(got.message.unwrap().payload.is_empty());
    }
    let (mut g, _) = Fake::attach_expect_interest(&hub, "g");
    assert_eq!(sync_set(&mut g, 1).await, set(&["r/keep=k"]));
    g.assert_quiet().await;

    // An older clear does not remove a newer message either.
    a.forward(retained("r/2", "new", 6_000));
    a.retain_copy(retained("r/2", "", 5_000));
    let (mut h, _) = Fake::attach_expect_interest(&hub, "h");
    assert_eq!(sync_set(&mut h, 2).await, set(&["r/2=new", "r/keep=k"]));
}

/// A recent clear is remembered as a tombstone: a handler attaching later is told
/// to drop its copy, and a stale copy it replays does not bring the message back.
#[tokio::test]
async fn a_recent_clear_is_a_tombstone() {
    let hub = hub();
    let now = throng_distributor::hub::unix_ms();
    let (a, _) = Fake::attach_expect_interest(&hub, "a");
    a.forward(retained("t/1", "old", now - 2_000));
    a.forward(retained("t/1", "", now - 1_000));

    let (mut b, _) = Fake::attach_expect_interest(&hub, "b");
    assert_eq!(
        sync_set(&mut b, 1).await,
        set(&["t/1="]),
        "b is told it is cleared"
    );
    b.assert_quiet().await;

    // b held the old copy while cut off and replays it: older than the clear.
    b.retain_copy(retained("t/1", "old", now - 2_000));
    let (mut c, _) = Fake::attach_expect_interest(&hub, "c");
    assert_eq!(sync_set(&mut c, 1).await, set(&["t/1="]));
    c.assert_quiet().await;
}

/// Receives `n` retained_sync deliveries; returns them as "topic=payload".
async fn sync_set(fake: &mut Fake, n: usize) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for _ in 0..n {
        let got = fake.next_delivery().await;
        assert!(got.retained_sync, "{}: {got:?}", fake.id);
        assert_eq!(got.delivery_id, 0, "a sync needs no ack");
        let target = topic_of(&got).to_owned();
        let message = got.message.expect("message");
        assert_eq!(target, message.topic);
        assert!(message.retain);
        out.insert(format!(
            "{}={}",
            message.topic,
            String::from_utf8_lossy(&message.payload)
        ));
    }
    out
}

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
