//! Command line: one subcommand per service. Every flag has a `THRONG_…`
//! environment twin; the config is validated before anything binds.

use std::net::SocketAddr;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{ArgAction, Args, Parser, Subcommand};
use throng_handler::{HandlerConfig, HandlerListeners};
use tokio::net::{TcpListener, UnixListener};

#[derive(Parser, Debug)]
#[command(
    name = "throng",
    version,
    about = "Kubernetes-native, clustered MQTT message server"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Every service in one process on 127.0.0.1: the default for trying throng.
    Dev(DevArgs),
    /// One message handler: a full MQTT server for the connections it owns.
    Handler(HandlerArgs),
    /// One connection agent: admits devices and hands each to its handler.
    Agent(crate::agent::AgentArgs),
    /// One distributor: routes between handlers, serves the ingest API and
    /// consumes the downlink stream.
    Distributor(crate::distributor::DistributorArgs),
    /// Publish one message through the ingest API.
    Pub(crate::publish::PubArgs),
}

#[derive(Args, Debug)]
pub struct DevArgs {
    /// MQTT listener for devices.
    #[arg(long, env = "THRONG_MQTT_LISTEN", default_value = "127.0.0.1:1883")]
    pub mqtt_listen: SocketAddr,
    /// Admin HTTP listener: /metrics, /livez, /readyz.
    #[arg(long, env = "THRONG_ADMIN_LISTEN", default_value = "127.0.0.1:9090")]
    pub admin_listen: SocketAddr,
    /// gRPC listener: the ingest API (`throng pub`), the distributor's attach
    /// stream and the gRPC health service.
    #[arg(long, env = "THRONG_GRPC_LISTEN", default_value = "127.0.0.1:50051")]
    pub grpc_listen: SocketAddr,
    /// Handlers started behind the agent (each on its own loopback hand-off port).
    #[arg(long, env = "THRONG_DEV_HANDLERS", default_value_t = 2)]
    pub dev_handlers: usize,
    #[command(flatten)]
    pub queue: crate::distributor::QueueFlags,
    #[command(flatten)]
    pub engine: EngineFlags,
}

#[derive(Args, Debug)]
pub struct HandlerArgs {
    /// Member id of this handler (the StatefulSet pod name in a cluster).
    #[arg(long, env = "THRONG_ID")]
    pub id: String,
    /// Plain MQTT listener (devices connecting directly).
    #[arg(long, env = "THRONG_MQTT_LISTEN")]
    pub mqtt_listen: Option<SocketAddr>,
    /// Internal hand-off listener: PROXY v2 header from an agent, then MQTT.
    #[arg(long, env = "THRONG_HANDOFF_LISTEN")]
    pub handoff_listen: Option<SocketAddr>,
    /// Unix socket for `fd` hand-off: agents on the same host or pod pass devices'
    /// sockets here. A stale socket file at the path is replaced.
    #[arg(long, env = "THRONG_FD_HANDOFF_LISTEN")]
    pub fd_handoff_listen: Option<PathBuf>,
    /// Admin HTTP listener: /metrics, /livez, /readyz.
    #[arg(long, env = "THRONG_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    #[command(flatten)]
    pub cluster: crate::distributor::DistributorMembershipArgs,
    #[command(flatten)]
    pub engine: EngineFlags,
}

