//! The `pubsub` worker process: connects its share of subscribers (each
//! subscribed, SUBACK in hand) and publishers, then follows the parent's
//! commands (probe, start, stop, finish) and reports progress, what its
//! publishers sent, and finally what its subscribers received.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::msg::{
    CMD_FINISH, CMD_PROBE, CMD_START, CMD_STOP, FinalReport, PROGRESS_MS, Progress,
    PublishedReport, SubscriberRow, WorkerConfig, WorkerMsg,
};
use super::plan::Plan;
use super::publisher::PubResult;
use super::setup;
use crate::hist::Latency;
use crate::mqtt::Protocol;
use crate::procfs;
use crate::workers::{self, emit};

/// Where the run is; publishers and subscribers follow it through a watch channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Idle,
    Probe,
    /// Publish: warmup until `measure_start_us` (unix µs), measured from then on.
    Run {
        measure_start_us: u64,
    },
    /// Publishers stop (the parent gave up waiting for them).
    StopPublishing,
    /// Everyone stops; subscribers hand in their accounting.
    Finish,
}

/// Microseconds since the Unix epoch (the clock every process of a run shares).
pub fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// What one read of a subscriber changed in the worker's counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct Delta {
    pub probes_ready: u64,
    pub probes_received: u64,
    pub warmup_received: u64,
    pub received: u64,
    pub unique: u64,
}

/// The worker's counters, read by the progress reports.
#[derive(Default)]
pub struct Counters {
    probes_ready: AtomicU64,
    probes_received: AtomicU64,
    warmup_received: AtomicU64,
    received: AtomicU64,
    unique: AtomicU64,
    sent: AtomicU64,
    publishers_done: AtomicU64,
}

impl Counters {
    pub fn add_sent(&self, n: u64) {
        self.sent.fetch_add(n, Ordering::Relaxed);
    }

    pub fn add_publisher_done(&self) {
        self.publishers_done.fetch_add(1, Ordering::Relaxed);
    }

    fn add(&self, d: &Delta) {
        let add = |a: &AtomicU64, v: u64| {
            if v > 0 {
                a.fetch_add(v, Ordering::Relaxed);
            }
        };
        add(&self.probes_ready, d.probes_ready);
        add(&self.probes_received, d.probes_received);
        add(&self.warmup_received, d.warmup_received);
        add(&self.received, d.received);
        add(&self.unique, d.unique);
    }

    fn load(&self) -> Progress {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Progress {
            probes_ready: get(&self.probes_ready),
            probes_received: get(&self.probes_received),
            warmup_received: get(&self.warmup_received),
            received: get(&self.received),
            unique: get(&self.unique),
            sent: get(&self.sent),
            publishers_done: get(&self.publishers_done),
        }
    }
}

/// Latencies and arrival times, recorded once per read (or per ack batch).
struct Recorder {
    e2e: Latency,
    ack: Latency,
    /// Unique measured arrivals per unix 100 ms.
    arrivals: HashMap<u64, u64>,
    first_arrival_us: u64,
    last_arrival_us: u64,
}

/// State shared by the clients of one worker.
pub struct Shared {
    pub plan: Plan,
    pub protocol: Protocol,
    /// Topic of each publisher, by index.
    pub topics: Vec<Vec<u8>>,
    pub counters: Counters,
    recorder: std::sync::Mutex<Recorder>,
    /// A client that wrote nothing for this long sends PINGREQ.
    pub ping_every: Duration,
}

impl Shared {
    /// Adds what one read brought, arrived at `now` (unix µs).
    pub fn record(&self, delta: &Delta, latencies: &mut Vec<u64>, now: u64) {
        self.counters.add(delta);
        if latencies.is_empty() {
            return;
        }
        let mut r = self.recorder.lock().expect("recorder lock");
        for &us in latencies.iter() {
            r.e2e.record_us(us);
        }
        *r.arrivals.entry(now / 100_000).or_default() += latencies.len() as u64;
        r.first_arrival_us = r.first_arrival_us.min(now);
        r.last_arrival_us = r.last_arrival_us.max(now);
        drop(r);
        latencies.clear();
    }

    pub fn record_acks(&self, latencies: &[u64]) {
        let mut r = self.recorder.lock().expect("recorder lock");
        for &us in latencies {
            r.ack.record_us(us);
        }
    }
}

enum Command {
    Probe,
    Start(u64),
    Stop,
    Finish(Vec<u64>),
}

fn parse_command(line: &str) -> Option<Command> {
    let (word, rest) = line.trim().split_once(' ').unwrap_or((line.trim(), ""));
    match word {
        CMD_PROBE => Some(Command::Probe),
        CMD_START => rest.trim().parse().ok().map(Command::Start),
        CMD_STOP => Some(Command::Stop),
        CMD_FINISH => serde_json::from_str(rest).ok().map(Command::Finish),
        _ => None,
    }
}

/// Entry point of `throng-load worker pubsub`.
pub fn run() -> anyhow::Result<()> {
    let cfg: WorkerConfig = workers::start(|message| WorkerMsg::Error { message })?;
    let (tx, rx) = mpsc::channel::<Command>(16);
    workers::read_commands(move |line| match parse_command(line) {
        Some(cmd) => tx.blocking_send(cmd).is_ok(),
        None => {
            eprintln!("pubsub worker: unknown command {line:?}");
            true
        }
    })?;
    let rt = workers::runtime(cfg.threads)?;
    rt.block_on(run_async(cfg, rx));
    rt.shutdown_background();
    Ok(())
}

