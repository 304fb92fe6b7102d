//! One publisher: probes until the run starts, then publishes (warmup, then
//! measured messages) at its share of the rate, with at most `window` QoS 1/2
//! messages unacknowledged; answers PUBREC with PUBREL; stays connected until
//! the run finishes.
//!
//! Its connection is split: a reader task turns acknowledgements into events
//! (one batch per read) on a channel bounded by the window; the writer here
//! owns the in-flight table and writes PUBLISHes and PUBRELs in batches.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::client::Conn;
use super::payload::{self, Kind, Stamp};
use super::worker::{Phase, Shared, unix_us};
use crate::handshake::io_key;
use crate::mqtt;

/// PUBLISHes per write at most.
const BATCH: usize = 128;

/// What one publisher did.
#[derive(Debug, Default)]
pub struct PubResult {
    pub index: u32,
    pub measured: u64,
    pub warmup: u64,
    pub probes: u64,
    pub acked: u64,
    pub refused: BTreeMap<String, u64>,
    pub first_send_us: u64,
    pub last_send_us: u64,
    /// The in-flight window it used.
    pub window: u16,
    /// Why it ended early.
    pub failed: Option<String>,
}

enum Event {
    Ack { kind: u8, id: u16, reason: u8 },
    Ended(String),
}

/// The settings of one publisher.
pub struct Setup {
    pub index: u32,
    pub window: u16,
    pub ack_timeout: Duration,
    pub probe_every: Duration,
}

struct InFlight {
    sent: Instant,
    measured: bool,
}

struct Writer {
    setup: Setup,
    shared: Arc<Shared>,
    wr: OwnedWriteHalf,
    topic: Vec<u8>,
    out: Vec<u8>,
    scratch: Vec<u8>,
    in_flight: HashMap<u16, InFlight>,
    pubrels: Vec<u16>,
    next_id: u16,
    last_write: Instant,
    /// Last acknowledgement (or the first send after an idle window).
    last_ack: Instant,
    ack_latencies: Vec<u64>,
    seq_measured: u32,
    seq_warmup: u32,
    seq_probe: u32,
    result: PubResult,
}

/// Runs the publisher; its result goes to `done` when it stops publishing.
pub async fn run(
    conn: Conn,
    setup: Setup,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<Phase>,
    done: mpsc::Sender<PubResult>,
) {
    let Conn {
        stream,
        buf,
        filled,
        ..
    } = conn;
    let (rd, wr) = stream.into_split();
    let (tx, mut events) = mpsc::channel(usize::from(setup.window) * 2 + 16);
    let reader = tokio::spawn(read(rd, buf, filled, tx));
    let topic = shared.topics[setup.index as usize].clone();
    let now = Instant::now();
    let mut w = Writer {
        result: PubResult {
            index: setup.index,
            window: setup.window,
            ..PubResult::default()
        },
        setup,
        shared,
        wr,
        topic,
        out: Vec::with_capacity(BATCH * 128),
        scratch: Vec::with_capacity(256),
        in_flight: HashMap::new(),
        pubrels: Vec::new(),
        next_id: 0,
        last_write: now,
        last_ack: now,
        ack_latencies: Vec::new(),
        seq_measured: 0,
        seq_warmup: 0,
        seq_probe: 0,
    };
    if let Err(cause) = w.drive(&mut phase, &mut events).await {
        w.result.failed = Some(cause);
    }
    w.flush_latencies();
    w.shared.counters.add_publisher_done();
    let failed = w.result.failed.is_some();
    let _ = done.send(std::mem::take(&mut w.result)).await;
    if !failed {
        w.linger(&mut phase, &mut events).await;
    }
    reader.abort();
}

