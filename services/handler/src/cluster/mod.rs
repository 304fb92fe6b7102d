//! The handler's side of the cluster: one attach stream to every distributor
//! replica (`attach`), the subscription changes every stream is told about
//! (`feed`), the choice of the distributor a device publish is forwarded to and
//! whether it needs forwarding at all (the interest set), the conversion of
//! messages to and from the wire (`convert`), and the recent message ids that let
//! a redelivered downlink message be dropped (`recent`), and the backpressure a
//! stream's forward queue puts on publishers (`backpressure`).

mod attach;
mod backpressure;
mod convert;
mod recent;

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use throng_codec::QoS;
use throng_proto::v1::{
    Forward, HandlerMessage, InterestUpdate, SubscriptionChange, SubscriptionDelta, SubscriptionOp,
    handler_message,
};
use throng_topic::SubscriptionIndex;
use tokio::sync::mpsc;

pub use attach::spawn_supervisor;
pub use backpressure::ForwardQueue;
pub use convert::{from_wire, to_wire};
pub use recent::RecentIds;

use crate::message::Message;

/// One attached distributor stream.
pub struct DistributorLink {
    pub id: Arc<str>,
    /// Everything, in order (a subscription change is never overtaken by a
    /// publish that depends on it). Never waited on: Hello, deltas and acks are
    /// never dropped; beyond the forward limit QoS 0 device publishes are, and
    /// the publishers are paused (see `backpressure`).
    outbound: mpsc::UnboundedSender<HandlerMessage>,
    /// Device publishes queued in `outbound`, decremented as the stream takes them.
    forwards: Arc<ForwardQueue>,
    /// Filters other handlers subscribe to; `None` until the first update, and
    /// then every publish is forwarded.
    interest: RwLock<Option<SubscriptionIndex<(), ()>>>,
}

impl DistributorLink {
    fn send_control(&self, kind: handler_message::Kind) {
        // A closed channel means the stream ended; the supervisor re-attaches.
        let _ = self.outbound.send(HandlerMessage { kind: Some(kind) });
    }

    /// Whether another handler subscribes to something matching `topic`.
    fn interested(&self, topic: &str) -> bool {
        match &*self.interest.read() {
            None => true,
            Some(filters) => {
                let mut found = false;
                filters.for_each_match(topic, |_, _, _| found = true);
                found
            }
        }
    }

    /// Applies an interest update: the first after attach replaces the set.
    pub fn update_interest(&self, update: InterestUpdate) {
        let mut interest = self.interest.write();
        if update.replace || interest.is_none() {
            *interest = Some(SubscriptionIndex::new());
        }
        let index = interest.as_mut().expect("set above");
        for filter in &update.removed {
            index.remove(filter, &());
        }
        for filter in &update.added {
            if throng_topic::validate_filter(filter).is_ok() {
                index.insert(filter, (), ());
            }
        }
    }
}

/// (filter without `$share/` prefix, share group).
type SubKey = (Arc<str>, Option<Arc<str>>);

/// The handler's subscriptions as the cluster sees them: a count per (filter,
/// group), so a distributor hears ADD when the first session subscribes and
/// REMOVE when the last one leaves.
#[derive(Default)]
struct Feed {
    counts: HashMap<SubKey, u32>,
    /// Links told about every change, by link identity.
    listeners: Vec<Arc<DistributorLink>>,
}

pub struct Cluster {
    pub handler_id: Arc<str>,
    /// Distinguishes this process from earlier ones with the same handler id.
    pub generation: u64,
    feed: Mutex<Feed>,
    /// Attached links, sorted by distributor id.
    links: RwLock<Vec<Arc<DistributorLink>>>,
    pub recent: Mutex<RecentIds>,
    next_message: AtomicU64,
    hasher: RandomState,
    /// Device publishes queued towards one distributor before QoS 0 ones are
    /// dropped and publishers are paused.
    forward_limit: usize,
}

/// What became of a device publish that had to go to a distributor.
#[derive(Clone)]
pub struct Forwarded {
    /// Queued on the stream (false: a QoS 0 publish over the limit, or the stream had ended).
    pub sent: bool,
    /// Set when the publisher must stop reading until this queue drains.
    pub backpressure: Option<Arc<ForwardQueue>>,
}

impl Cluster {
    pub fn new(handler_id: &str, forward_limit: usize) -> Cluster {
        Cluster {
            forward_limit,
            handler_id: Arc::from(handler_id),
            generation: throng_downlink::unix_ms(),
            feed: Mutex::default(),
            links: RwLock::default(),
            recent: Mutex::new(RecentIds::new(64 * 1024)),
            next_message: AtomicU64::new(1),
            hasher: RandomState::new(),
        }
    }

    pub fn attached(&self) -> usize {
        self.links.read().len()
    }

