//! The handler's Prometheus metrics, registered once per handler.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: &'static str,
}

/// Why a message was not delivered; each is a label value of `throng_messages_dropped_total`.
#[derive(Clone, Copy, Debug)]
pub enum DropReason {
    /// QoS 0 for a session with no connection.
    Offline,
    /// The session's queue was full.
    QueueFull,
    /// Message expiry passed before it could be sent.
    Expired,
    /// Larger than the client's Maximum Packet Size.
    TooLarge,
    /// Publish refused by the ACL.
    NotAuthorized,
    /// Not appended to the uplink stream: its buffer was full (Redis slow or down).
    UplinkFull,
    /// QoS 0 not forwarded to a distributor: its queue was over the forward
    /// limit (other handlers miss it). QoS 1/2 is never dropped for this.
    ForwardFull,
    /// Not forwarded to a distributor: its stream had just ended (other handlers
    /// miss it; a QoS 1/2 publisher is told so in a v5 PUBACK/PUBREC).
    ForwardClosed,
}

impl DropReason {
    const ALL: [DropReason; 8] = [
        DropReason::Offline,
        DropReason::QueueFull,
        DropReason::Expired,
        DropReason::TooLarge,
        DropReason::NotAuthorized,
        DropReason::UplinkFull,
        DropReason::ForwardFull,
        DropReason::ForwardClosed,
    ];

    fn label(self) -> &'static str {
        match self {
            DropReason::Offline => "offline_qos0",
            DropReason::QueueFull => "queue_full",
            DropReason::Expired => "expired",
            DropReason::TooLarge => "too_large",
            DropReason::NotAuthorized => "not_authorized",
            DropReason::UplinkFull => "uplink_full",
            DropReason::ForwardFull => "forward_full",
            DropReason::ForwardClosed => "forward_closed",
        }
    }
}

#[derive(Clone, Default)]
pub struct HandlerMetrics {
    pub connections: Gauge,
    pub connects: Family<ResultLabel, Counter>,
    pub messages_received: Counter,
    pub messages_sent: Counter,
    pub messages_dropped: Family<ReasonLabel, Counter>,
    pub retained_messages: Gauge,
    pub sessions: Family<StateLabel, Gauge>,
    pub subscriptions: Gauge,
    /// Device publishes forwarded to a distributor for other handlers.
    pub forwarded: Counter,
    /// Distributors this handler has an attach stream to.
    pub distributors: Gauge,
    /// Times a publishing connection stopped reading because its forwards'
    /// distributor stream was over the forward limit.
    pub forward_paused: Counter,
    /// Connections closed after CONNECT, by why they closed.
    pub disconnects: Family<ReasonLabel, Counter>,
}

/// Label values of `throng_handler_disconnects_total`.
pub const DISCONNECT_REASONS: [&str; 6] = [
    "client_disconnect",
    "keepalive_timeout",
    "protocol_error",
    "connection_lost",
    "taken_over",
    "server_shutdown",
];

impl HandlerMetrics {
    pub fn register(&self, registry: &mut Registry) {
        // Every drop reason and session state is exported from the start, at 0, so
        // rates and alerts have a series before the first drop.
        for reason in DropReason::ALL {
            drop(self.messages_dropped.get_or_create(&ReasonLabel {
                reason: reason.label(),
            }));
        }
        for state in ["online", "offline"] {
            self.sessions(state);
        }
        for reason in DISCONNECT_REASONS {
            drop(self.disconnects.get_or_create(&ReasonLabel { reason }));
        }
        registry.register(
            "throng_handler_connections",
            "Open client connections",
            self.connections.clone(),
        );
        registry.register(
            "throng_handler_connects",
            "CONNECT attempts by result",
            self.connects.clone(),
        );
        registry.register(
            "throng_messages_received",
            "PUBLISH packets received from clients",
            self.messages_received.clone(),
        );
        registry.register(
            "throng_messages_sent",
            "PUBLISH packets sent to clients",
            self.messages_sent.clone(),
        );
        registry.register(
            "throng_messages_dropped",
            "Messages not delivered, by reason",
            self.messages_dropped.clone(),
        );
        registry.register(
            "throng_retained_messages",
            "Retained messages held",
            self.retained_messages.clone(),
        );
        registry.register(
            "throng_sessions",
            "Sessions by state (online, offline)",
            self.sessions.clone(),
        );
        registry.register(
            "throng_subscriptions",
            "Subscriptions held across sessions",
            self.subscriptions.clone(),
        );
        registry.register(
            "throng_handler_forwarded",
            "Device publishes forwarded to a distributor for other handlers",
            self.forwarded.clone(),
        );
        registry.register(
            "throng_handler_distributors",
            "Distributors this handler is attached to",
            self.distributors.clone(),
        );
        registry.register(
            "throng_handler_forward_paused",
            "Times a publishing connection stopped reading until a distributor stream drained",
            self.forward_paused.clone(),
        );
        registry.register(
            "throng_handler_disconnects",
            "Connections closed after CONNECT, by reason",
            self.disconnects.clone(),
        );
    }

    /// Counts a closed connection; `reason` is one of `DISCONNECT_REASONS`.
    pub fn disconnected(&self, reason: &'static str) {
        self.disconnects
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub fn connect(&self, result: &'static str) {
        self.connects.get_or_create(&ResultLabel { result }).inc();
    }

    pub fn dropped(&self, reason: DropReason) {
        self.messages_dropped
            .get_or_create(&ReasonLabel {
                reason: reason.label(),
            })
            .inc();
    }

    pub fn sessions(&self, state: &'static str) -> Gauge {
        self.sessions.get_or_create(&StateLabel { state }).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_drop_reason_is_exported_at_zero() {
        let metrics = HandlerMetrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for reason in DropReason::ALL {
            let sample = format!(
                "throng_messages_dropped_total{{reason=\"{}\"}} 0",
                reason.label()
            );
            assert!(text.contains(&sample), "missing {sample} in\n{text}");
        }
        assert!(text.contains("throng_sessions{state=\"offline\"} 0"));
        for reason in DISCONNECT_REASONS {
            let sample = format!("throng_handler_disconnects_total{{reason=\"{reason}\"}} 0");
            assert!(text.contains(&sample), "missing {sample} in\n{text}");
        }
    }
}
