//! Scenario `pubsub`: MQTT publishers and subscribers through the broker under
//! test (throng through its agent or a handler, Mosquitto, any MQTT broker),
//! wired fan-out, fan-in or one-to-one, at QoS 0, 1 or 2 both ways.
//!
//! The run: connect and subscribe every subscriber (every SUBACK in hand) and
//! connect the publishers; probe (every publisher sends a QoS 0 probe every
//! 100 ms, or less often with over 1,000 publishers, until every subscriber saw
//! one from each publisher it receives from: in a cluster, subscriptions reach
//! the other handlers asynchronously; bounded by --probe-timeout); warm
//! up; publish the measured messages; wait until every expected delivery
//! arrived (or nothing new came for --drain-timeout); account per subscriber
//! and publisher. Every payload carries its publisher, sequence number and
//! send time, so losses, duplicates, order and end-to-end latency are exact.
//! The run fails (non-zero exit) on losses at QoS ≥ 1 (at QoS 0 only with
//! --fail-on-loss), duplicates at QoS 2, misrouted or corrupt messages, or a
//! connection that ended.

mod client;
mod msg;
mod payload;
mod phases;
mod plan;
mod publisher;
mod report;
mod setup;
mod subscriber;
mod table;
mod track;
pub mod worker;

use anyhow::{Context, bail};

use self::msg::WorkerConfig;
use self::plan::{Mode, Plan};
use crate::mqtt::{ConnectOptions, Protocol};
use crate::tiers::Tiers;

#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "\
Clients run in worker processes (re-executions of this binary), --max-per-worker \
connections each; publishers and subscribers are spread evenly over them. On the \
reference host one process may hold 20,000 open files, so one worker serves up to a \
few thousand connections comfortably; add workers (--workers) for more, or to spread \
the load generator over more cores.

Examples:
  throng-load pubsub --target 127.0.0.1:1883 --mode fan-out --publishers 4 --subscribers 50 --qos 1 --duration 15
  throng-load pubsub --target 127.0.0.1:21883,21884 --mode one-to-one --publishers 500 --qos 2 --messages 500000")]
