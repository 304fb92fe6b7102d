//! Retained messages: set, replace, clear with an empty payload, and delivery of the
//! matching ones when a subscription asks for them.

use std::sync::Arc;

use throng_codec::SubscriptionOptions;
use tokio::time::Instant;

use super::Broker;
use crate::message::{Delivery, Message};
use crate::session::Session;

impl Broker {
    pub(super) fn store_retained(&self, message: &Arc<Message>) {
        let mut retained = self.retained.write();
        let before = retained.len();
        if message.payload.is_empty() {
            retained.remove(&message.topic);
        } else {
            retained.set(&message.topic, message.clone());
        }
        let delta = retained.len() as i64 - before as i64;
        drop(retained);
        self.metrics.retained_messages.inc_by(delta);
    }

    /// Every unexpired retained message held, except on `$` topics (no filter
    /// reaches those all at once).
    pub fn retained_messages(&self) -> Vec<Arc<Message>> {
        let now = Instant::now();
        let mut out = Vec::new();
        self.retained.read().for_each_match("#", |_, message| {
            if !message.is_expired(now) {
                out.push(message.clone());
            }
        });
        out
    }

    /// Stores a retained message a distributor replays on attach, unless a newer
    /// one is held for its topic.
    pub(super) fn store_retained_if_newer(&self, message: &Arc<Message>) {
        let newer_held = self
            .retained
            .read()
            .get(&message.topic)
            .is_some_and(|held| held.published_at_ms > message.published_at_ms);
        if !newer_held {
            self.store_retained(message);
        }
    }

    /// Queues the retained messages matching `filter` to `session` with RETAIN set.
    pub(super) fn send_retained(
        &self,
        session: &Arc<Session>,
        filter: &str,
        options: SubscriptionOptions,
        id: Option<u32>,
    ) -> usize {
        let now = Instant::now();
        let mut matching: Vec<Arc<Message>> = Vec::new();
        self.retained.read().for_each_match(filter, |_, message| {
            if !message.is_expired(now) {
                matching.push(message.clone());
            }
        });
        let username = session.state.lock().username.clone();
        let mut queued = 0;
        for message in matching {
            if self.security.has_acl()
                && !self
                    .security
                    .can_receive(&session.client_id, username.as_ref(), &message.topic)
            {
                continue;
            }
            let delivery = Delivery {
                qos: message.qos.min(options.qos),
                retain: true,
                subscription_ids: id.into_iter().collect(),
                message,
            };
            if session.enqueue(delivery, self.config.max_queued_messages, &self.metrics)
                == crate::session::Enqueued::Queued
            {
                queued += 1;
            }
        }
        queued
    }
}
