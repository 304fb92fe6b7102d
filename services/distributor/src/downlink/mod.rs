//! The downlink queue consumer: reads the upstream Redis stream as one member of
//! the distributors' consumer group and hands every entry to the hub.
//!
//! The hub's outcome decides what becomes of an entry:
//! - accepted / queued: XACKed, in batches (one XACK per [`ACK_BATCH`] ids or
//!   per [`ACK_LINGER`], so the hot path has no round trip per message);
//! - undeliverable / rejected: moved to the dead-letter stream with the reason
//!   (`undeliverable: …`, `rejected: …`); final;
//! - retry: left pending. Every `reclaim_every` the loop claims entries idle for
//!   `reclaim_idle` in any consumer of the group (this one's retries and the
//!   work of a dead distributor) and delivers them again; past `max_attempts`
//!   the consumer dead-letters them instead.
//!
//! At most `max_in_flight` deliveries run at once: permits are taken before a
//! read, so an entry never waits here after it was read (idling towards a
//! reclaim by another distributor). Nothing is read or reclaimed while no
//! handler is attached. Redis being unreachable never ends the loop: every
//! failing call is retried with backoff.
//!
//! A client-targeted entry carries no topic; the device sees it on
//! `$throng/downlink/<client id>` ([`client_topic`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use throng_downlink::{Consumer, ConsumerConfig, ConsumerError, Delivery};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::hub::{Hub, Outcome};

mod acks;
mod entry;
mod report;

use acks::flush_acks;
pub use entry::{client_topic, to_message};
use report::report;

/// Stream backends XADD to, unless configured otherwise.
pub const DEFAULT_STREAM: &str = "throng:downlink";
/// Consumer group shared by every distributor replica.
pub const DEFAULT_GROUP: &str = "throng-distributors";
/// Topic prefix of client-targeted messages (the entry format has no topic for them).
pub const CLIENT_TOPIC_PREFIX: &str = "$throng/downlink/";
/// Entry ids acknowledged in one XACK at most.
pub const ACK_BATCH: usize = 1024;
/// How long the first finished delivery waits for others to share its XACK.
pub const ACK_LINGER: Duration = Duration::from_millis(5);
/// How often a distributor with no handler attached looks again before reading.
const NO_HANDLER_POLL: Duration = Duration::from_millis(100);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Settings of the downlink consumer.
#[derive(Debug, Clone)]
pub struct DownlinkConfig {
    pub redis_url: String,
    /// Stream, group, this consumer's name, dead-letter stream, max attempts.
    pub consumer: ConsumerConfig,
    /// Entries read (or reclaimed) per call at most.
    pub batch: usize,
    /// Deliveries in flight at once at most.
    pub max_in_flight: usize,
    /// How often pending entries are claimed.
    pub reclaim_every: Duration,
    /// Entries pending this long, in whichever consumer, are claimed. Keep it
    /// above twice the hub's ack timeout so a slow delivery is not duplicated.
    pub reclaim_idle: Duration,
    /// How long one read waits for new entries.
    pub block: Duration,
    /// On stop, how long in-flight deliveries get to finish.
    pub shutdown_grace: Duration,
}