pub struct PubsubArgs {
    /// Broker address(es): HOST:PORT[,PORT|HOST:PORT…]; publisher i uses target
    /// i mod T, subscriber j target (j+1) mod T (a one-to-one pair spans two).
    #[arg(long, env = "THRONG_LOAD_TARGET")]
    pub target: String,
    /// How publishers and subscribers are wired.
    #[arg(long, value_enum, default_value = "fan-out")]
    pub mode: Mode,
    /// Publishers [default: 1 fan-out, 100 fan-in, 100 one-to-one].
    #[arg(long, short = 'p')]
    pub publishers: Option<u32>,
    /// Subscribers [default: 10 fan-out, 1 fan-in, = --publishers one-to-one].
    #[arg(long, short = 's')]
    pub subscribers: Option<u32>,
    /// QoS of the PUBLISHes.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,
    /// QoS the subscribers ask for [default: --qos].
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub sub_qos: Option<u8>,
    /// Payload bytes per message (at least 16: publisher, sequence number, send time).
    #[arg(long, default_value_t = 64)]
    pub payload_size: usize,
    /// Messages per second, all publishers together [default: as fast as acks and sockets allow].
    #[arg(long)]
    pub rate: Option<f64>,
    /// Measured window, seconds (or --messages).
    #[arg(long, conflicts_with = "messages")]
    pub duration: Option<f64>,
    /// Measured messages, all publishers together (or --duration) [default: --duration 10].
    #[arg(long, short = 'm')]
    pub messages: Option<u64>,
    /// Seconds of publishing before the measured window (not counted).
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Unacknowledged QoS 1/2 PUBLISHes per publisher at most (also capped by the
    /// server's MQTT 5 Receive Maximum).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    pub inflight: u16,
    /// MQTT protocol level: 4 (3.1.1) or 5.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(4..=5))]
    pub protocol: u8,
    /// Keep-alive sent in CONNECT; a client that wrote nothing for keepalive/2 sends PINGREQ.
    #[arg(long, default_value_t = 60)]
    pub keepalive: u16,
    /// Client id prefix: ids are `<prefix>-p<i>` and `<prefix>-s<j>` [default: ps<pid>].
    #[arg(long)]
    pub client_prefix: Option<String>,
    /// Topic prefix [default: throng-load/<client prefix>].
    #[arg(long)]
    pub topic_prefix: Option<String>,
    /// Worker processes [default: enough for --max-per-worker connections each].
    #[arg(long)]
    pub workers: Option<usize>,
    /// Connections per worker process at most.
    #[arg(long, default_value_t = 10_000)]
    pub max_per_worker: u32,
    /// Tokio threads per worker.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Source addresses (ranges A-B and single addresses); "none": the kernel's choice.
    #[arg(long, default_value = "127.0.0.2-127.0.0.250")]
    pub source_ips: String,
    /// Client setups (CONNECT, SUBSCRIBE) in flight, all workers together.
    #[arg(long, default_value_t = 200)]
    pub connect_concurrency: usize,
    /// Per-client setup timeout (connect, CONNACK, SUBACK), seconds.
    #[arg(long, default_value_t = 10.0)]
    pub connect_timeout: f64,
    /// Give up probing after this many seconds (the run goes on; the report says so).
    #[arg(long, default_value_t = 10.0)]
    pub probe_timeout: f64,
    /// A publisher whose acks stop coming for this many seconds gives up.
    #[arg(long, default_value_t = 30.0)]
    pub ack_timeout: f64,
    /// Once every publisher is done, stop waiting when nothing new arrived for this many seconds.
    #[arg(long, default_value_t = 5.0)]
    pub drain_timeout: f64,
    /// Give up this many seconds after the measured window started.
    #[arg(long, default_value_t = 600.0)]
    pub timeout: f64,
    /// Fail on losses at QoS 0 too (at QoS 1 and 2 a loss always fails the run).
    #[arg(long)]
    pub fail_on_loss: bool,
    #[command(flatten)]
    pub output: crate::output::OutputArgs,
}

/// `HOST:PORT,PORT,HOST2:PORT` → every part with a host (a bare port takes the previous one's).
fn expand_targets(spec: &str) -> anyhow::Result<String> {
    let mut host: Option<&str> = None;
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if part.parse::<u16>().is_ok() {
            let h =
                host.with_context(|| format!("port {part} in --target has no host before it"))?;
            out.push(format!("{h}:{part}"));
        } else {
            host = part.rsplit_once(':').map(|(h, _)| h);
            out.push(part.to_owned());
        }
    }
    Ok(out.join(","))
}

/// The plan from the arguments, checked.
fn plan(args: &PubsubArgs) -> anyhow::Result<Plan> {
    let (publishers, subscribers) = match args.mode {
        Mode::FanOut => (args.publishers.unwrap_or(1), args.subscribers.unwrap_or(10)),
        Mode::FanIn => (
            args.publishers.unwrap_or(100),
            args.subscribers.unwrap_or(1),
        ),
        Mode::OneToOne => {
            let n = args.publishers.or(args.subscribers).unwrap_or(100);
            (args.publishers.unwrap_or(n), args.subscribers.unwrap_or(n))
        }
    };
    if publishers == 0 || subscribers == 0 {
        bail!("--publishers and --subscribers must be at least 1");
    }
    if args.mode == Mode::OneToOne && publishers != subscribers {
        bail!("one-to-one needs as many subscribers as publishers ({publishers} vs {subscribers})");
    }
    if publishers >= payload::MAX_PUBLISHERS {
        bail!("at most {} publishers", payload::MAX_PUBLISHERS - 1);
    }
    if args.payload_size < payload::HEADER {
        bail!("--payload-size must be at least {}", payload::HEADER);
    }
    if args.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        bail!("--rate must be positive");
    }
    if args.duration.is_some_and(|d| !(d > 0.0 && d.is_finite())) {
        bail!("--duration must be positive");
    }
    if !(args.warmup >= 0.0 && args.warmup.is_finite()) {
        bail!("--warmup must be zero or positive");
    }
    if args.messages == Some(0) {
        bail!("--messages must be at least 1");
    }
    if let Some(m) = args.messages
        && m / u64::from(publishers) >= u64::from(u32::MAX)
    {
        bail!("at most {} messages per publisher", u32::MAX);
    }
    let client_prefix = args
        .client_prefix
        .clone()
        .unwrap_or_else(|| format!("ps{}", std::process::id()));
    Ok(Plan {
        mode: args.mode,
        publishers,
        subscribers,
        topic_prefix: args
            .topic_prefix
            .clone()
            .unwrap_or_else(|| format!("throng-load/{client_prefix}")),
        client_prefix,
        qos: args.qos,
        sub_qos: args.sub_qos.unwrap_or(args.qos),
        payload_size: args.payload_size,
        inflight: args.inflight,
        rate: args.rate,
        messages: args.messages,
        duration_s: match args.messages {
            Some(_) => None,
            None => Some(args.duration.unwrap_or(10.0)),
        },
    })
}

