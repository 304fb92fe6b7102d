//! The `connect` / `hold` worker: opens its share of connections, keeps them
//! alive, reports.
//!
//! Once its CONNACK has arrived a connection costs only its file descriptor: the
//! tokio stream is turned back into a non-blocking std socket (deregistered from
//! the reactor) and handed to [`Held`]. No task, timer or buffer remains per
//! connection; one timer wheel per worker sends the PINGREQs, from the first
//! connection on (a long storm would otherwise outlast the keepalive of its
//! earliest connections), and drains the replies.

use std::net::TcpStream as StdStream;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{Semaphore, mpsc};
use tokio::time::MissedTickBehavior;

use super::held::Held;
use super::host;
use super::msg::{CMD_FINISH, ConnectedReport, HeldReport, Progress, WorkerConfig, WorkerMsg};
use crate::handshake::{self, Failure};
use crate::hist::Latency;
use crate::procfs;
use crate::workers::{self, emit};

struct Outcome {
    result: Result<StdStream, Failure>,
    tcp_us: Option<u64>,
    total_us: u64,
    done: Instant,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Entry point of `throng-load worker connect`.
pub fn run() -> anyhow::Result<()> {
    let cfg: WorkerConfig = workers::start(|message| WorkerMsg::Error { message })?;
    // Commands from the parent; the channel closing (parent gone) counts as `finish`.
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel::<String>();
    workers::read_commands(move |line| cmd_tx.send(line.to_owned()).is_ok())?;
    workers::runtime(cfg.threads)?.block_on(run_async(cfg, cmd_rx))
}

async fn run_async(
    cfg: WorkerConfig,
    mut cmd_rx: mpsc::UnboundedReceiver<String>,
) -> anyhow::Result<()> {
    let cfg = Arc::new(cfg);

    // Wait for the shared start so all workers' timelines line up.
    let now_ms = unix_ms();
    if cfg.start_at_unix_ms > now_ms {
        tokio::time::sleep(Duration::from_millis(cfg.start_at_unix_ms - now_ms)).await;
    }
    let rss_before = procfs::rss_bytes("self").unwrap_or(0);
    let cpu_before = procfs::cpu_us("self").unwrap_or(0);
    let start = Instant::now();

    let (tx, mut rx) = mpsc::unbounded_channel::<Outcome>();
    let launcher = tokio::spawn(launch(cfg.clone(), start, tx));

    let ping_every = (cfg.ping_every_ms > 0).then(|| Duration::from_millis(cfg.ping_every_ms));
    let (mut held, tick) = Held::new(cfg.connections as usize, ping_every);
    // Missed ticks fire at once (the default, Burst): a worker that was not
    // scheduled for a while still visits every slot, late rather than never.
    let mut wheel = tokio::time::interval_at(tokio::time::Instant::now() + tick, tick);
    let mut progress = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    progress.set_missed_tick_behavior(MissedTickBehavior::Delay);

    let mut report = ConnectedReport {
        rss_before,
        ..ConnectedReport::default()
    };
    let mut connack = Latency::new();
    let mut tcp = Latency::new();
    let mut completion = Latency::new();
    let mut failed = 0u64;
    let mut last_done = start;
    let mut finished = 0u64;
    while finished < cfg.connections {
        tokio::select! {
            outcome = rx.recv() => {
                let Some(outcome) = outcome else { break };
                finished += 1;
                last_done = last_done.max(outcome.done);
                let since_start = outcome.done.duration_since(start);
                let second = since_start.as_secs() as usize;
                match outcome.result {
                    Ok(stream) => {
                        held.push(stream);
                        connack.record_us(outcome.total_us);
                        if let Some(us) = outcome.tcp_us {
                            tcp.record_us(us);
                        }
                        completion.record_us(since_start.as_micros() as u64);
                        bump(&mut report.timeline, second);
                    }
                    Err(failure) => {
                        failed += 1;
                        *report.failures.entry(failure.key()).or_default() += 1;
                        bump(&mut report.failed_timeline, second);
                    }
                }
            }
            _ = wheel.tick() => held.tick(),
            _ = progress.tick() => emit(&progress_msg(&held, report.timeline.iter().sum(), failed)),
            cmd = cmd_rx.recv() => {
                // Only a parent that gave up says `finish` (or goes away) this early.
                if matches!(cmd.as_deref(), Some(CMD_FINISH) | None) {
                    launcher.abort();
                    held.disconnect_all();
                    return Ok(());
                }
            }
        }
    }
    report.ok = report.timeline.iter().sum();
    report.connack_latency = connack.to_wire();
    report.tcp_latency = tcp.to_wire();
    report.completion = completion.to_wire();
    report.last_done_us = last_done.duration_since(start).as_micros() as u64;
    drop((connack, tcp, completion));
    report.rss_connected = procfs::rss_bytes("self").unwrap_or(0);
    let cpu_connected = procfs::cpu_us("self").unwrap_or(0);
    report.cpu_us = cpu_connected.saturating_sub(cpu_before);
    let ok = report.ok;
    emit(&WorkerMsg::Connected(Box::new(report)));

    // The hold: the same wheel keeps turning until the parent says `finish`.
    let closed_while_connecting = std::mem::take(&mut held.counts.closed);
    loop {
        tokio::select! {
            cmd = cmd_rx.recv() => {
                match cmd.as_deref() {
                    Some(CMD_FINISH) | None => break,
                    Some(other) => eprintln!("worker {}: unknown command {other:?}", cfg.worker),
                }
            }
            _ = wheel.tick() => held.tick(),
            _ = progress.tick() => emit(&progress_msg(&held, ok, failed)),
        }
    }
    let cpu_held_us = procfs::cpu_us("self")
        .unwrap_or(0)
        .saturating_sub(cpu_connected);
    finish(&mut held).await;
    let counts = &held.counts;
    emit(&WorkerMsg::Held(HeldReport {
        alive: held.up(),
        closed_while_connecting,
        closed_during_hold: counts.closed.clone(),
        pings_sent: counts.pings_sent,
        pongs: counts.pongs,
        pings_blocked: counts.pings_blocked,
        other_packets: counts.other_packets,
        max_ping_gap_ms: counts.max_ping_gap_ms,
        rss_held: procfs::rss_bytes("self").unwrap_or(0),
        rss_peak: host::peak_rss_self(),
        cpu_held_us,
    }));
    held.disconnect_all();
    Ok(())
}

/// Final passes without pinging: counts what closed since the last visit and
/// gives the last PINGREQs up to a second for their PINGRESP.
async fn finish(held: &mut Held) {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        held.check_all();
        let c = &held.counts;
        if c.pongs >= c.pings_sent || Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn progress_msg(held: &Held, ok: u64, failed: u64) -> WorkerMsg {
    WorkerMsg::Progress(Progress {
        ok,
        failed,
        up: held.up(),
        closed: ok - held.up(),
        pings_sent: held.counts.pings_sent,
        pongs: held.counts.pongs,
    })
}

/// Adds one to `series[second]`, growing it as needed.
fn bump(series: &mut Vec<u64>, second: usize) {
    if series.len() <= second {
        series.resize(second + 1, 0);
    }
    series[second] += 1;
}

/// Starts the handshakes, paced by the in-flight limit or the rate.
async fn launch(cfg: Arc<WorkerConfig>, start: Instant, tx: mpsc::UnboundedSender<Outcome>) {
    let limit = cfg.in_flight.map(|k| Arc::new(Semaphore::new(k.max(1))));
    for i in 0..cfg.connections {
        let permit = match &limit {
            Some(sem) => Some(sem.clone().acquire_owned().await.expect("semaphore open")),
            None => None,
        };
        if let Some(rate) = cfg.rate {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
        }
        let cfg = cfg.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let outcome = handshake(&cfg, cfg.first_index + i).await;
            drop(permit);
            let _ = tx.send(outcome);
        });
    }
}

