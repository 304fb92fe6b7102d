//! Deliveries from distributors: device publishes from other handlers (by topic),
//! server-to-device messages (by topic or client id), and retained messages
//! replayed on attach. Never blocks: the attach stream's reader calls in.

use std::sync::Arc;

use throng_codec::QoS;
use throng_proto::v1::{Ack, AckOutcome, Delivery as WireDelivery, delivery};

use super::{Broker, Shares};
use crate::cluster::from_wire;
use crate::message::Delivery;
use crate::session::Enqueued;

impl Broker {
    /// Handles one delivery; returns the ack to send (none for delivery id 0).
    pub fn accept_delivery(&self, wire: WireDelivery) -> Option<Ack> {
        let delivery_id = wire.delivery_id;
        let (outcome, reason) = self.dispose(wire);
        if outcome != AckOutcome::Accepted && outcome != AckOutcome::Queued {
            tracing::debug!(delivery_id, outcome = ?outcome, reason = %reason, "delivery not accepted");
        }
        (delivery_id != 0).then(|| Ack {
            delivery_id,
            outcome: outcome.into(),
            reason,
        })
    }

    fn dispose(&self, wire: WireDelivery) -> (AckOutcome, String) {
        let Some(wire_message) = wire.message else {
            return (AckOutcome::Rejected, "delivery without a message".into());
        };
        let message_id = wire_message.message_id.clone();
        let message = match from_wire(wire_message) {
            Ok(message) => Arc::new(message),
            Err(reason) => return (AckOutcome::Rejected, reason),
        };
        if wire.retained_sync {
            self.store_retained_if_newer(&message);
            return (AckOutcome::Accepted, String::new());
        }
        let acked = wire.delivery_id != 0 && !message_id.is_empty();
        if acked && self.cluster.recent.lock().contains(&message_id) {
            // Delivered before; the distributor did not hear the ack in time.
            return (AckOutcome::Accepted, String::new());
        }
        let result = match wire.target {
            Some(delivery::Target::Topic(_)) => {
                if message.retain && !wire.shared_only {
                    self.store_retained(&message);
                }
                self.route(
                    &message,
                    !wire.shared_only,
                    Shares::Listed(&wire.share_groups),
                );
                (AckOutcome::Accepted, String::new())
            }
            Some(delivery::Target::ClientId(client_id)) => {
                self.deliver_to_client(&client_id, message)
            }
            None => (AckOutcome::Rejected, "delivery without a target".into()),
        };
        if acked && matches!(result.0, AckOutcome::Accepted | AckOutcome::Queued) {
            self.cluster.recent.lock().insert(&message_id);
        }
        result
    }

    /// A server-to-device message for one client: queued in its session whatever
    /// it subscribes to (the backend is trusted; no ACL applies).
    fn deliver_to_client(
        &self,
        client_id: &str,
        message: Arc<crate::message::Message>,
    ) -> (AckOutcome, String) {
        let Some(session) = self.sessions.shard(client_id).get(client_id) else {
            return (
                AckOutcome::UnknownClient,
                format!(
                    "no session for client {client_id:?} on handler {}",
                    self.config.id
                ),
            );
        };
        let online = session.state.lock().link.is_some();
        let qos = message.qos;
        let delivery = Delivery {
            qos,
            retain: false,
            subscription_ids: Vec::new(),
            message,
        };
        match session.enqueue(delivery, self.config.max_queued_messages, &self.metrics) {
            Enqueued::Queued if online => (AckOutcome::Accepted, String::new()),
            Enqueued::Queued => (AckOutcome::Queued, String::new()),
            Enqueued::Dropped if !online && qos == QoS::AtMostOnce => (
                AckOutcome::Rejected,
                format!("client {client_id:?} is offline and QoS 0 is not queued"),
            ),
            Enqueued::Dropped => (
                AckOutcome::Rejected,
                format!("session of client {client_id:?} is full or ending"),
            ),
        }
    }
}
