//! The `connect` / `hold` report: the workers' reports merged into what the
//! JSON holds (the human table is in `table`).

use std::collections::BTreeMap;

use serde::Serialize;

use super::args::{Plan, StormArgs};
use super::broker::BrokerReport;
use super::host::HostReport;
use super::msg::{ConnectedReport, HeldReport};
use crate::hist::{Latency, Summary};

#[derive(Debug, Default, Serialize)]
pub struct ToolReport {
    pub workers: usize,
    /// Sums over the worker processes.
    pub rss_before_bytes: u64,
    pub rss_connected_bytes: u64,
    pub rss_held_bytes: Option<u64>,
    /// Sum of the workers' peak RSS (VmHWM): the storm's tasks and buffers.
    pub rss_peak_bytes: u64,
    /// The parent process (it holds no connection).
    pub parent_rss_bytes: u64,
    /// Workers' RSS growth per live connection (end of hold, else when connected).
    pub rss_per_connection_bytes: Option<f64>,
    /// Load-tool CPU time (all workers) for the handshake phase, µs.
    pub cpu_us: u64,
    /// The same, per successful connection.
    pub cpu_us_per_connection: Option<f64>,
    /// Load-tool CPU time (all workers) during the hold, as a share of one core.
    pub hold_cpu_share_of_core: Option<f64>,
}

#[derive(Debug, Default, Serialize)]
pub struct HoldReport {
    pub seconds: f64,
    /// Connections up at the end of the hold.
    pub alive: u64,
    /// Connections the broker closed during the hold, by cause: `eof` (FIN),
    /// `reset`, `disconnect_0xNN` (MQTT 5 DISCONNECT with its reason code), …
    pub closed: BTreeMap<String, u64>,
    pub pings_sent: u64,
    pub pings_answered: u64,
    /// PINGREQs not sent because a socket's send buffer was full.
    pub pings_blocked: u64,
    /// Packets other than PINGRESP and DISCONNECT received.
    pub other_packets: u64,
    /// Longest any connection went without a PINGREQ (from its first on), ms:
    /// above 1.5 × keepalive the broker may close it rightly.
    pub max_ping_gap_ms: u64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub targets: Vec<String>,
    pub connections: u64,
    pub protocol: u8,
    pub keepalive: u16,
    /// Seconds between two PINGREQs on a connection (0: none).
    pub ping_interval_s: f64,
    pub clean: bool,
    pub workers: usize,
    pub in_flight: Option<usize>,
    pub rate: Option<f64>,
    pub source_ips: usize,
    pub ok: u64,
    pub failed: u64,
    /// Failed handshakes by cause.
    pub failures: BTreeMap<String, u64>,
    /// Shared start to the last finished handshake.
    pub duration_s: f64,
    pub connects_per_s: f64,
    /// Successful handshakes in each second since the start.
    pub timeline_per_s: Vec<u64>,
    /// Failed handshakes in each second since the start.
    pub failures_per_s: Vec<u64>,
    pub connack_latency_us: Summary,
    pub tcp_connect_latency_us: Summary,
    /// Time from the shared start at which a share of the successful connections
    /// had their CONNACK (p50 = half of them connected, max = all).
    pub connected_after_us: Summary,
    /// Connections the broker closed after their CONNACK while the others were
    /// still connecting, by cause.
    pub closed_while_connecting: BTreeMap<String, u64>,
    /// Host-wide TCP counter deltas over the handshake phase (accept-queue
    /// overflows, SYN retransmissions, …); other traffic on the host counts too.
    pub host_tcp: BTreeMap<String, u64>,
    pub hold: Option<HoldReport>,
    pub broker: Option<BrokerReport>,
    pub load_tool: ToolReport,
    /// Kernel and host-wide memory (both ends of every loopback connection).
    pub host_memory: HostReport,
}

/// Everything the parent gathered, to be merged.
pub struct Gathered {
    pub connected: Vec<ConnectedReport>,
    pub held: Vec<HeldReport>,
    /// `Some(seconds held)` for a hold.
    pub held_secs: Option<f64>,
    pub broker: BrokerReport,
    pub host: HostReport,
    pub host_tcp: BTreeMap<String, u64>,
    pub parent_rss: u64,
}

fn add_series(into: &mut Vec<u64>, from: &[u64]) {
    if into.len() < from.len() {
        into.resize(from.len(), 0);
    }
    for (t, v) in into.iter_mut().zip(from) {
        *t += v;
    }
}

