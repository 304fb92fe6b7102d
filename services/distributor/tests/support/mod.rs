//! Shared fixtures for the hub tests: a hub with a given ring and config, and
//! `Fake` handlers attached in-process that drain and check what the hub sends.
//!
//! Everything the hub does on `apply_delta` / `forward` / detach is queued
//! synchronously, so "nothing arrived" is checked by draining what is ready.
#![allow(dead_code)]

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
use tokio::time::timeout;

/// How long a message the test expects may take to arrive (the machine is shared).
pub const WAIT: Duration = Duration::from_secs(10);

pub fn hub_with(config: HubConfig, ring: &[&str]) -> (Arc<Hub>, watch::Sender<Arc<Ring>>) {
    let ring = Ring::new(ring.iter().map(|id| Member::new(*id, "")));
    let (tx, rx) = watch::channel(Arc::new(ring));
    (Hub::new(config, DistributorMetrics::default(), rx), tx)
}

pub fn hub() -> Arc<Hub> {
    hub_with(HubConfig::default(), &[]).0
}

/// A fake handler: its attachment and what the hub sends it.
pub struct Fake {
    pub id: &'static str,
    pub attachment: Attachment,
    pub out: Outbound,
}

impl Fake {
    pub fn attach(hub: &Arc<Hub>, id: &'static str) -> Fake {
        let (attachment, out) = hub.attach(id);
        Fake {
            id,
            attachment,
            out,
        }
    }

    /// Attaches and consumes the first message, which must be a replacing
    /// interest update; returns its set.
    pub fn attach_expect_interest(hub: &Arc<Hub>, id: &'static str) -> (Fake, BTreeSet<String>) {
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
    pub fn drain(&mut self) -> Vec<DistributorMessage> {
        let mut out = Vec::new();
        while let Some(Some(message)) = self.out.recv().now_or_never() {
            out.push(message);
        }
        out
    }

    pub fn assert_nothing(&mut self) {
        let got = self.drain();
        assert!(got.is_empty(), "{}: expected nothing, got {got:?}", self.id);
    }

    /// The one interest update queued now (and nothing else).
    pub fn interest(&mut self) -> InterestUpdate {
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
    pub fn expect_update(&mut self, added: &[&str], removed: &[&str]) {
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
    pub fn delivery_now(&mut self) -> Delivery {
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
    pub async fn next_delivery(&mut self) -> Delivery {
        let message = timeout(WAIT, self.out.recv())
            .await
            .unwrap_or_else(|_| panic!("{}: no delivery within {WAIT:?}", self.id))
            .expect("outbound open while attached");
        as_delivery(self.id, message)
    }

    /// Nothing arrives within a short window (for work the hub does in a task).
    pub async fn assert_quiet(&mut self) {
        if let Ok(message) = timeout(Duration::from_millis(200), self.out.recv()).await {
            panic!("{}: expected silence, got {message:?}", self.id);
        }
    }

    pub fn delta(&self, changes: Vec<SubscriptionChange>, full_snapshot: bool) {
        self.attachment.apply_delta(SubscriptionDelta {
            changes,
            full_snapshot,
        });
    }

    pub fn add(&self, filter: &str) {
        self.delta(vec![change(filter, None, SubscriptionOp::Add)], false);
    }

    pub fn remove(&self, filter: &str) {
        self.delta(vec![change(filter, None, SubscriptionOp::Remove)], false);
    }

    pub fn add_shared(&self, group: &str, filter: &str) {
        self.delta(
            vec![change(filter, Some(group), SubscriptionOp::Add)],
            false,
        );
    }

    /// Forwards a device publish; it must not have to wait (room everywhere).
    pub fn forward(&self, message: Message) {
        forward_now(&self.attachment, Some(message), false);
    }

    pub fn retain_copy(&self, message: Message) {
        forward_now(&self.attachment, Some(message), true);
    }

    pub fn ack(&self, delivery_id: u64, outcome: AckOutcome, reason: &str) {
        self.attachment.ack(Ack {
            delivery_id,
            outcome: outcome.into(),
            reason: reason.to_owned(),
        });
    }
}

/// Runs a forward that must not wait (outside tokio's cooperative budget,
/// which would make a ready channel look full after many operations).
pub fn forward_now(attachment: &Attachment, message: Option<Message>, retain_copy: bool) {
    let forward = attachment.forward(Forward {
        message,
        retain_copy,
    });
    tokio::task::unconstrained(forward)
        .now_or_never()
        .expect("forward done without waiting");
}

pub fn as_delivery(id: &str, message: DistributorMessage) -> Delivery {
    match message.kind {
        Some(distributor_message::Kind::Delivery(delivery)) => delivery,
        other => panic!("{id}: expected a delivery, got {other:?}"),
    }
}

pub fn sorted(items: &[String]) -> Vec<String> {
    let mut items = items.to_vec();
    items.sort();
    items
}

pub fn sorted_strs(items: &[&str]) -> Vec<String> {
    sorted(&items.iter().map(|s| s.to_string()).collect::<Vec<_>>())
}

pub fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

pub fn change(filter: &str, group: Option<&str>, op: SubscriptionOp) -> SubscriptionChange {
    SubscriptionChange {
        filter: filter.to_owned(),
        share_group: group.map(str::to_owned),
        qos: 1,
        op: op.into(),
        ..SubscriptionChange::default()
    }
}

pub fn message(topic: &str, payload: &str) -> Message {
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

pub fn retained(topic: &str, payload: &str, published_at_unix_ms: i64) -> Message {
    Message {
        retain: true,
        published_at_unix_ms,
        ..message(topic, payload)
    }
}

pub fn topic_of(delivery: &Delivery) -> &str {
    match &delivery.target {
        Some(delivery::Target::Topic(topic)) => topic,
        other => panic!("expected a topic target, got {other:?}"),
    }
}

pub fn client_of(delivery: &Delivery) -> &str {
    match &delivery.target {
        Some(delivery::Target::ClientId(client)) => client,
        other => panic!("expected a client target, got {other:?}"),
    }
}

pub fn spawn_deliver(hub: &Arc<Hub>, target: Target, message: Message) -> JoinHandle<Outcome> {
    let hub = hub.clone();
    tokio::spawn(async move { hub.deliver(target, message).await })
}

pub async fn outcome(task: JoinHandle<Outcome>) -> Outcome {
    timeout(WAIT * 3, task)
        .await
        .expect("deliver finishes")
        .expect("deliver task")
}

/// Receives `n` retained_sync deliveries; returns them as "topic=payload".
pub async fn sync_set(fake: &mut Fake, n: usize) -> BTreeSet<String> {
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
