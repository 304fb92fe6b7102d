//! The agent's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandlerLabel {
    pub handler: String,
}

#[derive(Clone)]
pub struct AgentMetrics {
    /// Connections the agent holds: reading CONNECT, or proxied.
    pub connections: Gauge,
    pub accepts: Family<ResultLabel, Counter>,
    pub handoff_seconds: Histogram,
    /// Hand-offs done in the accept loop, the socket never registered with tokio.
    pub fast_handoffs: Counter,
    pub routed: Family<HandlerLabel, Counter>,
    pub handoff_failures: Family<HandlerLabel, Counter>,
    pub ring_members: Gauge,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        AgentMetrics {
            connections: Gauge::default(),
            accepts: Family::default(),
            // 50 µs .. ~3 s
            handoff_seconds: Histogram::new(exponential_buckets(0.00005, 2.0, 16)),
            fast_handoffs: Counter::default(),
            routed: Family::default(),
            handoff_failures: Family::default(),
            ring_members: Gauge::default(),
        }
    }
}

impl AgentMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "throng_agent_connections",
            "Device connections held by the agent (reading CONNECT or proxied)",
            self.connections.clone(),
        );
        registry.register(
            "throng_agent_accepts",
            "Accepted TCP connections by admission result",
            self.accepts.clone(),
        );
        registry.register(
            "throng_agent_handoff_seconds",
            "Time from a complete CONNECT to the handler taking the connection",
            self.handoff_seconds.clone(),
        );
        registry.register(
            "throng_agent_fast_handoffs",
            "Hand-offs done as soon as the connection was accepted (CONNECT already there, link free)",
            self.fast_handoffs.clone(),
        );
        registry.register(
            "throng_agent_routed",
            "Connections handed to each handler",
            self.routed.clone(),
        );
        registry.register(
            "throng_agent_handoff_failures",
            "Hand-off attempts that failed, by handler (the next one in ring order was tried)",
            self.handoff_failures.clone(),
        );
        registry.register(
            "throng_agent_ring_members",
            "Handlers in the agent's ring",
            self.ring_members.clone(),
        );
    }

    pub fn accept(&self, result: &'static str) {
        self.accepts.get_or_create(&ResultLabel { result }).inc();
    }
}

impl AgentMetrics {
    pub fn routed_to(&self, handler: &str) {
        self.routed
            .get_or_create(&HandlerLabel {
                handler: handler.to_string(),
            })
            .inc();
    }

    pub fn handoff_failed(&self, handler: &str) {
        self.handoff_failures
            .get_or_create(&HandlerLabel {
                handler: handler.to_string(),
            })
            .inc();
    }
}
