//! SUBSCRIBE and UNSUBSCRIBE against the cluster-local index: filter checks, ACL,
//! quota, and which retained messages a new subscription receives.

use std::sync::Arc;

use throng_codec::{ProtocolVersion, SubscriptionOptions, reason};
use throng_topic::{parse_shared, validate_filter};

use super::{Broker, SubEntry, SubKey};
use crate::session::Session;

/// What one filter of a SUBSCRIBE came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeOutcome {
    /// Granted at this QoS; `retained` says whether retained messages were queued.
    Granted { qos: u8, retained: usize },
    /// Refused with a v5 reason code (v3 sends 0x80 for all).
    Refused(u8),
    /// No Local on a shared subscription: a protocol error that ends the connection.
    ProtocolError,
}

impl Broker {
    pub fn subscribe(
        &self,
        session: &Arc<Session>,
        version: ProtocolVersion,
        filter: &str,
        options: SubscriptionOptions,
        id: Option<u32>,
    ) -> SubscribeOutcome {
        let (group, inner) = match parse_shared(filter) {
            Ok(Some(shared)) => {
                if version.is_v5() && options.no_local {
                    return SubscribeOutcome::ProtocolError;
                }
                (Some(Arc::<str>::from(shared.group)), shared.filter)
            }
            Ok(None) => match validate_filter(filter) {
                Ok(()) => (None, filter),
                Err(_) => return SubscribeOutcome::Refused(reason::TOPIC_FILTER_INVALID),
            },
            Err(_) => return SubscribeOutcome::Refused(reason::TOPIC_FILTER_INVALID),
        };
        let (username, is_new) = {
            let mut state = session.state.lock();
            let username = state.username.clone();
            if !self
                .security
                .can_subscribe(&session.client_id, username.as_ref(), inner)
            {
                return SubscribeOutcome::Refused(reason::NOT_AUTHORIZED);
            }
            let is_new = !state.has_subscription(filter);
            if is_new && state.subscriptions.len() >= self.config.max_subscriptions_per_session {
                return SubscribeOutcome::Refused(reason::QUOTA_EXCEEDED);
            }
            if is_new {
                state.subscriptions.push(Arc::from(filter));
            }
            (username, is_new)
        };
        let key = SubKey {
            client_id: session.client_id.clone(),
            group: group.clone(),
        };
        let entry = SubEntry {
            session: session.clone(),
            options,
            id,
            username,
        };
        self.index.write().insert(inner, key, entry);
        if is_new {
            self.metrics.subscriptions.inc();
            self.cluster.subscription_added(inner, group.as_ref());
        }
        let wants_retained = group.is_none()
            && match options.retain_handling {
                0 => true,
                1 => is_new,
                _ => false,
            };
        let retained = if wants_retained {
            self.send_retained(session, inner, options, id)
        } else {
            0
        };
        SubscribeOutcome::Granted {
            qos: options.qos as u8,
            retained,
        }
    }

    /// Returns the v5 UNSUBACK reason code for one filter.
    pub fn unsubscribe(&self, session: &Arc<Session>, filter: &str) -> u8 {
        if !session.state.lock().remove_subscription(filter) {
            return reason::NO_SUBSCRIPTION_EXISTED;
        }
        self.remove_from_index(&session.client_id, filter);
        self.metrics.subscriptions.dec();
        reason::SUCCESS
    }

    /// Removes every subscription of a session that ended.
    pub(super) fn drop_subscriptions(&self, session: &Arc<Session>) {
        let filters: Vec<Arc<str>> = std::mem::take(&mut session.state.lock().subscriptions);
        for filter in &filters {
            self.remove_from_index(&session.client_id, filter);
        }
        self.metrics.subscriptions.dec_by(filters.len() as i64);
    }

    fn remove_from_index(&self, client_id: &Arc<str>, filter: &str) {
        let (group, inner) = match parse_shared(filter) {
            Ok(Some(shared)) => (Some(Arc::<str>::from(shared.group)), shared.filter),
            _ => (None, filter),
        };
        self.cluster.subscription_removed(inner, group.as_ref());
        let key = SubKey {
            client_id: client_id.clone(),
            group,
        };
        self.index.write().remove(inner, &key);
    }
}
