//! The `downlink` report: broker use per tier over the push window, the
//! figures derived from the workers' counts, the table, the JSON.

use std::collections::BTreeMap;

use serde::Serialize;

use super::msg::Counts;
use super::produce::PushReport;
use crate::connect::broker::BrokerPid;
use crate::hist::Summary;
use crate::procfs::{self, Sample};
use crate::report::{bytes, count, micros};

/// CPU and memory of one tier (the processes sharing a label) over the window
/// from the first send to the last arrival.
#[derive(Debug, Serialize)]
pub struct TierUse {
    pub label: String,
    pub pids: Vec<u32>,
    pub cpu_us: u64,
    /// CPU time / window: cores kept busy on average.
    pub cores: f64,
    pub cpu_us_per_message: Option<f64>,
    pub rss_start_bytes: u64,
    pub rss_end_bytes: u64,
}

/// The whole host over the window: how many cores were busy (all processes,
/// this run's and anyone else's).
#[derive(Debug, Default, Serialize)]
pub struct HostUse {
    pub cpus: usize,
    pub busy_cores: f64,
}

/// Samples every --broker-pid, and the host, at the start and end of the window.
pub struct Tiers {
    tiers: Vec<(String, Vec<u32>)>,
    start: Option<Vec<Option<Sample>>>,
    host_start: Option<(u64, u64)>,
}

impl Tiers {
    /// Groups pids by label (in command-line order); fails on an unreadable pid.
    pub fn new(pids: &[BrokerPid]) -> anyhow::Result<Tiers> {
        let mut tiers: Vec<(String, Vec<u32>)> = Vec::new();
        for p in pids {
            procfs::sample(&p.pid.to_string())
                .map_err(|e| anyhow::anyhow!("--broker-pid {}: {e:#}", p.pid))?;
            let label = p.tier();
            match tiers.iter_mut().find(|(l, _)| *l == label) {
                Some((_, list)) => list.push(p.pid),
                None => tiers.push((label, vec![p.pid])),
            }
        }
        Ok(Tiers {
            tiers,
            start: None,
            host_start: None,
        })
    }

    fn sample(&self) -> Vec<Option<Sample>> {
        self.tiers
            .iter()
            .map(|(_, pids)| {
                pids.iter().try_fold(Sample::default(), |acc, pid| {
                    Some(acc.add(procfs::sample(&pid.to_string()).ok()?))
                })
            })
            .collect()
    }

    pub fn mark_start(&mut self) {
        self.start = Some(self.sample());
        self.host_start = procfs::host_cpu_us();
    }

    /// Host CPU since `mark_start`.
    pub fn host(&self) -> Option<HostUse> {
        let (busy0, total0) = self.host_start?;
        let (busy1, total1) = procfs::host_cpu_us()?;
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let total = total1.saturating_sub(total0) as f64;
        (total > 0.0).then(|| HostUse {
            cpus,
            busy_cores: busy1.saturating_sub(busy0) as f64 / total * cpus as f64,
        })
    }

    /// Use per tier since `mark_start`, over a window of `seconds`; a tier
    /// that could not be read at either end is left out.
    pub fn finish(&self, seconds: f64, messages: u64) -> Vec<TierUse> {
        let Some(start) = &self.start else {
            return Vec::new();
        };
        let end = self.sample();
        self.tiers
            .iter()
            .zip(start.iter().zip(end))
            .filter_map(|((label, pids), (a, b))| {
                let (a, b) = ((*a)?, b?);
                let cpu_us = b.cpu_us.saturating_sub(a.cpu_us);
                Some(TierUse {
                    label: label.clone(),
                    pids: pids.clone(),
                    cpu_us,
                    cores: if seconds > 0.0 {
                        cpu_us as f64 / 1e6 / seconds
                    } else {
                        0.0
                    },
                    cpu_us_per_message: (messages > 0).then(|| cpu_us as f64 / messages as f64),
                    rss_start_bytes: a.rss_bytes,
                    rss_end_bytes: b.rss_bytes,
                })
            })
            .collect()
    }
}

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

fn latency_row(s: &Summary) -> String {
    format!(
        "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        micros(s.p50_us),
        micros(s.p90_us),
        micros(s.p99_us),
        micros(s.p999_us),
        micros(s.max_us)
    )
}

fn rate(v: f64) -> String {
    count(v.round() as u64)
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
    line(
        "per second",
        d.timeline_per_s
            .iter()
            .enumerate()
            .map(|(i, n)| format!("[{}s] {}", i + 1, count(*n)))
            .collect::<Vec<_>>()
            .join("  "),
    );
    if !d.connections_lost.is_empty() {
        line("connections lost", format!("{:?}", d.connections_lost));
    }
    for t in &r.broker {
        line(
            &format!("broker {}", t.label),
            format!(
                "CPU {:.2} cores ({} µs per message); RSS {} -> {} (pid {})",
                t.cores,
                t.cpu_us_per_message
                    .map_or("n/a".into(), |us| format!("{us:.2}")),
                bytes(t.rss_start_bytes as f64),
                bytes(t.rss_end_bytes as f64),
                t.pids
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        );
    }
    if let Some(h) = &r.host {
        line(
            "host CPU",
            format!(
                "{:.2} of {} cores busy over the window (every process on the host)",
                h.busy_cores, h.cpus
            ),
        );
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
