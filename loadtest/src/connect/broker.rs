//! The broker's processes, sampled through /proc at three points (before the
//! first connection, when all are connected, at the end of the hold): summed over
//! all of them and per tier.
//!
//! Tiers are those of [`crate::tiers`]: the processes that share a label are
//! summed into one.

use anyhow::bail;
use serde::Serialize;

use crate::procfs::{self, Sample};
use crate::report::bytes;
use crate::tiers::{self, BrokerPid};

/// Readings of one set of processes (summed) and what follows from them.
#[derive(Debug, Default, Serialize)]
pub struct Readings {
    pub before: Option<Sample>,
    pub connected: Option<Sample>,
    /// At the end of the hold, before the connections close.
    pub held: Option<Sample>,
    /// (RSS at end of hold, or when connected without a hold) − RSS before, per live connection.
    pub rss_per_connection_bytes: Option<f64>,
    /// RSS when connected − RSS before, per successful connection.
    pub rss_per_connection_connected_bytes: Option<f64>,
    /// CPU time from before to all connected, per successful connection.
    pub cpu_us_per_connection: Option<f64>,
    /// CPU time during the hold, as a share of one core.
    pub hold_cpu_share_of_core: Option<f64>,
}

impl Readings {
    fn slot(&mut self, point: Point) -> &mut Option<Sample> {
        match point {
            Point::Before => &mut self.before,
            Point::Connected => &mut self.connected,
            Point::Held => &mut self.held,
        }
    }

    /// Fills the per-connection figures: `ok` handshakes succeeded, `live` were
    /// still up at the end of the hold (= `ok` without one).
    fn derive(&mut self, ok: u64, live: u64, held_secs: f64) {
        let per = |num: f64, den: u64| (den > 0).then(|| num / den as f64);
        let (Some(before), Some(conn)) = (self.before, self.connected) else {
            return;
        };
        self.rss_per_connection_connected_bytes =
            per(conn.rss_bytes as f64 - before.rss_bytes as f64, ok);
        self.cpu_us_per_connection = per(conn.cpu_us.saturating_sub(before.cpu_us) as f64, ok);
        let end = self.held.unwrap_or(conn);
        self.rss_per_connection_bytes = per(end.rss_bytes as f64 - before.rss_bytes as f64, live);
        self.hold_cpu_share_of_core = self
            .held
            .filter(|_| held_secs > 0.0)
            .map(|h| h.cpu_us.saturating_sub(conn.cpu_us) as f64 / 1e6 / held_secs);
    }

    /// "RSS before 1.0 MiB, connected 2.0 MiB, end of hold 2.0 MiB".
    fn rss_line(&self) -> String {
        let rss = |s: &Option<Sample>| s.map_or("n/a".to_owned(), |s| bytes(s.rss_bytes as f64));
        format!(
            "RSS before {}, connected {}, end of hold {}",
            rss(&self.before),
            rss(&self.connected),
            rss(&self.held)
        )
    }

    /// "812 B per connection (connected: 790 B); CPU 20.1 µs per connection; …".
    fn per_connection_line(&self) -> String {
        format!(
            "{} per connection (connected: {}); CPU {} per connection{}",
            self.rss_per_connection_bytes.map_or("n/a".into(), bytes),
            self.rss_per_connection_connected_bytes
                .map_or("n/a".into(), bytes),
            self.cpu_us_per_connection
                .map_or("n/a".into(), |us| format!("{us:.1} µs")),
            self.hold_cpu_share_of_core
                .map_or(String::new(), |c| format!(
                    "; {:.2} % of a core while holding",
                    c * 100.0
                ))
        )
    }
}

/// The processes that share one label.
#[derive(Debug, Serialize)]
pub struct TierReport {
    pub label: String,
    pub pids: Vec<u32>,
    #[serde(flatten)]
    pub readings: Readings,
}

/// Broker readings: the sum over all --broker-pid (flattened, as before tiers
/// existed) and the same per tier.
#[derive(Debug, Serialize)]
pub struct BrokerReport {
    pub pids: Vec<u32>,
    #[serde(flatten)]
    pub total: Readings,
    /// One entry per label (unlabeled pids: one each), in command-line order.
    pub tiers: Vec<TierReport>,
    pub errors: Vec<String>,
}

/// When a sample is taken.
#[derive(Clone, Copy, Debug)]
pub enum Point {
    Before,
    Connected,
    Held,
}

impl Point {
    fn name(self) -> &'static str {
        match self {
            Point::Before => "before",
            Point::Connected => "connected",
            Point::Held => "held",
        }
    }
}