/// MQTT engine settings shared by `dev` and `handler`.
#[derive(Args, Debug)]
pub struct EngineFlags {
    /// Mosquitto-format password file (`user:$7$…`, made with mosquitto_passwd).
    #[arg(long, env = "THRONG_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
    /// Mosquitto-format ACL file (topic/user/pattern lines).
    #[arg(long, env = "THRONG_ACL_FILE")]
    pub acl_file: Option<PathBuf>,
    /// Accept clients that send no username.
    #[arg(long, env = "THRONG_ALLOW_ANONYMOUS", default_value_t = true, action = ArgAction::Set)]
    pub allow_anonymous: bool,
    /// Highest keepalive accepted, seconds (v5 clients are told it as Server Keep Alive).
    #[arg(long, env = "THRONG_MAX_KEEPALIVE", default_value_t = 65535)]
    pub max_keepalive: u16,
    /// Largest packet accepted from a client, bytes.
    #[arg(long, env = "THRONG_MAX_PACKET_SIZE", default_value_t = 1024 * 1024)]
    pub max_packet_size: u32,
    /// Time a new connection has to send CONNECT.
    #[arg(long, env = "THRONG_CONNECT_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// Connections held at most; further accepts wait.
    #[arg(long, env = "THRONG_MAX_CONNECTIONS", default_value_t = 1_000_000)]
    pub max_connections: usize,
    /// Messages held per session while they cannot be sent; newer ones are dropped beyond it.
    #[arg(long, env = "THRONG_MAX_QUEUED_MESSAGES", default_value_t = 1000)]
    pub max_queued_messages: usize,
    /// QoS 1/2 messages in flight per connection, each direction.
    #[arg(long, env = "THRONG_RECEIVE_MAXIMUM", default_value_t = 1024)]
    pub receive_maximum: u16,
    /// Subscriptions one session may hold.
    #[arg(long, env = "THRONG_MAX_SUBSCRIPTIONS", default_value_t = 1000)]
    pub max_subscriptions: usize,
    /// Longest session expiry granted; also how long 3.1.1 persistent sessions live offline.
    #[arg(long, env = "THRONG_MAX_SESSION_EXPIRY", default_value = "2h", value_parser = humantime::parse_duration)]
    pub max_session_expiry: Duration,
    /// How long shutdown waits for connections to close.
    #[arg(long, env = "THRONG_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// Device publishes matching this filter (e.g. `up/#`) are appended to the
    /// uplink stream `throng:uplink` in Redis for backends; repeatable, or
    /// comma-separated in the environment. Needs --redis-url.
    #[arg(
        long = "uplink-filter",
        env = "THRONG_UPLINK_FILTER",
        value_delimiter = ','
    )]
    pub uplink_filters: Vec<String>,
    /// Redis server, e.g. `redis://127.0.0.1:6379/`.
    #[arg(long, env = "THRONG_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Device publishes queued towards one distributor before QoS 0 ones are
    /// dropped and publishers stop being read until it drains to half.
    #[arg(long, env = "THRONG_FORWARD_QUEUE_LIMIT", default_value_t = 16 * 1024)]
    pub forward_queue_limit: usize,
}

impl EngineFlags {
    pub fn to_config(&self, id: String) -> HandlerConfig {
        HandlerConfig {
            id,
            max_packet_size: self.max_packet_size,
            connect_timeout: self.connect_timeout,
            max_keepalive: self.max_keepalive,
            receive_maximum: self.receive_maximum,
            max_queued_messages: self.max_queued_messages,
            max_subscriptions_per_session: self.max_subscriptions,
            max_session_expiry: self.max_session_expiry,
            max_connections: self.max_connections,
            allow_anonymous: self.allow_anonymous,
            password_file: self.password_file.clone(),
            acl_file: self.acl_file.clone(),
            shutdown_grace: self.shutdown_grace,
            uplink_filters: self.uplink_filters.clone(),
            redis_url: self.redis_url.clone(),
            forward_queue_limit: self.forward_queue_limit,
            ..HandlerConfig::default()
        }
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Dev(args) => crate::dev::run(args).await?,
        Command::Handler(args) => run_handler(args).await?,
        Command::Agent(args) => crate::agent::run(args).await?,
        Command::Distributor(args) => crate::distributor::run(args).await?,
        Command::Pub(args) => return crate::publish::run(args).await,
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_handler(args: HandlerArgs) -> anyhow::Result<()> {
    let config = args.engine.to_config(args.id);
    config.validate().map_err(anyhow::Error::msg)?;
    if args.mqtt_listen.is_none()
        && args.handoff_listen.is_none()
        && args.fd_handoff_listen.is_none()
    {
        anyhow::bail!("a handler needs --mqtt-listen, --handoff-listen or --fd-handoff-listen");
    }
    let listeners = HandlerListeners {
        mqtt: bind(args.mqtt_listen)?,
        handoff: bind(args.handoff_listen)?,
        fd_handoff: args
            .fd_handoff_listen
            .as_deref()
            .map(bind_unix)
            .transpose()?,
        admin: bind(args.admin_listen)?,
    };
    let distributors = args.cluster.ring().await?;
    throng_handler::run(config, listeners, distributors, crate::signal::shutdown()).await
}

/// Binds a Unix listener at `path`, first removing a socket file left by an
/// earlier run. A socket something still listens on, or anything that is not a
/// socket, is an error and left in place.
pub fn bind_unix(path: &Path) -> anyhow::Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                anyhow::bail!("another process listens on {}", path.display());
            }
            std::fs::remove_file(path)
                .with_context(|| format!("cannot remove stale socket {}", path.display()))?
        }
        Ok(_) => anyhow::bail!("{} exists and is not a socket", path.display()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("cannot inspect {}", path.display())),
    }
    UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))
}

pub fn bind(addr: Option<SocketAddr>) -> anyhow::Result<Option<TcpListener>> {
    match addr {
        Some(addr) => Ok(Some(
            throng_handler::bind_listener(addr)
                .with_context(|| format!("cannot listen on {addr}"))?,
        )),
        None => Ok(None),
    }
}