async fn run_async(cfg: WorkerConfig, mut commands: mpsc::Receiver<Command>) {
    let plan = cfg.plan.clone();
    let shared = Arc::new(Shared {
        protocol: cfg.connect.protocol,
        topics: (0..plan.publishers)
            .map(|i| plan.topic(i).into_bytes())
            .collect(),
        counters: Counters::default(),
        recorder: std::sync::Mutex::new(Recorder {
            e2e: Latency::new(),
            ack: Latency::new(),
            arrivals: HashMap::new(),
            first_arrival_us: u64::MAX,
            last_arrival_us: 0,
        }),
        ping_every: Duration::from_millis(u64::from(cfg.connect.keepalive_secs.max(2)) * 500),
        plan,
    });
    let (phase_tx, phase_rx) = watch::channel(Phase::Idle);
    let (done_tx, mut done_rx) = mpsc::channel(cfg.publishers.max(1) as usize);
    let (ready, subs, mut pending) = setup::connect_all(&cfg, &shared, &phase_rx, done_tx).await;
    emit(&WorkerMsg::Ready(Box::new(ready)));
    let cpu_before = procfs::cpu_us("self").unwrap_or(0);
    let mut results: Vec<PubResult> = Vec::new();
    let mut window = cfg.plan.inflight;
    if pending == 0 {
        emit(&WorkerMsg::Published(Box::new(published(
            &shared,
            &[],
            window,
        ))));
    }
    let mut tick = tokio::time::interval(Duration::from_millis(PROGRESS_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let counts = loop {
        tokio::select! {
            cmd = commands.recv() => match cmd {
                Some(Command::Probe) => { phase_tx.send_replace(Phase::Probe); }
                Some(Command::Start(t)) => { phase_tx.send_replace(Phase::Run { measure_start_us: t }); }
                Some(Command::Stop) => { phase_tx.send_replace(Phase::StopPublishing); }
                Some(Command::Finish(counts)) => break Some(counts),
                None => break None,
            },
            result = done_rx.recv(), if pending > 0 => {
                let Some(result) = result else { continue };
                window = window.min(result.window);
                results.push(result);
                pending -= 1;
                if pending == 0 {
                    emit(&WorkerMsg::Published(Box::new(published(&shared, &results, window))));
                }
            }
            _ = tick.tick() => emit(&WorkerMsg::Progress(shared.counters.load())),
        }
    };
    phase_tx.send_replace(Phase::Finish);
    let Some(counts) = counts else { return };
    let mut rows = Vec::with_capacity(subs.len());
    for handle in subs {
        if let Ok(Some((sub, ended))) = handle.await {
            rows.push(SubscriberRow {
                subscriber: sub.index,
                counts: sub.counts(&counts),
                ended,
            });
        }
    }
    let cpu_us = procfs::cpu_us("self")
        .unwrap_or(0)
        .saturating_sub(cpu_before);
    let r = shared.recorder.lock().expect("recorder lock");
    let mut arrivals: Vec<(u64, u64)> = r.arrivals.iter().map(|(&k, &v)| (k, v)).collect();
    arrivals.sort_unstable();
    emit(&WorkerMsg::Final(Box::new(FinalReport {
        subscribers: rows,
        latency: r.e2e.to_wire(),
        first_arrival_us: if r.first_arrival_us == u64::MAX {
            0
        } else {
            r.first_arrival_us
        },
        last_arrival_us: r.last_arrival_us,
        arrivals,
        cpu_us,
        rss_bytes: procfs::rss_bytes("self").unwrap_or(0),
    })));
}

/// Merges the publishers' results.
fn published(shared: &Shared, results: &[PubResult], window: u16) -> PublishedReport {
    let mut p = PublishedReport {
        window,
        ack_latency: shared.recorder.lock().expect("recorder lock").ack.to_wire(),
        ..PublishedReport::default()
    };
    let mut first = u64::MAX;
    for r in results {
        p.per_publisher.push((r.index, r.measured));
        p.warmup_sent += r.warmup;
        p.probes_sent += r.probes;
        p.acked += r.acked;
        for (k, v) in &r.refused {
            *p.refused.entry(k.clone()).or_default() += v;
        }
        if r.first_send_us > 0 {
            first = first.min(r.first_send_us);
        }
        p.last_send_us = p.last_send_us.max(r.last_send_us);
        if let Some(cause) = &r.failed {
            *p.failed.entry(cause.clone()).or_default() += 1;
        }
    }
    p.first_send_us = if first == u64::MAX { 0 } else { first };
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        assert!(matches!(parse_command("probe"), Some(Command::Probe)));
        assert!(matches!(
            parse_command("start 17"),
            Some(Command::Start(17))
        ));
        assert!(matches!(parse_command("stop\n"), Some(Command::Stop)));
        match parse_command("finish [3,0,5]") {
            Some(Command::Finish(v)) => assert_eq!(v, vec![3, 0, 5]),
            _ => panic!("finish not parsed"),
        }
        assert!(parse_command("start soon").is_none());
        assert!(parse_command("nonsense").is_none());
    }
}
