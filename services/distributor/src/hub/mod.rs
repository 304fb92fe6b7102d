//! The hub: the handlers attached to this distributor, the cluster subscription
//! index their deltas build (interest updates from it: `interest`), the
//! cluster's retained messages (`retained`), and the routing of every message to
//! the handlers that need it.
//!
//! Two kinds of traffic go through it:
//! - device publishes a handler forwards (`route_forward`): sent to the other
//!   handlers with a match without waiting for acks. QoS 1/2 waits for room in a
//!   full handler channel (backpressure reaches the publishing handler through
//!   its attach stream), QoS 0 is dropped and counted;
//! - server-to-device messages from the ingest API or the downlink stream
//!   (`deliver`, in `hub/deliver.rs`): sent with a delivery id, and the outcome is
//!   the handlers' acks.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use throng_proto::v1::{
    Ack, Delivery, DistributorMessage, Forward, InterestUpdate, Message, SubscriptionDelta,
    SubscriptionOp, delivery, distributor_message,
};
use throng_ring::Ring;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::index::{Change, ClusterIndex, Op};
use crate::interest::{InterestUpdates, interest_message};
use crate::metrics::{DistributorMetrics, RouteKind};
use crate::retained::RetainedStore;

mod deliver;

pub use deliver::{Outcome, Target};

/// Hub settings.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// How long a server-to-device delivery waits for room in the handler's
    /// channel and then for its ack before it counts as not delivered (retried).
    pub ack_timeout: Duration,
    /// Messages queued towards one handler.
    pub handler_channel: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            ack_timeout: Duration::from_secs(10),
            handler_channel: 16 * 1024,
        }
    }
}

type AckWaiters = Arc<Mutex<HashMap<u64, oneshot::Sender<Ack>>>>;

/// One attached handler's stream.
#[derive(Clone)]
struct Link {
    attach_id: u64,
    /// Deliveries: bounded, so server-to-device senders and QoS 1/2 device
    /// forwards wait, and QoS 0 device forwards are dropped, when the handler
    /// falls behind.
    tx: mpsc::Sender<DistributorMessage>,
    /// Interest updates: small, never dropped, sent in order under the state lock.
    control: mpsc::UnboundedSender<DistributorMessage>,
    acks: AckWaiters,
    /// Cancelled when this stream is detached or replaced: a sender waiting for
    /// room in `tx` gives up, and `Outbound` ends (dropping the receiver).
    detached: CancellationToken,
}

/// What the hub sends one attached handler: interest updates first, then deliveries.
pub struct Outbound {
    control: mpsc::UnboundedReceiver<DistributorMessage>,
    deliveries: mpsc::Receiver<DistributorMessage>,
    detached: CancellationToken,
}

impl Outbound {
    /// The next message; `None` once the handler is detached (what is still
    /// queued is dropped with the receiver, so no sender waits on it).
    pub async fn recv(&mut self) -> Option<DistributorMessage> {
        tokio::select! {
            biased;
            () = self.detached.cancelled() => None,
            Some(message) = self.control.recv() => Some(message),
            message = self.deliveries.recv() => message,
        }
    }

    /// The messages as a stream, for the gRPC response.
    pub fn into_stream(self) -> impl tokio_stream::Stream<Item = DistributorMessage> + Send {
        futures_util::stream::unfold(self, |mut outbound| async move {
            let message = outbound.recv().await?;
            Some((message, outbound))
        })
    }
}

#[derive(Default)]
struct State {
    index: ClusterIndex,
    handlers: BTreeMap<Arc<str>, Link>,
    retained: RetainedStore,
}

impl State {
    /// Sends interest updates; called before the state lock is released, so
    /// they keep their order.
    fn send_interest(&self, updates: InterestUpdates) {
        for (handler, update) in updates.into_updates() {
            if let Some(link) = self.handlers.get(&handler) {
                let _ = link.control.send(interest_message(update));
            }
        }
    }
}

pub struct Hub {
    config: HubConfig,
    metrics: DistributorMetrics,
    /// Expected handler membership (same Discovery as the agent); when empty, the
    /// attached handlers stand in for it.
    ring: watch::Receiver<Arc<Ring>>,
    state: RwLock<State>,
    next_attach: AtomicU64,
    next_delivery: AtomicU64,
    share_cursor: AtomicUsize,
}

/// A handler's attachment; dropping it detaches the handler.
pub struct Attachment {
    hub: Arc<Hub>,
    handler: Arc<str>,
    attach_id: u64,
    acks: AckWaiters,
    detached: CancellationToken,
}

impl Hub {
    pub fn new(
        config: HubConfig,
        metrics: DistributorMetrics,
        ring: watch::Receiver<Arc<Ring>>,
    ) -> Arc<Hub> {
        Arc::new(Hub {
            config,
            metrics,
            ring,
            state: RwLock::new(State::default()),
            next_attach: AtomicU64::new(1),
            next_delivery: AtomicU64::new(1),
            share_cursor: AtomicUsize::new(0),
        })
    }

