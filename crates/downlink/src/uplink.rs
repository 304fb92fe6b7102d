//! The uplink writer: device publishes a handler copies to the uplink stream for
//! backends (format in the crate docs).

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// Default uplink stream name.
pub const DEFAULT_UPLINK_STREAM: &str = "throng:uplink";

/// One device publish on its way to the uplink stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkEntry {
    pub client_id: String,
    pub topic: String,
    pub payload: Bytes,
    pub qos: u8,
    pub retain: bool,
    /// MQTT 5 user properties in packet order; a repeated key keeps its last value.
    pub user_properties: Vec<(String, String)>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation: Option<Bytes>,
    /// When the handler accepted the publish, unix milliseconds.
    pub timestamp_ms: u64,
}

/// The current time in unix milliseconds, for [`UplinkEntry::timestamp_ms`].
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Writer settings.
#[derive(Debug, Clone)]
pub struct UplinkConfig {
    pub stream: String,
    /// `XADD … MAXLEN ~ max_len`: the stream is trimmed (approximately) to this.
    pub max_len: u64,
    /// Entries buffered while Redis is slow or down; beyond it `try_send` refuses.
    pub capacity: usize,
    /// Entries written in one pipelined round trip at most.
    pub batch: usize,
    /// Deadline of one connection attempt or pipeline.
    pub command_timeout: Duration,
}

impl Default for UplinkConfig {
    fn default() -> Self {
        Self {
            stream: DEFAULT_UPLINK_STREAM.to_owned(),
            max_len: 1_000_000,
            capacity: 10_000,
            batch: 256,
            command_timeout: Duration::from_secs(5),
        }
    }
}

/// `try_send` found the buffer full (Redis slow or down); the entry was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("uplink buffer full")]
pub struct UplinkFull;

#[derive(Debug, Default)]
struct Counters {
    appended: AtomicU64,
    refused: AtomicU64,
    errors: AtomicU64,
}

/// Appends [`UplinkEntry`]s to the uplink stream from a background task.
///
/// [`try_send`](Self::try_send) never blocks: it puts the entry in a bounded
/// buffer that one task drains, writing batches of `XADD`s in one pipeline. On a
/// Redis error the task keeps the batch and retries with backoff, so nothing is
/// lost while the buffer lasts; once it is full, new entries are refused. Callers
/// that acknowledge a device before the entry is written (the handler does) thus
/// give at-most-once into the stream when Redis is down longer than the buffer
/// lasts, and at-least-once otherwise (a pipeline that failed after Redis applied
/// it is written again). Cloning shares the buffer and the task.
#[derive(Debug, Clone)]
pub struct UplinkWriter {
    tx: mpsc::Sender<UplinkEntry>,
    counters: Arc<Counters>,
}

impl UplinkWriter {
    /// Starts the writer task; must be called inside a tokio runtime. Connecting
    /// happens in the task (and is retried), so this succeeds while Redis is down.
    /// The task ends once every clone is dropped and the buffer is written (or
    /// after a few failed attempts to write it).
    pub fn spawn(client: redis::Client, cfg: UplinkConfig) -> Self {
        let (tx, rx) = mpsc::channel(cfg.capacity.max(1));
        let counters = Arc::new(Counters::default());
        tokio::spawn(run(client, cfg, rx, counters.clone()));
        Self { tx, counters }
    }

    /// Queues `entry` without waiting; `Err(UplinkFull)` when the buffer is full.
    pub fn try_send(&self, entry: UplinkEntry) -> Result<(), UplinkFull> {
        match self.tx.try_send(entry) {
            Ok(()) => Ok(()),
            Err(_) => {
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                Err(UplinkFull)
            }
        }
    }

    /// Entries written to the stream.
    pub fn appended(&self) -> u64 {
        self.counters.appended.load(Ordering::Relaxed)
    }

    /// Entries refused by `try_send`.
    pub fn refused(&self) -> u64 {
        self.counters.refused.load(Ordering::Relaxed)
    }

    /// Failed connection attempts and failed pipelines.
    pub fn errors(&self) -> u64 {
        self.counters.errors.load(Ordering::Relaxed)
    }
}

const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Write attempts left for the last batch once every sender is gone.
const ATTEMPTS_AFTER_CLOSE: u32 = 3;