    /// Device publishes queued on the attached streams.
    pub fn forward_queued(&self) -> usize {
        self.links.read().iter().map(|l| l.forwards.queued()).sum()
    }

    /// A session subscribed to `filter` (in `group`); tells the distributors when
    /// it is the first on this handler.
    pub fn subscription_added(&self, filter: &str, group: Option<&Arc<str>>) {
        let key: SubKey = (Arc::from(filter), group.cloned());
        let mut feed = self.feed.lock();
        let count = feed.counts.entry(key.clone()).or_insert(0);
        *count += 1;
        if *count == 1 {
            feed.broadcast(&key, SubscriptionOp::Add);
        }
    }

    /// A session's subscription went away; tells the distributors when it was the last.
    pub fn subscription_removed(&self, filter: &str, group: Option<&Arc<str>>) {
        let key: SubKey = (Arc::from(filter), group.cloned());
        let mut feed = self.feed.lock();
        let Some(count) = feed.counts.get_mut(&key) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            feed.counts.remove(&key);
            feed.broadcast(&key, SubscriptionOp::Remove);
        }
    }

    /// Sends the full subscription set on `link` and registers it for every change
    /// after it, atomically, so no change is lost or applied twice.
    fn register(&self, link: &Arc<DistributorLink>) {
        let mut feed = self.feed.lock();
        let changes = feed
            .counts
            .keys()
            .map(|key| change(key, SubscriptionOp::Add))
            .collect();
        link.send_control(handler_message::Kind::SubscriptionDelta(
            SubscriptionDelta {
                changes,
                full_snapshot: true,
            },
        ));
        feed.listeners.push(link.clone());
    }

    fn add_link(&self, link: &Arc<DistributorLink>) {
        let mut links = self.links.write();
        links.push(link.clone());
        links.sort_by(|a, b| a.id.cmp(&b.id));
    }

    fn remove_link(&self, link: &Arc<DistributorLink>) {
        self.links.write().retain(|l| !Arc::ptr_eq(l, link));
        self.feed.lock().listeners.retain(|l| !Arc::ptr_eq(l, link));
    }

    /// The distributor a publish on `topic` goes to: the same one for a topic while
    /// membership is stable, so one topic's messages keep their order.
    pub fn pick(&self, topic: &str) -> Option<Arc<DistributorLink>> {
        let links = self.links.read();
        if links.is_empty() {
            return None;
        }
        let index = (self.hasher.hash_one(topic) as usize) % links.len();
        Some(links[index].clone())
    }

    /// Whether a publish must go to `link`: another handler may match it, a local
    /// shared subscription needs a cluster-wide pick, or it is retained.
    pub fn needs_forward(
        &self,
        link: &DistributorLink,
        message: &Message,
        shared_matched: bool,
    ) -> bool {
        message.retain || shared_matched || link.interested(&message.topic)
    }

    /// Queues a device publish on `link`. QoS 1/2 always goes (the publisher is
    /// paused while the queue is over its limit); QoS 0 is dropped beyond it.
    /// A retained publish is also copied to every other distributor, which only
    /// stores it.
    pub fn forward(&self, link: &DistributorLink, message: &Message) -> Forwarded {
        let seq = self.next_message.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{}-{seq}", self.handler_id, self.generation);
        let wire = to_wire(message, id);
        if message.retain {
            for other in self.links.read().iter() {
                if !std::ptr::eq(&**other, link) {
                    other.send_control(handler_message::Kind::Forward(Forward {
                        message: Some(wire.clone()),
                        retain_copy: true,
                    }));
                }
            }
        }
        let admission = link.forwards.admit(message.qos == QoS::AtMostOnce);
        let backpressure = admission.pause.then(|| link.forwards.clone());
        if !admission.queue {
            return Forwarded {
                sent: false,
                backpressure,
            };
        }
        let forward = HandlerMessage {
            kind: Some(handler_message::Kind::Forward(Forward {
                message: Some(wire),
                retain_copy: false,
            })),
        };
        let sent = link.outbound.send(forward).is_ok();
        if !sent {
            link.forwards.cancel();
        }
        Forwarded { sent, backpressure }
    }
}

impl Feed {
    fn broadcast(&self, key: &SubKey, op: SubscriptionOp) {
        for link in &self.listeners {
            link.send_control(handler_message::Kind::SubscriptionDelta(
                SubscriptionDelta {
                    changes: vec![change(key, op)],
                    full_snapshot: false,
                },
            ));
        }
    }
}

fn change((filter, group): &SubKey, op: SubscriptionOp) -> SubscriptionChange {
    SubscriptionChange {
        filter: filter.to_string(),
        share_group: group.as_ref().map(|g| g.to_string()),
        qos: 0,
        no_local: false,
        retain_as_published: false,
        op: op.into(),
    }
}
