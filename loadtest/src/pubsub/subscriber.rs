//! One subscriber: reads every PUBLISH, acknowledges it as its QoS requires
//! (PUBACK; PUBREC, then PUBCOMP on PUBREL), checks it (topic, publisher,
//! kind) and accounts for it per publisher (losses, duplicates, order), until
//! the run finishes or its connection ends.

use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use super::client::Conn;
use super::msg::Counts;
use super::payload::{self, Kind};
use super::plan::{Plan, Sources};
use super::track::{Arrival, Tracker};
use super::worker::{Delta, Phase, Shared, unix_us};
use crate::handshake::io_key;
use crate::mqtt;

/// What one subscriber saw.
pub struct Subscriber {
    pub index: u32,
    sources: Sources,
    /// By publisher index (all publishers), or one for `Sources::One`.
    trackers: Vec<Tracker>,
    probes_seen: Vec<bool>,
    probes_missing: usize,
    pub counts: Counts,
}

impl Subscriber {
    pub fn new(plan: &Plan, index: u32) -> Subscriber {
        let sources = plan.sources(index);
        let n = match sources {
            Sources::All => plan.publishers as usize,
            Sources::One(_) => 1,
        };
        Subscriber {
            index,
            sources,
            trackers: vec![Tracker::default(); n],
            probes_seen: vec![false; n],
            probes_missing: n,
            counts: Counts::default(),
        }
    }

    /// Where publisher `i` is accounted, if this subscriber receives from it.
    fn slot(&self, i: u32) -> Option<usize> {
        match self.sources {
            Sources::All => ((i as usize) < self.trackers.len()).then_some(i as usize),
            Sources::One(only) => (only == i).then_some(0),
        }
    }

    /// Checks one PUBLISH; returns its send time when it is a measured message
    /// this subscriber had not received before.
    pub fn on_publish(
        &mut self,
        topics: &[Vec<u8>],
        topic: &[u8],
        payload: &[u8],
        qos: u8,
        delta: &mut Delta,
    ) -> Option<u64> {
        let Some(stamp) = payload::decode(payload) else {
            self.counts.malformed += 1;
            return None;
        };
        if topics.get(stamp.publisher as usize).map(Vec::as_slice) != Some(topic) {
            self.counts.wrong_topic += 1;
            return None;
        }
        let Some(slot) = self.slot(stamp.publisher) else {
            self.counts.unexpected += 1;
            return None;
        };
        match stamp.kind {
            Kind::Probe => {
                delta.probes_received += 1;
                if !self.probes_seen[slot] {
                    self.probes_seen[slot] = true;
                    self.probes_missing -= 1;
                    if self.probes_missing == 0 {
                        delta.probes_ready += 1;
                    }
                }
                None
            }
            Kind::Warmup => {
                delta.warmup_received += 1;
                None
            }
            Kind::Measured => {
                self.counts.received += 1;
                self.counts.by_qos[usize::from(qos.min(2))] += 1;
                delta.received += 1;
                match self.trackers[slot].on(stamp.seq) {
                    Arrival::New | Arrival::Late => {
                        delta.unique += 1;
                        Some(stamp.sent_us)
                    }
                    Arrival::Duplicate => None,
                }
            }
        }
    }

    /// The accounting once `published[i]` (measured messages of publisher i) is known.
    pub fn counts(&self, published: &[u64]) -> Counts {
        let mut c = self.counts;
        for (slot, tracker) in self.trackers.iter().enumerate() {
            let publisher = match self.sources {
                Sources::All => slot,
                Sources::One(only) => only as usize,
            };
            let sent = published.get(publisher).copied().unwrap_or(0);
            c.tally.add(&tracker.tally(sent));
        }
        c
    }
}

