//! Command lines of `connect` and `hold`, and the plan made from them: how many
//! workers, and each worker's share.

use std::net::{IpAddr, SocketAddr};

use anyhow::bail;

use super::msg::WorkerConfig;
use crate::mqtt::{ConnectOptions, Protocol};

/// Default handshakes in flight (all workers together) when neither --rate nor --in-flight is given.
const DEFAULT_IN_FLIGHT: usize = 1000;
/// Open files a process may hold on the reference host (a hard limit).
const HOST_FILES_PER_PROCESS: u64 = 20_000;
/// Files a worker keeps for itself besides its connections.
const WORKER_SPARE_FILES: u64 = 1000;

/// What `connect` and `hold` share: the connections and how they are opened.
#[derive(clap::Args, Debug, Clone)]
pub struct StormArgs {
    /// Broker address(es), HOST:PORT[,HOST:PORT…]; connections go round-robin.
    #[arg(long, env = "THRONG_LOAD_TARGET")]
    pub target: String,
    /// Number of connections to open.
    #[arg(long, short = 'n')]
    pub connections: u64,
    /// Start at most R handshakes per second (all workers together).
    #[arg(long, conflicts_with = "in_flight")]
    pub rate: Option<f64>,
    /// At most K handshakes in flight (all workers together) [default: 1000].
    #[arg(long)]
    pub in_flight: Option<usize>,
    /// MQTT protocol level: 4 (3.1.1) or 5.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(4..=5))]
    pub protocol: u8,
    /// Keep-alive in seconds sent in CONNECT (0: none, and no PINGREQs).
    #[arg(long, default_value_t = 60)]
    pub keepalive: u16,
    /// Seconds between two PINGREQs on one connection [default: keepalive / 2].
    /// Pings start as soon as a connection is up.
    #[arg(long)]
    pub ping_interval: Option<f64>,
    /// Clean session (3.1.1) / clean start (5).
    #[arg(long)]
    pub clean: bool,
    /// MQTT 5 Session Expiry Interval, seconds.
    #[arg(long)]
    pub session_expiry: Option<u32>,
    #[arg(long, env = "THRONG_LOAD_USERNAME")]
    pub username: Option<String>,
    #[arg(long, env = "THRONG_LOAD_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Worker processes [default: enough for --max-per-worker connections each].
    #[arg(long)]
    pub workers: Option<usize>,
    /// Connections per worker process at most (the host allows 20,000 open files per process).
    #[arg(long, default_value_t = 18_000)]
    pub max_per_worker: u64,
    /// Tokio threads per worker process.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Source addresses to bind before connecting (ranges A-B and single addresses,
    /// comma separated), used round-robin; "none" lets the kernel choose.
    #[arg(long, default_value = "127.0.0.2-127.0.0.250")]
    pub source_ips: String,
    /// Per-handshake timeout (TCP connect to CONNACK), seconds.
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    #[command(flatten)]
    pub output: crate::output::OutputArgs,
}

/// `throng-load connect`.
#[derive(clap::Args, Debug, Clone)]
pub struct ConnectArgs {
    #[command(flatten)]
    pub storm: StormArgs,
    /// Keep all connections open this many seconds after the last handshake, then
    /// count how many stayed up (what `throng-load hold` does).
    #[arg(long, default_value_t = 0.0)]
    pub hold: f64,
}

/// `throng-load hold`.
#[derive(clap::Args, Debug, Clone)]
pub struct HoldArgs {
    #[command(flatten)]
    pub storm: StormArgs,
    /// Seconds to keep all connections open after the last handshake.
    #[arg(long, short = 'd', alias = "hold")]
    pub duration: f64,
}

/// What the parent decided before starting the workers.
pub struct Plan {
    pub targets: Vec<SocketAddr>,
    pub source_ips: Vec<IpAddr>,
    pub workers: usize,
    pub in_flight: Option<usize>,
    pub ping_every_ms: u64,
    pub configs: Vec<WorkerConfig>,
}