impl Writer {
    /// Probes, then publishes; returns when done and acknowledged, or stopped.
    async fn drive(
        &mut self,
        phase: &mut watch::Receiver<Phase>,
        events: &mut mpsc::Receiver<Vec<Event>>,
    ) -> Result<(), String> {
        let mut next_probe = Instant::now();
        let measure_start_us = loop {
            let current = *phase.borrow_and_update();
            match current {
                Phase::Idle => {}
                Phase::Probe => {
                    if Instant::now() >= next_probe {
                        self.probe().await?;
                        next_probe = Instant::now() + self.setup.probe_every;
                    }
                }
                Phase::Run { measure_start_us } => break measure_start_us,
                Phase::StopPublishing | Phase::Finish => return Ok(()),
            }
            let probing = current == Phase::Probe;
            tokio::select! {
                changed = phase.changed() => if changed.is_err() { return Ok(()) },
                batch = events.recv() => self.apply(batch)?,
                () = tokio::time::sleep_until(next_probe), if probing => {}
                () = tokio::time::sleep_until(self.last_write + self.shared.ping_every) => self.ping().await?,
            }
        };
        self.publish_all(measure_start_us, phase, events).await
    }

    async fn publish_all(
        &mut self,
        measure_start_us: u64,
        phase: &mut watch::Receiver<Phase>,
        events: &mut mpsc::Receiver<Vec<Event>>,
    ) -> Result<(), String> {
        let plan = &self.shared.plan;
        let (qos, window) = (plan.qos, usize::from(self.setup.window));
        let rate = plan.rate_of_one();
        let limit = plan.messages_of(self.setup.index);
        let end_us = plan.duration_s.map(|d| measure_start_us + (d * 1e6) as u64);
        let started = Instant::now();
        let mut sent_total = 0u64;
        let mut sending = true;
        loop {
            while let Ok(batch) = events.try_recv() {
                self.apply(Some(batch))?;
            }
            if phase.has_changed().unwrap_or(true)
                && matches!(
                    *phase.borrow_and_update(),
                    Phase::StopPublishing | Phase::Finish
                )
            {
                return if sending || !self.in_flight.is_empty() {
                    Err("stopped_by_parent".into())
                } else {
                    Ok(())
                };
            }
            let now_us = unix_us();
            if sending
                && (limit.is_some_and(|l| u64::from(self.seq_measured) >= l)
                    || end_us.is_some_and(|e| now_us >= e))
            {
                sending = false;
            }
            if !sending && self.in_flight.is_empty() && self.pubrels.is_empty() {
                return Ok(());
            }
            self.out.clear();
            for id in std::mem::take(&mut self.pubrels) {
                self.out.extend_from_slice(&mqtt::pubrel(id));
            }
            let mut n = 0;
            if sending {
                n = BATCH;
                if qos > 0 {
                    n = n.min(window.saturating_sub(self.in_flight.len()));
                }
                if let Some(r) = rate {
                    let due = (started.elapsed().as_secs_f64() * r) as u64 + 1;
                    n = n.min(due.saturating_sub(sent_total) as usize);
                }
            }
            let was_idle = self.in_flight.is_empty();
            let mut written = 0;
            for _ in 0..n {
                let sent_us = unix_us();
                let measured = sent_us >= measure_start_us;
                if measured
                    && (limit.is_some_and(|l| u64::from(self.seq_measured) >= l)
                        || end_us.is_some_and(|e| sent_us >= e))
                {
                    sending = false;
                    break;
                }
                self.publish(measured, sent_us);
                written += 1;
            }
            sent_total += written;
            if !self.out.is_empty() {
                if was_idle {
                    // Nothing was in flight: acks are awaited from now.
                    self.last_ack = Instant::now();
                }
                self.write_out().await?;
                continue;
            }
            // Nothing to write now: wait for an ack, the pace, a ping, the end.
            let paced = sending && rate.is_some() && (qos == 0 || self.in_flight.len() < window);
            let next_due = rate.map_or(started, |r| {
                started + Duration::from_secs_f64(sent_total as f64 / r)
            });
            let end =
                end_us.map(|e| Instant::now() + Duration::from_micros(e.saturating_sub(unix_us())));
            let waiting_acks = !self.in_flight.is_empty();
            tokio::select! {
                batch = events.recv() => self.apply(batch)?,
                changed = phase.changed() => if changed.is_err() { return Err("stopped_by_parent".into()) },
                () = tokio::time::sleep_until(next_due), if paced => {}
                () = tokio::time::sleep_until(end.unwrap_or(started)), if sending && end.is_some() => {}
                () = tokio::time::sleep_until(self.last_write + self.shared.ping_every) => self.ping().await?,
                () = tokio::time::sleep_until(self.last_ack + self.setup.ack_timeout), if waiting_acks => {
                    return Err("ack_timeout".into());
                }
            }
        }
    }

