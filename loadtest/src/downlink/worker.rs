//! The `downlink` device worker: connects its share of devices, then reads
//! every PUBLISH they get, acknowledges QoS 1 (PUBACK), checks each message
//! (right device, right topic, new sequence number) and records its latency.
//!
//! One task per device reads into its own buffer and answers all the PUBACKs
//! of one read with one write. Counts go to atomics; latencies and arrival
//! times to a histogram behind a lock taken once per read.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};

use super::msg::{
    CMD_FINISH, ConnectedReport, Counts, FinalReport, PROGRESS_MS, WorkerConfig, WorkerMsg,
    client_id, client_topic, decode_payload, unix_us,
};
use crate::handshake::{self, Failure, io_key};
use crate::hist::Latency;
use crate::mqtt::{self, Protocol};
use crate::procfs;
use crate::workers::{self, emit};

/// Read buffer of one device (grows for a larger packet).
const READ_BUF: usize = 4096;

/// Counters of all devices of this worker.
#[derive(Default)]
struct Atomics {
    received: AtomicU64,
    unique: AtomicU64,
    duplicates: AtomicU64,
    misdelivered: AtomicU64,
    wrong_topic: AtomicU64,
    malformed: AtomicU64,
    by_qos: [AtomicU64; 3],
    connections_lost: AtomicU64,
    first_arrival_us: AtomicU64,
    last_arrival_us: AtomicU64,
}

impl Atomics {
    fn add(&self, c: &Counts) {
        let add = |a: &AtomicU64, v: u64| {
            if v > 0 {
                a.fetch_add(v, Ordering::Relaxed);
            }
        };
        add(&self.received, c.received);
        add(&self.unique, c.unique);
        add(&self.duplicates, c.duplicates);
        add(&self.misdelivered, c.misdelivered);
        add(&self.wrong_topic, c.wrong_topic);
        add(&self.malformed, c.malformed);
        for (a, v) in self.by_qos.iter().zip(c.by_qos) {
            add(a, v);
        }
        add(&self.connections_lost, c.connections_lost);
    }

    fn load(&self) -> Counts {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Counts {
            received: get(&self.received),
            unique: get(&self.unique),
            duplicates: get(&self.duplicates),
            misdelivered: get(&self.misdelivered),
            wrong_topic: get(&self.wrong_topic),
            malformed: get(&self.malformed),
            by_qos: [
                get(&self.by_qos[0]),
                get(&self.by_qos[1]),
                get(&self.by_qos[2]),
            ],
            connections_lost: get(&self.connections_lost),
        }
    }
}

/// Latencies and arrival times, recorded once per read.
#[derive(Default)]
struct Recorder {
    latency: Latency,
    /// Unique arrivals per unix 100 ms.
    arrivals: HashMap<u64, u64>,
    lost: BTreeMap<String, u64>,
}

pub(super) struct Shared {
    protocol: Protocol,
    messages: u64,
    /// One bit per sequence number: seen.
    seen: Vec<AtomicU64>,
    counts: Atomics,
    recorder: std::sync::Mutex<Recorder>,
    ping_every: Duration,
}

/// Entry point of `throng-load worker downlink`.
pub fn run() -> anyhow::Result<()> {
    let cfg: WorkerConfig = workers::start(|message| WorkerMsg::Error { message })?;
    // The parent's `finish` (or its going away) ends the run: dropping the
    // sender resolves the receiver too.
    let (finish_tx, finish_rx) = tokio::sync::oneshot::channel::<()>();
    let mut finish_tx = Some(finish_tx);
    workers::read_commands(move |line| {
        if line != CMD_FINISH {
            return true;
        }
        if let Some(tx) = finish_tx.take() {
            let _ = tx.send(());
        }
        false
    })?;
    let rt = workers::runtime(cfg.threads)?;
    rt.block_on(run_async(cfg, finish_rx))?;
    // Device tasks may still be reading: do not wait for them.
    rt.shutdown_background();
    Ok(())
}

