//! The message handler (the paper's MH): a complete MQTT 3.1, 3.1.1 and 5.0 server
//! for the connections it owns. `Handler::start` builds the engine; `run` serves it
//! on the listeners it is given until `shutdown` completes.

mod broker;
mod cluster;
mod config;
mod connection;
mod fd_listener;
mod listener;
mod message;
mod metrics;
mod security;
mod session;

use std::future::Future;
use std::sync::Arc;

use prometheus_client::registry::Registry;
use throng_codec::reason;
use throng_ring::Ring;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::HandlerConfig;
pub use connection::ConnectMeta;
pub use listener::{ListenerKind, bind_listener};
pub use metrics::HandlerMetrics;

use broker::{Broker, Uplink};
use security::Security;
use throng_downlink::{UplinkConfig, UplinkWriter};

/// A running handler engine: sessions, subscriptions, retained messages.
pub struct Handler {
    broker: Arc<Broker>,
    permits: Arc<Semaphore>,
    tracker: TaskTracker,
    stop: CancellationToken,
}

impl Handler {
    /// Validates the config, loads password and ACL files and registers metrics.
    pub fn start(config: HandlerConfig, registry: &mut Registry) -> anyhow::Result<Handler> {
        let metrics = HandlerMetrics::default();
        metrics.register(registry);
        Handler::with_metrics(config, metrics)
    }

    /// Like `start`, reporting into metrics registered elsewhere: several handlers in
    /// one process (`throng dev`) add up into one set. With `uplink_filters` and a
    /// `redis_url` it starts the uplink writer, so it must run inside a tokio runtime.
    pub fn with_metrics(config: HandlerConfig, metrics: HandlerMetrics) -> anyhow::Result<Handler> {
        config.validate().map_err(anyhow::Error::msg)?;
        let security = Security::load(&config)?;
        let permits = Arc::new(Semaphore::new(config.max_connections));
        let uplink = match &config.redis_url {
            Some(url) if !config.uplink_filters.is_empty() => {
                let client = redis::Client::open(url.as_str())
                    .map_err(|err| anyhow::anyhow!("redis url {url:?}: {err}"))?;
                Some(Uplink {
                    filters: config.uplink_filters.clone(),
                    writer: UplinkWriter::spawn(client, UplinkConfig::default()),
                })
            }
            _ => None,
        };
        Ok(Handler {
            broker: Broker::new(config, metrics, security, uplink),
            permits,
            tracker: TaskTracker::new(),
            stop: CancellationToken::new(),
        })
    }

    /// Accepts connections on `listener` until shutdown.
    pub fn serve(&self, listener: TcpListener, kind: ListenerKind) -> tokio::task::JoinHandle<()> {
        tokio::spawn(listener::accept_loop(
            listener,
            kind,
            self.broker.clone(),
            self.permits.clone(),
            self.tracker.clone(),
            self.stop.clone(),
        ))
    }

    /// Receives `fd` hand-offs (sockets passed by agents over Unix connections
    /// accepted on `listener`) until shutdown.
    pub fn serve_fd_handoff(&self, listener: UnixListener) -> tokio::task::JoinHandle<()> {
        tokio::spawn(fd_listener::accept_loop(
            listener,
            self.broker.clone(),
            self.permits.clone(),
            self.tracker.clone(),
            self.stop.clone(),
        ))
    }

    /// Attaches to every distributor in `distributors` (and to members joining
    /// later) until shutdown: subscriptions are reported, device publishes other
    /// handlers need are forwarded, and deliveries are served.
    pub fn join_cluster(&self, distributors: watch::Receiver<Arc<Ring>>) {
        cluster::spawn_supervisor(
            Arc::downgrade(&self.broker),
            distributors,
            self.stop.clone(),
        );
    }

    /// Distributors this handler currently has an attach stream to.
    pub fn attached_distributors(&self) -> usize {
        self.broker.cluster.attached()
    }

    /// Device publishes queued towards the distributors, all streams together.
    pub fn forward_queued(&self) -> usize {
        self.broker.cluster.forward_queued()
    }

    pub fn id(&self) -> &str {
        &self.broker.config.id
    }

    pub fn session_count(&self) -> usize {
        self.broker.session_count()
    }

    /// Stops accepting, tells every client the server is going away, and waits up to
    /// the grace period for connections to close.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.broker.kick_all(reason::SERVER_SHUTTING_DOWN);
        self.tracker.close();
        let grace = self.broker.config.shutdown_grace;
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = self.tracker.len(),
                "connections still open after the grace period"
            );
        }
    }
}

/// Listeners a standalone handler serves.
pub struct HandlerListeners {
    pub mqtt: Option<TcpListener>,
    pub handoff: Option<TcpListener>,
    /// Unix socket where agents on the same host or pod pass devices' sockets.
    pub fd_handoff: Option<UnixListener>,
    pub admin: Option<TcpListener>,
}

/// Where a standalone handler finds its distributors (none: it serves alone).
pub type Distributors = Option<watch::Receiver<Arc<Ring>>>;

/// Runs one handler until `shutdown` completes.
pub async fn run(
    config: HandlerConfig,
    listeners: HandlerListeners,
    distributors: Distributors,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut registry = Registry::default();
    let handler = Handler::start(config, &mut registry)?;
    if let Some(distributors) = distributors {
        handler.join_cluster(distributors);
    }
    if let Some(listener) = listeners.mqtt {
        tracing::info!(addr = %listener.local_addr()?, handler = handler.id(), "mqtt listening");
        handler.serve(listener, ListenerKind::Mqtt);
    }
    if let Some(listener) = listeners.handoff {
        tracing::info!(addr = %listener.local_addr()?, handler = handler.id(), "hand-off listening");
        handler.serve(listener, ListenerKind::Handoff);
    }
    if let Some(listener) = listeners.fd_handoff {
        let path = listener.local_addr()?;
        let path = path.as_pathname().map(|p| p.display().to_string());
        tracing::info!(
            path = path.as_deref().unwrap_or("unnamed"),
            handler = handler.id(),
            "fd hand-off listening"
        );
        handler.serve_fd_handoff(listener);
    }
    let admin_stop = CancellationToken::new();
    if let Some(listener) = listeners.admin {
        tracing::info!(addr = %listener.local_addr()?, "admin listening");
        let router =
            throng_admin::router(Arc::new(registry), Arc::new(|| true), Default::default());
        throng_admin::spawn(listener, router, admin_stop.clone().cancelled_owned());
    }
    shutdown.await;
    tracing::info!("shutting down");
    handler.shutdown().await;
    admin_stop.cancel();
    Ok(())
}
