//! The gRPC listener of `throng dev`: today the standard gRPC health service
//! (`grpc.health.v1.Health`), so load balancers and Kubernetes gRPC probes can check
//! the process; the ingest, trbroker and history APIs join it as they are built.

use std::future::Future;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::ServingStatus;

pub async fn serve(
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    tonic::transport::Server::builder()
        .add_service(health)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await?;
    Ok(())
}
