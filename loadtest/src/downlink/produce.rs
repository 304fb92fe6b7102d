//! Pushing the messages: the plan every producer follows (which sequence
//! numbers, for which device, at what pace) and what producing reports.
//! The ways in are in `redis.rs` (XADD to the downlink stream) and `ingest.rs`
//! (the ingest API's PublishBatch).

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::msg::{Pick, client_id, encode_payload, unix_us};
use crate::hist::{Latency, Summary};

/// What to push and how fast.
#[derive(Debug, Clone)]
pub struct Plan {
    pub messages: u64,
    pub devices: u64,
    pub pick: Pick,
    pub qos: u8,
    pub payload_size: usize,
    /// Messages per pipeline write / PublishBatch.
    pub batch: usize,
    /// Concurrent producers (connections), each with one batch in flight.
    pub producers: usize,
    /// Messages per second at most, all producers together.
    pub rate: Option<f64>,
    /// Client ids by device index.
    pub client_ids: Arc<Vec<String>>,
}

impl Plan {
    /// Client ids of `devices` devices named `<prefix>-<index>`.
    pub fn client_ids(prefix: &str, devices: u64) -> Arc<Vec<String>> {
        Arc::new((0..devices).map(|i| client_id(prefix, i)).collect())
    }

    /// The device message `seq` is for, and its client id.
    pub fn target(&self, seq: u64) -> (u64, &str) {
        let device = self.pick.device(seq, self.devices);
        (device, &self.client_ids[device as usize])
    }

    /// Appends the payload of message `seq`, stamped now.
    pub fn payload(&self, out: &mut Vec<u8>, seq: u64, device: u64) {
        encode_payload(out, seq, unix_us(), device, self.payload_size);
    }
}

/// Hands out batches of sequence numbers to the producers, paced by the rate.
pub struct Cursor {
    next: AtomicU64,
    start: Instant,
}

impl Cursor {
    pub fn new() -> Cursor {
        Cursor {
            next: AtomicU64::new(0),
            start: Instant::now(),
        }
    }

    /// The next batch to send, once it is due; `None` when all are taken.
    pub async fn claim(&self, plan: &Plan) -> Option<Range<u64>> {
        let first = self.next.fetch_add(plan.batch as u64, Ordering::Relaxed);
        if first >= plan.messages {
            return None;
        }
        if let Some(rate) = plan.rate {
            let due = self.start + Duration::from_secs_f64(first as f64 / rate);
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
            }
        }
        Some(first..(first + plan.batch as u64).min(plan.messages))
    }
}

/// What one producer saw.
#[derive(Default)]
pub struct Tally {
    /// Messages the entry point took (XADD replied with an id; ingest said
    /// ACCEPTED or QUEUED).
    pub accepted: u64,
    /// Messages refused, by cause.
    pub errors: BTreeMap<String, u64>,
    /// Round trip of each batch (write to last reply), µs.
    pub batch_latency: Latency,
}

impl Tally {
    pub fn error(&mut self, cause: impl Into<String>, n: u64) {
        *self.errors.entry(cause.into()).or_default() += n;
    }

    pub fn merge(&mut self, other: Tally) {
        self.accepted += other.accepted;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.batch_latency
            .merge_wire(&other.batch_latency.to_wire());
    }
}

/// The push phase, as reported.
#[derive(Debug, Default, Serialize)]
pub struct PushReport {
    pub via: String,
    pub producers: usize,
    pub batch: usize,
    pub rate_limit: Option<f64>,
    pub accepted: u64,
    pub errors: BTreeMap<String, u64>,
    /// Unix µs just before the first batch, and after the last reply.
    pub first_send_unix_us: u64,
    pub done_unix_us: u64,
    pub seconds: f64,
    /// Accepted messages per second over the push phase.
    pub messages_per_s: f64,
    pub batch_latency_us: Summary,
}

impl PushReport {
    pub fn new(via: &str, plan: &Plan, tally: Tally, first_send_unix_us: u64) -> PushReport {
        let done_unix_us = unix_us();
        let seconds = done_unix_us.saturating_sub(first_send_unix_us) as f64 / 1e6;
        PushReport {
            via: via.to_owned(),
            producers: plan.producers,
            batch: plan.batch,
            rate_limit: plan.rate,
            accepted: tally.accepted,
            messages_per_s: if seconds > 0.0 {
                tally.accepted as f64 / seconds
            } else {
                0.0
            },
            errors: tally.errors,
            first_send_unix_us,
            done_unix_us,
            seconds,
            batch_latency_us: tally.batch_latency.summary(),
        }
    }
}
