//! The admin HTTP port every throng service exposes: `/metrics` in Prometheus text
//! format, `/livez` (the process answers) and `/readyz` (the service wants traffic).
//! Services add their own read-only endpoints by passing extra routes.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// Answers whether the service is ready for traffic.
pub type ReadyCheck = Arc<dyn Fn() -> bool + Send + Sync>;

#[derive(Clone)]
struct AdminState {
    registry: Arc<Registry>,
    ready: ReadyCheck,
}

/// Builds the admin router; `extra` is merged in for service-specific endpoints.
pub fn router(registry: Arc<Registry>, ready: ReadyCheck, extra: Router) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(AdminState { registry, ready })
        .merge(extra)
}

/// Serves the admin router on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Serves the admin router in its own task until `shutdown` completes; a failure
/// is logged (the service goes on without its admin port).
pub fn spawn(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(err) = serve(listener, router, shutdown).await {
            tracing::error!(error = %err, "admin server failed");
        }
    })
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(err) => {
            tracing::error!(error = %err, "metrics encoding failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

async fn readyz(State(state): State<AdminState>) -> Response {
    if (state.ready)() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get_path(addr: std::net::SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn serves_metrics_and_probes() {
        let mut registry = Registry::default();
        let counter = Counter::<u64>::default();
        registry.register("throng_test_events", "events seen", counter.clone());
        counter.inc_by(3);
        let ready = Arc::new(AtomicBool::new(false));
        let flag = ready.clone();
        let app = router(
            Arc::new(registry),
            Arc::new(move || flag.load(Ordering::Relaxed)),
            Router::new(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, app, async move {
            let _ = stopped.await;
        }));

        let metrics = get_path(addr, "/metrics").await;
        assert!(metrics.contains("throng_test_events_total 3"), "{metrics}");
        assert!(get_path(addr, "/livez").await.starts_with("HTTP/1.1 200"));
        assert!(get_path(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
        ready.store(true, Ordering::Relaxed);
        assert!(get_path(addr, "/readyz").await.starts_with("HTTP/1.1 200"));

        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