    /// Appends one PUBLISH to the batch.
    fn publish(&mut self, measured: bool, sent_us: u64) {
        let (kind, seq) = if measured {
            self.seq_measured += 1;
            self.result.measured += 1;
            if self.result.first_send_us == 0 {
                self.result.first_send_us = sent_us;
            }
            self.result.last_send_us = sent_us;
            (Kind::Measured, self.seq_measured - 1)
        } else {
            self.seq_warmup += 1;
            self.result.warmup += 1;
            (Kind::Warmup, self.seq_warmup - 1)
        };
        let qos = self.shared.plan.qos;
        let id = if qos > 0 { self.next_id() } else { 0 };
        if qos > 0 {
            self.in_flight.insert(
                id,
                InFlight {
                    sent: Instant::now(),
                    measured,
                },
            );
        }
        self.scratch.clear();
        let stamp = Stamp {
            kind,
            publisher: self.setup.index,
            seq,
            sent_us,
        };
        payload::encode(&mut self.scratch, stamp, self.shared.plan.payload_size);
        mqtt::put_publish(
            &mut self.out,
            self.shared.protocol,
            &self.topic,
            qos,
            id,
            &self.scratch,
        );
        if measured {
            self.shared.counters.add_sent(1);
        }
    }

    fn next_id(&mut self) -> u16 {
        loop {
            self.next_id = self.next_id.wrapping_add(1);
            if self.next_id != 0 && !self.in_flight.contains_key(&self.next_id) {
                return self.next_id;
            }
        }
    }

    /// One probe at QoS 0 (repeated until the run starts, so losing one is harmless).
    async fn probe(&mut self) -> Result<(), String> {
        self.out.clear();
        self.scratch.clear();
        let stamp = Stamp {
            kind: Kind::Probe,
            publisher: self.setup.index,
            seq: self.seq_probe,
            sent_us: unix_us(),
        };
        self.seq_probe += 1;
        self.result.probes += 1;
        payload::encode(&mut self.scratch, stamp, self.shared.plan.payload_size);
        mqtt::put_publish(
            &mut self.out,
            self.shared.protocol,
            &self.topic,
            0,
            0,
            &self.scratch,
        );
        self.write_out().await
    }

    async fn ping(&mut self) -> Result<(), String> {
        self.out.clear();
        self.out.extend_from_slice(&mqtt::PINGREQ);
        self.write_out().await
    }

    async fn write_out(&mut self) -> Result<(), String> {
        self.wr.write_all(&self.out).await.map_err(|e| io_key(&e))?;
        self.last_write = Instant::now();
        Ok(())
    }

