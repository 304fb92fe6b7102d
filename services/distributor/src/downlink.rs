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
use throng_proto::v1::{Message, UserProperty};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::hub::{Hub, Outcome, Target, unix_ms};

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
/// Failed XACKs of one batch before it is given up (its entries stay pending and
/// are delivered again after a reclaim: at least once).
const ACK_TRIES: u32 = 5;
/// How often a distributor with no handler attached looks again before reading.
const NO_HANDLER_POLL: Duration = Duration::from_millis(100);
/// Period of the lag / pending / dead-letter metrics.
const METRICS_EVERY: Duration = Duration::from_secs(1);
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

/// The topic a client-targeted message is published on: [`CLIENT_TOPIC_PREFIX`]
/// and the client id, with `+`, `#` and NUL (not allowed in a topic name)
/// replaced by `_`.
pub fn client_topic(client_id: &str) -> String {
    let mut topic = String::with_capacity(CLIENT_TOPIC_PREFIX.len() + client_id.len());
    topic.push_str(CLIENT_TOPIC_PREFIX);
    topic.extend(client_id.chars().map(|c| {
        if matches!(c, '+' | '#' | '\0') {
            '_'
        } else {
            c
        }
    }));
    topic
}

/// The hub's view of a stream entry. The message id is the entry's `id` (the
/// entry id by default); it entered the cluster at the entry id's millisecond
/// part (when Redis took the XADD), or now if the id has another form.
///
/// Fails, with the reason to dead-letter it under, for what the hub must not
/// get: `retain` on a client target (as the ingest API), or a topic that is not
/// a valid MQTT topic name (e.g. too long).
pub fn to_message(d: &Delivery) -> Result<(Target, Message), String> {
    let m = &d.message;
    let (target, topic) = match &m.target {
        throng_downlink::Target::Client(client_id) => {
            if m.retain {
                return Err("retain is only allowed for a topic target".into());
            }
            (Target::Client(client_id.clone()), client_topic(client_id))
        }
        throng_downlink::Target::Topic(topic) => (Target::Topic, topic.clone()),
    };
    throng_topic::validate_topic_name(&topic).map_err(|err| format!("invalid topic: {err}"))?;
    let message = Message {
        topic,
        payload: m.payload.clone(),
        qos: m.qos as u32,
        retain: m.retain,
        expiry_seconds: m.expiry,
        user_properties: m
            .user_properties
            .iter()
            .map(|(key, value)| UserProperty {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        content_type: m.content_type.clone(),
        response_topic: m.response_topic.clone(),
        correlation_data: m.correlation.clone(),
        payload_format_indicator: None,
        message_id: m.id.clone(),
        origin_client_id: String::new(),
        published_at_unix_ms: entry_ms(&d.entry_id).unwrap_or_else(unix_ms),
    };
    Ok((target, message))
}

/// The millisecond part of a stream entry id `<ms>-<seq>`.
fn entry_ms(entry_id: &str) -> Option<i64> {
    let (ms, seq) = entry_id.split_once('-')?;
    seq.parse::<u64>().ok()?;
    ms.parse().ok()
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

/// Batches the ids of delivered entries into XACKs until `done`, then acks
/// what is left once.
async fn flush_acks(
    consumer: Arc<Consumer>,
    mut ids: mpsc::Receiver<String>,
    done: CancellationToken,
) {
    let mut batch: Vec<String> = Vec::with_capacity(ACK_BATCH);
    let mut backoff = Backoff::new();
    let mut failures = 0;
    loop {
        if batch.is_empty() {
            tokio::select! {
                biased;
                received = ids.recv_many(&mut batch, ACK_BATCH) => if received == 0 { return },
                () = done.cancelled() => break,
            }
            let linger = Instant::now() + ACK_LINGER;
            while batch.len() < ACK_BATCH {
                let room = ACK_BATCH - batch.len();
                let more = ids.recv_many(&mut batch, room);
                if !matches!(tokio::time::timeout_at(linger, more).await, Ok(n) if n > 0) {
                    break;
                }
            }
        }
        match consumer.ack(&batch).await {
            Ok(_) => {
                batch.clear();
                backoff.reset();
                failures = 0;
            }
            Err(err) => {
                failures += 1;
                tracing::warn!(count = batch.len(), error = %err, failures, "downlink xack failed");
                if failures >= ACK_TRIES {
                    tracing::warn!(
                        count = batch.len(),
                        "giving up on these acks; the entries will be delivered again"
                    );
                    batch.clear();
                    failures = 0;
                    continue;
                }
                tokio::select! {
                    () = done.cancelled() => break,
                    () = tokio::time::sleep(backoff.next()) => {}
                }
            }
        }
    }
    ids.close();
    while let Ok(id) = ids.try_recv() {
        batch.push(id);
    }
    for chunk in batch.chunks(ACK_BATCH) {
        if let Err(err) = consumer.ack(chunk).await {
            tracing::warn!(count = batch.len(), error = %err, "final downlink xack failed; the entries stay pending");
            return;
        }
    }
}

/// Acknowledged entries are trimmed from the stream every this many metric ticks.
const TRIM_EVERY_TICKS: u64 = 10;

/// Keeps the lag, pending and dead-letter metrics current, and the stream
/// trimmed of acknowledged entries, until `done`.
async fn report(hub: Arc<Hub>, consumer: Arc<Consumer>, done: CancellationToken) {
    let metrics = hub.metrics();
    let mut reported = 0;
    let mut sync_dead_letters = || {
        let total = consumer.dead_letters_total();
        metrics.dead_letters.inc_by(total.saturating_sub(reported));
        reported = reported.max(total);
    };
    let mut tick = tokio::time::interval(METRICS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            () = done.cancelled() => break,
            _ = tick.tick() => {}
        }
        sync_dead_letters();
        ticks += 1;
        if ticks.is_multiple_of(TRIM_EVERY_TICKS) {
            match consumer.trim_acknowledged().await {
                Ok(removed) if removed > 0 => {
                    tracing::debug!(removed, "trimmed acknowledged downlink entries")
                }
                Ok(_) => {}
                Err(err) => tracing::debug!(error = %err, "downlink trim failed"),
            }
        }
        let info = tokio::select! {
            () = done.cancelled() => break,
            info = consumer.group_info() => info,
        };
        match info {
            Ok((lag, pending)) => {
                // Without a lag from Redis (after deletions) the last value stands.
                if let Some(lag) = lag {
                    metrics
                        .queue_lag
                        .set(i64::try_from(lag).unwrap_or(i64::MAX));
                }
                metrics
                    .pending
                    .set(i64::try_from(pending).unwrap_or(i64::MAX));
            }
            Err(err) => tracing::debug!(error = %err, "downlink group info unavailable"),
        }
    }
    sync_dead_letters();
}

/// Exponential backoff between retries of a failing Redis call.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(BACKOFF_MIN)
    }

    fn next(&mut self) -> Duration {
        let delay = self.0;
        self.0 = (self.0 * 2).min(BACKOFF_MAX);
        delay
    }

    fn reset(&mut self) {
        self.0 = BACKOFF_MIN;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use throng_downlink::{DownlinkMessage, Qos};

    fn delivery(entry_id: &str, target: throng_downlink::Target) -> Delivery {
        Delivery {
            entry_id: entry_id.into(),
            attempts: 1,
            message: DownlinkMessage {
                target,
                payload: "p".into(),
                qos: Qos::ExactlyOnce,
                retain: false,
                expiry: Some(60),
                user_properties: vec![("a".into(), "1".into()), ("b".into(), "2".into())],
                content_type: Some("text/plain".into()),
                response_topic: Some("reply/x".into()),
                correlation: Some("c".into()),
                id: "msg-1".into(),
            },
        }
    }

    #[test]
    fn client_entry_maps_every_field() {
        let d = delivery(
            "1700000000123-4",
            throng_downlink::Target::Client("dev-1".into()),
        );
        let (target, m) = to_message(&d).unwrap();
        assert_eq!(target, Target::Client("dev-1".into()));
        assert_eq!(m.topic, "$throng/downlink/dev-1");
        assert_eq!(&m.payload[..], b"p");
        assert_eq!(m.qos, 2);
        assert!(!m.retain);
        assert_eq!(m.expiry_seconds, Some(60));
        let props: Vec<(&str, &str)> = m
            .user_properties
            .iter()
            .map(|p| (p.key.as_str(), p.value.as_str()))
            .collect();
        assert_eq!(props, [("a", "1"), ("b", "2")]);
        assert_eq!(m.content_type.as_deref(), Some("text/plain"));
        assert_eq!(m.response_topic.as_deref(), Some("reply/x"));
        assert_eq!(m.correlation_data.as_deref(), Some(&b"c"[..]));
        assert_eq!(m.message_id, "msg-1");
        assert!(m.origin_client_id.is_empty());
        assert_eq!(m.published_at_unix_ms, 1_700_000_000_123);
    }

    #[test]
    fn topic_entry_keeps_its_topic_and_retain() {
        let mut d = delivery("5-0", throng_downlink::Target::Topic("down/a".into()));
        d.message.retain = true;
        let (target, m) = to_message(&d).unwrap();
        assert_eq!(target, Target::Topic);
        assert_eq!(m.topic, "down/a");
        assert!(m.retain);
        assert_eq!(m.published_at_unix_ms, 5);
    }

    #[test]
    fn odd_entry_id_falls_back_to_now() {
        let before = unix_ms();
        let d = delivery("not-an-id", throng_downlink::Target::Topic("t".into()));
        assert!(to_message(&d).unwrap().1.published_at_unix_ms >= before);
    }

    #[test]
    fn client_topic_is_always_a_topic_name() {
        assert_eq!(client_topic("a+b#c\0d/e"), "$throng/downlink/a_b_c_d/e");
        throng_topic::validate_topic_name(&client_topic("+#\0")).unwrap();
    }

    #[test]
    fn refused_entries_give_a_reason() {
        let mut d = delivery("1-0", throng_downlink::Target::Client("c".into()));
        d.message.retain = true;
        assert_eq!(
            to_message(&d).unwrap_err(),
            "retain is only allowed for a topic target"
        );
        let long = "t".repeat(throng_topic::MAX_TOPIC_LEN + 1);
        let d = delivery("1-0", throng_downlink::Target::Topic(long));
        assert!(to_message(&d).unwrap_err().starts_with("invalid topic"));
    }
}
