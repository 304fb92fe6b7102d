//! Scenario `downlink`: connect N devices through the broker, push M messages
//! for them into the cluster (XADD to the Redis downlink stream, or the ingest
//! API's PublishBatch), and measure what arrives: throughput from the first
//! send to the last arrival, end-to-end latency, losses and duplicates, and the
//! broker's CPU per tier over that window.
//!
//! Every payload carries its sequence number, its send time (unix µs) and its
//! target device, so a device worker checks each message on arrival. The run
//! fails (non-zero exit) when a message is lost, misdelivered or corrupt.

mod ingest;
mod msg;
mod phases;
mod produce;
mod redis;
mod report;
mod sink;
pub mod worker;

use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use self::msg::{CMD_FINISH, Pick, SinkConfig, WorkerConfig, WorkerMsg};
use self::phases::{collect_finals, delivery, progress, spawn_producer, wait_connected, watch};
use self::produce::Plan;
use self::report::{ConnectPhase, LoadTool, Report, print_table};
use crate::hist::Latency;
use crate::mqtt::{ConnectOptions, Protocol};
use crate::procfs;
use crate::report::count;
use crate::tiers::Tiers;
use crate::workers::WorkerSet;

/// Where the messages enter the cluster.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// XADD to the downlink stream the distributors consume.
    Redis,
    /// The distributor's ingest gRPC API (PublishBatch).
    Ingest,
}

#[derive(clap::Args, Debug, Clone)]
pub struct DownlinkArgs {
    /// Broker address(es) the devices connect to, HOST:PORT[,HOST:PORT…] (round-robin).
    #[arg(long, env = "THRONG_LOAD_TARGET", required_unless_present = "sink")]
    pub target: Option<String>,
    /// No devices: attach to the distributor (--distributor) as these handler ids
    /// (comma separated, the ids of its --handlers ring) and acknowledge every
    /// delivery, so that only Redis and the distributor work.
    #[arg(long, value_delimiter = ',', requires = "distributor")]
    pub sink: Option<Vec<String>>,
    /// The distributor's gRPC address, HOST:PORT (--sink).
    #[arg(long)]
    pub distributor: Option<String>,
    /// Devices (MQTT connections); client ids are `<prefix>-<index>`.
    #[arg(long, short = 'n', default_value_t = 2000)]
    pub devices: u64,
    /// Messages to push, in all.
    #[arg(long, short = 'm', default_value_t = 200_000)]
    pub messages: u64,
    /// Entry point of the messages.
    #[arg(long, value_enum, default_value = "redis")]
    pub via: Via,
    /// Redis holding the downlink stream (--via redis).
    #[arg(long, env = "THRONG_LOAD_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Downlink stream (--via redis).
    #[arg(long, default_value = "throng:downlink")]
    pub stream: String,
    /// Ingest API address, HOST:PORT (--via ingest).
    #[arg(long, env = "THRONG_LOAD_GRPC")]
    pub grpc: Option<String>,
    /// QoS of the messages: 0 or 1 (devices PUBACK QoS 1).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,
    /// How messages are spread over the devices.
    #[arg(long, value_enum, default_value = "round-robin")]
    pub pick: Pick,
    /// Payload bytes per message (at least 20: sequence number, send time, device).
    #[arg(long, default_value_t = 64)]
    pub payload_size: usize,
    /// Messages per pipelined write (redis) or per PublishBatch (ingest).
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Concurrent producers (connections), each with one batch in flight.
    #[arg(long, default_value_t = 4)]
    pub producers: usize,
    /// Push at most this many messages per second (all producers together).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Tokio threads of the producers (in this process).
    #[arg(long, default_value_t = 1)]
    pub producer_threads: usize,
    /// MQTT protocol level of the devices: 4 (3.1.1) or 5.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(4..=5))]
    pub protocol: u8,
    /// Keep-alive sent in CONNECT; an idle device sends PINGREQ every keepalive/2.
    #[arg(long, default_value_t = 60)]
    pub keepalive: u16,
    /// Persistent sessions (clean session / clean start off).
    #[arg(long)]
    pub persistent: bool,
    /// Client id prefix [default: dl<pid>].
    #[arg(long)]
    pub client_prefix: Option<String>,
    /// Device worker processes [default: enough for --max-per-worker devices each].
    #[arg(long)]
    pub workers: Option<usize>,
    /// Devices per worker process at most (20,000 open files per process on the reference host).
    #[arg(long, default_value_t = 18_000)]
    pub max_per_worker: u64,
    /// Tokio threads per device worker.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Source addresses of the devices (ranges A-B and single addresses); "none": the kernel's choice.
    #[arg(long, default_value = "127.0.0.2-127.0.0.250")]
    pub source_ips: String,
    /// Handshakes in flight while connecting (all workers together).
    #[arg(long, default_value_t = 200)]
    pub in_flight: usize,
    /// Per-handshake timeout, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub connect_timeout: f64,
    /// Give up this many seconds after the first send.
    #[arg(long, default_value_t = 300.0)]
    pub timeout: f64,
    /// Once the push is over, give up when nothing new arrived for this many
    /// seconds (above the distributor's reclaim idle time, 30 s by default, so
    /// that retried entries still count).
    #[arg(long, default_value_t = 45.0)]
    pub drain_timeout: f64,
    #[command(flatten)]
    pub output: crate::output::OutputArgs,
}

