//! Scenario `connect`: a connection storm, optionally followed by an idle hold,
//! with broker memory / CPU sampled through /proc.

pub mod broker;
mod msg;
pub mod worker;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde::Serialize;

use self::broker::{BrokerPid, BrokerReport, Point};
use self::msg::{CMD_FINISH, ConnectedReport, HeldReport, WorkerConfig, WorkerMsg};
use crate::hist::{Latency, Summary};
use crate::mqtt::{ConnectOptions, Protocol};
use crate::procfs;
use crate::report::{bytes, count, micros};
use crate::workers::{Event, WorkerSet};

/// Default handshakes in flight (all workers together) when neither --rate nor --in-flight is given.
const DEFAULT_IN_FLIGHT: usize = 1000;

#[derive(clap::Args, Debug, Clone)]
pub struct ConnectArgs {
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
    /// Keep-alive in seconds sent in CONNECT; PINGREQs go out every keepalive/2 during --hold.
    #[arg(long, default_value_t = 60)]
    pub keepalive: u16,
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
    /// Keep all connections open this many seconds after the last handshake, then
    /// count how many stayed up.
    #[arg(long, default_value_t = 0.0)]
    pub hold: f64,
    /// Broker process to sample (VmRSS, CPU time) through /proc, as `[LABEL=]PID`;
    /// repeatable. All are summed; processes that share a LABEL (a tier, e.g.
    /// `agent=123`, `handler=456`, `handler=789`) are also reported together, an
    /// unlabeled pid on its own.
    #[arg(long = "broker-pid", value_name = "[LABEL=]PID")]
    pub broker_pid: Vec<BrokerPid>,
    /// Write the machine-readable report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// No progress lines on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Default, Serialize)]
struct ToolReport {
    workers: usize,
    rss_before_bytes: u64,
    rss_connected_bytes: u64,
    rss_held_bytes: Option<u64>,
    /// Load-tool RSS growth per live connection (end of hold, else when connected).
    rss_per_connection_bytes: Option<f64>,
    /// Load-tool CPU time (all workers) for the handshake phase, µs.
    cpu_us: u64,
    /// The same, per successful connection.
    cpu_us_per_connection: Option<f64>,
}

#[derive(Debug, Default, Serialize)]
struct HoldReport {
    seconds: f64,
    alive: u64,
    lost: BTreeMap<String, u64>,
    pings_sent: u64,
    pongs: u64,
}

#[derive(Debug, Serialize)]
struct Report {
    scenario: &'static str,
    targets: Vec<String>,
    connections: u64,
    protocol: u8,
    keepalive: u16,
    clean: bool,
    workers: usize,
    in_flight: Option<usize>,
    rate: Option<f64>,
    source_ips: usize,
    ok: u64,
    failed: u64,
    failures: BTreeMap<String, u64>,
    /// Shared start to the last finished handshake.
    duration_s: f64,
    connects_per_s: f64,
    /// Successful handshakes in each second since the start.
    timeline_per_s: Vec<u64>,
    connack_latency_us: Summary,
    tcp_connect_latency_us: Summary,
    /// Time from the shared start at which a share of the successful connections
    /// had their CONNACK (p50 = half of them connected, max = all).
    connected_after_us: Summary,
    /// Host-wide TCP counter deltas over the handshake phase (accept-queue
    /// overflows, SYN retransmissions, …); other traffic on the host counts too.
    host_tcp: BTreeMap<String, u64>,
    hold: Option<HoldReport>,
    broker: Option<BrokerReport>,
    load_tool: ToolReport,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Runs the scenario from the parent process.
pub fn run(args: ConnectArgs) -> anyhow::Result<()> {
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    let targets = crate::net::parse_targets(&args.target)?;
    let source_ips = if args.source_ips.eq_ignore_ascii_case("none") {
        Vec::new()
    } else {
        crate::net::parse_source_ips(&args.source_ips)?
    };
    let workers = args
        .workers
        .unwrap_or_else(|| args.connections.div_ceil(args.max_per_worker.max(1)) as usize)
        .max(1)
        .min(args.connections as usize);
    let per_worker = args.connections.div_ceil(workers as u64);
    if per_worker > 19_000 {
        bail!(
            "{per_worker} connections per worker: the host allows 20,000 open files per process; use --workers"
        );
    }
    let in_flight = if args.rate.is_some() {
        None
    } else {
        Some(args.in_flight.unwrap_or(DEFAULT_IN_FLIGHT).max(1))
    };
    if args
        .rate
        .is_some_and(|rate| !(rate > 0.0 && rate.is_finite()))
    {
        bail!("--rate must be positive");
    }
    let connect = ConnectOptions {
        protocol: Protocol::from_level(args.protocol)?,
        keepalive_secs: args.keepalive,
        clean: args.clean,
        username: args.username.clone(),
        password: args.password.clone(),
        session_expiry: args.session_expiry,
    };
    let ping_every_ms = u64::from(args.keepalive) * 1000 / 2;

    let mut broker = BrokerReport::new(&args.broker_pid)?;
    broker.sample(Point::Before);
    let tcp_before = procfs::tcp_counters();

    // Shares: the first (connections % workers) workers take one more.
    let base = args.connections / workers as u64;
    let extra = args.connections % workers as u64;
    let start_at = unix_ms() + 300 + 20 * workers as u64;
    let prefix = format!("tl{}x", std::process::id());
    let mut configs = Vec::with_capacity(workers);
    let mut first_index = 0;
    for w in 0..workers {
        let n = base + u64::from((w as u64) < extra);
        let share = |total: f64| total * n as f64 / args.connections as f64;
        configs.push(WorkerConfig {
            worker: w,
            connections: n,
            first_index,
            targets: targets.clone(),
            source_ips: source_ips.clone(),
            in_flight: in_flight.map(|k| (share(k as f64).round() as usize).max(1)),
            rate: args.rate.map(share),
            connect: connect.clone(),
            client_id_prefix: prefix.clone(),
            timeout_ms: (args.timeout * 1000.0) as u64,
            start_at_unix_ms: start_at,
            threads: args.threads,
            ping_every_ms,
        });
        first_index += n;
    }

    if !args.quiet {
        eprintln!(
            "throng-load connect: {} connections to {} over {workers} worker(s), {}",
            count(args.connections),
            args.target,
            match (in_flight, args.rate) {
                (Some(k), _) => format!("at most {k} handshakes in flight"),
                (None, Some(r)) => format!("{r} handshakes/s"),
                (None, None) => unreachable!(),
            }
        );
    }
    let mut set: WorkerSet<WorkerMsg> = WorkerSet::spawn("connect", &configs)?;

    // Phase 1: handshakes.
    let mut progress = vec![(0u64, 0u64); workers];
    let mut connected: Vec<Option<ConnectedReport>> = vec![None; workers];
    let mut last_print = Instant::now();
    while connected.iter().any(Option::is_none) {
        let Some((w, event)) = set.recv_timeout(Duration::from_secs(1)) else {
            continue;
        };
        match event {
            Event::Msg(WorkerMsg::Progress { ok, failed }) => {
                progress[w] = (ok, failed);
                if !args.quiet && last_print.elapsed() >= Duration::from_millis(900) {
                    last_print = Instant::now();
                    let (ok, failed) = progress
                        .iter()
                        .fold((0, 0), |(a, b), &(o, f)| (a + o, b + f));
                    eprintln!("  … {} connected, {} failed", count(ok), count(failed));
                }
            }
            Event::Msg(WorkerMsg::Connected(report)) => connected[w] = Some(*report),
            Event::Msg(WorkerMsg::Error { message }) => bail!("worker {w}: {message}"),
            Event::Msg(other) => bail!("worker {w}: unexpected {other:?} while connecting"),
            Event::Garbage(line) => eprintln!("worker {w}: {line}"),
            Event::Closed => bail!("worker {w} exited before reporting"),
        }
    }
    let connected: Vec<ConnectedReport> = connected.into_iter().flatten().collect();
    broker.sample(Point::Connected);
    let host_tcp = procfs::counter_delta(&tcp_before, &procfs::tcp_counters());
    let ok: u64 = connected.iter().map(|r| r.ok).sum();

    // Phase 2: hold.
    if args.hold > 0.0 && !args.quiet {
        eprintln!(
            "  holding {} connections for {} s (PINGREQ every {} s)",
            count(ok),
            args.hold,
            ping_every_ms as f64 / 1000.0
        );
    }
    let hold_started = Instant::now();
    let hold_until = hold_started + Duration::from_secs_f64(args.hold.max(0.0));
    while let Some(left) = hold_until.checked_duration_since(Instant::now()) {
        if left.is_zero() {
            break;
        }
        if let Some((w, event)) = set.recv_timeout(left) {
            match event {
                Event::Msg(WorkerMsg::Error { message }) => bail!("worker {w}: {message}"),
                Event::Msg(_) => {}
                Event::Garbage(line) => eprintln!("worker {w}: {line}"),
                Event::Closed => bail!("worker {w} exited during the hold"),
            }
        }
    }
    let held_secs = hold_started.elapsed().as_secs_f64();
    if args.hold > 0.0 {
        broker.sample(Point::Held);
    }
    set.broadcast(CMD_FINISH)?;
    let mut held: Vec<Option<HeldReport>> = vec![None; workers];
    while held.iter().any(Option::is_none) {
        let Some((w, event)) = set.recv_timeout(Duration::from_secs(60)) else {
            bail!("workers did not report after finish");
        };
        match event {
            Event::Msg(WorkerMsg::Held(report)) => held[w] = Some(report),
            Event::Msg(WorkerMsg::Error { message }) => bail!("worker {w}: {message}"),
            Event::Msg(_) => {}
            Event::Garbage(line) => eprintln!("worker {w}: {line}"),
            Event::Closed => bail!("worker {w} exited before its final report"),
        }
    }
    let held: Vec<HeldReport> = held.into_iter().flatten().collect();
    set.wait()?;

    let report = build_report(
        &args,
        Setup {
            targets: &targets,
            workers,
            in_flight,
            source_ips: source_ips.len(),
        },
        connected,
        held,
        held_secs,
        broker,
        host_tcp,
    );
    print_table(&report);
    if let Some(path) = &args.json {
        let mut text = serde_json::to_string_pretty(&report)?;
        text.push('\n');
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    let _ = std::io::stdout().flush();
    Ok(())
}

/// What the parent decided before starting the workers.
struct Setup<'a> {
    targets: &'a [std::net::SocketAddr],
    workers: usize,
    in_flight: Option<usize>,
    source_ips: usize,
}

fn build_report(
    args: &ConnectArgs,
    setup: Setup<'_>,
    connected: Vec<ConnectedReport>,
    held: Vec<HeldReport>,
    held_secs: f64,
    mut broker: BrokerReport,
    host_tcp: BTreeMap<String, u64>,
) -> Report {
    let Setup {
        targets,
        workers,
        in_flight,
        source_ips,
    } = setup;
    let mut connack = Latency::new();
    let mut tcp = Latency::new();
    let mut completion = Latency::new();
    let mut failures = BTreeMap::new();
    let mut timeline: Vec<u64> = Vec::new();
    let mut last_done_us = 0;
    let mut tool = ToolReport {
        workers,
        ..ToolReport::default()
    };
    for r in &connected {
        connack.merge_wire(&r.connack_latency);
        tcp.merge_wire(&r.tcp_latency);
        completion.merge_wire(&r.completion);
        for (k, v) in &r.failures {
            *failures.entry(k.clone()).or_insert(0) += v;
        }
        if timeline.len() < r.timeline.len() {
            timeline.resize(r.timeline.len(), 0);
        }
        for (t, v) in timeline.iter_mut().zip(&r.timeline) {
            *t += v;
        }
        last_done_us = last_done_us.max(r.last_done_us);
        tool.rss_before_bytes += r.rss_before;
        tool.rss_connected_bytes += r.rss_connected;
        tool.cpu_us += r.cpu_us;
    }
    let ok: u64 = connected.iter().map(|r| r.ok).sum();
    let failed: u64 = failures.values().sum();
    tool.cpu_us_per_connection = (ok > 0).then(|| tool.cpu_us as f64 / ok as f64);
    let duration_s = last_done_us as f64 / 1e6;

    let hold = (args.hold > 0.0).then(|| {
        let mut h = HoldReport {
            seconds: held_secs,
            ..HoldReport::default()
        };
        for r in &held {
            h.alive += r.alive;
            h.pings_sent += r.pings_sent;
            h.pongs += r.pongs;
            for (k, v) in &r.lost {
                *h.lost.entry(k.clone()).or_insert(0) += v;
            }
        }
        h
    });
    let live = hold.as_ref().map_or(ok, |h| h.alive);
    if hold.is_some() {
        tool.rss_held_bytes = Some(held.iter().map(|r| r.rss_held).sum());
    }
    let tool_end = tool.rss_held_bytes.unwrap_or(tool.rss_connected_bytes);
    tool.rss_per_connection_bytes =
        (live > 0).then(|| (tool_end as f64 - tool.rss_before_bytes as f64) / live as f64);

    broker.derive(ok, live, held_secs);

    Report {
        scenario: "connect",
        targets: targets.iter().map(ToString::to_string).collect(),
        connections: args.connections,
        protocol: args.protocol,
        keepalive: args.keepalive,
        clean: args.clean,
        workers,
        in_flight,
        rate: args.rate,
        source_ips,
        ok,
        failed,
        failures,
        duration_s,
        connects_per_s: if duration_s > 0.0 {
            ok as f64 / duration_s
        } else {
            0.0
        },
        timeline_per_s: timeline,
        connack_latency_us: connack.summary(),
        tcp_connect_latency_us: tcp.summary(),
        connected_after_us: completion.summary(),
        host_tcp,
        hold,
        broker: (!args.broker_pid.is_empty()).then_some(broker),
        load_tool: tool,
    }
}

fn latency_row(name: &str, s: &Summary) -> String {
    format!(
        "{name:<22}p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        micros(s.p50_us),
        micros(s.p90_us),
        micros(s.p99_us),
        micros(s.p999_us),
        micros(s.max_us)
    )
}

fn print_table(r: &Report) {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!(
        "== throng-load connect: {} -> {} (MQTT {}, keepalive {} s{}), {} worker(s), {}",
        count(r.connections),
        r.targets.join(","),
        if r.protocol == 5 { "5" } else { "3.1.1" },
        r.keepalive,
        if r.clean { ", clean" } else { "" },
        r.workers,
        match (r.in_flight, r.rate) {
            (Some(k), _) => format!("in-flight {k}"),
            (None, Some(rate)) => format!("rate {rate}/s"),
            (None, None) => String::new(),
        }
    ));
    line(format!(
        "{:<22}{} of {} in {:.3} s = {} conn/s",
        "connected",
        count(r.ok),
        count(r.connections),
        r.duration_s,
        count(r.connects_per_s.round() as u64)
    ));
    line(format!(
        "{:<22}{}",
        "failures",
        if r.failures.is_empty() {
            "none".to_owned()
        } else {
            r.failures
                .iter()
                .map(|(k, v)| format!("{k}: {}", count(*v)))
                .collect::<Vec<_>>()
                .join(", ")
        }
    ));
    line(latency_row("CONNACK latency", &r.connack_latency_us));
    line(latency_row(
        "TCP connect latency",
        &r.tcp_connect_latency_us,
    ));
    let c = &r.connected_after_us;
    line(format!(
        "{:<22}50% after {}, 90% after {}, 99% after {}, all after {}",
        "connected by",
        micros(c.p50_us),
        micros(c.p90_us),
        micros(c.p99_us),
        micros(c.max_us)
    ));
    line(format!(
        "{:<22}{}",
        "host TCP counters",
        if r.host_tcp.values().all(|&v| v == 0) {
            "no accept-queue overflow or SYN retransmission".to_owned()
        } else {
            r.host_tcp
                .iter()
                .filter(|&(_, &v)| v > 0)
                .map(|(k, v)| format!("{k} +{}", count(*v)))
                .collect::<Vec<_>>()
                .join(", ")
        }
    ));
    line(format!(
        "{:<22}{}",
        "per second",
        r.timeline_per_s
            .iter()
            .enumerate()
            .map(|(i, n)| format!("[{}s] {}", i + 1, count(*n)))
            .collect::<Vec<_>>()
            .join("  ")
    ));
    if let Some(h) = &r.hold {
        line(format!(
            "{:<22}{} of {} stayed up for {:.1} s{} (PINGREQ {} sent, PINGRESP {} received)",
            "hold",
            count(h.alive),
            count(r.ok),
            h.seconds,
            if h.lost.is_empty() {
                String::new()
            } else {
                format!(
                    "; lost: {}",
                    h.lost
                        .iter()
                        .map(|(k, v)| format!("{k}: {}", count(*v)))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
            count(h.pings_sent),
            count(h.pongs)
        ));
    }
    if let Some(b) = &r.broker {
        for (head, text) in b.table_lines() {
            line(format!("{head:<22}{text}"));
        }
    }
    let t = &r.load_tool;
    line(format!(
        "{:<22}RSS {} before, {} connected{}; {} per connection",
        format!("load tool ({} proc)", t.workers),
        bytes(t.rss_before_bytes as f64),
        bytes(t.rss_connected_bytes as f64),
        t.rss_held_bytes.map_or(String::new(), |b| format!(
            ", {} end of hold",
            bytes(b as f64)
        )),
        t.rss_per_connection_bytes.map_or("n/a".into(), bytes)
    ));
    line(format!(
        "{:<22}CPU {} while connecting = {} per connection",
        "",
        micros(t.cpu_us),
        t.cpu_us_per_connection
            .map_or("n/a".into(), |us| format!("{us:.1} µs"))
    ));
    print!("{out}");
}