impl BrokerReport {
    /// Groups the pids into tiers; fails on a pid given twice or one that
    /// cannot be read now.
    pub fn new(pids: &[BrokerPid]) -> anyhow::Result<Self> {
        let mut all: Vec<u32> = Vec::with_capacity(pids.len());
        for p in pids {
            if all.contains(&p.pid) {
                bail!("--broker-pid {} given twice", p.pid);
            }
            all.push(p.pid);
        }
        let tiers = tiers::group(pids)?
            .into_iter()
            .map(|(label, pids)| TierReport {
                label,
                pids,
                readings: Readings::default(),
            })
            .collect();
        Ok(BrokerReport {
            pids: all,
            total: Readings::default(),
            tiers,
            errors: Vec::new(),
        })
    }

    /// Reads every process once and sums the readings into the total and the
    /// tiers; a set with an unreadable process gets no reading at this point.
    pub fn sample(&mut self, point: Point) {
        let readings: Vec<(u32, Option<Sample>)> = self
            .pids
            .iter()
            .map(|&pid| match procfs::sample(&pid.to_string()) {
                Ok(s) => (pid, Some(s)),
                Err(e) => {
                    self.errors.push(format!("{}: {e:#}", point.name()));
                    (pid, None)
                }
            })
            .collect();
        let sum = |pids: &[u32]| {
            readings
                .iter()
                .filter(|(pid, _)| pids.contains(pid))
                .try_fold(Sample::default(), |acc, (_, s)| Some(acc.add((*s)?)))
        };
        *self.total.slot(point) = sum(&self.pids);
        for tier in &mut self.tiers {
            *tier.readings.slot(point) = sum(&tier.pids);
        }
    }

    /// See [`Readings::derive`]; for the total and every tier.
    pub fn derive(&mut self, ok: u64, live: u64, held_secs: f64) {
        self.total.derive(ok, live, held_secs);
        for tier in &mut self.tiers {
            tier.readings.derive(ok, live, held_secs);
        }
    }

    /// Table lines, each `(first column, text)`.
    pub fn table_lines(&self) -> Vec<(String, String)> {
        let join = |pids: &[u32]| {
            pids.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut lines = vec![
            (
                "broker".to_owned(),
                format!("pid {}: {}", join(&self.pids), self.total.rss_line()),
            ),
            (String::new(), self.total.per_connection_line()),
        ];
        if self.tiers.len() > 1 {
            for tier in &self.tiers {
                lines.push((
                    format!("  {}", tier.label),
                    format!("pid {}: {}", join(&tier.pids), tier.readings.rss_line()),
                ));
                lines.push((String::new(), tier.readings.per_connection_line()));
            }
        }
        for e in &self.errors {
            lines.push((String::new(), format!("sampling error: {e}")));
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tiers::tests::bp;

    #[test]
    fn groups_and_sums_tiers() {
        let me = std::process::id();
        // This process under a label: the only pid that surely exists.
        let mut report = BrokerReport::new(&[bp(Some("me"), me)]).unwrap();
        assert_eq!(report.tiers.len(), 1);
        assert!(BrokerReport::new(&[bp(None, me), bp(Some("x"), me)]).is_err());
        report.sample(Point::Before);
        report.sample(Point::Connected);
        report.derive(10, 10, 0.0);
        assert!(report.errors.is_empty());
        let tier = &report.tiers[0].readings;
        assert!(tier.before.is_some() && tier.cpu_us_per_connection.is_some());
        assert_eq!(
            report.total.connected.unwrap().rss_bytes,
            tier.connected.unwrap().rss_bytes
        );
    }

    #[test]
    fn derives_per_connection() {
        let mut r = Readings {
            before: Some(Sample {
                rss_bytes: 1000,
                cpu_us: 100,
            }),
            connected: Some(Sample {
                rss_bytes: 3000,
                cpu_us: 1100,
            }),
            held: Some(Sample {
                rss_bytes: 5000,
                cpu_us: 1600,
            }),
            ..Readings::default()
        };
        r.derive(10, 8, 2.0);
        assert_eq!(r.rss_per_connection_connected_bytes, Some(200.0));
        assert_eq!(r.rss_per_connection_bytes, Some(500.0));
        assert_eq!(r.cpu_us_per_connection, Some(100.0));
        assert_eq!(r.hold_cpu_share_of_core, Some(0.00025));
    }

    #[test]
    fn unreadable_pid_leaves_its_sets_empty() {
        let me = std::process::id();
        let mut report = BrokerReport::new(&[bp(Some("me"), me)]).unwrap();
        // A pid that cannot exist (above pid_max's hard limit of 2^22).
        report.pids.push(u32::MAX);
        report.tiers.push(TierReport {
            label: "gone".into(),
            pids: vec![u32::MAX],
            readings: Readings::default(),
        });
        report.sample(Point::Before);
        assert!(report.total.before.is_none());
        assert!(report.tiers[0].readings.before.is_some());
        assert!(report.tiers[1].readings.before.is_none());
        assert_eq!(report.errors.len(), 1);
    }
}