    pub fn metrics(&self) -> &DistributorMetrics {
        &self.metrics
    }

    /// Ids of the attached handlers, sorted.
    pub fn attached(&self) -> Vec<Arc<str>> {
        self.state.read().handlers.keys().cloned().collect()
    }

    /// Registers a handler's stream; a handler already attached under the same id
    /// is replaced (its old stream is stale). It is told its interest set, then
    /// the retained messages the cluster holds. Needs a tokio runtime.
    pub fn attach(self: &Arc<Self>, handler_id: &str) -> (Attachment, Outbound) {
        let handler: Arc<str> = Arc::from(handler_id);
        let attach_id = self.next_attach.fetch_add(1, Ordering::Relaxed);
        let (tx, deliveries) = mpsc::channel(self.config.handler_channel);
        let (control_tx, control) = mpsc::unbounded_channel();
        let acks = AckWaiters::default();
        let detached = CancellationToken::new();
        let link = Link {
            attach_id,
            tx: tx.clone(),
            control: control_tx,
            acks: acks.clone(),
            detached: detached.clone(),
        };
        let retained: Vec<Message> = {
            let mut state = self.state.write();
            let interest = InterestUpdate {
                added: state.index.interest_for(&handler),
                removed: Vec::new(),
                replace: true,
            };
            let _ = link.control.send(interest_message(interest));
            match state.handlers.insert(handler.clone(), link) {
                // The old stream is stale: deliveries waiting for its acks fail
                // now (and are retried) instead of at the ack timeout, and
                // forwards waiting for room in it give up.
                Some(old) => {
                    old.acks.lock().clear();
                    old.detached.cancel();
                }
                None => {
                    self.metrics.handlers.inc();
                }
            }
            state.retained.snapshot(unix_ms())
        };
        tracing::info!(handler = %handler, retained = retained.len(), "handler attached");
        tokio::spawn(async move {
            for message in retained {
                let sync = Delivery {
                    target: Some(delivery::Target::Topic(message.topic.clone())),
                    message: Some(message),
                    retained_sync: true,
                    ..Delivery::default()
                };
                if tx.send(wrap(sync)).await.is_err() {
                    return;
                }
            }
        });
        let attachment = Attachment {
            hub: self.clone(),
            handler,
            attach_id,
            acks,
            detached: detached.clone(),
        };
        (
            attachment,
            Outbound {
                control,
                deliveries,
                detached,
            },
        )
    }

    fn detach(&self, handler: &Arc<str>, attach_id: u64) {
        let mut state = self.state.write();
        let Some(link) = state.handlers.get(handler) else {
            return;
        };
        if link.attach_id != attach_id {
            return;
        }
        // Deliveries waiting for this handler's acks fail now and are retried.
        link.acks.lock().clear();
        state.handlers.remove(handler);
        let filters = state.index.filters_of(handler);
        let before: Vec<Vec<Arc<str>>> = filters.iter().map(|f| state.index.holders(f)).collect();
        state.index.remove_handler(handler);
        let mut updates = InterestUpdates::default();
        for (filter, before) in filters.iter().zip(before) {
            updates.diff(&state.index, state.handlers.keys(), filter, &before);
        }
        state.send_interest(updates);
        drop(state);
        self.metrics.handlers.dec();
        tracing::info!(handler = %handler, "handler detached");
    }

    /// Applies a handler's subscription changes (a full snapshot replaces what it
    /// had) and tells the other handlers how their interest sets changed.
    /// Invalid entries are skipped and logged; the rest still apply.
    fn apply_delta(&self, handler: &Arc<str>, delta: SubscriptionDelta) {
        let changes: Vec<Change> = delta
            .changes
            .into_iter()
            .filter_map(|change| {
                let op = match change.op() {
                    SubscriptionOp::Add => Op::Add,
                    SubscriptionOp::Remove => Op::Remove,
                    SubscriptionOp::Unspecified => {
                        tracing::warn!(handler = %handler, filter = %change.filter, "subscription change without op, skipped");
                        return None;
                    }
                };
                Some(Change {
                    filter: change.filter,
                    share_group: change.share_group,
                    op,
                })
            })
            .collect();
        let mut state = self.state.write();
        let mut touched: Vec<Arc<str>> = changes.iter().map(|c| Arc::from(&*c.filter)).collect();
        if delta.full_snapshot {
            touched.extend(state.index.filters_of(handler));
        }
        touched.sort();
        touched.dedup();
        let before: Vec<Vec<Arc<str>>> = touched.iter().map(|f| state.index.holders(f)).collect();
        if delta.full_snapshot {
            let snapshot = changes
                .into_iter()
                .filter(|change| change.op == Op::Add)
                .map(|change| (change.filter, change.share_group, 1));
            if let Err(err) = state.index.replace(handler, snapshot) {
                tracing::warn!(handler = %handler, error = %err, "invalid filter in snapshot, snapshot refused");
            }
        } else {
            for change in changes {
                let filter = change.filter.clone();
                if let Err(err) = state.index.apply(handler, change) {
                    tracing::warn!(handler = %handler, filter = %filter, error = %err, "invalid subscription change, skipped");
                }
            }
        }
        let mut updates = InterestUpdates::default();
        for (filter, before) in touched.iter().zip(before) {
            updates.diff(&state.index, state.handlers.keys(), filter, &before);
        }
        state.send_interest(updates);
    }

