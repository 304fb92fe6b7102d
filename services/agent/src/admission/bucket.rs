//! A token bucket kept as GCRA: the whole state is one "theoretical arrival time".

/// `interval` ns per token; `tolerance` = (burst - 1) tokens' worth of ns.
#[derive(Debug, Clone, Copy)]
pub(super) struct Gcra {
    interval: u64,
    tolerance: u64,
}

impl Gcra {
    /// A bucket of `burst` tokens refilled at `rate` per second (both validated
    /// positive by the caller).
    pub(super) fn new(rate: f64, burst: u32) -> Self {
        let interval = (1e9 / rate).ceil().clamp(1.0, u64::MAX as f64) as u64;
        Self {
            interval,
            tolerance: interval.saturating_mul(u64::from(burst.saturating_sub(1))),
        }
    }

    /// The bucket's new arrival time if a connect at `now` conforms, given the
    /// current one (`tat <= now` means the bucket is full; 0 is a new bucket).
    pub(super) fn admit(self, tat: u64, now: u64) -> Option<u64> {
        let tat = tat.max(now);
        (tat - now <= self.tolerance).then(|| tat.saturating_add(self.interval))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_is_a_token_bucket() {
        let bucket = Gcra::new(10.0, 3);
        let mut tat = 0;
        for _ in 0..3 {
            tat = bucket.admit(tat, 0).expect("burst");
        }
        assert_eq!(bucket.admit(tat, 0), None);
        assert_eq!(bucket.admit(tat, 99_999_999), None);
        assert!(bucket.admit(tat, 100_000_000).is_some());
        assert_eq!(tat, 300_000_000, "full again after burst / rate");
    }

    #[test]
    fn extreme_rates_saturate() {
        let slow = Gcra::new(1e-30, u32::MAX);
        assert!(slow.admit(0, 0).is_some());
        let fast = Gcra::new(1e30, 1);
        assert_eq!(fast.admit(0, 5), Some(6));
    }
}