/// Reads until the run finishes (`None`) or the connection ends (its cause).
pub async fn run(
    mut conn: Conn,
    sub: &mut Subscriber,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<Phase>,
) -> Option<String> {
    let mut acks: Vec<u8> = Vec::with_capacity(256);
    let mut latencies: Vec<u64> = Vec::with_capacity(64);
    let ping = tokio::time::sleep(shared.ping_every);
    tokio::pin!(ping);
    let mut wrote = false;
    loop {
        // Handle what is buffered (also what came with the SUBACK).
        let now = unix_us();
        let mut delta = Delta::default();
        let mut at = 0;
        let mut ended = None;
        while let Some(frame) = match mqtt::next_frame(&conn.buf[at..conn.filled]) {
            Ok(frame) => frame,
            Err(what) => return Some(format!("protocol: {what}")),
        } {
            let body = &conn.buf[at + frame.body..at + frame.len];
            match frame.first >> 4 {
                mqtt::TYPE_PUBLISH => match mqtt::parse_publish(frame.first, body, shared.protocol)
                {
                    Ok(p) => {
                        match (p.qos, p.packet_id) {
                            (1, Some(id)) => acks.extend_from_slice(&mqtt::puback(id)),
                            (2, Some(id)) => acks.extend_from_slice(&mqtt::pubrec(id)),
                            _ => {}
                        }
                        let arrived =
                            sub.on_publish(&shared.topics, p.topic, p.payload, p.qos, &mut delta);
                        if let Some(sent_us) = arrived {
                            latencies.push(now.saturating_sub(sent_us));
                        }
                    }
                    Err(_) => sub.counts.malformed += 1,
                },
                mqtt::TYPE_PUBREL => match mqtt::parse_ack(body) {
                    Some((id, _)) => acks.extend_from_slice(&mqtt::pubcomp(id)),
                    None => sub.counts.malformed += 1,
                },
                mqtt::TYPE_PINGRESP => {}
                mqtt::TYPE_DISCONNECT => {
                    ended = Some(match body.first() {
                        Some(code) => format!("disconnect_by_broker_0x{code:02x}"),
                        None => "disconnect_by_broker".to_owned(),
                    });
                }
                _ => sub.counts.malformed += 1,
            }
            at += frame.len;
        }
        conn.consume(at);
        if conn.filled == conn.buf.len() {
            conn.buf.resize(conn.buf.len() * 2, 0);
        }
        shared.record(&delta, &mut latencies, now);
        if !acks.is_empty() {
            if let Err(e) = conn.stream.write_all(&acks).await {
                return Some(io_key(&e));
            }
            acks.clear();
            wrote = true;
        }
        if ended.is_some() {
            return ended;
        }
        let read = tokio::select! {
            read = tokio::io::AsyncReadExt::read(&mut conn.stream, &mut conn.buf[conn.filled..]) => read,
            () = &mut ping => {
                if !wrote && let Err(e) = conn.stream.write_all(&mqtt::PINGREQ).await {
                    return Some(io_key(&e));
                }
                wrote = false;
                ping.as_mut().reset(tokio::time::Instant::now() + shared.ping_every);
                continue;
            }
            changed = phase.changed() => {
                if changed.is_err() || *phase.borrow() == Phase::Finish {
                    return None;
                }
                continue;
            }
        };
        match read {
            Ok(0) => return Some("closed_by_broker".into()),
            Ok(n) => conn.filled += n,
            Err(e) => return Some(io_key(&e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pubsub::payload::{Stamp, encode};
    use crate::pubsub::plan::Mode;

    fn plan(mode: Mode) -> Plan {
        Plan {
            mode,
            publishers: 2,
            subscribers: 2,
            client_prefix: "c".into(),
            topic_prefix: "t".into(),
            qos: 1,
            sub_qos: 1,
            payload_size: 16,
            inflight: 4,
            rate: None,
            messages: Some(6),
            duration_s: None,
        }
    }

    fn send(
        sub: &mut Subscriber,
        plan: &Plan,
        topic_of: u32,
        kind: Kind,
        publisher: u32,
        seq: u32,
        delta: &mut Delta,
    ) -> Option<u64> {
        let topics: Vec<Vec<u8>> = (0..plan.publishers)
            .map(|i| plan.topic(i).into_bytes())
            .collect();
        let mut p = Vec::new();
        let stamp = Stamp {
            kind,
            publisher,
            seq,
            sent_us: 100 + u64::from(seq),
        };
        encode(&mut p, stamp, 16);
        sub.on_publish(&topics, plan.topic(topic_of).as_bytes(), &p, 1, delta)
    }

    #[test]
    fn fan_in_accounting_per_publisher() {
        let plan = plan(Mode::FanIn);
        let mut sub = Subscriber::new(&plan, 0);
        let mut d = Delta::default();
        // Probes: ready once both publishers were seen, counted once.
        send(&mut sub, &plan, 0, Kind::Probe, 0, 0, &mut d);
        send(&mut sub, &plan, 0, Kind::Probe, 0, 1, &mut d);
        assert_eq!(d.probes_ready, 0);
        send(&mut sub, &plan, 1, Kind::Probe, 1, 0, &mut d);
        assert_eq!((d.probes_ready, d.probes_received), (1, 3));
        send(&mut sub, &plan, 0, Kind::Warmup, 0, 0, &mut d);
        assert_eq!(d.warmup_received, 1);
        // Publisher 0: 0, 2, 1, 1 (late, then duplicate); publisher 1: 0 only.
        assert_eq!(
            send(&mut sub, &plan, 0, Kind::Measured, 0, 0, &mut d),
            Some(100)
        );
        assert_eq!(
            send(&mut sub, &plan, 0, Kind::Measured, 0, 2, &mut d),
            Some(102)
        );
        assert_eq!(
            send(&mut sub, &plan, 0, Kind::Measured, 0, 1, &mut d),
            Some(101)
        );
        assert_eq!(send(&mut sub, &plan, 0, Kind::Measured, 0, 1, &mut d), None);
        assert_eq!(
            send(&mut sub, &plan, 1, Kind::Measured, 1, 0, &mut d),
            Some(100)
        );
        // Wrong topic for the publisher in the payload.
        assert_eq!(send(&mut sub, &plan, 0, Kind::Measured, 1, 1, &mut d), None);
        assert_eq!((d.received, d.unique), (5, 4));
        let c = sub.counts(&[3, 3]);
        assert_eq!(c.tally.expected, 6);
        assert_eq!(c.tally.unique, 4);
        assert_eq!(c.tally.lost, 2);
        assert_eq!(c.tally.duplicates, 1);
        assert_eq!(c.tally.out_of_order, 1);
        assert_eq!((c.received, c.wrong_topic, c.by_qos[1]), (5, 1, 5));
    }

    #[test]
    fn one_to_one_counts_other_publishers_as_unexpected() {
        let plan = plan(Mode::OneToOne);
        let mut sub = Subscriber::new(&plan, 1);
        let mut d = Delta::default();
        assert_eq!(send(&mut sub, &plan, 0, Kind::Measured, 0, 0, &mut d), None);
        assert_eq!(send(&mut sub, &plan, 1, Kind::Probe, 1, 0, &mut d), None);
        assert_eq!(d.probes_ready, 1);
        for seq in 0..3 {
            assert!(send(&mut sub, &plan, 1, Kind::Measured, 1, seq, &mut d).is_some());
        }
        let c = sub.counts(&[3, 3]);
        assert_eq!((c.tally.expected, c.tally.unique, c.tally.lost), (3, 3, 0));
        assert_eq!(c.unexpected, 1);
        // Garbage payload.
        let mut d2 = Delta::default();
        let topics: Vec<Vec<u8>> = vec![b"x".to_vec()];
        assert_eq!(sub.on_publish(&topics, b"x", b"short", 0, &mut d2), None);
        assert_eq!(sub.counts.malformed, 1);
    }
}