async fn run(
    client: redis::Client,
    cfg: UplinkConfig,
    mut rx: mpsc::Receiver<UplinkEntry>,
    counters: Arc<Counters>,
) {
    let mut conn: Option<ConnectionManager> = None;
    let mut batch = Vec::with_capacity(cfg.batch.max(1));
    let mut backoff = MIN_BACKOFF;
    let mut closed = false;
    let mut attempts_left = ATTEMPTS_AFTER_CLOSE;
    loop {
        if batch.is_empty() {
            if closed || rx.recv_many(&mut batch, cfg.batch.max(1)).await == 0 {
                return;
            }
        } else if !closed && batch.len() < cfg.batch {
            // Top up a batch kept from a failed attempt with what arrived meanwhile.
            while batch.len() < cfg.batch {
                match rx.try_recv() {
                    Ok(entry) => batch.push(entry),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
        }
        match write(&client, &cfg, &mut conn, &batch).await {
            Ok(()) => {
                counters
                    .appended
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                batch.clear();
                backoff = MIN_BACKOFF;
            }
            Err(err) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(stream = %cfg.stream, error = %err, kept = batch.len(), "uplink write failed, retrying");
                if rx.is_closed() && rx.is_empty() {
                    closed = true;
                }
                if closed {
                    attempts_left -= 1;
                    if attempts_left == 0 {
                        tracing::warn!(
                            lost = batch.len(),
                            "uplink writer closed with entries unwritten"
                        );
                        return;
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

async fn write(
    client: &redis::Client,
    cfg: &UplinkConfig,
    conn: &mut Option<ConnectionManager>,
    batch: &[UplinkEntry],
) -> redis::RedisResult<()> {
    if conn.is_none() {
        let mgr_cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(cfg.command_timeout)
            .set_response_timeout(cfg.command_timeout)
            .set_number_of_retries(1)
            .set_max_delay(1000);
        *conn = Some(ConnectionManager::new_with_config(client.clone(), mgr_cfg).await?);
    }
    let Some(conn) = conn.as_mut() else {
        unreachable!("connected above")
    };
    let mut pipe = redis::pipe();
    for entry in batch {
        let cmd = pipe
            .cmd("XADD")
            .arg(&cfg.stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(cfg.max_len)
            .arg("*");
        for (field, value) in fields(entry) {
            cmd.arg(field).arg(value.as_ref());
        }
        cmd.ignore();
    }
    pipe.query_async::<()>(conn).await
}

/// The stream fields of one entry, in order; absent optional fields are left out.
fn fields(entry: &UplinkEntry) -> Vec<(&'static str, std::borrow::Cow<'_, [u8]>)> {
    use std::borrow::Cow;
    let mut out: Vec<(&'static str, Cow<'_, [u8]>)> = vec![
        ("client", Cow::Borrowed(entry.client_id.as_bytes())),
        ("topic", Cow::Borrowed(entry.topic.as_bytes())),
        ("payload", Cow::Borrowed(&entry.payload[..])),
        ("qos", Cow::Owned(entry.qos.to_string().into_bytes())),
        (
            "retain",
            Cow::Borrowed(if entry.retain { b"1" } else { b"0" }),
        ),
    ];
    if !entry.user_properties.is_empty() {
        let props: serde_json::Map<String, serde_json::Value> = entry
            .user_properties
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        let json = serde_json::Value::Object(props).to_string();
        out.push(("props", Cow::Owned(json.into_bytes())));
    }
    if let Some(ct) = &entry.content_type {
        out.push(("content_type", Cow::Borrowed(ct.as_bytes())));
    }
    if let Some(rt) = &entry.response_topic {
        out.push(("response_topic", Cow::Borrowed(rt.as_bytes())));
    }
    if let Some(c) = &entry.correlation {
        out.push(("correlation", Cow::Borrowed(&c[..])));
    }
    out.push((
        "ts",
        Cow::Owned(entry.timestamp_ms.to_string().into_bytes()),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u8) -> UplinkEntry {
        UplinkEntry {
            client_id: "dev".into(),
            topic: "up/a".into(),
            payload: Bytes::from(vec![n]),
            qos: 1,
            retain: false,
            user_properties: vec![("k".into(), "1".into()), ("k".into(), "2".into())],
            content_type: None,
            response_topic: Some("r".into()),
            correlation: None,
            timestamp_ms: 7,
        }
    }

    #[test]
    fn fields_keep_the_last_repeated_property_and_skip_absent_ones() {
        let e = entry(1);
        let f = fields(&e);
        let names: Vec<&str> = f.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "client",
                "topic",
                "payload",
                "qos",
                "retain",
                "props",
                "response_topic",
                "ts"
            ]
        );
        assert_eq!(&f[5].1[..], br#"{"k":"2"}"#);
        assert_eq!(&f[3].1[..], b"1");
        assert_eq!(&f[7].1[..], b"7");
    }

    #[tokio::test]
    async fn refuses_when_the_buffer_is_full() {
        // Nothing listens on port 1: the task never connects, so nothing drains.
        let client = redis::Client::open("redis://127.0.0.1:1/").unwrap();
        let writer = UplinkWriter::spawn(
            client,
            UplinkConfig {
                capacity: 2,
                command_timeout: Duration::from_millis(200),
                ..UplinkConfig::default()
            },
        );
        // The task may take one batch out of the buffer before its first failed
        // connect, so fill until refused and check it is bounded.
        let mut accepted = 0usize;
        while writer.try_send(entry(0)).is_ok() {
            accepted += 1;
            assert!(accepted <= 2 + 256, "buffer not bounded");
        }
        assert!(accepted >= 2);
        assert_eq!(writer.refused(), 1);
        assert_eq!(writer.try_send(entry(0)), Err(UplinkFull));
        assert_eq!(writer.refused(), 2);
        assert_eq!(writer.appended(), 0);
    }
}
