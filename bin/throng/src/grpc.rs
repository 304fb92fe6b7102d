//! The gRPC listener: the standard health service (`grpc.health.v1.Health`) for
//! load balancers and Kubernetes probes, and where a distributor runs in the
//! process, its attach stream and the ingest API.

use std::future::Future;

use throng_distributor::{AttachService, Distributor, IngestService};
use throng_proto::v1::distributor_server::DistributorServer;
use throng_proto::v1::ingest_server::IngestServer;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

/// The distributor's services.
pub struct Services {
    attach: DistributorServer<AttachService>,
    ingest: IngestServer<IngestService>,
}

impl Services {
    pub fn of(distributor: &Distributor) -> Services {
        Services {
            attach: distributor.attach_service(),
            ingest: distributor.ingest_service(),
        }
    }
}

pub async fn serve(
    listener: TcpListener,
    services: Option<Services>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    // Nagle would hold each small response (an ingest result, an interest update)
    // for the peer's delayed ACK: ~40 ms per unary call.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut builder = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)));
    let router = builder.add_service(health);
    match services {
        Some(services) => {
            router
                .add_service(services.attach)
                .add_service(services.ingest)
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await?
        }
        None => {
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await?
        }
    }
    Ok(())
}
