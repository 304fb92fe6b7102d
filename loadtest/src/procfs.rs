//! Process sampling through /proc: resident memory and CPU time.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// One reading of one or more processes (summed).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Sample {
    /// Resident set size, bytes.
    pub rss_bytes: u64,
    /// User + system CPU time, microseconds.
    pub cpu_us: u64,
}

impl Sample {
    pub fn add(self, other: Sample) -> Sample {
        Sample {
            rss_bytes: self.rss_bytes + other.rss_bytes,
            cpu_us: self.cpu_us + other.cpu_us,
        }
    }
}

/// Clock ticks per second, from the auxiliary vector (AT_CLKTCK); 100 if unreadable.
fn clock_ticks() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        const AT_CLKTCK: u64 = 17;
        let Ok(auxv) = std::fs::read("/proc/self/auxv") else {
            return 100;
        };
        auxv.chunks_exact(16)
            .map(|c| {
                let k = u64::from_ne_bytes(c[..8].try_into().expect("8 bytes"));
                let v = u64::from_ne_bytes(c[8..].try_into().expect("8 bytes"));
                (k, v)
            })
            .find(|&(k, _)| k == AT_CLKTCK)
            .map(|(_, v)| v)
            .filter(|&v| v > 0)
            .unwrap_or(100)
    })
}

/// Resident set size of a process in bytes (`self` for this process).
pub fn rss_bytes(pid: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    parse_vmrss(&status).with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}

fn parse_vmrss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// utime + stime of a process (all its threads), microseconds.
pub fn cpu_us(pid: &str) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let ticks = parse_stat_ticks(&stat).with_context(|| format!("malformed /proc/{pid}/stat"))?;
    Ok(ticks * 1_000_000 / clock_ticks())
}

fn parse_stat_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may contain spaces and parentheses: skip past the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Samples one process.
pub fn sample(pid: &str) -> anyhow::Result<Sample> {
    Ok(Sample {
        rss_bytes: rss_bytes(pid)?,
        cpu_us: cpu_us(pid)?,
    })
}

/// Host-wide CPU time from /proc/stat, all CPUs together, microseconds:
/// `(busy, total)` where busy leaves out idle and iowait.
pub fn host_cpu_us() -> Option<(u64, u64)> {
    parse_host_cpu(&std::fs::read_to_string("/proc/stat").ok()?)
}

fn parse_host_cpu(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let total: u64 = ticks.iter().sum();
    let idle = ticks.get(3)? + ticks.get(4)?;
    let us = |t: u64| t * 1_000_000 / clock_ticks();
    Some((us(total - idle), us(total)))
}

/// Host-wide TCP counters (this network namespace) that explain connect tails:
/// accept-queue overflows and SYN retransmissions.
pub const TCP_COUNTERS: [&str; 6] = [
    "ListenOverflows",
    "ListenDrops",
    "TCPSynRetrans",
    "TCPReqQFullDrop",
    "TCPReqQFullDoCookies",
    "SyncookiesSent",
];

/// Reads [`TCP_COUNTERS`] from /proc/net/netstat (missing ones are left out).
pub fn tcp_counters() -> BTreeMap<String, u64> {
    std::fs::read_to_string("/proc/net/netstat")
        .map(|text| parse_tcp_counters(&text))
        .unwrap_or_default()
}

fn parse_tcp_counters(text: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let lines: Vec<&str> = text.lines().collect();
    for pair in lines.chunks_exact(2) {
        let (names, values) = (pair[0], pair[1]);
        if !names.starts_with("TcpExt:") || !values.starts_with("TcpExt:") {
            continue;
        }
        for (name, value) in names
            .split_whitespace()
            .zip(values.split_whitespace())
            .skip(1)
        {
            if !TCP_COUNTERS.contains(&name) {
                continue;
            }
            if let Ok(v) = value.parse() {
                out.insert(name.to_owned(), v);
            }
        }
    }
    out
}

/// `after − before` per counter.
pub fn counter_delta(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.saturating_sub(before.get(k).copied().unwrap_or(0)),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_stat() {
        assert_eq!(
            parse_vmrss("Name:\tx\nVmRSS:\t   1234 kB\nThreads: 1\n"),
            Some(1234 * 1024)
        );
        let stat = "42 (we ird) name) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 5 1000 50";
        assert_eq!(parse_stat_ticks(stat), Some(10));
    }

    #[test]
    fn parses_netstat() {
        let text = "TcpExt: SyncookiesSent ListenOverflows ListenDrops Other\n\
                    TcpExt: 1 2 3 4\n\
                    IpExt: InNoRoutes\n\
                    IpExt: 9\n";
        let c = parse_tcp_counters(text);
        assert_eq!(c.get("ListenOverflows"), Some(&2));
        assert_eq!(c.get("SyncookiesSent"), Some(&1));
        assert_eq!(c.get("Other"), None);
        let mut later = c.clone();
        later.insert("ListenDrops".into(), 10);
        assert_eq!(counter_delta(&c, &later).get("ListenDrops"), Some(&7));
    }

    #[test]
    fn parses_host_cpu() {
        let ticks = clock_ticks();
        let (busy, total) = parse_host_cpu("cpu  10 0 5 80 5 0 0 0 0 0\ncpu0 1 2 3 4 5\n").unwrap();
        assert_eq!(busy, 15 * 1_000_000 / ticks);
        assert_eq!(total, 100 * 1_000_000 / ticks);
        assert!(host_cpu_us().is_some());
    }

    #[test]
    fn samples_self() {
        let s = sample("self").unwrap();
        assert!(s.rss_bytes > 0);
        assert!(clock_ticks() > 0);
    }
}
