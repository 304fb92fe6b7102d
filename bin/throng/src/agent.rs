//! `throng agent`: flags, membership source (static list or Kubernetes
//! EndpointSlices) and the listeners of one connection agent.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use throng_agent::tls::TlsConfigWatcher;
use throng_agent::{AgentConfig, AgentListeners, HandoffMode};
use throng_discovery::Membership;
use throng_ring::Ring;
use tokio::sync::watch;

use crate::cli::bind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HandoffArg {
    Proxy,
    Fd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DiscoveryArg {
    /// The `--handlers` list.
    Static,
    /// EndpointSlices of the handlers' headless Service.
    Kube,
}

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// MQTT listener for devices.
    #[arg(long, env = "THRONG_MQTT_LISTEN", default_value = "0.0.0.0:1883")]
    pub mqtt_listen: SocketAddr,
    /// MQTT over TLS listener (needs --tls-cert and --tls-key; always proxy hand-off).
    #[arg(long, env = "THRONG_MQTTS_LISTEN", requires_all = ["tls_cert", "tls_key"])]
    pub mqtts_listen: Option<SocketAddr>,
    /// PEM certificate chain for --mqtts-listen; reloaded when the file changes.
    #[arg(long, env = "THRONG_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --mqtts-listen; reloaded when the file changes.
    #[arg(long, env = "THRONG_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Admin HTTP listener: /metrics, /livez, /readyz, /v1/owner, /v1/connections.
    #[arg(long, env = "THRONG_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Seconds the kernel holds a new plain-TCP connection until the device has
    /// sent something (TCP_DEFER_ACCEPT; 0: off). The CONNECT is then almost always there
    /// at accept and handed off at once; a device that sends nothing reaches the
    /// agent (and its --connect-timeout) only after these seconds.
    #[arg(long, env = "THRONG_DEFER_ACCEPT", default_value_t = 5)]
    pub defer_accept: u32,
    #[command(flatten)]
    pub membership: MembershipArgs,
    #[command(flatten)]
    pub routing: RoutingFlags,
}

/// Where the handler membership comes from.
#[derive(Args, Debug)]
pub struct MembershipArgs {
    #[arg(long, env = "THRONG_DISCOVERY", value_enum, default_value = "static")]
    pub discovery: DiscoveryArg,
    /// Static membership: `id=host:port,…` (the handlers' hand-off listeners).
    #[arg(long, env = "THRONG_HANDLERS")]
    pub handlers: Option<String>,
    /// Namespace of the handler Service (kube discovery).
    #[arg(long, env = "THRONG_KUBE_NAMESPACE", default_value = "default")]
    pub kube_namespace: String,
    /// Headless Service of the handler StatefulSet (kube discovery).
    #[arg(long, env = "THRONG_KUBE_SERVICE", default_value = "throng-handler")]
    pub kube_service: String,
    /// Name of the hand-off port in the EndpointSlices (kube discovery).
    #[arg(long, env = "THRONG_KUBE_PORT_NAME", default_value = "handoff")]
    pub kube_port_name: String,
    /// Hand-off port when the EndpointSlices name none (kube discovery).
    #[arg(long, env = "THRONG_KUBE_HANDOFF_PORT", default_value_t = 1884)]
    pub kube_handoff_port: u16,
}