impl StormArgs {
    /// Validates the arguments and splits the connections over the workers.
    pub fn plan(&self) -> anyhow::Result<Plan> {
        if self.connections == 0 {
            bail!("--connections must be at least 1");
        }
        let targets = crate::net::parse_targets(&self.target)?;
        let source_ips = if self.source_ips.eq_ignore_ascii_case("none") {
            Vec::new()
        } else {
            crate::net::parse_source_ips(&self.source_ips)?
        };
        let workers = self
            .workers
            .unwrap_or_else(|| self.connections.div_ceil(self.max_per_worker.max(1)) as usize)
            .max(1)
            .min(self.connections as usize);
        let per_worker = self.connections.div_ceil(workers as u64);
        if per_worker + WORKER_SPARE_FILES > HOST_FILES_PER_PROCESS {
            bail!(
                "{per_worker} connections per worker: the host allows {HOST_FILES_PER_PROCESS} open files per process; use --workers or --max-per-worker"
            );
        }
        if self
            .rate
            .is_some_and(|rate| !(rate > 0.0 && rate.is_finite()))
        {
            bail!("--rate must be positive");
        }
        if !(self.timeout > 0.0 && self.timeout.is_finite()) {
            bail!("--timeout must be positive");
        }
        let in_flight = if self.rate.is_some() {
            None
        } else {
            Some(self.in_flight.unwrap_or(DEFAULT_IN_FLIGHT).max(1))
        };
        let ping_every_ms = match self.ping_interval {
            Some(s) if !(s >= 0.0 && s.is_finite()) => bail!("--ping-interval must be >= 0"),
            Some(s) => (s * 1000.0) as u64,
            None => u64::from(self.keepalive) * 1000 / 2,
        };
        let connect = ConnectOptions {
            protocol: Protocol::from_level(self.protocol)?,
            keepalive_secs: self.keepalive,
            clean: self.clean,
            username: self.username.clone(),
            password: self.password.clone(),
            session_expiry: self.session_expiry,
        };

        // Shares: the first (connections % workers) workers take one more.
        let base = self.connections / workers as u64;
        let extra = self.connections % workers as u64;
        let prefix = format!("tl{}x", std::process::id());
        let mut configs = Vec::with_capacity(workers);
        let mut first_index = 0;
        for w in 0..workers {
            let n = base + u64::from((w as u64) < extra);
            let share = |total: f64| total * n as f64 / self.connections as f64;
            configs.push(WorkerConfig {
                worker: w,
                connections: n,
                first_index,
                targets: targets.clone(),
                source_ips: source_ips.clone(),
                in_flight: in_flight.map(|k| (share(k as f64).round() as usize).max(1)),
                rate: self.rate.map(share),
                connect: connect.clone(),
                client_id_prefix: prefix.clone(),
                timeout_ms: (self.timeout * 1000.0) as u64,
                // Set by the parent just before the workers start.
                start_at_unix_ms: 0,
                threads: self.threads.max(1),
                ping_every_ms,
            });
            first_index += n;
        }
        Ok(Plan {
            targets,
            source_ips,
            workers,
            in_flight,
            ping_every_ms,
            configs,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: Cmd,
    }

    #[derive(clap::Subcommand)]
    enum Cmd {
        Connect(ConnectArgs),
        Hold(HoldArgs),
    }

    fn hold(args: &str) -> HoldArgs {
        let argv = ["x", "hold", "--target", "127.0.0.1:1883"]
            .into_iter()
            .chain(args.split_whitespace());
        match Cli::try_parse_from(argv).unwrap().cmd {
            Cmd::Hold(h) => h,
            Cmd::Connect(_) => unreachable!(),
        }
    }

    #[test]
    fn splits_over_workers() {
        let h = hold("-n 100001 --duration 5 --max-per-worker 18000 --in-flight 600");
        assert_eq!(h.duration, 5.0);
        let plan = h.storm.plan().unwrap();
        assert_eq!(plan.workers, 6);
        let shares: Vec<u64> = plan.configs.iter().map(|c| c.connections).collect();
        assert_eq!(shares, [16_667, 16_667, 16_667, 16_667, 16_667, 16_666]);
        let firsts: Vec<u64> = plan.configs.iter().map(|c| c.first_index).collect();
        assert_eq!(firsts, [0, 16_667, 33_334, 50_001, 66_668, 83_335]);
        assert!(plan.configs.iter().all(|c| c.in_flight == Some(100)));
        assert_eq!(plan.configs[0].threads, 2);
        let plan = hold("-n 10 -d 1 --threads 3").storm.plan().unwrap();
        assert_eq!((plan.workers, plan.configs[0].threads), (1, 3));
        assert_eq!(plan.ping_every_ms, 30_000);
        assert_eq!(plan.source_ips.len(), 249);
    }

    #[test]
    fn ping_interval_and_limits() {
        let plan = hold("-n 10 -d 1 --keepalive 0").storm.plan().unwrap();
        assert_eq!(plan.ping_every_ms, 0);
        let plan = hold("-n 10 --hold 1 --ping-interval 2.5 --rate 100")
            .storm
            .plan()
            .unwrap();
        assert_eq!((plan.ping_every_ms, plan.in_flight), (2500, None));
        assert_eq!(plan.configs[0].rate, Some(100.0));
        // 19,500 connections in one process leave too few files for the rest.
        assert!(hold("-n 19500 -d 1 --workers 1").storm.plan().is_err());
        assert!(hold("-n 0 -d 1").storm.plan().is_err());
        assert!(hold("-n 1 -d 1 --rate 0").storm.plan().is_err());
    }

    #[test]
    fn connect_keeps_its_hold_flag() {
        let cli = Cli::try_parse_from([
            "x",
            "connect",
            "--target",
            "127.0.0.1:1",
            "-n",
            "5",
            "--hold",
            "2",
        ])
        .unwrap();
        let Cmd::Connect(c) = cli.cmd else {
            unreachable!()
        };
        assert_eq!((c.hold, c.storm.connections), (2.0, 5));
    }
}