    /// Applies one batch of acknowledgements (`None`: the reader is gone).
    fn apply(&mut self, batch: Option<Vec<Event>>) -> Result<(), String> {
        let Some(batch) = batch else {
            return Err("reader_gone".into());
        };
        let qos = self.shared.plan.qos;
        for event in batch {
            let (kind, id, reason) = match event {
                Event::Ack { kind, id, reason } => (kind, id, reason),
                Event::Ended(cause) => return Err(cause),
            };
            let expected = matches!(
                (qos, kind),
                (1, mqtt::TYPE_PUBACK) | (2, mqtt::TYPE_PUBREC | mqtt::TYPE_PUBCOMP)
            );
            if !expected || !self.in_flight.contains_key(&id) {
                *self
                    .result
                    .refused
                    .entry(format!("unexpected_ack_type_{kind}"))
                    .or_default() += 1;
                continue;
            }
            self.last_ack = Instant::now();
            if reason >= 0x80 {
                self.in_flight.remove(&id);
                *self
                    .result
                    .refused
                    .entry(format!("reason_0x{reason:02x}"))
                    .or_default() += 1;
                continue;
            }
            if kind == mqtt::TYPE_PUBREC {
                self.pubrels.push(id);
                continue;
            }
            if let Some(f) = self.in_flight.remove(&id)
                && f.measured
            {
                self.result.acked += 1;
                self.ack_latencies.push(f.sent.elapsed().as_micros() as u64);
            }
        }
        if self.ack_latencies.len() >= 256 {
            self.flush_latencies();
        }
        Ok(())
    }

    fn flush_latencies(&mut self) {
        if !self.ack_latencies.is_empty() {
            self.shared.record_acks(&self.ack_latencies);
            self.ack_latencies.clear();
        }
    }

    /// Stays connected (pinging) until the run finishes, then says goodbye.
    async fn linger(
        &mut self,
        phase: &mut watch::Receiver<Phase>,
        events: &mut mpsc::Receiver<Vec<Event>>,
    ) {
        loop {
            if *phase.borrow_and_update() == Phase::Finish {
                break;
            }
            let ok = tokio::select! {
                changed = phase.changed() => changed.is_ok(),
                batch = events.recv() => batch.is_some(),
                () = tokio::time::sleep_until(self.last_write + self.shared.ping_every) => self.ping().await.is_ok(),
            };
            if !ok {
                return;
            }
        }
        let _ = self.wr.write_all(&mqtt::DISCONNECT).await;
    }
}

/// Reads acknowledgements and hands them to the writer, one batch per read.
async fn read(
    mut rd: OwnedReadHalf,
    mut buf: Vec<u8>,
    mut filled: usize,
    tx: mpsc::Sender<Vec<Event>>,
) {
    loop {
        let mut batch = Vec::new();
        let mut at = 0;
        loop {
            match mqtt::next_frame(&buf[at..filled]) {
                Ok(Some(frame)) => {
                    let body = &buf[at + frame.body..at + frame.len];
                    let kind = frame.first >> 4;
                    match kind {
                        mqtt::TYPE_PUBACK | mqtt::TYPE_PUBREC | mqtt::TYPE_PUBCOMP => {
                            match mqtt::parse_ack(body) {
                                Some((id, reason)) => batch.push(Event::Ack { kind, id, reason }),
                                None => batch.push(Event::Ended("protocol: short ack".into())),
                            }
                        }
                        mqtt::TYPE_PINGRESP => {}
                        mqtt::TYPE_DISCONNECT => batch.push(Event::Ended(match body.first() {
                            Some(code) => format!("disconnect_by_broker_0x{code:02x}"),
                            None => "disconnect_by_broker".to_owned(),
                        })),
                        other => batch.push(Event::Ended(format!("protocol: packet type {other}"))),
                    }
                    at += frame.len;
                }
                Ok(None) => break,
                Err(what) => {
                    batch.push(Event::Ended(format!("protocol: {what}")));
                    break;
                }
            }
        }
        buf.copy_within(at..filled, 0);
        filled -= at;
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let ended = batch.iter().any(|e| matches!(e, Event::Ended(_)));
        if !batch.is_empty() && (tx.send(batch).await.is_err() || ended) {
            return;
        }
        let cause = match rd.read(&mut buf[filled..]).await {
            Ok(0) => "closed_by_broker".to_owned(),
            Ok(n) => {
                filled += n;
                continue;
            }
            Err(e) => io_key(&e),
        };
        let _ = tx.send(vec![Event::Ended(cause)]).await;
        return;
    }
}