/// Admission and hand-off settings.
#[derive(Args, Debug)]
pub struct RoutingFlags {
    /// How connections reach handlers: proxy (TCP + PROXY v2) or fd (SCM_RIGHTS).
    #[arg(long, env = "THRONG_HANDOFF", value_enum, default_value = "proxy")]
    pub handoff: HandoffArg,
    /// Directory of the handlers' fd sockets, `<dir>/<handler id>.sock` (fd hand-off).
    #[arg(long, env = "THRONG_FD_HANDOFF_DIR")]
    pub fd_handoff_dir: Option<PathBuf>,
    /// Expect a PROXY v1/v2 header from the load balancer first.
    #[arg(long, env = "THRONG_PROXY_PROTOCOL")]
    pub proxy_protocol: bool,
    /// Time a connection has to send CONNECT.
    #[arg(long, env = "THRONG_CONNECT_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// Largest CONNECT accepted, bytes.
    #[arg(long, env = "THRONG_MAX_CONNECT_SIZE", default_value_t = 64 * 1024)]
    pub max_connect_size: usize,
    /// Time to reach one handler before trying the next in ring order.
    #[arg(long, env = "THRONG_HANDOFF_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub handoff_timeout: Duration,
    /// Connections admitted at once.
    #[arg(long, env = "THRONG_MAX_CONNECTIONS", default_value_t = 1_000_000)]
    pub max_connections: usize,
    /// Connections at once that have not finished their CONNECT (refused ones too).
    #[arg(long, env = "THRONG_MAX_PENDING_CONNECTS", default_value_t = 65_536)]
    pub max_pending_connects: usize,
    /// Connections admitted at once from one address (IPv6: one /64).
    #[arg(
        long,
        env = "THRONG_MAX_CONNECTIONS_PER_IP",
        default_value_t = 1_000_000
    )]
    pub max_connections_per_ip: usize,
    /// Connects per second from one address (with --per-ip-burst).
    #[arg(long, env = "THRONG_PER_IP_RATE")]
    pub per_ip_rate: Option<f64>,
    #[arg(long, env = "THRONG_PER_IP_BURST", default_value_t = 10)]
    pub per_ip_burst: u32,
    /// Connects per second in total (with --global-burst).
    #[arg(long, env = "THRONG_GLOBAL_RATE")]
    pub global_rate: Option<f64>,
    #[arg(long, env = "THRONG_GLOBAL_BURST", default_value_t = 1000)]
    pub global_burst: u32,
    /// Blocked addresses and CIDR ranges, one per line; reloaded when the file changes.
    #[arg(long, env = "THRONG_BLOCKLIST_FILE")]
    pub blocklist_file: Option<PathBuf>,
    /// Threads relaying proxied connections.
    #[arg(long, env = "THRONG_RELAY_THREADS", default_value_t = 2)]
    pub relay_threads: usize,
    /// How long live connections are kept after SIGTERM.
    #[arg(long, env = "THRONG_SHUTDOWN_GRACE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
}

impl RoutingFlags {
    pub fn to_config(&self) -> AgentConfig {
        AgentConfig {
            handoff: match self.handoff {
                HandoffArg::Proxy => HandoffMode::Proxy,
                HandoffArg::Fd => HandoffMode::Fd,
            },
            fd_handoff_dir: self.fd_handoff_dir.clone(),
            proxy_protocol: self.proxy_protocol,
            connect_timeout: self.connect_timeout,
            max_connect_size: self.max_connect_size,
            handoff_timeout: self.handoff_timeout,
            max_connections: self.max_connections,
            max_pending_connects: self.max_pending_connects,
            max_connections_per_ip: self.max_connections_per_ip,
            per_ip_rate: self.per_ip_rate.map(|rate| (rate, self.per_ip_burst)),
            global_rate: self.global_rate.map(|rate| (rate, self.global_burst)),
            blocklist_file: self.blocklist_file.clone(),
            relay_threads: self.relay_threads,
            shutdown_grace: self.shutdown_grace,
        }
    }
}

impl MembershipArgs {
    /// Starts following the membership; the ring updates as handlers come and go.
    pub async fn ring(&self) -> anyhow::Result<watch::Receiver<Arc<Ring>>> {
        match self.discovery {
            DiscoveryArg::Static => {
                let spec = self.handlers.as_deref().ok_or_else(|| {
                    anyhow::anyhow!("static discovery needs --handlers id=host:port,…")
                })?;
                let members = throng_discovery::parse_static(spec)?;
                Ok(Membership::spawn(throng_discovery::static_updates(members)))
            }
            DiscoveryArg::Kube => {
                let client = kube::Client::try_default().await?;
                Ok(Membership::spawn(throng_discovery::endpoint_slices(
                    client,
                    &self.kube_namespace,
                    &self.kube_service,
                    Some(&self.kube_port_name),
                    self.kube_handoff_port,
                )))
            }
        }
    }
}

pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let config = args.routing.to_config();
    config.validate().map_err(anyhow::Error::msg)?;
    let mqtts = match (args.mqtts_listen, &args.tls_cert, &args.tls_key) {
        (Some(addr), Some(cert), Some(key)) => {
            let tls = TlsConfigWatcher::load(cert, key)?;
            Some((bind(Some(addr))?.expect("address given"), tls))
        }
        _ => None,
    };
    let mqtt = bind(Some(args.mqtt_listen))?.expect("address given");
    if args.defer_accept > 0 {
        throng_sockopt::defer_accept(&mqtt, args.defer_accept)
            .with_context(|| format!("cannot set TCP_DEFER_ACCEPT on {}", args.mqtt_listen))?;
    }
    let listeners = AgentListeners {
        mqtt: Some(mqtt),
        mqtts,
        admin: bind(args.admin_listen)?,
    };
    let ring = args.membership.ring().await?;
    throng_agent::run(config, listeners, ring, crate::signal::shutdown()).await
}
