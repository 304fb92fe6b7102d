//! The distributor's Prometheus metrics. Every label value is exported at 0 from
//! the start so alerts and rates have a series before the first event.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// What a routed message was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// A device publish forwarded by a handler to the other handlers.
    Device,
    /// A server-to-device message for one client id.
    Client,
    /// A server-to-device message for every subscriber of a topic.
    Topic,
}

impl RouteKind {
    const ALL: [RouteKind; 3] = [RouteKind::Device, RouteKind::Client, RouteKind::Topic];

    fn label(self) -> &'static str {
        match self {
            RouteKind::Device => "device",
            RouteKind::Client => "client",
            RouteKind::Topic => "topic",
        }
    }
}

/// The final outcome of a server-to-device message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeLabel {
    Accepted,
    Queued,
    Undeliverable,
    Rejected,
    /// Not delivered yet (owner handler not attached, or no ack in time); retried.
    Retry,
}

impl OutcomeLabel {
    const ALL: [OutcomeLabel; 5] = [
        OutcomeLabel::Accepted,
        OutcomeLabel::Queued,
        OutcomeLabel::Undeliverable,
        OutcomeLabel::Rejected,
        OutcomeLabel::Retry,
    ];

    fn label(self) -> &'static str {
        match self {
            OutcomeLabel::Accepted => "accepted",
            OutcomeLabel::Queued => "queued",
            OutcomeLabel::Undeliverable => "undeliverable",
            OutcomeLabel::Rejected => "rejected",
            OutcomeLabel::Retry => "retry",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    outcome: &'static str,
}

#[derive(Clone)]
pub struct DistributorMetrics {
    routed: Family<KindLabel, Counter>,
    outcomes: Family<ResultLabel, Counter>,
    /// Device publishes not passed on because a handler's channel was full.
    pub forward_dropped: Counter,
    /// Stream entries not yet read by the consumer group.
    pub queue_lag: Gauge,
    /// Stream entries read but not acknowledged.
    pub pending: Gauge,
    pub dead_letters: Counter,
    /// Handlers attached to this distributor.
    pub handlers: Gauge,
    /// Seconds from a message entering the cluster to the handler's accept.
    pub delivery_latency: Histogram,
}

impl Default for DistributorMetrics {
    fn default() -> Self {
        DistributorMetrics {
            routed: Family::default(),
            outcomes: Family::default(),
            forward_dropped: Counter::default(),
            queue_lag: Gauge::default(),
            pending: Gauge::default(),
            dead_letters: Counter::default(),
            handlers: Gauge::default(),
            delivery_latency: Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ]),
        }
    }
}

impl DistributorMetrics {
    pub fn register(&self, registry: &mut Registry) {
        for kind in RouteKind::ALL {
            drop(self.routed.get_or_create(&KindLabel { kind: kind.label() }));
        }
        for outcome in OutcomeLabel::ALL {
            drop(self.outcomes.get_or_create(&ResultLabel {
                outcome: outcome.label(),
            }));
        }
        registry.register(
            "throng_distributor_routed",
            "Messages routed to handlers, by kind (device, client, topic)",
            self.routed.clone(),
        );
        registry.register(
            "throng_distributor_outcomes",
            "Server-to-device delivery attempts by outcome",
            self.outcomes.clone(),
        );
        registry.register(
            "throng_distributor_forward_dropped",
            "Device publishes not passed on: the target handler's channel was full",
            self.forward_dropped.clone(),
        );
        registry.register(
            "throng_distributor_queue_lag",
            "Downlink stream entries not yet read by the consumer group",
            self.queue_lag.clone(),
        );
        registry.register(
            "throng_distributor_pending",
            "Downlink stream entries read but not yet acknowledged (waiting for a handler)",
            self.pending.clone(),
        );
        registry.register(
            "throng_distributor_dead_letters",
            "Downlink entries moved to the dead-letter stream",
            self.dead_letters.clone(),
        );
        registry.register(
            "throng_distributor_handlers",
            "Handlers attached to this distributor",
            self.handlers.clone(),
        );
        registry.register(
            "throng_distributor_delivery_latency_seconds",
            "Time from a message entering the cluster to the handler accepting it",
            self.delivery_latency.clone(),
        );
    }

    pub fn routed(&self, kind: RouteKind) {
        self.routed
            .get_or_create(&KindLabel { kind: kind.label() })
            .inc();
    }

    pub fn outcome(&self, outcome: OutcomeLabel) {
        self.outcomes
            .get_or_create(&ResultLabel {
                outcome: outcome.label(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_and_outcome_is_exported_at_zero() {
        let metrics = DistributorMetrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for sample in [
            "throng_distributor_routed_total{kind=\"device\"} 0",
            "throng_distributor_routed_total{kind=\"client\"} 0",
            "throng_distributor_routed_total{kind=\"topic\"} 0",
            "throng_distributor_outcomes_total{outcome=\"retry\"} 0",
            "throng_distributor_dead_letters_total 0",
            "throng_distributor_handlers 0",
            "throng_distributor_queue_lag 0",
            "throng_distributor_pending 0",
        ] {
            assert!(text.contains(sample), "missing {sample} in\n{text}");
        }
    }
}
