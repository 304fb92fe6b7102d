//! The consumer-group side of the downlink stream: read, ack, reclaim, dead-letter
//! and the lag/pending gauges.

use crate::entry::{DownlinkMessage, EntryError, EntryLimits, parse_entry};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use redis::{Value, pipe};
use std::borrow::Cow;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Errors of the consumer. Every variant is transient from the caller's point of
/// view: retry the call (the connection manager reconnects in the background).
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected reply to {command}: {detail}")]
    Protocol {
        command: &'static str,
        detail: String,
    },
}

/// Consumer settings. `stream`, `group` and `consumer` name the Redis objects.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub stream: String,
    pub group: String,
    /// Unique per process (e.g. the pod name); pending entries are owned by it.
    pub consumer: String,
    /// Dead-letter stream; `<stream>:dead` by default.
    pub dead_letter_stream: String,
    /// Deliveries allowed before an entry is dead-lettered on reclaim.
    pub max_attempts: u64,
    pub limits: EntryLimits,
    /// Deadline of one command, on top of any `block` time.
    pub command_timeout: Duration,
}

impl ConsumerConfig {
    pub fn new(
        stream: impl Into<String>,
        group: impl Into<String>,
        consumer: impl Into<String>,
    ) -> Self {
        let stream = stream.into();
        Self {
            dead_letter_stream: format!("{stream}:dead"),
            stream,
            group: group.into(),
            consumer: consumer.into(),
            max_attempts: 5,
            limits: EntryLimits::default(),
            command_timeout: Duration::from_secs(5),
        }
    }
}

/// One message handed to the caller; ack it with `entry_id` once a handler
/// accepted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub entry_id: String,
    /// How many times the group has delivered this entry, this time included.
    pub attempts: u64,
    pub message: DownlinkMessage,
}

/// A member of the consumer group on the downlink stream.
///
/// Methods take `&self`, so one consumer can be shared (e.g. in an `Arc`) by a
/// reading task and the tasks that ack. Blocking reads use their own connection
/// so that acks and reclaims are never queued behind an `XREADGROUP BLOCK`.
pub struct Consumer {
    /// For everything but the blocking read.
    conn: ConnectionManager,
    /// Only for `XREADGROUP` (which may block).
    read_conn: ConnectionManager,
    cfg: ConsumerConfig,
    dead_letters: AtomicU64,
    /// XAUTOCLAIM cursor, so successive reclaims walk the whole pending list.
    reclaim_cursor: Mutex<String>,
}

impl Consumer {
    /// Connects and creates the group at `0` (with MKSTREAM) if it is missing, so
    /// entries a backend added before the first distributor ever started are delivered.
    pub async fn connect(
        client: redis::Client,
        cfg: ConsumerConfig,
    ) -> Result<Self, ConsumerError> {
        // The response timeout must cover the longest XREADGROUP BLOCK; `next_batch`
        // caps `block` at `command_timeout` for that reason.
        let mgr_cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(cfg.command_timeout)
            .set_response_timeout(cfg.command_timeout * 2)
            .set_number_of_retries(2)
            .set_max_delay(1000);
        let conn = ConnectionManager::new_with_config(client.clone(), mgr_cfg.clone()).await?;
        let read_conn = ConnectionManager::new_with_config(client, mgr_cfg).await?;
        let consumer = Self {
            conn,
            read_conn,
            cfg,
            dead_letters: AtomicU64::new(0),
            reclaim_cursor: Mutex::new("0".to_owned()),
        };
        consumer.ensure_group("0").await?;
        Ok(consumer)
    }

    pub fn config(&self) -> &ConsumerConfig {
        &self.cfg
    }

    /// Entries this consumer moved to the dead-letter stream since it started.
    pub fn dead_letters_total(&self) -> u64 {
        self.dead_letters.load(Ordering::Relaxed)
    }

