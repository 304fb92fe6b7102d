//! The `pubsub` report: what the workers said, merged; what makes the run a
//! failure; its JSON form (the table for people is in `table.rs`).

use std::collections::BTreeMap;

use serde::Serialize;

use super::msg::{Counts, FinalReport, PublishedReport, SubscriberRow};
use super::plan::{Mode, Plan};
use crate::hist::{Latency, Summary};
use crate::report::count;
use crate::tiers::{HostUse, TierUse};

#[derive(Debug, Default, Serialize)]
pub struct SetupPhase {
    pub ok: u64,
    pub failed: u64,
    pub failures: BTreeMap<String, u64>,
    pub seconds: f64,
    /// TCP connect to CONNACK (to SUBACK for subscribers).
    pub latency_us: Summary,
    /// Subscriptions granted at QoS 0, 1, 2.
    pub granted: [u64; 3],
    /// Smallest Receive Maximum the broker announced (MQTT 5).
    pub receive_maximum: Option<u16>,
}

#[derive(Debug, Default, Serialize)]
pub struct ProbePhase {
    pub seconds: f64,
    /// Subscribers that saw a probe from every publisher they receive from.
    pub subscribers_ready: u64,
    pub subscribers: u64,
    /// All were ready before --probe-timeout.
    pub complete: bool,
    pub probes_sent: u64,
    pub probes_received: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct PublishPhase {
    /// Measured messages published.
    pub sent: u64,
    pub warmup_sent: u64,
    /// The measured window: --duration, or its start to the last measured send.
    pub seconds: f64,
    pub messages_per_s: f64,
    /// QoS 1/2 measured messages acknowledged.
    pub acked: u64,
    pub refused: BTreeMap<String, u64>,
    /// PUBLISH to PUBACK (QoS 1) or PUBCOMP (QoS 2).
    pub ack_latency_us: Summary,
    /// Publishers that ended early, by cause.
    pub failed: BTreeMap<String, u64>,
    /// In-flight window used (smallest over publishers).
    pub window: u16,
}

#[derive(Debug, Default, Serialize)]
pub struct Delivery {
    #[serde(flatten)]
    pub counts: Counts,
    /// First to last unique measured arrival (a backlog left by the warmup
    /// is delivered before the first one and does not count).
    pub seconds: f64,
    /// Unique deliveries (all subscribers) / `seconds`.
    pub messages_per_s: f64,
    /// Payload send time to arrival, unique measured deliveries.
    pub latency_us: Summary,
    /// Unique deliveries in each second of the measured window.
    pub timeline_per_s: Vec<u64>,
    /// Subscribers that missed at least one message.
    pub subscribers_with_losses: u64,
    pub unique_per_subscriber_min: u64,
    pub unique_per_subscriber_max: u64,
    /// Subscriber connections that ended during the run, by cause.
    pub connections_lost: BTreeMap<String, u64>,
    /// Warmup messages received (not checked).
    pub warmup_received: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct LoadTool {
    pub workers: usize,
    /// Workers' CPU from ready to finish, µs.
    pub cpu_us: u64,
    pub rss_bytes: u64,
}

/// How the wait for deliveries ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum End {
    /// Every expected delivery arrived.
    #[default]
    Complete,
    /// Publishers done, nothing new for --drain-timeout.
    Drained,
    /// --timeout reached.
    Timeout,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub targets: Vec<String>,
    pub mode: Mode,
    pub protocol: u8,
    pub qos: u8,
    pub sub_qos: u8,
    pub payload_size: usize,
    pub publishers: u32,
    pub subscribers: u32,
    pub inflight: u16,
    pub rate_limit: Option<f64>,
    pub messages: Option<u64>,
    pub duration_s: Option<f64>,
    pub warmup_s: f64,
    pub setup: SetupPhase,
    pub probe: ProbePhase,
    pub publish: PublishPhase,
    pub delivery: Delivery,
    pub end: End,
    pub broker: Vec<TierUse>,
    pub host: Option<HostUse>,
    pub load_tool: LoadTool,
    /// Empty when the run passed.
    pub problems: Vec<String>,
    /// Worth knowing, not failures (QoS 0 losses, out-of-order, incomplete probes).
    pub warnings: Vec<String>,
    pub per_subscriber: Vec<SubscriberRow>,
}

/// Merges what the publishers reported; `measure_start_us` starts the window,
/// which lasts `duration_s` (with --duration) or until the last send.
pub fn publish_phase(
    published: &[PublishedReport],
    measure_start_us: u64,
    duration_s: Option<f64>,
) -> PublishPhase {
    let mut p = PublishPhase {
        window: u16::MAX,
        ..PublishPhase::default()
    };
    let mut ack = Latency::new();
    let mut last = 0;
    for r in published {
        p.sent += r.per_publisher.iter().map(|&(_, n)| n).sum::<u64>();
        p.warmup_sent += r.warmup_sent;
        p.acked += r.acked;
        for (k, v) in &r.refused {
            *p.refused.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &r.failed {
            *p.failed.entry(k.clone()).or_default() += v;
        }
        ack.merge_wire(&r.ack_latency);
        last = last.max(r.last_send_us);
        if !r.per_publisher.is_empty() {
            p.window = p.window.min(r.window);
        }
    }
    p.ack_latency_us = ack.summary();
    let until_last = last.saturating_sub(measure_start_us) as f64 / 1e6;
    p.seconds = duration_s.map_or(until_last, |d| d.max(until_last));
    if p.seconds > 0.0 {
        p.messages_per_s = p.sent as f64 / p.seconds;
    }
    p
}

/// Merges the subscribers' reports.
pub fn delivery(finals: &[FinalReport], measure_start_us: u64) -> Delivery {
    let mut d = Delivery {
        unique_per_subscriber_min: u64::MAX,
        ..Delivery::default()
    };
    let mut latency = Latency::new();
    let (mut first, mut last) = (u64::MAX, 0);
    let start_bucket = measure_start_us / 100_000;
    for f in finals {
        latency.merge_wire(&f.latency);
        if f.first_arrival_us > 0 {
            first = first.min(f.first_arrival_us);
        }
        last = last.max(f.last_arrival_us);
        for row in &f.subscribers {
            d.counts.add(&row.counts);
            if row.counts.tally.lost > 0 {
                d.subscribers_with_losses += 1;
            }
            d.unique_per_subscriber_min = d.unique_per_subscriber_min.min(row.counts.tally.unique);
            d.unique_per_subscriber_max = d.unique_per_subscriber_max.max(row.counts.tally.unique);
            if let Some(cause) = &row.ended {
                *d.connections_lost.entry(cause.clone()).or_default() += 1;
            }
        }
        for &(bucket, n) in &f.arrivals {
            let second = (bucket.saturating_sub(start_bucket) / 10) as usize;
            if d.timeline_per_s.len() <= second {
                d.timeline_per_s.resize(second + 1, 0);
            }
            d.timeline_per_s[second] += n;
        }
    }
    if d.unique_per_subscriber_min == u64::MAX {
        d.unique_per_subscriber_min = 0;
    }
    d.latency_us = latency.summary();
    d.seconds = last.saturating_sub(first.min(last)) as f64 / 1e6;
    if d.seconds > 0.0 {
        d.messages_per_s = d.counts.tally.unique as f64 / d.seconds;
    }
    d
}

impl Report {
    /// Sorts out failures from warnings.
    pub fn judge(&mut self, plan: &Plan, fail_on_loss: bool) {
        let (mut p, mut w) = (Vec::new(), Vec::new());
        let d = &self.delivery;
        let t = &d.counts.tally;
        if t.lost > 0 {
            let line = format!(
                "{} of {} deliveries lost ({} subscriber(s) affected)",
                count(t.lost),
                count(t.expected),
                count(d.subscribers_with_losses)
            );
            if plan.effective_qos() >= 1 || fail_on_loss {
                p.push(line);
            } else {
                w.push(format!("{line} at QoS 0"));
            }
        }
        if t.duplicates > 0 {
            let line = format!("{} duplicate deliveries", count(t.duplicates));
            if plan.effective_qos() == 2 {
                p.push(format!("{line} at QoS 2"));
            } else {
                w.push(line);
            }
        }
        if t.out_of_order > 0 {
            w.push(format!(
                "{} deliveries out of order (per publisher)",
                count(t.out_of_order)
            ));
        }
        for (n, what) in [
            (
                d.counts.unexpected,
                "deliveries to a subscriber that should not get them",
            ),
            (d.counts.wrong_topic, "deliveries on the wrong topic"),
            (d.counts.malformed, "malformed packets or payloads"),
            (t.beyond, "sequence numbers never published"),
        ] {
            if n > 0 {
                p.push(format!("{} {what}", count(n)));
            }
        }
        let lost_conns: u64 = d.connections_lost.values().sum();
        if lost_conns > 0 {
            p.push(format!(
                "{} subscriber connection(s) ended: {:?}",
                count(lost_conns),
                d.connections_lost
            ));
        }
        if !self.publish.failed.is_empty() {
            p.push(format!("publishers ended early: {:?}", self.publish.failed));
        }
        if !self.publish.refused.is_empty() {
            p.push(format!(
                "acknowledgements refused or unexpected: {:?}",
                self.publish.refused
            ));
        }
        if self.end == End::Timeout {
            p.push("--timeout reached".into());
        }
        if !self.probe.complete {
            w.push(format!(
                "probing incomplete: {} of {} subscribers saw every publisher",
                count(self.probe.subscribers_ready),
                count(self.probe.subscribers)
            ));
        }
        let granted_below = self.setup.granted[..usize::from(plan.sub_qos)]
            .iter()
            .sum::<u64>();
        if granted_below > 0 {
            w.push(format!(
                "{} subscription(s) granted below QoS {}",
                count(granted_below),
                plan.sub_qos
            ));
        }
        self.problems = p;
        self.warnings = w;
    }
}