/// Runs the scenario from the parent process.
pub fn run(args: DownlinkArgs) -> anyhow::Result<()> {
    if args.devices == 0 || args.messages == 0 {
        bail!("--devices and --messages must be at least 1");
    }
    if args.devices > u64::from(u32::MAX) {
        bail!("at most {} devices", u32::MAX);
    }
    if args.payload_size < msg::PAYLOAD_HEADER {
        bail!("--payload-size must be at least {}", msg::PAYLOAD_HEADER);
    }
    if args.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        bail!("--rate must be positive");
    }
    let entry = match args.via {
        Via::Redis => {
            let url = args
                .redis_url
                .as_deref()
                .context("--via redis needs --redis-url")?;
            redis::RedisUrl::parse(url)?;
            format!("redis XADD {} ({url})", args.stream)
        }
        Via::Ingest => {
            if args.batch > 10_000 {
                bail!("the ingest API takes at most 10,000 messages per PublishBatch");
            }
            format!(
                "ingest PublishBatch ({})",
                args.grpc.as_deref().context("--via ingest needs --grpc")?
            )
        }
    };
    let sink = args.sink.clone().map(|handlers| SinkConfig {
        distributor: args.distributor.clone().unwrap_or_default(),
        handlers,
    });
    let targets = match (&sink, &args.target) {
        (Some(_), _) => Vec::new(),
        (None, Some(target)) => crate::net::parse_targets(target)?,
        (None, None) => bail!("--target is required (or --sink)"),
    };
    let source_ips = if args.source_ips.eq_ignore_ascii_case("none") {
        Vec::new()
    } else {
        crate::net::parse_source_ips(&args.source_ips)?
    };
    let workers = if sink.is_some() {
        1
    } else {
        args.workers
            .unwrap_or_else(|| args.devices.div_ceil(args.max_per_worker.max(1)) as usize)
            .clamp(1, args.devices as usize)
    };
    if args.devices.div_ceil(workers as u64) > 19_000 {
        bail!(
            "more than 19,000 devices per worker: the host allows 20,000 open files per process; use --workers"
        );
    }
    let prefix = args
        .client_prefix
        .clone()
        .unwrap_or_else(|| format!("dl{}", std::process::id()));
    let connect = ConnectOptions {
        protocol: Protocol::from_level(args.protocol)?,
        keepalive_secs: args.keepalive,
        clean: !args.persistent,
        username: None,
        password: None,
        session_expiry: None,
    };
    let tiers = Tiers::new(&args.output.broker_pid)?;

    // Phase 1: connect the devices.
    let base = args.devices / workers as u64;
    let extra = args.devices % workers as u64;
    let mut configs = Vec::with_capacity(workers);
    let mut first_index = 0;
    for w in 0..workers {
        let n = base + u64::from((w as u64) < extra);
        configs.push(WorkerConfig {
            worker: w,
            devices: n,
            first_index,
            targets: targets.clone(),
            source_ips: source_ips.clone(),
            in_flight: (args.in_flight * n as usize)
                .div_ceil(args.devices as usize)
                .max(1),
            connect: connect.clone(),
            client_id_prefix: prefix.clone(),
            timeout_ms: (args.connect_timeout * 1000.0) as u64,
            threads: args.threads,
            messages: args.messages,
            ping_every_ms: u64::from(args.keepalive.max(2)) * 1000 / 2,
            sink: sink.clone(),
        });
        first_index += n;
    }
    progress(
        &args,
        match &sink {
            Some(s) => format!(
                "throng-load downlink: attaching to the distributor at {} as {}",
                s.distributor,
                s.handlers.join(",")
            ),
            None => format!(
                "throng-load downlink: connecting {} devices to {} over {workers} worker(s)",
                count(args.devices),
                args.target.as_deref().unwrap_or_default()
            ),
        },
    );
    let connect_started = Instant::now();
    let mut set: WorkerSet<WorkerMsg> = WorkerSet::spawn("downlink", &configs)?;
    let connected = wait_connected(&args, &set, workers)?;
    let mut connect_phase = ConnectPhase {
        seconds: connect_started.elapsed().as_secs_f64(),
        ..ConnectPhase::default()
    };
    let mut connack = Latency::new();
    for r in &connected {
        connect_phase.ok += r.ok;
        connack.merge_wire(&r.connack_latency);
        for (k, v) in &r.failures {
            connect_phase.failed += v;
            *connect_phase.failures.entry(k.clone()).or_default() += v;
        }
    }
    connect_phase.connack_latency_us = connack.summary();
    if connect_phase.failed > 0 {
        bail!(
            "{} failed to connect: {:?}",
            if sink.is_some() {
                "sink streams"
            } else {
                "devices"
            },
            connect_phase.failures
        );
    }

    // Phase 2: push, while watching the arrivals.
    let plan = Plan {
        messages: args.messages,
        devices: args.devices,
        pick: args.pick,
        qos: args.qos,
        payload_size: args.payload_size,
        batch: args.batch.max(1),
        producers: args.producers.max(1),
        rate: args.rate,
        client_ids: Plan::client_ids(&prefix, args.devices),
    };
    progress(
        &args,
        format!("  pushing {} messages via {entry}", count(args.messages)),
    );
    let tiers_start = tiers.snapshot();
    let cpu_before = procfs::cpu_us("self").unwrap_or(0);
    let started = Instant::now();
    let producer = spawn_producer(&args, plan)?;
    let watched = watch(&args, &set, workers, &producer, started)?;
    let window = started.elapsed().as_secs_f64();
    let (broker, host) = tiers.usage_over(
        &tiers_start,
        &tiers.snapshot(),
        window,
        watched.counts.unique,
    );
    let push = match watched.push {
        Some(result) => Some(result?),
        // Everything arrived before the last replies did (ingest answers a batch
        // once all of it was acked): give the producers a moment.
        None => match producer.recv_timeout(Duration::from_secs(30)) {
            Ok(result) => Some(result?),
            Err(_) => None,
        },
    };
    let producer_cpu_us = procfs::cpu_us("self")
        .unwrap_or(0)
        .saturating_sub(cpu_before);

    // Phase 3: final reports.
    set.broadcast(CMD_FINISH)?;
    let finals = collect_finals(&mut set)?;
    set.wait()?;

    let mut report = Report {
        scenario: "downlink",
        targets: match &sink {
            Some(s) => vec![s.distributor.clone()],
            None => targets.iter().map(ToString::to_string).collect(),
        },
        sink: args.sink.clone(),
        entry,
        devices: args.devices,
        messages: args.messages,
        qos: args.qos,
        payload_size: args.payload_size,
        pick: args.pick,
        protocol: args.protocol,
        clean: !args.persistent,
        connect: connect_phase,
        delivery: delivery(&finals, args.messages, push.as_ref()),
        push,
        broker,
        host,
        load_tool: LoadTool {
            device_workers: workers,
            producer_cpu_us,
            device_cpu_us: finals.iter().map(|f| f.cpu_us).sum(),
            device_rss_bytes: finals.iter().map(|f| f.rss_bytes).sum(),
        },
        problems: Vec::new(),
    };
    report.find_problems();
    print_table(&report);
    args.output.write_json(&report)?;
    use std::io::Write;
    let _ = std::io::stdout().flush();
    if !report.problems.is_empty() {
        bail!("downlink run failed: {}", report.problems.join("; "));
    }
    Ok(())
}
