//! The broker's processes as the scenarios sample them: `--broker-pid
//! [LABEL=]PID` grouped into tiers (the pids that share a label; a pid without
//! one is a tier of its own, named by its pid), and the CPU and memory of each
//! tier, and of the host, between two snapshots.

use std::str::FromStr;
use std::time::Instant;

use serde::Serialize;

use crate::procfs::{self, Sample};
use crate::report::bytes;

/// One `--broker-pid [LABEL=]PID`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerPid {
    pub label: Option<String>,
    pub pid: u32,
}

impl FromStr for BrokerPid {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (label, pid) = match s.rsplit_once('=') {
            Some((label, pid)) => {
                let label = label.trim();
                if label.is_empty() {
                    return Err(format!("empty tier label in {s:?}"));
                }
                (Some(label.to_owned()), pid)
            }
            None => (None, s),
        };
        let pid = pid
            .trim()
            .parse()
            .map_err(|e| format!("{s:?}: expected [LABEL=]PID ({e})"))?;
        Ok(BrokerPid { label, pid })
    }
}

impl BrokerPid {
    /// The tier this pid is reported in: its label, or the pid itself.
    pub fn tier(&self) -> String {
        self.label.clone().unwrap_or_else(|| self.pid.to_string())
    }
}

/// Groups pids by tier (in command-line order); fails on a pid that cannot be
/// read now.
pub fn group(pids: &[BrokerPid]) -> anyhow::Result<Vec<(String, Vec<u32>)>> {
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
    Ok(tiers)
}

/// CPU and memory of one tier over a window.
#[derive(Debug, Serialize)]
pub struct TierUse {
    pub label: String,
    pub pids: Vec<u32>,
    pub cpu_us: u64,
    /// CPU time / window: cores kept busy on average.
    pub cores: f64,
    /// CPU time per message delivered in the window.
    pub cpu_us_per_message: Option<f64>,
    pub rss_start_bytes: u64,
    pub rss_end_bytes: u64,
}

/// The whole host over a window: how many cores were busy (every process on
/// it, this run's included).
#[derive(Debug, Default, Serialize)]
pub struct HostUse {
    pub cpus: usize,
    pub busy_cores: f64,
}

/// One reading of every tier and of the host.
#[derive(Clone, Debug)]
pub struct Snapshot {
    at: Instant,
    tiers: Vec<Option<Sample>>,
    host: Option<(u64, u64)>,
}

/// The tiers to sample.
pub struct Tiers(Vec<(String, Vec<u32>)>);

impl Tiers {
    /// See [`group`].
    pub fn new(pids: &[BrokerPid]) -> anyhow::Result<Tiers> {
        group(pids).map(Tiers)
    }

    /// Reads every tier (a tier with an unreadable process gets no reading),
    /// then the host.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            at: Instant::now(),
            tiers: self
                .0
                .iter()
                .map(|(_, pids)| {
                    pids.iter().try_fold(Sample::default(), |acc, pid| {
                        Some(acc.add(procfs::sample(&pid.to_string()).ok()?))
                    })
                })
                .collect(),
            host: procfs::host_cpu_us(),
        }
    }

    /// Use between two snapshots, over the time between them; `messages`
    /// delivered in between.
    pub fn usage(
        &self,
        a: &Snapshot,
        b: &Snapshot,
        messages: u64,
    ) -> (Vec<TierUse>, Option<HostUse>) {
        let seconds = b.at.saturating_duration_since(a.at).as_secs_f64();
        self.usage_over(a, b, seconds, messages)
    }

    /// Use between two snapshots over a window of `seconds` measured by the
    /// caller; a tier unreadable at either end is left out.
    pub fn usage_over(
        &self,
        a: &Snapshot,
        b: &Snapshot,
        seconds: f64,
        messages: u64,
    ) -> (Vec<TierUse>, Option<HostUse>) {
        let tiers = self
            .0
            .iter()
            .zip(a.tiers.iter().zip(&b.tiers))
            .filter_map(|((label, pids), (x, y))| {
                let (x, y) = ((*x)?, (*y)?);
                let cpu_us = y.cpu_us.saturating_sub(x.cpu_us);
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
                    rss_start_bytes: x.rss_bytes,
                    rss_end_bytes: y.rss_bytes,
                })
            })
            .collect();
        let host = match (a.host, b.host) {
            (Some((busy0, total0)), Some((busy1, total1))) if total1 > total0 => {
                let cpus = std::thread::available_parallelism().map_or(1, usize::from);
                Some(HostUse {
                    cpus,
                    busy_cores: busy1.saturating_sub(busy0) as f64 / (total1 - total0) as f64
                        * cpus as f64,
                })
            }
            _ => None,
        };
        (tiers, host)
    }
}

/// Table lines `(head, text)` of the tiers' and the host's use; `per` names
/// what the CPU time per message was divided by ("message", ...).
pub fn table_lines(broker: &[TierUse], host: Option<&HostUse>, per: &str) -> Vec<(String, String)> {
    let mut lines: Vec<(String, String)> = broker
        .iter()
        .map(|t| {
            let pids: Vec<String> = t.pids.iter().map(ToString::to_string).collect();
            (
                format!("broker {}", t.label),
                format!(
                    "CPU {:.2} cores ({} µs per {per}); RSS {} -> {} (pid {})",
                    t.cores,
                    t.cpu_us_per_message
                        .map_or("n/a".into(), |us| format!("{us:.2}")),
                    bytes(t.rss_start_bytes as f64),
                    bytes(t.rss_end_bytes as f64),
                    pids.join(",")
                ),
            )
        })
        .collect();
    if let Some(h) = host {
        lines.push((
            "host CPU".into(),
            format!(
                "{:.2} of {} cores busy over the window (every process on the host)",
                h.busy_cores, h.cpus
            ),
        ));
    }
    lines
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A `--broker-pid` as the tests of every sampler write it.
    pub(crate) fn bp(label: Option<&str>, pid: u32) -> BrokerPid {
        BrokerPid {
            label: label.map(str::to_owned),
            pid,
        }
    }

    #[test]
    fn parses_broker_pid() {
        assert_eq!("123".parse::<BrokerPid>(), Ok(bp(None, 123)));
        assert_eq!("agent=123".parse::<BrokerPid>(), Ok(bp(Some("agent"), 123)));
        assert_eq!("a=b=7".parse::<BrokerPid>(), Ok(bp(Some("a=b"), 7)));
        assert!("=123".parse::<BrokerPid>().is_err());
        assert!("agent=".parse::<BrokerPid>().is_err());
        assert!("agent".parse::<BrokerPid>().is_err());
    }

    #[test]
    fn samples_a_tier_between_snapshots() {
        let me = std::process::id();
        let tiers = Tiers::new(&[bp(Some("me"), me), bp(None, me)]).unwrap();
        assert_eq!(tiers.0.len(), 2);
        let a = tiers.snapshot();
        let b = tiers.snapshot();
        let (used, _) = tiers.usage_over(&a, &b, 1.0, 10);
        assert_eq!(used.len(), 2);
        assert_eq!(used[0].label, "me");
        assert_eq!(used[1].label, me.to_string());
        assert!(used[0].rss_end_bytes > 0 && used[0].cpu_us_per_message.is_some());
        assert!(Tiers::new(&[bp(None, u32::MAX)]).is_err());
    }
}
