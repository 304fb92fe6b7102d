//! The `downlink` report: the figures derived from the workers' counts (and
//! the broker's use per tier over the push window), the table, the JSON.

use std::collections::BTreeMap;

use serde::Serialize;

use super::msg::Counts;
use super::produce::PushReport;
use crate::hist::Summary;
use crate::report::{bytes, count, latency_row, micros, per_second, rate};
use crate::tiers::{self, HostUse, TierUse};

#[derive(Debug, Default, Serialize)]
pub struct ConnectPhase {
    pub ok: u64,
    pub failed: u64,
    pub failures: BTreeMap<String, u64>,
    pub seconds: f64,
    pub connack_latency_us: Summary,
}

#[derive(Debug, Default, Serialize)]
pub struct Delivery {
    pub expected: u64,
    #[serde(flatten)]
    pub counts: Counts,
    /// Expected − unique received.
    pub lost: u64,
    pub first_arrival_unix_us: u64,
    pub last_arrival_unix_us: u64,
    /// First send to last arrival.
    pub seconds: f64,
    /// Unique messages received / `seconds`.
    pub messages_per_s: f64,
    /// Send (payload timestamp) to arrival at the device, unique messages.
    pub latency_us: Summary,
    /// Unique arrivals in each second from the first send.
    pub timeline_per_s: Vec<u64>,
    /// Unique arrivals after the push ended (100 ms resolution) and their rate
    /// up to the last arrival: the consumption rate with no producer running.
    pub after_push: u64,
    pub after_push_per_s: Option<f64>,
    /// Why device connections ended during the run.
    pub connections_lost: BTreeMap<String, u64>,
}

#[derive(Debug, Default, Serialize)]
pub struct LoadTool {
    pub device_workers: usize,
    /// Producer process (the parent) CPU over the push, µs.
    pub producer_cpu_us: u64,
    /// Device workers' CPU from all connected to finish, µs.
    pub device_cpu_us: u64,
    pub device_rss_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub targets: Vec<String>,
    /// Set when a sink stood in for the handlers (the handler ids it attached as).
    pub sink: Option<Vec<String>>,
    pub entry: String,
    pub devices: u64,
    pub messages: u64,
    pub qos: u8,
    pub payload_size: usize,
    pub pick: super::msg::Pick,
    pub protocol: u8,
    pub clean: bool,
    pub connect: ConnectPhase,
    pub push: Option<PushReport>,
    pub delivery: Delivery,
    pub broker: Vec<TierUse>,
    /// The whole host over the same window.
    pub host: Option<HostUse>,
    pub load_tool: LoadTool,
    /// Empty when every message arrived once, intact, at its device.
    pub problems: Vec<String>,
}

impl Report {
    /// What makes the run a failure: losses, misdeliveries, corrupt or refused
    /// messages (duplicates alone are allowed: delivery is at least once).
    pub fn find_problems(&mut self) {
        let d = &self.delivery;
        let mut p = Vec::new();
        if d.lost > 0 {
            p.push(format!(
                "{} of {} messages lost",
                count(d.lost),
                count(d.expected)
            ));
        }
        if d.counts.misdelivered > 0 {
            p.push(format!(
                "{} messages at the wrong device",
                count(d.counts.misdelivered)
            ));
        }
        if d.counts.wrong_topic > 0 {
            p.push(format!(
                "{} messages on the wrong topic",
                count(d.counts.wrong_topic)
            ));
        }
        if d.counts.malformed > 0 {
            p.push(format!(
                "{} malformed packets or payloads",
                count(d.counts.malformed)
            ));
        }
        if d.counts.connections_lost > 0 {
            p.push(format!(
                "{} {} lost",
                count(d.counts.connections_lost),
                if self.sink.is_some() {
                    "sink streams"
                } else {
                    "device connections"
                }
            ));
        }
        match &self.push {
            Some(push) if !push.errors.is_empty() => p.push(format!(
                "{} messages refused by the entry point",
                count(push.errors.values().sum())
            )),
            Some(_) => {}
            None => p.push("the producers did not finish".into()),
        }
        self.problems = p;
    }
}