async fn run_async(
    cfg: WorkerConfig,
    finish: tokio::sync::oneshot::Receiver<()>,
) -> anyhow::Result<()> {
    let shared = Arc::new(Shared {
        protocol: cfg.connect.protocol,
        messages: cfg.messages,
        seen: (0..cfg.messages.div_ceil(64))
            .map(|_| AtomicU64::new(0))
            .collect(),
        counts: Atomics {
            first_arrival_us: AtomicU64::new(u64::MAX),
            ..Atomics::default()
        },
        recorder: std::sync::Mutex::default(),
        ping_every: Duration::from_millis(cfg.ping_every_ms.max(1)),
    });
    let connected = match &cfg.sink {
        Some(sink) => super::sink::attach_all(sink, &cfg.client_id_prefix, &shared).await,
        None => connect_all(&cfg, &shared).await,
    };
    let ok = connected.ok;
    emit(&WorkerMsg::Connected(Box::new(connected)));
    let cpu_before = procfs::cpu_us("self").unwrap_or(0);

    let mut progress = tokio::time::interval(Duration::from_millis(PROGRESS_MS));
    progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(finish);
    loop {
        tokio::select! {
            _ = &mut finish => break,
            _ = progress.tick() => emit(&WorkerMsg::Progress(shared.counts.load())),
        }
    }
    let cpu_us = procfs::cpu_us("self")
        .unwrap_or(0)
        .saturating_sub(cpu_before);
    let first = shared.counts.first_arrival_us.load(Ordering::Relaxed);
    let recorder = std::mem::take(&mut *shared.recorder.lock().expect("recorder lock"));
    let mut arrivals: Vec<(u64, u64)> = recorder.arrivals.into_iter().collect();
    arrivals.sort_unstable();
    let report = FinalReport {
        counts: shared.counts.load(),
        latency: recorder.latency.to_wire(),
        first_arrival_us: if first == u64::MAX { 0 } else { first },
        last_arrival_us: shared.counts.last_arrival_us.load(Ordering::Relaxed),
        arrivals,
        lost: recorder.lost,
        cpu_us,
        rss_bytes: procfs::rss_bytes("self").unwrap_or(0),
    };
    if cfg.sink.is_none() && ok < cfg.devices {
        eprintln!(
            "worker {}: only {ok} of {} devices connected",
            cfg.worker, cfg.devices
        );
    }
    emit(&WorkerMsg::Final(Box::new(report)));
    Ok(())
}

/// Connects every device (each starts reading at once) and reports how it went.
async fn connect_all(cfg: &WorkerConfig, shared: &Arc<Shared>) -> ConnectedReport {
    let limit = Arc::new(Semaphore::new(cfg.in_flight.max(1)));
    let (tx, mut rx) = mpsc::unbounded_channel::<(Result<(), Failure>, u64)>();
    for i in 0..cfg.devices {
        let index = cfg.first_index + i;
        let permit = limit.clone().acquire_owned().await.expect("semaphore open");
        let target = cfg.targets[(index % cfg.targets.len() as u64) as usize];
        let source = (!cfg.source_ips.is_empty())
            .then(|| cfg.source_ips[(index % cfg.source_ips.len() as u64) as usize])
            .filter(|ip| ip.is_ipv4() == target.is_ipv4());
        let id = client_id(&cfg.client_id_prefix, index);
        let opts = cfg.connect.clone();
        let timeout = Duration::from_millis(cfg.timeout_ms);
        let (tx, shared) = (tx.clone(), shared.clone());
        tokio::spawn(async move {
            let t0 = Instant::now();
            let mut tcp_us = None;
            let attempt = handshake::connect(source, target, &opts, &id, t0, &mut tcp_us);
            let result = tokio::time::timeout(timeout, attempt)
                .await
                .unwrap_or(Err(Failure::Timeout));
            drop(permit);
            let took = t0.elapsed().as_micros() as u64;
            match result {
                Ok(stream) => {
                    let _ = tx.send((Ok(()), took));
                    device(stream, index, client_topic(&id).into_bytes(), shared).await;
                }
                Err(failure) => {
                    let _ = tx.send((Err(failure), took));
                }
            }
        });
    }
    drop(tx);
    let mut report = ConnectedReport::default();
    let mut latency = Latency::new();
    let mut failed = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut done = 0;
    while done < cfg.devices {
        tokio::select! {
            outcome = rx.recv() => {
                let Some((result, took)) = outcome else { break };
                done += 1;
                match result {
                    Ok(()) => {
                        report.ok += 1;
                        latency.record_us(took);
                    }
                    Err(failure) => {
                        failed += 1;
                        *report.failures.entry(failure.key()).or_default() += 1;
                    }
                }
            }
            _ = tick.tick() => emit(&WorkerMsg::Connecting { ok: report.ok, failed }),
        }
    }
    report.connack_latency = latency.to_wire();
    report
}

