//! Messages as routed inside a handler: one shared `Message` per publish, and a
//! `Delivery` per subscriber carrying what that subscriber's options made of it.

use std::sync::Arc;

use bytes::Bytes;
use throng_codec::{PublishProperties, QoS};
use tokio::time::Instant;

/// An application message, shared by every subscriber it goes to.
#[derive(Debug)]
pub struct Message {
    pub topic: Arc<str>,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// Properties passed through to subscribers; never carries a topic alias or
    /// subscription identifiers (those are per connection and per subscriber).
    pub properties: PublishProperties,
    /// When message expiry passes; `None` means never.
    pub expires_at: Option<Instant>,
    /// Client id of the publisher, for No Local.
    pub origin: Option<Arc<str>>,
    /// When the message entered the cluster (ms since the Unix epoch): the newest
    /// retained message per topic wins, and expiry counts from it across handlers.
    pub published_at_ms: u64,
}

impl Message {
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// Seconds of expiry left, rounded up, for the Message Expiry Interval sent on.
    pub fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        self.expires_at.map(|at| {
            let left = at.saturating_duration_since(now);
            let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            u32::try_from(secs).unwrap_or(u32::MAX)
        })
    }
}

/// One message on its way to one session.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message: Arc<Message>,
    /// The lower of the publish QoS and the subscription's granted QoS.
    pub qos: QoS,
    /// The RETAIN flag as this subscriber sees it.
    pub retain: bool,
    /// Identifiers of every subscription of this session that matched.
    pub subscription_ids: Vec<u32>,
}
