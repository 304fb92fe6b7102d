//! The human table of a `connect` / `hold` report.

use std::collections::BTreeMap;

use super::report::Report;
use crate::report::{bytes, count, latency_row, micros};

/// "a: 1, b: 2", or `none`.
fn causes(map: &BTreeMap<String, u64>, none: &str) -> String {
    if map.is_empty() {
        return none.to_owned();
    }
    map.iter()
        .map(|(k, v)| format!("{k}: {}", count(*v)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Most cells of the per-second series in the table (the JSON has every second).
const MAX_CELLS: usize = 32;

/// "[3s] 12,000" per second, or "[1-5s] 11,800" (the mean per second) over
/// equal spans when the series is longer than [`MAX_CELLS`]; the failures of
/// the span (their total) appended.
fn timeline_cells(ok: &[u64], failed: &[u64]) -> Vec<String> {
    let width = ok.len().div_ceil(MAX_CELLS).max(1);
    ok.chunks(width)
        .enumerate()
        .map(|(i, span)| {
            let (first, last) = (i * width + 1, i * width + span.len());
            let label = if first == last {
                format!("{first}s")
            } else {
                format!("{first}-{last}s")
            };
            let n = span.len() as u64;
            let mean = |v: &[u64]| (v.iter().sum::<u64>() + n / 2) / n;
            let fail_span = failed.get(first - 1..last.min(failed.len())).unwrap_or(&[]);
            match fail_span.iter().sum::<u64>() {
                0 => format!("[{label}] {}", count(mean(span))),
                f => format!("[{label}] {} ({} failed)", count(mean(span)), count(f)),
            }
        })
        .collect()
}

fn per_conn(v: Option<f64>) -> String {
    v.map_or("n/a".into(), bytes)
}

/// The human table.
pub fn table(r: &Report) -> String {
    let mut out = format!(
        "== throng-load {}: {} -> {} (MQTT {}, keepalive {} s{}), {} worker(s), {}\n",
        r.scenario,
        count(r.connections),
        r.targets.join(","),
        if r.protocol == 5 { "5" } else { "3.1.1" },
        r.keepalive,
        if r.clean { ", clean" } else { "" },
        r.workers,
        match (r.in_flight, r.rate) {
            (Some(k), _) => format!("in-flight {k}"),
            (None, Some(rate)) => format!("rate {rate}/s"),
            (None, None) => String::new(),
        }
    );
    let mut line = |head: &str, text: String| {
        out.push_str(&format!("{head:<22}{text}\n"));
    };
    line(
        "connected",
        format!(
            "{} of {} in {:.3} s = {} conn/s",
            count(r.ok),
            count(r.connections),
            r.duration_s,
            count(r.connects_per_s.round() as u64)
        ),
    );
    line("failures", causes(&r.failures, "none"));
    line("CONNACK latency", latency_row(&r.connack_latency_us));
    line(
        "TCP connect latency",
        latency_row(&r.tcp_connect_latency_us),
    );
    let c = &r.connected_after_us;
    line(
        "connected by",
        format!(
            "50% after {}, 90% after {}, 99% after {}, all after {}",
            micros(c.p50_us),
            micros(c.p90_us),
            micros(c.p99_us),
            micros(c.max_us)
        ),
    );
    line(
        "host TCP counters",
        if r.host_tcp.values().all(|&v| v == 0) {
            "no accept-queue overflow or SYN retransmission".to_owned()
        } else {
            r.host_tcp
                .iter()
                .filter(|&(_, &v)| v > 0)
                .map(|(k, v)| format!("{k} +{}", count(*v)))
                .collect::<Vec<_>>()
                .join(", ")
        },
    );
    for (i, chunk) in timeline_cells(&r.timeline_per_s, &r.failures_per_s)
        .chunks(8)
        .enumerate()
    {
        line(
            if i == 0 { "connects per second" } else { "" },
            chunk.join("  "),
        );
    }
    if !r.closed_while_connecting.is_empty() {
        line(
            "closed by the broker",
            format!(
                "while connecting: {}",
                causes(&r.closed_while_connecting, "none")
            ),
        );
    }
    if let Some(h) = &r.hold {
        line(
            "hold",
            format!(
                "{} of {} up after {:.1} s",
                count(h.alive),
                count(r.ok),
                h.seconds
            ),
        );
        line("  closed by broker", causes(&h.closed, "none"));
        line(
            "  keepalive",
            if r.ping_interval_s > 0.0 {
                format!(
                    "PINGREQ every {} s (longest gap {:.1} s): {} sent, {} answered{}{}",
                    r.ping_interval_s,
                    h.max_ping_gap_ms as f64 / 1000.0,
                    count(h.pings_sent),
                    count(h.pings_answered),
                    if h.pings_blocked > 0 {
                        format!(", {} not sent (send buffer full)", count(h.pings_blocked))
                    } else {
                        String::new()
                    },
                    if h.other_packets > 0 {
                        format!("; {} other packets received", count(h.other_packets))
                    } else {
                        String::new()
                    }
                )
            } else {
                "no PINGREQ sent".to_owned()
            },
        );
    }
    if let Some(b) = &r.broker {
        for (head, text) in b.table_lines() {
            line(&head, text);
        }
    }
    let t = &r.load_tool;
    line(
        &format!("load tool ({} proc)", t.workers),
        format!(
            "RSS {} before, {} connected{}, peak {}; {} per connection",
            bytes(t.rss_before_bytes as f64),
            bytes(t.rss_connected_bytes as f64),
            t.rss_held_bytes.map_or(String::new(), |b| format!(
                ", {} end of hold",
                bytes(b as f64)
            )),
            bytes(t.rss_peak_bytes as f64),
            per_conn(t.rss_per_connection_bytes)
        ),
    );
    line(
        "",
        format!(
            "CPU {} while connecting = {} per connection{}",
            micros(t.cpu_us),
            t.cpu_us_per_connection
                .map_or("n/a".into(), |us| format!("{us:.1} µs")),
            t.hold_cpu_share_of_core.map_or(String::new(), |c| format!(
                "; {:.2} % of a core while holding",
                c * 100.0
            ))
        ),
    );
    let m = &r.host_memory;
    if m.before.is_some() {
        line(
            "host memory",
            format!(
                "kernel slab {} ({} unreclaimable) and TCP buffers {} per connection (both ends); MemAvailable down {} per connection (everything)",
                per_conn(m.slab_per_connection_bytes),
                per_conn(m.slab_unreclaimable_per_connection_bytes),
                per_conn(m.tcp_buffer_per_connection_bytes),
                per_conn(m.mem_available_drop_per_connection_bytes)
            ),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_causes() {
        let m = BTreeMap::from([("eof".to_owned(), 3), ("reset".to_owned(), 1)]);
        assert_eq!(causes(&m, "none"), "eof: 3, reset: 1");
        assert_eq!(causes(&BTreeMap::new(), "none"), "none");
    }
    #[test]
    fn timeline_cells_group_long_series() {
        assert_eq!(
            timeline_cells(&[5, 7], &[0, 2]),
            ["[1s] 5", "[2s] 7 (2 failed)"]
        );
        let long: Vec<u64> = (1..=70).collect();
        let cells = timeline_cells(&long, &[]);
        assert_eq!(cells.len(), 24);
        assert_eq!(cells[0], "[1-3s] 2");
        assert_eq!(cells[23], "[70s] 70");
    }
}