/// One device: reads until its connection ends (or the process does).
async fn device(mut stream: TcpStream, index: u64, topic: Vec<u8>, shared: Arc<Shared>) {
    let mut buf = vec![0u8; READ_BUF];
    let mut filled = 0;
    let mut acks: Vec<u8> = Vec::with_capacity(64);
    let mut latencies: Vec<u64> = Vec::with_capacity(16);
    let ping = tokio::time::sleep(shared.ping_every);
    tokio::pin!(ping);
    let mut wrote = false;
    let lost = loop {
        let read = tokio::select! {
            read = stream.read(&mut buf[filled..]) => read,
            () = &mut ping => {
                if !wrote && let Err(e) = stream.write_all(&mqtt::PINGREQ).await {
                    break io_key(&e);
                }
                wrote = false;
                ping.as_mut().reset(tokio::time::Instant::now() + shared.ping_every);
                continue;
            }
        };
        let n = match read {
            Ok(0) => break "closed_by_broker".to_owned(),
            Ok(n) => n,
            Err(e) => break io_key(&e),
        };
        filled += n;
        let now = unix_us();
        let mut counts = Counts::default();
        let mut at = 0;
        let mut ended = None;
        loop {
            match mqtt::next_frame(&buf[at..filled]) {
                Ok(Some(frame)) => {
                    let body = &buf[at + frame.body..at + frame.len];
                    match frame.first >> 4 {
                        mqtt::TYPE_PUBLISH => {
                            let arrived = on_publish(
                                &shared,
                                frame.first,
                                body,
                                index,
                                &topic,
                                &mut acks,
                                &mut counts,
                            );
                            if let Some(sent_us) = arrived {
                                latencies.push(now.saturating_sub(sent_us));
                            }
                        }
                        mqtt::TYPE_PINGRESP => {}
                        mqtt::TYPE_DISCONNECT => ended = Some("disconnect_by_broker".to_owned()),
                        _ => counts.malformed += 1,
                    }
                    at += frame.len;
                }
                Ok(None) => break,
                Err(what) => {
                    ended = Some(format!("protocol: {what}"));
                    break;
                }
            }
        }
        buf.copy_within(at..filled, 0);
        filled -= at;
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        shared.record(&counts, &mut latencies, now);
        if !acks.is_empty() {
            if let Err(e) = stream.write_all(&acks).await {
                break io_key(&e);
            }
            acks.clear();
            wrote = true;
        }
        if let Some(cause) = ended {
            break cause;
        }
    };
    shared.lost(lost);
}

/// Checks one PUBLISH and queues its PUBACK; returns its send time when it is
/// a message seen for the first time.
fn on_publish(
    shared: &Shared,
    first: u8,
    body: &[u8],
    index: u64,
    topic: &[u8],
    acks: &mut Vec<u8>,
    counts: &mut Counts,
) -> Option<u64> {
    let Ok(publish) = mqtt::parse_publish(first, body, shared.protocol) else {
        counts.malformed += 1;
        return None;
    };
    counts.received += 1;
    counts.by_qos[usize::from(publish.qos)] += 1;
    if let Some(id) = publish.packet_id
        && publish.qos == 1
    {
        acks.extend_from_slice(&mqtt::puback(id));
    }
    if publish.topic != topic {
        counts.wrong_topic += 1;
    }
    shared.check(publish.payload, index, counts)
}

impl Shared {
    /// Checks a payload that arrived for device `index` and marks its sequence
    /// number seen; returns its send time when it is new.
    pub(super) fn check(&self, payload: &[u8], index: u64, counts: &mut Counts) -> Option<u64> {
        let Some((seq, sent_us, device)) = decode_payload(payload) else {
            counts.malformed += 1;
            return None;
        };
        if seq >= self.messages {
            counts.malformed += 1;
            return None;
        }
        if device != index {
            counts.misdelivered += 1;
        }
        let bit = 1u64 << (seq % 64);
        let word = &self.seen[(seq / 64) as usize];
        if word.fetch_or(bit, Ordering::Relaxed) & bit != 0 {
            counts.duplicates += 1;
            return None;
        }
        counts.unique += 1;
        Some(sent_us)
    }

    /// Adds what one read (or one batch of deliveries) brought, arrived at `now`.
    pub(super) fn record(&self, counts: &Counts, latencies: &mut Vec<u64>, now: u64) {
        self.counts.add(counts);
        if latencies.is_empty() {
            return;
        }
        self.counts
            .first_arrival_us
            .fetch_min(now, Ordering::Relaxed);
        self.counts
            .last_arrival_us
            .fetch_max(now, Ordering::Relaxed);
        let mut r = self.recorder.lock().expect("recorder lock");
        for &us in latencies.iter() {
            r.latency.record_us(us);
        }
        *r.arrivals.entry(now / 100_000).or_default() += latencies.len() as u64;
        drop(r);
        latencies.clear();
    }

    /// Counts a device connection (or sink stream) that ended, with its cause.
    pub(super) fn lost(&self, cause: String) {
        self.counts.connections_lost.fetch_add(1, Ordering::Relaxed);
        *self
            .recorder
            .lock()
            .expect("recorder lock")
            .lost
            .entry(cause)
            .or_default() += 1;
    }
}
