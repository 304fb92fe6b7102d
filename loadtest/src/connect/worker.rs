//! The `connect` worker: opens its share of connections, holds them, reports.
//!
//! Once its CONNACK has arrived a connection costs only its file descriptor: the
//! tokio stream is turned back into a non-blocking std socket (deregistered from
//! the reactor) and kept in a plain `Vec`. No task, timer or buffer remains per
//! connection; one sweep per worker sends PINGREQs and drains replies.

use std::io::{self, BufRead, ErrorKind, Read, Write};
use std::net::TcpStream as StdStream;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use tokio::sync::{Semaphore, mpsc};

use super::msg::{CMD_FINISH, ConnectedReport, HeldReport, WorkerConfig, WorkerMsg};
use crate::handshake::{self, Failure, io_key};
use crate::hist::Latency;
use crate::mqtt;
use crate::procfs;
use crate::workers::emit;

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
    let stdin = io::stdin();
    let mut first = String::new();
    stdin
        .lock()
        .read_line(&mut first)
        .context("reading worker config")?;
    let cfg: WorkerConfig = serde_json::from_str(&first).context("parsing worker config")?;

    let need = cfg.connections + 64;
    let limit = rlimit::increase_nofile_limit(need).context("raising RLIMIT_NOFILE")?;
    if limit < need {
        let message = format!(
            "worker {} needs {need} open files but may hold only {limit}: use more workers",
            cfg.worker
        );
        emit(&WorkerMsg::Error {
            message: message.clone(),
        });
        anyhow::bail!(message);
    }

    // Commands from the parent; EOF (parent gone) counts as `finish`.
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel::<String>();
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            for line in io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if cmd_tx.send(line.trim().to_owned()).is_err() {
                    return;
                }
            }
            let _ = cmd_tx.send(CMD_FINISH.to_owned());
        })?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(run_async(cfg, cmd_rx))
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
    tokio::spawn(launch(cfg.clone(), start, tx));

    let mut conns: Vec<StdStream> = Vec::with_capacity(cfg.connections as usize);
    let mut report = ConnectedReport {
        rss_before,
        ..ConnectedReport::default()
    };
    let mut connack = Latency::new();
    let mut tcp = Latency::new();
    let mut completion = Latency::new();
    let mut failed = 0u64;
    let mut last_done = start;
    let mut progress = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    let mut finished = 0u64;
    while finished < cfg.connections {
        tokio::select! {
            outcome = rx.recv() => {
                let Some(outcome) = outcome else { break };
                finished += 1;
                last_done = last_done.max(outcome.done);
                match outcome.result {
                    Ok(stream) => {
                        conns.push(stream);
                        connack.record_us(outcome.total_us);
                        if let Some(us) = outcome.tcp_us {
                            tcp.record_us(us);
                        }
                        let since_start = outcome.done.duration_since(start);
                        completion.record_us(since_start.as_micros() as u64);
                        let second = since_start.as_secs() as usize;
                        if report.timeline.len() <= second {
                            report.timeline.resize(second + 1, 0);
                        }
                        report.timeline[second] += 1;
                    }
                    Err(failure) => {
                        failed += 1;
                        *report.failures.entry(failure.key()).or_default() += 1;
                    }
                }
            }
            _ = progress.tick() => {
                emit(&WorkerMsg::Progress { ok: conns.len() as u64, failed });
            }
        }
    }
    conns.shrink_to_fit();
    report.ok = conns.len() as u64;
    report.connack_latency = connack.to_wire();
    report.tcp_latency = tcp.to_wire();
    report.completion = completion.to_wire();
    report.last_done_us = last_done.duration_since(start).as_micros() as u64;
    drop((connack, tcp, completion));
    report.rss_connected = procfs::rss_bytes("self").unwrap_or(0);
    report.cpu_us = procfs::cpu_us("self")
        .unwrap_or(0)
        .saturating_sub(cpu_before);
    emit(&WorkerMsg::Connected(Box::new(report)));

    hold(&cfg, conns, &mut cmd_rx).await;
    Ok(())
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

/// Keeps the connections open until the parent says `finish`, pinging from one sweep.
async fn hold(
    cfg: &WorkerConfig,
    conns: Vec<StdStream>,
    cmd_rx: &mut mpsc::UnboundedReceiver<String>,
) {
    let mut slots: Vec<Option<StdStream>> = conns.into_iter().map(Some).collect();
    let mut report = HeldReport::default();
    let period = Duration::from_millis(cfg.ping_every_ms.max(1));
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            cmd = cmd_rx.recv() => {
                match cmd.as_deref() {
                    Some(CMD_FINISH) | None => break,
                    Some(other) => eprintln!("worker {}: unknown command {other:?}", cfg.worker),
                }
            }
            _ = ping.tick(), if cfg.ping_every_ms > 0 => {
                sweep(&mut slots, true, &mut report);
            }
        }
    }
    // Final check: what is still up, without sending anything.
    sweep(&mut slots, false, &mut report);
    report.alive = slots.iter().flatten().count() as u64;
    report.rss_held = procfs::rss_bytes("self").unwrap_or(0);
    emit(&WorkerMsg::Held(report));
    for stream in slots.iter().flatten() {
        let _ = (&*stream).write(&mqtt::DISCONNECT);
    }
}

/// One pass over all connections: optionally sends PINGREQ, then drains whatever
/// arrived (PINGRESPs) and drops connections the broker closed.
fn sweep(slots: &mut [Option<StdStream>], send_ping: bool, report: &mut HeldReport) {
    let mut buf = [0u8; 64];
    for slot in slots.iter_mut() {
        let Some(stream) = slot.as_ref() else {
            continue;
        };
        let mut lost: Option<String> = None;
        if send_ping {
            match (&*stream).write(&mqtt::PINGREQ) {
                Ok(_) => report.pings_sent += 1,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => lost = Some(io_key(&e)),
            }
        }
        while lost.is_none() {
            match (&*stream).read(&mut buf) {
                Ok(0) => lost = Some("closed_by_broker".into()),
                Ok(n) => {
                    // Replies are PINGRESPs (D0 00); a DISCONNECT (E0 ..) ends the connection.
                    if buf[0] >> 4 == mqtt::TYPE_DISCONNECT {
                        lost = Some("disconnect_by_broker".into());
                    } else {
                        report.pongs +=
                            buf[..n].chunks(2).filter(|c| *c == mqtt::PINGRESP).count() as u64;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => lost = Some(io_key(&e)),
            }
        }
        if let Some(cause) = lost {
            *report.lost.entry(cause).or_default() += 1;
            *slot = None;
        }
    }
}