/// Runs the scenario from the parent process.
pub fn run(args: PubsubArgs) -> anyhow::Result<()> {
    let plan = plan(&args)?;
    let targets = crate::net::parse_targets(&expand_targets(&args.target)?)?;
    let source_ips = if args.source_ips.eq_ignore_ascii_case("none") {
        Vec::new()
    } else {
        crate::net::parse_source_ips(&args.source_ips)?
    };
    let clients = plan.publishers + plan.subscribers;
    let workers = args
        .workers
        .unwrap_or_else(|| clients.div_ceil(args.max_per_worker.max(1)) as usize)
        .clamp(1, clients as usize);
    if clients.div_ceil(workers as u32) > 19_000 {
        bail!(
            "more than 19,000 connections per worker: the host allows 20,000 open files per process; use --workers"
        );
    }
    let connect = ConnectOptions {
        protocol: Protocol::from_level(args.protocol)?,
        keepalive_secs: args.keepalive,
        clean: true,
        username: None,
        password: None,
        session_expiry: None,
    };
    let tiers = Tiers::new(&args.output.broker_pid)?;
    let share = |n: u32, w: usize| {
        let (w, workers) = (w as u64, workers as u64);
        let n = u64::from(n);
        (
            (n * w / workers) as u32,
            (n * (w + 1) / workers - n * w / workers) as u32,
        )
    };
    let configs: Vec<WorkerConfig> = (0..workers)
        .map(|w| {
            let (first_publisher, publishers) = share(plan.publishers, w);
            let (first_subscriber, subscribers) = share(plan.subscribers, w);
            WorkerConfig {
                worker: w,
                plan: plan.clone(),
                first_publisher,
                publishers,
                first_subscriber,
                subscribers,
                targets: targets.clone(),
                source_ips: source_ips.clone(),
                connect: connect.clone(),
                in_flight: args.connect_concurrency.div_ceil(workers).max(1),
                setup_timeout_ms: (args.connect_timeout * 1000.0) as u64,
                threads: args.threads,
                // Every 100 ms, slower with many publishers (10,000 probes/s at most).
                probe_every_ms: 100.max(u64::from(plan.publishers) / 10),
                ack_timeout_ms: (args.ack_timeout * 1000.0) as u64,
            }
        })
        .collect();
    let report = phases::execute(&args, &plan, &targets, &configs, &tiers)?;
    report.print();
    args.output.write_json(&report)?;
    use std::io::Write;
    let _ = std::io::stdout().flush();
    if !report.problems.is_empty() {
        bail!("pubsub run failed: {}", report.problems.join("; "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_ports_take_the_previous_host() {
        assert_eq!(
            expand_targets("127.0.0.1:1883, 1884,localhost:9,10").unwrap(),
            "127.0.0.1:1883,127.0.0.1:1884,localhost:9,localhost:10"
        );
        assert!(expand_targets("1883").is_err());
        assert_eq!(
            expand_targets("[::1]:1883,1884").unwrap(),
            "[::1]:1883,[::1]:1884"
        );
    }
}
