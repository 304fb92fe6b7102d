//! The handler's shared state: the session registry, the subscription index, the
//! retained store and the timers, and the routing of a published message to every
//! matching session. All of it is synchronous: connection tasks call in while they
//! process a batch of packets and never await while holding a lock.

mod keepalive;
mod registry;
mod retained;
mod routing;
mod sessions;
mod subscriptions;
mod timers;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::RwLock;
use prometheus_client::metrics::gauge::Gauge;
use throng_codec::SubscriptionOptions;
use throng_topic::{RetainedIndex, SubscriptionIndex};

use crate::config::HandlerConfig;
use crate::message::Message;
use crate::metrics::HandlerMetrics;
use crate::security::Security;
use crate::session::Session;

pub use sessions::Departure;
pub use subscriptions::SubscribeOutcome;

/// Identifies one subscription in the index: the session's client id, and the share
/// group for `$share/{group}/…` subscriptions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SubKey {
    pub client_id: Arc<str>,
    pub group: Option<Arc<str>>,
}

#[derive(Debug, Clone)]
pub struct SubEntry {
    pub session: Arc<Session>,
    pub options: SubscriptionOptions,
    pub id: Option<u32>,
    pub username: Option<Arc<str>>,
}

pub struct Broker {
    pub config: HandlerConfig,
    pub metrics: HandlerMetrics,
    pub security: Security,
    sessions: registry::SessionRegistry,
    index: RwLock<SubscriptionIndex<SubKey, SubEntry>>,
    retained: RwLock<RetainedIndex<Arc<Message>>>,
    timers: timers::Timers,
    pub keepalive: keepalive::KeepaliveWheel,
    next_conn_id: AtomicU64,
    share_cursor: AtomicUsize,
    online: Gauge,
    offline: Gauge,
    /// Other handlers in this process that see every message published here
    /// (`throng dev`); a cluster routes through distributors instead.
    peers: RwLock<Vec<Weak<Broker>>>,
}

impl Broker {
    /// Builds the broker; must be called inside a tokio runtime (it starts the timer task).
    pub fn new(config: HandlerConfig, metrics: HandlerMetrics, security: Security) -> Arc<Broker> {
        let online = metrics.sessions("online");
        let offline = metrics.sessions("offline");
        let broker = Arc::new(Broker {
            config,
            metrics,
            security,
            sessions: registry::SessionRegistry::default(),
            index: RwLock::new(SubscriptionIndex::new()),
            retained: RwLock::new(RetainedIndex::new()),
            timers: timers::Timers::default(),
            keepalive: keepalive::KeepaliveWheel::default(),
            next_conn_id: AtomicU64::new(1),
            share_cursor: AtomicUsize::new(0),
            online,
            offline,
            peers: RwLock::new(Vec::new()),
        });
        timers::spawn(Arc::downgrade(&broker));
        keepalive::spawn(Arc::downgrade(&broker));
        broker
    }

    /// Routes a message published by a client of this handler (or its will): here,
    /// and on every peer handler. Returns the sessions it was queued to.
    pub fn publish_everywhere(&self, message: Arc<Message>) -> usize {
        let peers: Vec<Arc<Broker>> = self.peers.read().iter().filter_map(Weak::upgrade).collect();
        let mut queued = self.publish(message.clone());
        for peer in peers {
            queued += peer.publish(message.clone());
        }
        queued
    }

    /// Makes every broker a peer of every other.
    pub fn link_peers(brokers: &[Arc<Broker>]) {
        for broker in brokers {
            *broker.peers.write() = brokers
                .iter()
                .filter(|other| !Arc::ptr_eq(other, broker))
                .map(Arc::downgrade)
                .collect();
        }
    }

    pub fn next_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Tells every live connection to close with `reason` (server shutting down).
    pub fn kick_all(&self, reason: u8) {
        self.sessions.for_each(|session| {
            if let Some(link) = &session.state.lock().link {
                link.signal.kick(reason);
            }
        });
    }
}