async fn handshake(cfg: &WorkerConfig, index: u64) -> Outcome {
    let t0 = Instant::now();
    let mut tcp_us = None;
    let result = tokio::time::timeout(
        Duration::from_millis(cfg.timeout_ms),
        handshake_inner(cfg, index, t0, &mut tcp_us),
    )
    .await
    .unwrap_or(Err(Failure::Timeout));
    let done = Instant::now();
    Outcome {
        result,
        tcp_us,
        total_us: done.duration_since(t0).as_micros() as u64,
        done,
    }
}

async fn handshake_inner(
    cfg: &WorkerConfig,
    index: u64,
    t0: Instant,
    tcp_us: &mut Option<u64>,
) -> Result<StdStream, Failure> {
    let target = cfg.targets[(index % cfg.targets.len() as u64) as usize];
    // A source address of the other family than the target is left to the kernel.
    let source = (!cfg.source_ips.is_empty())
        .then(|| cfg.source_ips[(index % cfg.source_ips.len() as u64) as usize])
        .filter(|ip| ip.is_ipv4() == target.is_ipv4());
    let client_id = format!("{}{index}", cfg.client_id_prefix);
    let stream = handshake::connect(source, target, &cfg.connect, &client_id, t0, tcp_us).await?;
    // Leave the reactor: from here on the connection is a bare non-blocking fd.
    stream.into_std().map_err(Failure::Io)
}