pub fn print_table(r: &Report) {
    let to = match &r.sink {
        Some(handlers) => format!(
            "{} client ids, acked by a sink attached to the distributor {} as {}",
            count(r.devices),
            r.targets.join(","),
            handlers.join(",")
        ),
        None => format!(
            "{} devices at {} (MQTT {}{})",
            count(r.devices),
            r.targets.join(","),
            if r.protocol == 5 { "5" } else { "3.1.1" },
            if r.clean { ", clean" } else { "" }
        ),
    };
    let mut out = format!(
        "== throng-load downlink: {} messages (QoS {}, {} B) via {} to {to}, {}\n",
        count(r.messages),
        r.qos,
        r.payload_size,
        r.entry,
        match r.pick {
            super::msg::Pick::RoundRobin => "round-robin",
            super::msg::Pick::Random => "random devices",
        }
    );
    let mut line = |head: &str, text: String| {
        out.push_str(&format!("{head:<22}{text}\n"));
    };
    let c = &r.connect;
    line(
        if r.sink.is_some() {
            "sink streams"
        } else {
            "devices connected"
        },
        format!(
            "{} of {} in {:.2} s{}",
            count(c.ok),
            count(r.sink.as_ref().map_or(r.devices, |h| h.len() as u64)),
            c.seconds,
            if c.failures.is_empty() {
                String::new()
            } else {
                format!("; failures: {:?}", c.failures)
            }
        ),
    );
    if let Some(p) = &r.push {
        line(
            "push",
            format!(
                "{} accepted in {:.3} s = {} msg/s ({} producer(s), batches of {}{})",
                count(p.accepted),
                p.seconds,
                rate(p.messages_per_s),
                p.producers,
                p.batch,
                p.rate_limit
                    .map_or(String::new(), |r| format!(", limited to {r}/s"))
            ),
        );
        line("push batch round trip", latency_row(&p.batch_latency_us));
        if !p.errors.is_empty() {
            line("push errors", format!("{:?}", p.errors));
        }
    }
    let d = &r.delivery;
    line(
        "delivered",
        format!(
            "{} of {} unique in {:.3} s (first send to last arrival) = {} msg/s",
            count(d.counts.unique),
            count(d.expected),
            d.seconds,
            rate(d.messages_per_s)
        ),
    );
    line(
        "checks",
        format!(
            "lost {}, duplicates {}, misdelivered {}, wrong topic {}, malformed {}; received at QoS 0/1/2: {}/{}/{}",
            count(d.lost),
            count(d.counts.duplicates),
            count(d.counts.misdelivered),
            count(d.counts.wrong_topic),
            count(d.counts.malformed),
            count(d.counts.by_qos[0]),
            count(d.counts.by_qos[1]),
            count(d.counts.by_qos[2]),
        ),
    );
    if let Some(rate_after) = d.after_push_per_s {
        line(
            "after the push",
            format!(
                "{} arrived after the last send = {} msg/s with no producer running",
                count(d.after_push),
                rate(rate_after)
            ),
        );
    }
    line("end-to-end latency", latency_row(&d.latency_us));
    line("per second", per_second(&d.timeline_per_s));
    if !d.connections_lost.is_empty() {
        line("connections lost", format!("{:?}", d.connections_lost));
    }
    for (head, text) in tiers::table_lines(&r.broker, r.host.as_ref(), "message") {
        line(&head, text);
    }
    let l = &r.load_tool;
    line(
        "load tool",
        format!(
            "producer CPU {}, devices CPU {} ({} proc, RSS {})",
            micros(l.producer_cpu_us),
            micros(l.device_cpu_us),
            l.device_workers,
            bytes(l.device_rss_bytes as f64)
        ),
    );
    line(
        "result",
        if r.problems.is_empty() {
            "OK: every message arrived, at its device, intact".to_owned()
        } else {
            format!("FAILED: {}", r.problems.join("; "))
        },
    );
    print!("{out}");
}