    /// Routes a device publish forwarded by handler `from`. QoS 1/2 waits for
    /// room in each target's channel, so the caller (`from`'s stream reader)
    /// stops reading and `from`'s stream backs up; QoS 0 is dropped on a full
    /// channel. No cycle can form: what is waited on is a handler's receive
    /// loop, which never waits on anything towards a distributor.
    async fn route_forward(&self, from: &Arc<str>, forward: Forward) {
        let Some(message) = forward.message else {
            return;
        };
        if message.retain {
            self.store_retained(&message);
        }
        if forward.retain_copy {
            return;
        }
        self.metrics.routed(RouteKind::Device);
        for (handler, link, shares) in self.plan(&message.topic, Some(from), message.retain) {
            let delivery = Delivery {
                delivery_id: 0,
                target: Some(delivery::Target::Topic(message.topic.clone())),
                message: Some(message.clone()),
                shared_only: handler == *from,
                share_groups: shares,
                retained_sync: false,
            };
            if message.qos == 0 {
                if link.tx.try_send(wrap(delivery)).is_err() {
                    self.metrics.forward_dropped.inc();
                    tracing::debug!(handler = %handler, topic = %message.topic, "handler channel full, qos 0 device publish dropped");
                }
                continue;
            }
            let sent = tokio::select! {
                sent = link.tx.send(wrap(delivery)) => sent.is_ok(),
                () = link.detached.cancelled() => false,
            };
            if !sent {
                self.metrics.forward_dropped.inc();
                tracing::debug!(handler = %handler, topic = %message.topic, "handler detached, device publish dropped");
            }
        }
    }

    /// The handlers a publish on `topic` goes to, each with the shared
    /// subscriptions it serves. `from` (the publishing handler) only appears when
    /// picked for a shared subscription; `everyone` adds every other attached
    /// handler (a retained message is stored everywhere).
    fn plan(
        &self,
        topic: &str,
        from: Option<&Arc<str>>,
        everyone: bool,
    ) -> Vec<(Arc<str>, Link, Vec<String>)> {
        let state = self.state.read();
        let route = state.index.route(topic, from.map(|f| &**f));
        let mut targets: BTreeMap<Arc<str>, Vec<String>> = route
            .handlers
            .into_iter()
            .map(|handler| (handler, Vec::new()))
            .collect();
        for (group, filter, members) in route.shared {
            let pick = self.share_cursor.fetch_add(1, Ordering::Relaxed) % members.len();
            targets
                .entry(members[pick].clone())
                .or_default()
                .push(format!("$share/{group}/{filter}"));
        }
        if everyone {
            for handler in state.handlers.keys() {
                if from != Some(handler) {
                    targets.entry(handler.clone()).or_default();
                }
            }
        }
        targets
            .into_iter()
            .filter_map(|(handler, shares)| {
                let link = state.handlers.get(&handler)?.clone();
                Some((handler, link, shares))
            })
            .collect()
    }

    fn store_retained(&self, message: &Message) {
        self.state.write().retained.store(message);
    }
}

impl Attachment {
    pub fn handler(&self) -> &Arc<str> {
        &self.handler
    }

    pub fn apply_delta(&self, delta: SubscriptionDelta) {
        self.hub.apply_delta(&self.handler, delta);
    }

    /// Routes a device publish; waits while a target handler's channel is full
    /// (QoS 1/2).
    pub async fn forward(&self, forward: Forward) {
        self.hub.route_forward(&self.handler, forward).await;
    }

    /// Completes the delivery the ack is for; acks for unknown ids (timed out,
    /// or device traffic) are ignored.
    pub fn ack(&self, ack: Ack) {
        if let Some(waiter) = self.acks.lock().remove(&ack.delivery_id) {
            let _ = waiter.send(ack);
        }
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        self.hub.detach(&self.handler, self.attach_id);
        // No ack comes on this stream any more, whether or not it was still the
        // handler's current one; nothing waits for room in it either.
        self.acks.lock().clear();
        self.detached.cancel();
    }
}

fn wrap(delivery: Delivery) -> DistributorMessage {
    DistributorMessage {
        kind: Some(distributor_message::Kind::Delivery(delivery)),
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