impl DownlinkConfig {
    /// Defaults: stream `throng:downlink`, group `throng-distributors`, batches of
    /// 512, 4096 in flight, reclaim every 5 s what is idle for 30 s, 1 s reads.
    /// `consumer` must be unique per distributor process (e.g. its pod name).
    pub fn new(redis_url: impl Into<String>, consumer: impl Into<String>) -> DownlinkConfig {
        DownlinkConfig {
            redis_url: redis_url.into(),
            consumer: ConsumerConfig::new(DEFAULT_STREAM, DEFAULT_GROUP, consumer),
            batch: 512,
            max_in_flight: 4096,
            reclaim_every: Duration::from_secs(5),
            reclaim_idle: Duration::from_secs(30),
            block: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Consumes the downlink stream into `hub` until `stop` is cancelled, then
/// gives in-flight deliveries `shutdown_grace`, flushes the acks and returns.
/// Redis being down (at start or later) is logged and retried; the only error
/// is a `redis_url` that does not parse.
pub async fn run(
    hub: Arc<Hub>,
    config: DownlinkConfig,
    stop: CancellationToken,
) -> Result<(), ConsumerError> {
    let client = redis::Client::open(config.redis_url.as_str())?;
    let Some(consumer) = connect(client, &config.consumer, &stop).await else {
        return Ok(());
    };
    let consumer = Arc::new(consumer);
    let max_in_flight = config.max_in_flight.clamp(1, u32::MAX as usize);
    let permits = Arc::new(Semaphore::new(max_in_flight));
    let (ack_tx, ack_rx) = mpsc::channel(max_in_flight.max(ACK_BATCH));
    let acks_done = CancellationToken::new();
    let flusher = tokio::spawn(flush_acks(consumer.clone(), ack_rx, acks_done.clone()));
    let reporter_done = CancellationToken::new();
    let reporter = tokio::spawn(report(hub.clone(), consumer.clone(), reporter_done.clone()));
    let shared = Arc::new(Shared {
        hub,
        consumer,
        acks: ack_tx,
        in_flight: Mutex::default(),
    });
    let cfg = &config.consumer;
    tracing::info!(stream = %cfg.stream, group = %cfg.group, consumer = %cfg.consumer, "downlink consumer started");

    read_loop(&shared, &permits, &config, max_in_flight, &stop).await;

    let drained = tokio::time::timeout(
        config.shutdown_grace,
        permits.acquire_many(max_in_flight as u32),
    )
    .await;
    if drained.is_err() {
        tracing::warn!(
            in_flight = max_in_flight - permits.available_permits(),
            "downlink deliveries still running after the shutdown grace; their entries stay pending"
        );
    }
    drop(shared);
    acks_done.cancel();
    reporter_done.cancel();
    let _ = flusher.await;
    let _ = reporter.await;
    tracing::info!("downlink consumer stopped");
    Ok(())
}

/// Connects (creating the group if needed), retrying until `stop`.
async fn connect(
    client: redis::Client,
    config: &ConsumerConfig,
    stop: &CancellationToken,
) -> Option<Consumer> {
    let mut backoff = Backoff::new();
    loop {
        let attempt = tokio::select! {
            () = stop.cancelled() => return None,
            attempt = Consumer::connect(client.clone(), config.clone()) => attempt,
        };
        match attempt {
            Ok(consumer) => return Some(consumer),
            Err(err) => {
                tracing::warn!(error = %err, "downlink stream unreachable, retrying");
                tokio::select! {
                    () = stop.cancelled() => return None,
                    () = tokio::time::sleep(backoff.next()) => {}
                }
            }
        }
    }
}

/// Reads (and, every `reclaim_every`, reclaims) entries while permits allow.
async fn read_loop(
    shared: &Arc<Shared>,
    permits: &Arc<Semaphore>,
    config: &DownlinkConfig,
    max_in_flight: usize,
    stop: &CancellationToken,
) {
    let batch = config.batch.clamp(1, max_in_flight);
    let mut backoff = Backoff::new();
    let mut next_reclaim = Instant::now() + config.reclaim_every;
    loop {
        if shared.hub.attached().is_empty() {
            // Nothing could be delivered: leave the entries to the distributors
            // that have handlers rather than burn their attempts here.
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(NO_HANDLER_POLL) => continue,
            }
        }
        let mut held = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let extra = permits.available_permits().min(batch - 1);
        if extra > 0
            && let Ok(more) = permits.clone().try_acquire_many_owned(extra as u32)
        {
            held.merge(more);
        }
        let room = held.num_permits();
        let reclaiming = Instant::now() >= next_reclaim;
        let result = if reclaiming {
            shared.consumer.reclaim(config.reclaim_idle, room).await
        } else {
            // Dropping a read on stop may leave entries Redis already handed over
            // pending here: they are reclaimed after `reclaim_idle`.
            tokio::select! {
                biased;
                () = stop.cancelled() => return,
                read = shared.consumer.next_batch(room, config.block) => read,
            }
        };
        match result {
            Ok(deliveries) => {
                backoff.reset();
                if reclaiming {
                    if !deliveries.is_empty() {
                        tracing::debug!(
                            count = deliveries.len(),
                            "reclaimed pending downlink entries"
                        );
                    }
                    // A full page means more may be waiting: claim again next turn.
                    if deliveries.len() < room {
                        next_reclaim = Instant::now() + config.reclaim_every;
                    }
                }
                shared.dispatch(deliveries, held);
            }
            Err(err) => {
                tracing::warn!(error = %err, reclaiming, "downlink stream call failed, retrying");
                if reclaiming {
                    next_reclaim = Instant::now() + config.reclaim_every;
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(backoff.next()) => {}
                }
            }
        }
    }
}

/// What the delivery tasks share.
struct Shared {
    hub: Arc<Hub>,
    consumer: Arc<Consumer>,
    /// Entry ids to XACK, to the flusher.
    acks: mpsc::Sender<String>,
    /// Entries being delivered by this process, so a reclaim of one of them
    /// (a delivery slower than `reclaim_idle`) does not deliver it twice.
    in_flight: Mutex<HashSet<String>>,
}

impl Shared {
    /// Starts one task per entry, each holding one of the `held` permits.
    fn dispatch(self: &Arc<Self>, deliveries: Vec<Delivery>, mut held: OwnedSemaphorePermit) {
        for delivery in deliveries {
            if !self.in_flight.lock().insert(delivery.entry_id.clone()) {
                continue;
            }
            let Some(permit) = held.split(1) else {
                // Never happens: a read returns at most as many entries as permits.
                self.in_flight.lock().remove(&delivery.entry_id);
                return;
            };
            let shared = self.clone();
            tokio::spawn(async move {
                shared.deliver(&delivery).await;
                shared.in_flight.lock().remove(&delivery.entry_id);
                drop(permit);
            });
        }
    }

    async fn deliver(&self, d: &Delivery) {
        let outcome = match to_message(d) {
            Ok((target, message)) => self.hub.deliver(target, message).await,
            Err(reason) => Outcome::Rejected(reason),
        };
        match outcome {
            Outcome::Accepted | Outcome::Queued => {
                // Closed only after the shutdown grace: the entry stays pending.
                let _ = self.acks.send(d.entry_id.clone()).await;
            }
            Outcome::Undeliverable(reason) => {
                self.dead_letter(d, &format!("undeliverable: {reason}"))
                    .await;
            }
            Outcome::Rejected(reason) => self.dead_letter(d, &format!("rejected: {reason}")).await,
            Outcome::Retry(reason) => {
                tracing::debug!(entry = %d.entry_id, attempts = d.attempts, reason, "downlink entry not delivered, left pending");
            }
        }
    }

    async fn dead_letter(&self, d: &Delivery, reason: &str) {
        tracing::debug!(entry = %d.entry_id, reason, "downlink entry dead-lettered");
        if let Err(err) = self
            .consumer
            .dead_letter(&d.entry_id, reason, d.attempts)
            .await
        {
            tracing::warn!(entry = %d.entry_id, error = %err, "dead-lettering failed; the entry stays pending");
        }
    }
}

/// Exponential backoff between retries of a failing Redis call.
pub(super) struct Backoff(Duration);

impl Backoff {
    pub(super) fn new() -> Backoff {
        Backoff(BACKOFF_MIN)
    }

    pub(super) fn next(&mut self) -> Duration {
        let delay = self.0;
        self.0 = (self.0 * 2).min(BACKOFF_MAX);
        delay
    }

    pub(super) fn reset(&mut self) {
        self.0 = BACKOFF_MIN;
    }
}