fn add_map(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (k, v) in from {
        *into.entry(k.clone()).or_insert(0) += v;
    }
}

pub fn build(scenario: &'static str, args: &StormArgs, plan: &Plan, g: Gathered) -> Report {
    let Gathered {
        connected,
        held,
        held_secs,
        mut broker,
        mut host,
        host_tcp,
        parent_rss,
    } = g;
    let mut connack = Latency::new();
    let mut tcp = Latency::new();
    let mut completion = Latency::new();
    let mut failures = BTreeMap::new();
    let mut timeline = Vec::new();
    let mut failures_per_s = Vec::new();
    let mut last_done_us = 0;
    let mut tool = ToolReport {
        workers: plan.workers,
        parent_rss_bytes: parent_rss,
        ..ToolReport::default()
    };
    for r in &connected {
        connack.merge_wire(&r.connack_latency);
        tcp.merge_wire(&r.tcp_latency);
        completion.merge_wire(&r.completion);
        add_map(&mut failures, &r.failures);
        add_series(&mut timeline, &r.timeline);
        add_series(&mut failures_per_s, &r.failed_timeline);
        last_done_us = last_done_us.max(r.last_done_us);
        tool.rss_before_bytes += r.rss_before;
        tool.rss_connected_bytes += r.rss_connected;
        tool.cpu_us += r.cpu_us;
    }
    let ok: u64 = connected.iter().map(|r| r.ok).sum();
    let failed: u64 = failures.values().sum();
    tool.cpu_us_per_connection = (ok > 0).then(|| tool.cpu_us as f64 / ok as f64);
    let duration_s = last_done_us as f64 / 1e6;

    let mut closed_while_connecting = BTreeMap::new();
    let mut h = HoldReport {
        seconds: held_secs.unwrap_or(0.0),
        ..HoldReport::default()
    };
    for r in &held {
        add_map(&mut closed_while_connecting, &r.closed_while_connecting);
        add_map(&mut h.closed, &r.closed_during_hold);
        h.alive += r.alive;
        h.pings_sent += r.pings_sent;
        h.pings_answered += r.pongs;
        h.pings_blocked += r.pings_blocked;
        h.other_packets += r.other_packets;
        h.max_ping_gap_ms = h.max_ping_gap_ms.max(r.max_ping_gap_ms);
        tool.rss_peak_bytes += r.rss_peak;
    }
    let live = h.alive;
    if let Some(secs) = held_secs {
        tool.rss_held_bytes = Some(held.iter().map(|r| r.rss_held).sum());
        let cpu: u64 = held.iter().map(|r| r.cpu_held_us).sum();
        tool.hold_cpu_share_of_core = (secs > 0.0).then(|| cpu as f64 / 1e6 / secs);
    }
    let tool_end = tool.rss_held_bytes.unwrap_or(tool.rss_connected_bytes);
    tool.rss_per_connection_bytes =
        (live > 0).then(|| (tool_end as f64 - tool.rss_before_bytes as f64) / live as f64);

    let held_secs_or_zero = held_secs.unwrap_or(0.0);
    broker.derive(ok, live, held_secs_or_zero);
    host.derive(live);

    Report {
        scenario,
        targets: plan.targets.iter().map(ToString::to_string).collect(),
        connections: args.connections,
        protocol: args.protocol,
        keepalive: args.keepalive,
        ping_interval_s: plan.ping_every_ms as f64 / 1000.0,
        clean: args.clean,
        workers: plan.workers,
        in_flight: plan.in_flight,
        rate: args.rate,
        source_ips: plan.source_ips.len(),
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
        failures_per_s,
        connack_latency_us: connack.summary(),
        tcp_connect_latency_us: tcp.summary(),
        connected_after_us: completion.summary(),
        closed_while_connecting,
        host_tcp,
        hold: held_secs.map(|_| h),
        broker: (!args.output.broker_pid.is_empty()).then_some(broker),
        load_tool: tool,
        host_memory: host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_series_and_maps() {
        let mut s = vec![1, 2];
        add_series(&mut s, &[10, 20, 30]);
        assert_eq!(s, [11, 22, 30]);
        let mut m = BTreeMap::from([("eof".to_owned(), 1)]);
        add_map(
            &mut m,
            &BTreeMap::from([("eof".to_owned(), 2), ("reset".to_owned(), 1)]),
        );
        assert_eq!(
            m,
            BTreeMap::from([("eof".to_owned(), 3), ("reset".to_owned(), 1)])
        );
    }
}
