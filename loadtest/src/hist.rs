//! Latency histograms that cross process boundaries as JSON.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest trackable latency: 10 minutes in microseconds.
const HIGHEST_US: u64 = 600_000_000;

/// A microsecond latency histogram.
pub struct Latency(Histogram<u64>);

/// Wire form: `[value_us, count]` pairs of the recorded buckets.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LatencyWire(pub Vec<(u64, u64)>);

/// Percentiles of a histogram, microseconds.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Summary {
    pub count: u64,
    pub min_us: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    pub fn new() -> Self {
        Self(Histogram::new_with_bounds(1, HIGHEST_US, 3).expect("valid histogram bounds"))
    }

    pub fn record_us(&mut self, us: u64) {
        self.0.saturating_record(us.clamp(1, HIGHEST_US));
    }

    pub fn to_wire(&self) -> LatencyWire {
        LatencyWire(
            self.0
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
        )
    }

    pub fn merge_wire(&mut self, wire: &LatencyWire) {
        for &(value, count) in &wire.0 {
            let _ = self.0.record_n(value.clamp(1, HIGHEST_US), count);
        }
    }

    pub fn summary(&self) -> Summary {
        let h = &self.0;
        if h.is_empty() {
            return Summary::default();
        }
        Summary {
            count: h.len(),
            min_us: h.min(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            mean_us: h.mean(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_roundtrip_keeps_percentiles() {
        let mut a = Latency::new();
        for v in 1..=10_000u64 {
            a.record_us(v);
        }
        let mut b = Latency::new();
        b.merge_wire(&a.to_wire());
        let (sa, sb) = (a.summary(), b.summary());
        assert_eq!(sa.count, sb.count);
        // Values are bucket upper bounds after the round trip: within 0.1 %.
        for (x, y) in [
            (sa.p50_us, sb.p50_us),
            (sa.p99_us, sb.p99_us),
            (sa.max_us, sb.max_us),
        ] {
            assert!(x.abs_diff(y) * 1000 <= x, "{x} vs {y}");
        }
    }
}
