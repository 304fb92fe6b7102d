//! The connection agent (the paper's CA): admits device connections, reads their
//! CONNECT, and hands each to the handler that owns its client id on the ring.
//! `Agent::start` builds it; `run` serves it on the given listeners until shutdown.

mod accept;
pub mod admission;
pub mod blocklist;
mod config;
mod fast;
mod first_packet;
mod handoff;
mod metrics;
mod prefixed;
mod table;
pub mod tls;
mod tls_proxy;

use std::future::Future;
use std::sync::Arc;

use axum::Json;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use prometheus_client::registry::Registry;
use throng_relay::{Relay, RelayConfig};
use throng_ring::{Member, Ring};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{AgentConfig, HandoffMode};

use admission::{Admission, AdmissionConfig};
use blocklist::BlocklistHandle;
use handoff::{FdHandoff, Handoff, ProxyHandoff};
use metrics::AgentMetrics;
use table::ConnTable;
use tls::TlsConfigWatcher;

/// State shared by every connection of one agent.
pub(crate) struct Core {
    config: AgentConfig,
    metrics: AgentMetrics,
    admission: Admission,
    blocklist: Option<BlocklistHandle>,
    table: Arc<ConnTable>,
    ring: watch::Receiver<Arc<Ring>>,
    handoff: Handoff,
    relay: Relay,
    /// Permits for connections in the CONNECT phase.
    pending: Arc<tokio::sync::Semaphore>,
    stop: CancellationToken,
    tracker: TaskTracker,
}

/// A running agent.
pub struct Agent {
    core: Arc<Core>,
}

impl Agent {
    /// Validates the config, loads the blocklist, starts the relay and registers
    /// metrics. `ring` is the handler membership (static or discovered).
    pub fn start(
        config: AgentConfig,
        ring: watch::Receiver<Arc<Ring>>,
        registry: &mut Registry,
    ) -> anyhow::Result<Agent> {
        config.validate().map_err(anyhow::Error::msg)?;
        let metrics = AgentMetrics::default();
        metrics.register(registry);
        let admission = Admission::new(AdmissionConfig {
            max_connections: config.max_connections,
            max_connections_per_ip: config.max_connections_per_ip,
            per_ip_rate: config.per_ip_rate,
            global_rate: config.global_rate,
        });
        let blocklist = match &config.blocklist_file {
            Some(path) => {
                let (handle, _task) =
                    BlocklistHandle::watch(path.clone(), blocklist::DEFAULT_POLL_INTERVAL)?;
                Some(handle)
            }
            None => None,
        };
        let table = Arc::new(ConnTable::default());
        let on_close = {
            let table = table.clone();
            let connections = metrics.connections.clone();
            Arc::new(move |pair: throng_relay::PairId, _reason| {
                table.pair_closed(pair.get());
                connections.dec();
            })
        };
        let relay = Relay::start(
            config.relay_threads,
            RelayConfig {
                on_close: Some(on_close),
                ..RelayConfig::default()
            },
        )?;
        let handoff = match config.handoff {
            HandoffMode::Proxy => Handoff::Proxy(ProxyHandoff {
                relay: relay.clone(),
                timeout: config.handoff_timeout,
                table: table.clone(),
            }),
            HandoffMode::Fd => Handoff::Fd(FdHandoff::new(
                config.fd_handoff_dir.clone().expect("validated"),
                config.handoff_timeout,
            )),
        };
        spawn_ring_gauge(ring.clone(), metrics.ring_members.clone());
        let config_pending = config.max_pending_connects;
        Ok(Agent {
            core: Arc::new(Core {
                config,
                metrics,
                admission,
                blocklist,
                table,
                ring,
                handoff,
                relay,
                pending: Arc::new(tokio::sync::Semaphore::new(config_pending)),
                stop: CancellationToken::new(),
                tracker: TaskTracker::new(),
            }),
        })
    }

    /// Accepts MQTT connections on `listener` until shutdown.
    pub fn serve(&self, listener: TcpListener) -> tokio::task::JoinHandle<()> {
        tokio::spawn(accept::accept_loop(listener, self.core.clone(), None))
    }

    /// Accepts MQTT over TLS on `listener` until shutdown.
    pub fn serve_tls(
        &self,
        listener: TcpListener,
        tls: TlsConfigWatcher,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(accept::accept_loop(listener, self.core.clone(), Some(tls)))
    }

    /// The handler that owns `client_id` now.
    pub fn owner(&self, client_id: &str) -> Option<Member> {
        self.core.ring.borrow().owner(client_id).cloned()
    }

