//! `throng distributor`: routes between handlers, serves the ingest API, consumes
//! the downlink stream. Also the flags a handler uses to find the distributors.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use prometheus_client::registry::Registry;
use throng_discovery::Membership;
use throng_distributor::downlink::{self, DownlinkConfig};
use throng_distributor::{Distributor, HubConfig};
use throng_ring::Ring;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::agent::{DiscoveryArg, MembershipArgs};
use crate::cli::bind;

#[derive(Args, Debug)]
pub struct DistributorArgs {
    /// Member id of this distributor (the pod name in a cluster); also its
    /// consumer name in the downlink consumer group.
    #[arg(long, env = "THRONG_ID")]
    pub id: String,
    /// gRPC listener: the attach stream handlers open, the ingest API, health.
    #[arg(long, env = "THRONG_GRPC_LISTEN", default_value = "0.0.0.0:50051")]
    pub grpc_listen: SocketAddr,
    /// Admin HTTP listener: /metrics, /livez, /readyz.
    #[arg(long, env = "THRONG_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// The handler membership (the agent's ring): messages for a client id go to
    /// its owner. Only member ids matter here.
    #[command(flatten)]
    pub membership: MembershipArgs,
    /// Redis holding the downlink stream; without it only the ingest API feeds devices.
    #[arg(long, env = "THRONG_REDIS_URL")]
    pub redis_url: Option<String>,
    #[command(flatten)]
    pub queue: QueueFlags,
    /// How long a delivery waits for a handler's ack before it is retried.
    #[arg(long, env = "THRONG_ACK_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub ack_timeout: Duration,
}

/// The downlink stream (the upstream queue backends push through), in the Redis
/// of `--redis-url`.
#[derive(Args, Debug, Clone)]
pub struct QueueFlags {
    /// Stream backends XADD server-to-device messages to.
    #[arg(
        long,
        env = "THRONG_DOWNLINK_STREAM",
        default_value = "throng:downlink"
    )]
    pub downlink_stream: String,
    /// Consumer group the distributors share.
    #[arg(
        long,
        env = "THRONG_DOWNLINK_GROUP",
        default_value = "throng-distributors"
    )]
    pub downlink_group: String,
    /// Deliveries of one entry before it goes to the dead-letter stream.
    #[arg(long, env = "THRONG_MAX_ATTEMPTS", default_value_t = 5)]
    pub max_attempts: u64,
    /// Entries pending this long (their distributor died, or their handler was
    /// down) are claimed and delivered again.
    #[arg(long, env = "THRONG_RECLAIM_IDLE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub reclaim_idle: Duration,
}

impl QueueFlags {
    pub fn downlink_config(&self, redis_url: &str, consumer: &str) -> DownlinkConfig {
        let mut config = DownlinkConfig::new(redis_url, consumer);
        config.consumer.stream = self.downlink_stream.clone();
        config.consumer.dead_letter_stream = format!("{}:dead", self.downlink_stream);
        config.consumer.group = self.downlink_group.clone();
        config.consumer.max_attempts = self.max_attempts;
        config.reclaim_idle = self.reclaim_idle;
        config.reclaim_every =
            (self.reclaim_idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
        config
    }
}

/// Where a handler finds the distributors.
#[derive(Args, Debug)]
pub struct DistributorMembershipArgs {
    #[arg(
        long,
        env = "THRONG_DISTRIBUTOR_DISCOVERY",
        value_enum,
        default_value = "static"
    )]
    pub distributor_discovery: DiscoveryArg,
    /// Static membership: `id=host:port,…` (the distributors' gRPC listeners).
    /// Without it (and with static discovery) the handler serves alone.
    #[arg(long, env = "THRONG_DISTRIBUTORS")]
    pub distributors: Option<String>,
    /// Headless Service of the distributors (kube discovery; namespace from --kube-namespace).
    #[arg(
        long,
        env = "THRONG_DISTRIBUTOR_SERVICE",
        default_value = "throng-distributor"
    )]
    pub distributor_service: String,
    /// Name of the gRPC port in the distributors' EndpointSlices (kube discovery).
    #[arg(long, env = "THRONG_DISTRIBUTOR_PORT_NAME", default_value = "grpc")]
    pub distributor_port_name: String,
    /// gRPC port when the EndpointSlices name none (kube discovery).
    #[arg(long, env = "THRONG_DISTRIBUTOR_PORT", default_value_t = 50051)]
    pub distributor_port: u16,
    /// Namespace of the distributor Service (kube discovery).
    #[arg(
        long = "distributor-namespace",
        env = "THRONG_DISTRIBUTOR_NAMESPACE",
        default_value = "default"
    )]
    pub namespace: String,
}

impl DistributorMembershipArgs {
    /// The distributors to attach to, following changes; `None` to serve alone.
    pub async fn ring(&self) -> anyhow::Result<Option<watch::Receiver<Arc<Ring>>>> {
        match self.distributor_discovery {
            DiscoveryArg::Static => match self.distributors.as_deref() {
                None => Ok(None),
                Some(spec) => {
                    let members = throng_discovery::parse_static(spec)?;
                    Ok(Some(Membership::spawn(throng_discovery::static_updates(
                        members,
                    ))))
                }
            },
            DiscoveryArg::Kube => {
                let client = kube::Client::try_default().await?;
                Ok(Some(Membership::spawn(throng_discovery::endpoint_slices(
                    client,
                    &self.namespace,
                    &self.distributor_service,
                    Some(&self.distributor_port_name),
                    self.distributor_port,
                ))))
            }
        }
    }
}

pub async fn run(args: DistributorArgs) -> anyhow::Result<()> {
    let grpc_listener = bind(Some(args.grpc_listen))?.expect("address given");
    let admin = bind(args.admin_listen)?;
    // Without a handler list the attached handlers stand in for the ring.
    let handler_ring = if args.membership.discovery == DiscoveryArg::Static
        && args.membership.handlers.is_none()
    {
        watch::channel(Arc::new(Ring::new([]))).1
    } else {
        args.membership.ring().await?
    };
    let mut registry = Registry::default();
    let config = HubConfig {
        ack_timeout: args.ack_timeout,
        ..HubConfig::default()
    };
    let distributor = Distributor::start(args.id.clone(), config, handler_ring, &mut registry);
    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    if let Some(url) = &args.redis_url {
        let config = args.queue.downlink_config(url, &args.id);
        tracing::info!(stream = %config.consumer.stream, group = %config.consumer.group, "consuming the downlink stream");
        tasks.push(tokio::spawn(downlink::run(
            distributor.hub().clone(),
            config,
            stop.clone(),
        )));
    }
    if let Some(admin) = admin {
        tracing::info!(addr = %admin.local_addr()?, "admin listening");
        let router =
            throng_admin::router(Arc::new(registry), Arc::new(|| true), Default::default());
        throng_admin::spawn(admin, router, stop.clone().cancelled_owned());
    }
    tracing::info!(addr = %grpc_listener.local_addr()?, id = distributor.id(), "grpc listening (attach, ingest)");
    let grpc = tokio::spawn(crate::grpc::serve(
        grpc_listener,
        Some(crate::grpc::Services::of(&distributor)),
        stop.clone().cancelled_owned(),
    ));
    crate::signal::shutdown().await;
    tracing::info!("shutting down");
    stop.cancel();
    for task in tasks {
        let _ = task.await;
    }
    match tokio::time::timeout(Duration::from_secs(5), grpc).await {
        Ok(served) => served??,
        Err(_) => tracing::warn!("grpc streams still open after 5 s"),
    }
    Ok(())
}
