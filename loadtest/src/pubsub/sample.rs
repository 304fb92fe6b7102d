//! Broker CPU and memory per tier (the `--broker-pid` processes sharing a
//! label), and the host's CPU, between two snapshots taken by the parent: at
//! the start of the measured window and at the last arrival that counted.
//! (The same readings as `downlink`'s, but over a window that ends at the last
//! arrival, not when the run gave up waiting for lost messages.)

use std::time::Instant;

use serde::Serialize;

use crate::connect::broker::BrokerPid;
use crate::procfs::{self, Sample};

/// CPU and memory of one tier over the window.
#[derive(Debug, Serialize)]
pub struct TierUse {
    pub label: String,
    pub pids: Vec<u32>,
    pub cpu_us: u64,
    /// CPU time / window: cores kept busy on average.
    pub cores: f64,
    /// CPU time per delivery made in the window (of any kind: a backlog left
    /// by the warmup counts).
    pub cpu_us_per_message: Option<f64>,
    pub rss_start_bytes: u64,
    pub rss_end_bytes: u64,
}

/// The whole host over the window (every process on it, this run's included).
#[derive(Debug, Serialize)]
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
        Ok(Tiers(tiers))
    }

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

    /// Use per tier between two snapshots; `messages` delivered in between. A
    /// tier unreadable at either end is left out.
    pub fn usage(
        &self,
        a: &Snapshot,
        b: &Snapshot,
        messages: u64,
    ) -> (Vec<TierUse>, Option<HostUse>) {
        let seconds = b.at.saturating_duration_since(a.at).as_secs_f64();
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
