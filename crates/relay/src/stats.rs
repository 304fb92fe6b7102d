//! Relay counters: one [`Counters`] per thread, written by that thread (and by
//! `Relay::add` for `live`), summed into a [`RelayStats`] snapshot on demand.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::CloseReason;

/// A snapshot of the relay's counters, summed over its threads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Live pairs (same as `Relay::len`).
    pub pairs: u64,
    /// Pairs ever accepted by `Relay::add`.
    pub added: u64,
    /// Bytes written to upstreams (including `pending_to_upstream`).
    pub bytes_up: u64,
    /// Bytes written to clients.
    pub bytes_down: u64,
    /// Bytes held right now in per-direction buffers (allocated size).
    pub buffered_bytes: u64,
    /// The most any single pair has held in buffers at once, both directions.
    pub peak_pair_buffered: u64,
    /// Closed pairs by reason.
    pub closed: ClosedStats,
}

/// Closed pairs by [`CloseReason`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClosedStats {
    pub completed: u64,
    pub client_error: u64,
    pub upstream_error: u64,
    pub aborted: u64,
}

impl ClosedStats {
    /// All closed pairs.
    pub fn total(&self) -> u64 {
        self.completed + self.client_error + self.upstream_error + self.aborted
    }
}

/// One thread's counters. Relaxed atomics: each is an independent tally.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) live: AtomicUsize,
    pub(crate) added: AtomicU64,
    pub(crate) bytes_up: AtomicU64,
    pub(crate) bytes_down: AtomicU64,
    pub(crate) buffered: AtomicUsize,
    pub(crate) peak_pair_buffered: AtomicUsize,
    closed_completed: AtomicU64,
    closed_client_error: AtomicU64,
    closed_upstream_error: AtomicU64,
    closed_aborted: AtomicU64,
}

impl Counters {
    pub(crate) fn buffer_allocated(&self, bytes: usize) {
        self.buffered.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn buffer_freed(&self, bytes: usize) {
        self.buffered.fetch_sub(bytes, Ordering::Relaxed);
    }

    pub(crate) fn pair_buffered(&self, bytes: usize) {
        self.peak_pair_buffered.fetch_max(bytes, Ordering::Relaxed);
    }

    pub(crate) fn closed(&self, reason: CloseReason) {
        let counter = match reason {
            CloseReason::Completed => &self.closed_completed,
            CloseReason::ClientError(_) => &self.closed_client_error,
            CloseReason::UpstreamError(_) => &self.closed_upstream_error,
            CloseReason::Aborted => &self.closed_aborted,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.live.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn add_to(&self, stats: &mut RelayStats) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let get_usize = |c: &AtomicUsize| c.load(Ordering::Relaxed) as u64;
        stats.pairs += get_usize(&self.live);
        stats.added += get(&self.added);
        stats.bytes_up += get(&self.bytes_up);
        stats.bytes_down += get(&self.bytes_down);
        stats.buffered_bytes += get_usize(&self.buffered);
        stats.peak_pair_buffered = stats
            .peak_pair_buffered
            .max(get_usize(&self.peak_pair_buffered));
        stats.closed.completed += get(&self.closed_completed);
        stats.closed.client_error += get(&self.closed_client_error);
        stats.closed.upstream_error += get(&self.closed_upstream_error);
        stats.closed.aborted += get(&self.closed_aborted);
    }
}
