//! The handler's shared state: the session registry, the subscription index, the
//! retained store and the timers, and the routing of a published message to every
//! matching session. All of it is synchronous: connection tasks call in while they
//! process a batch of packets and never await while holding a lock.

mod keepalive;
mod registry;
mod remote;
mod retained;
mod routing;
mod sessions;
mod subscriptions;
mod timers;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::RwLock;
use prometheus_client::metrics::gauge::Gauge;
use throng_codec::{QoS, SubscriptionOptions, reason};
use throng_downlink::{UplinkEntry, UplinkWriter};
use throng_topic::{RetainedIndex, SubscriptionIndex};

use crate::cluster::{Cluster, ForwardQueue};
use crate::config::HandlerConfig;
use crate::message::Message;
use crate::metrics::{DropReason, HandlerMetrics};
use crate::security::Security;
use crate::session::Session;

pub use routing::Shares;
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
    /// Attach streams to the distributors (idle until `Handler::join_cluster`).
    pub cluster: Cluster,
    uplink: Option<Uplink>,
}

/// What became of a device publish (`Broker::publish_everywhere`).
pub struct Published {
    /// Local sessions it was queued to.
    pub queued: usize,
    pub forward: Forward,
    /// The forward queue the publisher must wait on before reading more: it is
    /// over its limit.
    pub backpressure: Option<Arc<ForwardQueue>>,
}

/// Whether a publish went to a distributor for other handlers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    /// No other handler wants it (by the interest set), or no distributor is attached.
    NotNeeded,
    Sent,
    /// Needed, but not sent: QoS 0 over the forward limit, or the stream had ended.
    Lost,
}

impl Published {
    fn local(queued: usize) -> Published {
        Published {
            queued,
            forward: Forward::NotNeeded,
            backpressure: None,
        }
    }

    /// The PUBACK/PUBREC reason code (v5). "No matching subscribers" only when
    /// nothing here matched and no other handler wants the topic; a forward that
    /// was needed and lost is an error, whatever was delivered locally, so that
    /// the publisher does not take it for delivered.
    pub fn reason(&self) -> u8 {
        match self.forward {
            Forward::Lost => reason::UNSPECIFIED_ERROR,
            Forward::Sent => reason::SUCCESS,
            Forward::NotNeeded if self.queued == 0 => reason::NO_MATCHING_SUBSCRIBERS,
            Forward::NotNeeded => reason::SUCCESS,
        }
    }
}

/// Where device publishes matching `filters` are copied for backends.
pub struct Uplink {
    pub filters: Vec<String>,
    pub writer: UplinkWriter,
}

impl Broker {
    /// Builds the broker; must be called inside a tokio runtime (it starts the timer task).
    pub fn new(
        config: HandlerConfig,
        metrics: HandlerMetrics,
        security: Security,
        uplink: Option<Uplink>,
    ) -> Arc<Broker> {
        let online = metrics.sessions("online");
        let offline = metrics.sessions("offline");
        let cluster = Cluster::new(&config.id, config.forward_queue_limit);
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
            cluster,
            uplink,
        });
        timers::spawn(Arc::downgrade(&broker));
        keepalive::spawn(Arc::downgrade(&broker));
        broker
    }

    /// Routes a message published by a client of this handler (or its will): to the
    /// local subscribers, and to one distributor when another handler may need it
    /// (see `Cluster::needs_forward`). Shared subscriptions are picked cluster-wide
    /// by the distributor while one is attached, here otherwise.
    pub fn publish_everywhere(&self, message: Arc<Message>) -> Published {
        if message.retain {
            self.store_retained(&message);
        }
        let Some(link) = self.cluster.pick(&message.topic) else {
            return Published::local(self.route(&message, true, Shares::All).queued);
        };
        let routed = self.route(&message, true, Shares::Skip);
        if !self
            .cluster
            .needs_forward(&link, &message, routed.shared_matched)
        {
            return Published::local(routed.queued);
        }
        let forwarded = self.cluster.forward(&link, &message);
        if forwarded.sent {
            self.metrics.forwarded.inc();
            return Published {
                queued: routed.queued,
                forward: Forward::Sent,
                backpressure: forwarded.backpressure,
            };
        }
        if message.qos == QoS::AtMostOnce {
            self.metrics.dropped(DropReason::ForwardFull);
            tracing::debug!(topic = %message.topic, distributor = %link.id, "forward queue full, qos 0 publish not forwarded");
        } else {
            self.metrics.dropped(DropReason::ForwardClosed);
            tracing::debug!(topic = %message.topic, distributor = %link.id, "distributor stream ended, publish not forwarded");
        }
        // Other handlers miss this one; local shared subscriptions still get it.
        Published {
            queued: routed.queued + self.route(&message, false, Shares::All).queued,
            forward: Forward::Lost,
            backpressure: forwarded.backpressure,
        }
    }

    /// Copies a device publish to the uplink stream when its topic matches an
    /// uplink filter. Never waits: the device's acknowledgement does not depend
    /// on Redis, so a publish arriving while the writer's buffer is full (Redis
    /// down for long) is not appended, only counted (at-most-once into the uplink
    /// then).
    pub fn uplink(&self, client_id: &str, message: &Message) {
        let Some(uplink) = &self.uplink else {
            return;
        };
        if !uplink
            .filters
            .iter()
            .any(|filter| throng_topic::matches(filter, &message.topic))
        {
            return;
        }
        let properties = &message.properties;
        let entry = UplinkEntry {
            client_id: client_id.to_owned(),
            topic: message.topic.to_string(),
            payload: message.payload.clone(),
            qos: message.qos as u8,
            retain: message.retain,
            user_properties: properties.user_properties.clone(),
            content_type: properties.content_type.clone(),
            response_topic: properties.response_topic.clone(),
            correlation: properties.correlation_data.clone(),
            timestamp_ms: throng_downlink::unix_ms(),
        };
        if uplink.writer.try_send(entry).is_err() {
            self.metrics.dropped(DropReason::UplinkFull);
            tracing::warn!(client = client_id, topic = %message.topic, "uplink buffer full, publish not appended");
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