    async fn ensure_group(&self, start: &str) -> Result<(), ConsumerError> {
        let res: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.cfg.stream)
            .arg(&self.cfg.group)
            .arg(start)
            .arg("MKSTREAM")
            .query_async(&mut self.conn.clone())
            .await;
        match res {
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            other => Ok(other?),
        }
    }

    /// Runs `f`; if the group vanished (Redis restarted without persistence, or
    /// the group was destroyed) recreates it at `0` — re-reading what is left in
    /// the stream rather than losing anything — and runs `f` once more.
    async fn with_group<T, F, Fut>(&self, f: F) -> Result<T, ConsumerError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        match f().await {
            Err(e) if e.code() == Some("NOGROUP") => {
                tracing::warn!(stream = %self.cfg.stream, group = %self.cfg.group, "consumer group missing, recreating");
                self.ensure_group("0").await?;
                Ok(f().await?)
            }
            other => Ok(other?),
        }
    }

    /// Reads up to `count` new entries (XREADGROUP `>`), waiting up to `block`
    /// (capped at `command_timeout`) when there are none. Malformed entries are
    /// dead-lettered and acked here and never returned.
    pub async fn next_batch(
        &self,
        count: usize,
        block: Duration,
    ) -> Result<Vec<Delivery>, ConsumerError> {
        let block = block.min(self.cfg.command_timeout);
        let reply: Option<StreamReadReply> = self
            .with_group(|| {
                let mut cmd = redis::cmd("XREADGROUP");
                cmd.arg("GROUP")
                    .arg(&self.cfg.group)
                    .arg(&self.cfg.consumer)
                    .arg("COUNT")
                    .arg(count.max(1));
                if !block.is_zero() {
                    cmd.arg("BLOCK").arg(block.as_millis() as u64);
                }
                cmd.arg("STREAMS").arg(&self.cfg.stream).arg(">");
                let mut conn = self.read_conn.clone();
                async move { cmd.query_async(&mut conn).await }
            })
            .await?;
        let entries = reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .map(|e| (e, 1));
        self.accept(entries).await
    }

    /// Claims up to `count` entries idle for at least `min_idle` in any consumer
    /// of the group (XAUTOCLAIM), so work left by a dead consumer moves here.
    /// Successive calls continue where the last one stopped and wrap around at
    /// the end of the pending list. Entries delivered more than `max_attempts`
    /// times are dead-lettered instead of returned.
    pub async fn reclaim(
        &self,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<Delivery>, ConsumerError> {
        let cursor = self.reclaim_cursor.lock().expect("cursor lock").clone();
        let reply: StreamAutoClaimReply = self
            .with_group(|| {
                let mut cmd = redis::cmd("XAUTOCLAIM");
                cmd.arg(&self.cfg.stream)
                    .arg(&self.cfg.group)
                    .arg(&self.cfg.consumer)
                    .arg(min_idle.as_millis() as u64)
                    .arg(&cursor)
                    .arg("COUNT")
                    .arg(count.max(1));
                let mut conn = self.conn.clone();
                async move { cmd.query_async(&mut conn).await }
            })
            .await?;
        *self.reclaim_cursor.lock().expect("cursor lock") = match reply.next_stream_id.as_str() {
            "0-0" | "" => "0".to_owned(),
            next => next.to_owned(),
        };
        if reply.claimed.is_empty() {
            return Ok(Vec::new());
        }
        // Delivery counts (XAUTOCLAIM already counted this delivery), one round trip.
        let mut p = pipe();
        for e in &reply.claimed {
            p.cmd("XPENDING")
                .arg(&self.cfg.stream)
                .arg(&self.cfg.group)
                .arg(&e.id)
                .arg(&e.id)
                .arg(1);
        }
        let infos: Vec<Vec<(String, String, u64, u64)>> =
            p.query_async(&mut self.conn.clone()).await?;
        let mut fresh = Vec::with_capacity(reply.claimed.len());
        for (entry, info) in reply.claimed.into_iter().zip(infos) {
            let attempts = info.first().map_or(1, |i| i.3);
            if attempts > self.cfg.max_attempts {
                let failed = attempts - 1;
                let reason = format!("gave up after {failed} delivery attempts");
                self.dead_letter_fields(&entry, &reason, failed).await?;
            } else {
                fresh.push((entry, attempts));
            }
        }
        self.accept(fresh.into_iter()).await
    }

    /// Parses entries; malformed ones go to the dead-letter stream.
    async fn accept(
        &self,
        entries: impl Iterator<Item = (StreamId, u64)>,
    ) -> Result<Vec<Delivery>, ConsumerError> {
        let mut out = Vec::new();
        for (entry, attempts) in entries {
            let fields: Vec<(&str, Cow<'_, [u8]>)> = entry
                .map
                .iter()
                .map(|(k, v)| (k.as_str(), value_bytes(v)))
                .collect();
            let parsed = parse_entry(
                &entry.id,
                fields.iter().map(|(k, v)| (*k, v.as_ref())),
                &self.cfg.limits,
            );
            match parsed {
                Ok(message) => out.push(Delivery {
                    entry_id: entry.id,
                    attempts,
                    message,
                }),
                Err(err) => {
                    tracing::warn!(entry = %entry.id, error = %err, "malformed downlink entry, dead-lettering");
                    self.dead_letter_fields(&entry, &malformed_reason(&err), attempts)
                        .await?;
                }
            }
        }
        Ok(out)
    }

    /// XACKs entries whose message a handler accepted. Returns how many were acked.
    pub async fn ack<S: AsRef<str>>(&self, entry_ids: &[S]) -> Result<u64, ConsumerError> {
        if entry_ids.is_empty() {
            return Ok(0);
        }
        let mut cmd = redis::cmd("XACK");
        cmd.arg(&self.cfg.stream).arg(&self.cfg.group);
        for id in entry_ids {
            cmd.arg(id.as_ref());
        }
        Ok(cmd.query_async(&mut self.conn.clone()).await?)
    }

    /// Moves an entry this consumer holds to the dead-letter stream with `reason`
    /// (e.g. undeliverable: unknown client), then acks it. Returns false when the
    /// entry is no longer in the stream (nothing is written, it is still acked).
    pub async fn dead_letter(
        &self,
        entry_id: &str,
        reason: &str,
        attempts: u64,
    ) -> Result<bool, ConsumerError> {
        let found: Vec<StreamId> = redis::cmd("XRANGE")
            .arg(&self.cfg.stream)
            .arg(entry_id)
            .arg(entry_id)
            .query_async::<redis::streams::StreamRangeReply>(&mut self.conn.clone())
            .await?
            .ids;
        match found.first() {
            Some(entry) => {
                self.dead_letter_fields(entry, reason, attempts).await?;
                Ok(true)
            }
            None => {
                self.ack(&[entry_id]).await?;
                Ok(false)
            }
        }
    }

    /// XADD to the dead-letter stream (fields copied plus `entry`, `reason`,
    /// `attempts`) and XACK, atomically.
    async fn dead_letter_fields(
        &self,
        entry: &StreamId,
        reason: &str,
        attempts: u64,
    ) -> Result<(), ConsumerError> {
        let mut p = pipe();
        p.atomic();
        let xadd = p.cmd("XADD").arg(&self.cfg.dead_letter_stream).arg("*");
        for (k, v) in &entry.map {
            if !matches!(k.as_str(), "reason" | "attempts" | "entry") {
                xadd.arg(k).arg(value_bytes(v).as_ref());
            }
        }
        xadd.arg("entry")
            .arg(&entry.id)
            .arg("reason")
            .arg(reason)
            .arg("attempts")
            .arg(attempts)
            .ignore();
        p.cmd("XACK")
            .arg(&self.cfg.stream)
            .arg(&self.cfg.group)
            .arg(&entry.id)
            .ignore();
        let () = p.query_async(&mut self.conn.clone()).await?;
        self.dead_letters.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Entries in the stream not yet delivered to the group (XINFO GROUPS `lag`).
    /// `None` when Redis cannot tell (e.g. after deletions in the stream).
    pub async fn lag(&self) -> Result<Option<u64>, ConsumerError> {
        Ok(self.group_info().await?.0)
    }

    /// Entries delivered to the group but not acked yet.
    pub async fn pending(&self) -> Result<u64, ConsumerError> {
        Ok(self.group_info().await?.1)
    }

    /// Deletes the entries this group is done with: those older than its oldest
    /// pending entry, or than its last delivered one when nothing is pending.
    /// The downlink stream belongs to the distributors; without this it grows by
    /// every message ever pushed. Approximate (`MINID ~`), so Redis trims whole
    /// nodes only; returns the entries removed.
    pub async fn trim_acknowledged(&self) -> Result<u64, ConsumerError> {
        let summary: Vec<Value> = redis::cmd("XPENDING")
            .arg(&self.cfg.stream)
            .arg(&self.cfg.group)
            .query_async(&mut self.conn.clone())
            .await?;
        let pending = summary.first().and_then(as_u64).unwrap_or(0);
        let oldest_needed = if pending > 0 {
            summary
                .get(1)
                .map(|v| String::from_utf8_lossy(&value_bytes(v)).into_owned())
        } else {
            self.last_delivered_id().await?
        };
        let Some(min_id) = oldest_needed.filter(|id| id != "0-0") else {
            return Ok(0);
        };
        let removed: u64 = redis::cmd("XTRIM")
            .arg(&self.cfg.stream)
            .arg("MINID")
            .arg("~")
            .arg(&min_id)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(removed)
    }

    async fn last_delivered_id(&self) -> Result<Option<String>, ConsumerError> {
        Ok(self.our_group().await?.last_delivered_id)
    }

    /// `(lag, pending)` of this group in one XINFO GROUPS call.
    pub async fn group_info(&self) -> Result<(Option<u64>, u64), ConsumerError> {
        let group = self.our_group().await?;
        let pending = group
            .pending
            .ok_or_else(|| protocol("XINFO GROUPS", "missing pending"))?;
        Ok((group.lag, pending))
    }

    /// This group's line of XINFO GROUPS.
    async fn our_group(&self) -> Result<GroupFields, ConsumerError> {
        let groups: Vec<Value> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&self.cfg.stream)
            .query_async(&mut self.conn.clone())
            .await?;
        for g in groups {
            let pairs =
                kv_pairs(&g).ok_or_else(|| protocol("XINFO GROUPS", "group is not a map"))?;
            let get = |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
            if get("name").is_some_and(|n| value_bytes(n).as_ref() == self.cfg.group.as_bytes()) {
                return Ok(GroupFields {
                    lag: get("lag").and_then(as_u64),
                    pending: get("pending").and_then(as_u64),
                    last_delivered_id: get("last-delivered-id")
                        .map(|v| String::from_utf8_lossy(&value_bytes(v)).into_owned()),
                });
            }
        }
        Err(protocol("XINFO GROUPS", "group not found"))
    }
}

/// The fields of one XINFO GROUPS entry this consumer reads.
struct GroupFields {
    lag: Option<u64>,
    pending: Option<u64>,
    last_delivered_id: Option<String>,
}

fn malformed_reason(err: &EntryError) -> String {
    format!("malformed: {err}")
}

fn protocol(command: &'static str, detail: &str) -> ConsumerError {
    ConsumerError::Protocol {
        command,
        detail: detail.to_owned(),
    }
}

fn value_bytes(v: &Value) -> Cow<'_, [u8]> {
    match v {
        Value::BulkString(b) => Cow::Borrowed(b),
        Value::SimpleString(s) => Cow::Borrowed(s.as_bytes()),
        Value::Int(i) => Cow::Owned(i.to_string().into_bytes()),
        Value::VerbatimString { text, .. } => Cow::Borrowed(text.as_bytes()),
        _ => Cow::Borrowed(&[]),
    }
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        Value::BulkString(_) | Value::SimpleString(_) => {
            std::str::from_utf8(&value_bytes(v)).ok()?.parse().ok()
        }
        _ => None,
    }
}

/// A RESP2 flat `[k, v, k, v…]` array or a RESP3 map as `(key, value)` pairs.
fn kv_pairs(v: &Value) -> Option<Vec<(String, &Value)>> {
    let key = |k: &Value| String::from_utf8(value_bytes(k).into_owned()).ok();
    match v {
        Value::Array(items) => items
            .chunks(2)
            .map(|c| Some((key(&c[0])?, c.get(1)?)))
            .collect(),
        Value::Map(items) => items.iter().map(|(k, v)| Some((key(k)?, v))).collect(),
        _ => None,
    }
}