    /// Ready when the ring has members to route to.
    pub fn ready(&self) -> bool {
        !self.core.ring.borrow().is_empty()
    }

    /// `ready` as a check the admin server can hold.
    pub fn ready_check(&self) -> impl Fn() -> bool + Send + Sync + 'static {
        let ring = self.core.ring.clone();
        move || !ring.borrow().is_empty()
    }

    /// Connections the agent holds now (reading CONNECT or relayed).
    pub fn connections(&self) -> usize {
        self.core.table.len()
    }

    /// Admin endpoints: `GET /v1/owner?client_id=X` (the owning handler) and
    /// `GET /v1/connections` (live connections per handler, from the conn table).
    pub fn admin_routes(&self) -> axum::Router {
        let ring = self.core.ring.clone();
        let table = self.core.table.clone();
        axum::Router::new()
            .route(
                "/v1/owner",
                axum::routing::get(move |query: Query<OwnerQuery>| owner(ring.clone(), query)),
            )
            .route(
                "/v1/connections",
                axum::routing::get(move || {
                    let table = table.clone();
                    async move {
                        let by_handler: std::collections::BTreeMap<String, usize> = table
                            .by_handler()
                            .into_iter()
                            .map(|(handler, n)| (handler.to_string(), n))
                            .collect();
                        Json(serde_json::json!({ "total": table.len(), "by_handler": by_handler }))
                    }
                }),
            )
    }

    /// Stops accepting; relayed connections get the grace period to end on their own,
    /// then are closed.
    pub async fn shutdown(&self) {
        let core = &self.core;
        core.stop.cancel();
        core.tracker.close();
        let deadline = tokio::time::Instant::now() + core.config.shutdown_grace;
        while !core.relay.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let relay = core.relay.clone();
        let closed = tokio::task::spawn_blocking(move || relay.close_all())
            .await
            .unwrap_or(0);
        if closed > 0 {
            tracing::info!(
                closed,
                "closed relayed connections at the end of the grace period"
            );
        }
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), core.tracker.wait()).await;
    }
}

#[derive(serde::Deserialize)]
pub struct OwnerQuery {
    client_id: String,
}

#[derive(serde::Serialize)]
struct OwnerAnswer {
    client_id: String,
    handler: String,
    addr: String,
}

async fn owner(ring: watch::Receiver<Arc<Ring>>, Query(query): Query<OwnerQuery>) -> Response {
    let ring = ring.borrow().clone();
    match ring.owner(&query.client_id) {
        Some(member) => Json(OwnerAnswer {
            handler: member.id.to_string(),
            addr: member.addr.to_string(),
            client_id: query.client_id,
        })
        .into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "no handlers in the ring\n").into_response(),
    }
}

fn spawn_ring_gauge(
    mut ring: watch::Receiver<Arc<Ring>>,
    gauge: prometheus_client::metrics::gauge::Gauge,
) {
    tokio::spawn(async move {
        loop {
            let members = ring.borrow_and_update().len();
            gauge.set(members as i64);
            tracing::info!(members, "handler ring updated");
            if ring.changed().await.is_err() {
                return;
            }
        }
    });
}

/// Listeners a standalone agent serves.
pub struct AgentListeners {
    pub mqtt: Option<TcpListener>,
    pub mqtts: Option<(TcpListener, TlsConfigWatcher)>,
    pub admin: Option<TcpListener>,
}

/// Runs one agent until `shutdown` completes.
pub async fn run(
    config: AgentConfig,
    listeners: AgentListeners,
    ring: watch::Receiver<Arc<Ring>>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut registry = Registry::default();
    let agent = Agent::start(config, ring, &mut registry)?;
    if let Some(listener) = listeners.mqtt {
        tracing::info!(addr = %listener.local_addr()?, "mqtt listening");
        agent.serve(listener);
    }
    if let Some((listener, tls)) = listeners.mqtts {
        tracing::info!(addr = %listener.local_addr()?, "mqtts listening");
        tls.watch(std::time::Duration::from_secs(5));
        agent.serve_tls(listener, tls);
    }
    let admin_stop = CancellationToken::new();
    if let Some(listener) = listeners.admin {
        tracing::info!(addr = %listener.local_addr()?, "admin listening");
        let router = throng_admin::router(
            Arc::new(registry),
            Arc::new(agent.ready_check()),
            agent.admin_routes(),
        );
        throng_admin::spawn(listener, router, admin_stop.clone().cancelled_owned());
    }
    shutdown.await;
    tracing::info!("shutting down");
    agent.shutdown().await;
    admin_stop.cancel();
    Ok(())
}
