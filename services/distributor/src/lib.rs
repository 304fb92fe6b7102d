//! The distributor (the paper's MSBroker + Message Distributor): every handler
//! attaches to every distributor replica; the distributor keeps the cluster's
//! subscription index from their deltas and routes device publishes between
//! handlers, server-to-device messages from the ingest API and the downlink
//! stream to the handlers that own their targets, and retained messages to all.
//!
//! - `index`: which handler subscribes to what (`ClusterIndex`).
//! - `hub`: attached handlers, routing and acks.
//! - `interest`: the interest-set changes the hub sends handlers.
//! - `retained`: the cluster's retained messages (newest wins, tombstones).
//! - `attach`: the `Distributor.Attach` gRPC service.
//! - `ingest`: the `Ingest` gRPC service.
//! - `downlink`: the Redis Streams consumer of the upstream queue.
//! - `metrics`: Prometheus metrics.

mod attach;
pub mod downlink;
pub mod hub;
pub mod index;
mod ingest;
mod interest;
mod metrics;
mod retained;

use std::sync::Arc;

use prometheus_client::registry::Registry;
use throng_proto::v1::distributor_server::DistributorServer;
use throng_proto::v1::ingest_server::IngestServer;
use throng_ring::Ring;
use tokio::sync::watch;

pub use attach::AttachService;
pub use hub::{Hub, HubConfig, Outcome, Target};
pub use ingest::IngestService;
pub use metrics::DistributorMetrics;

/// Largest gRPC message accepted or sent (a batch of deliveries, a large payload).
pub const MAX_GRPC_MESSAGE: usize = 16 * 1024 * 1024;

/// One distributor: the hub and the gRPC services in front of it.
pub struct Distributor {
    id: String,
    hub: Arc<Hub>,
}

impl Distributor {
    /// Builds the hub and registers the metrics. `handler_ring` is the handler
    /// membership (the agent's ring); client-targeted messages go to its owner.
    pub fn start(
        id: impl Into<String>,
        config: HubConfig,
        handler_ring: watch::Receiver<Arc<Ring>>,
        registry: &mut Registry,
    ) -> Distributor {
        let metrics = DistributorMetrics::default();
        metrics.register(registry);
        Distributor {
            id: id.into(),
            hub: Hub::new(config, metrics, handler_ring),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The attach service handlers connect to.
    pub fn attach_service(&self) -> DistributorServer<AttachService> {
        DistributorServer::new(AttachService::new(self.hub.clone()))
            .max_decoding_message_size(MAX_GRPC_MESSAGE)
            .max_encoding_message_size(MAX_GRPC_MESSAGE)
    }

    /// The ingest service backends publish through.
    pub fn ingest_service(&self) -> IngestServer<IngestService> {
        let prefix = format!("{}-{}", self.id, hub::unix_ms());
        IngestServer::new(IngestService::new(self.hub.clone(), prefix))
            .max_decoding_message_size(MAX_GRPC_MESSAGE)
            .max_encoding_message_size(MAX_GRPC_MESSAGE)
    }
}
