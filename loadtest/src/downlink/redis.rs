//! Producing through Redis: `XADD <stream> * client <id> payload <bytes> qos <q>`
//! (the downlink entry format), hand-encoded in RESP and pipelined, one batch
//! in flight per connection.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::produce::{Cursor, Plan, PushReport, Tally};
use crate::handshake::io_key;

/// Where the stream lives: `redis://[[user]:password@]host:port[/db]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisUrl {
    pub addr: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub db: Option<u32>,
}

impl RedisUrl {
    pub fn parse(url: &str) -> anyhow::Result<RedisUrl> {
        let rest = url
            .strip_prefix("redis://")
            .with_context(|| format!("{url:?}: only redis:// URLs are supported"))?;
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((auth, rest)) => (Some(auth), rest),
            None => (None, rest),
        };
        let (addr, db) = match rest.split_once('/') {
            Some((addr, "")) => (addr, None),
            Some((addr, db)) => (
                addr,
                Some(db.parse().with_context(|| format!("bad db in {url:?}"))?),
            ),
            None => (rest, None),
        };
        if addr.is_empty() {
            bail!("{url:?}: no host");
        }
        let addr = if addr.contains(':') {
            addr.to_owned()
        } else {
            format!("{addr}:6379")
        };
        let (username, password) = match auth {
            None => (None, None),
            Some(auth) => match auth.split_once(':') {
                Some((user, pass)) => (
                    (!user.is_empty()).then(|| user.to_owned()),
                    Some(pass.to_owned()),
                ),
                None => (Some(auth.to_owned()), None),
            },
        };
        Ok(RedisUrl {
            addr,
            username,
            password,
            db,
        })
    }
}

/// Pushes every message of `plan` to `stream`.
pub async fn produce(url: RedisUrl, stream: String, plan: Plan) -> anyhow::Result<PushReport> {
    let plan = Arc::new(plan);
    let cursor = Arc::new(Cursor::new());
    let mut conns = Vec::with_capacity(plan.producers);
    for _ in 0..plan.producers {
        conns.push(open(&url).await?);
    }
    let first_send = super::msg::unix_us();
    let mut tasks = Vec::new();
    for conn in conns {
        let (plan, cursor, stream) = (plan.clone(), cursor.clone(), stream.clone());
        tasks.push(tokio::spawn(async move {
            producer(conn, &stream, &plan, &cursor).await
        }));
    }
    let mut tally = Tally::default();
    for task in tasks {
        tally.merge(task.await.context("producer task")?);
    }
    Ok(PushReport::new("redis", &plan, tally, first_send))
}

/// Connects, authenticates and selects the database.
async fn open(url: &RedisUrl) -> anyhow::Result<TcpStream> {
    let mut conn = TcpStream::connect(&url.addr)
        .await
        .with_context(|| format!("connecting to redis at {}", url.addr))?;
    conn.set_nodelay(true)?;
    let mut setup: Vec<Vec<&[u8]>> = Vec::new();
    if let Some(pass) = &url.password {
        let mut auth: Vec<&[u8]> = vec![b"AUTH"];
        if let Some(user) = &url.username {
            auth.push(user.as_bytes());
        }
        auth.push(pass.as_bytes());
        setup.push(auth);
    }
    let db = url.db.map(|db| db.to_string());
    if let Some(db) = &db {
        setup.push(vec![b"SELECT", db.as_bytes()]);
    }
    for command in setup {
        let mut out = Vec::new();
        encode_command(&mut out, &command);
        conn.write_all(&out).await?;
        let mut replies = Replies::default();
        while replies.count == 0 {
            replies.read(&mut conn).await?;
        }
        if let Some(err) = replies.errors.keys().next() {
            bail!("redis {}: {err}", String::from_utf8_lossy(command[0]));
        }
    }
    Ok(conn)
}

async fn producer(mut conn: TcpStream, stream: &str, plan: &Plan, cursor: &Cursor) -> Tally {
    let mut tally = Tally::default();
    let mut out = Vec::with_capacity(plan.batch * (96 + plan.payload_size));
    let mut payload = Vec::with_capacity(plan.payload_size.max(32));
    let qos = [b'0' + plan.qos];
    while let Some(seqs) = cursor.claim(plan).await {
        let n = seqs.end - seqs.start;
        out.clear();
        for seq in seqs {
            let (device, client) = plan.target(seq);
            payload.clear();
            plan.payload(&mut payload, seq, device);
            encode_command(
                &mut out,
                &[
                    b"XADD",
                    stream.as_bytes(),
                    b"*",
                    b"client",
                    client.as_bytes(),
                    b"payload",
                    &payload,
                    b"qos",
                    &qos,
                ],
            );
        }
        let t0 = Instant::now();
        if let Err(e) = conn.write_all(&out).await {
            tally.error(format!("redis write: {}", io_key(&e)), n);
            break;
        }
        let mut replies = Replies::default();
        while replies.count < n {
            if let Err(e) = replies.read(&mut conn).await {
                tally.error(format!("redis read: {e:#}"), n - replies.count);
                return tally;
            }
        }
        tally
            .batch_latency
            .record_us(t0.elapsed().as_micros() as u64);
        let failed: u64 = replies.errors.values().sum();
        tally.accepted += n - failed;
        for (k, v) in replies.errors {
            tally.error(format!("redis: {k}"), v);
        }
    }
    tally
}

/// Appends a RESP array of bulk strings.
pub fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    use std::io::Write;
    let _ = write!(out, "*{}\r\n", args.len());
    for arg in args {
        let _ = write!(out, "${}\r\n", arg.len());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Counts replies as they arrive (XADD answers with a bulk string; errors are kept).
#[derive(Default)]
struct Replies {
    buf: Vec<u8>,
    count: u64,
    errors: std::collections::BTreeMap<String, u64>,
}

impl Replies {
    async fn read(&mut self, conn: &mut TcpStream) -> anyhow::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n = conn
            .read(&mut chunk)
            .await
            .context("reading redis replies")?;
        if n == 0 {
            bail!("redis closed the connection");
        }
        self.buf.extend_from_slice(&chunk[..n]);
        let used = parse_replies(&self.buf, &mut self.count, &mut self.errors)?;
        self.buf.drain(..used);
        Ok(())
    }
}

/// Consumes the complete replies at the start of `buf`; returns the bytes used.
fn parse_replies(
    buf: &[u8],
    count: &mut u64,
    errors: &mut std::collections::BTreeMap<String, u64>,
) -> anyhow::Result<usize> {
    let mut at = 0;
    while at < buf.len() {
        let Some(eol) = buf[at..].windows(2).position(|w| w == b"\r\n") else {
            break;
        };
        let line = &buf[at + 1..at + eol];
        let next = at + eol + 2;
        match buf[at] {
            b'+' | b':' => at = next,
            b'-' => {
                let text = String::from_utf8_lossy(line);
                // The error's first word names it (ERR, OOM, WRONGTYPE, …).
                let key: String = text.chars().take(80).collect();
                *errors.entry(key).or_default() += 1;
                at = next;
            }
            b'$' => {
                let len: i64 = std::str::from_utf8(line)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .context("bad bulk length from redis")?;
                if len < 0 {
                    at = next;
                } else {
                    let end = next + len as usize + 2;
                    if end > buf.len() {
                        break;
                    }
                    at = end;
                }
            }
            other => bail!("unexpected redis reply type {:?}", other as char),
        }
        *count += 1;
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = RedisUrl::parse("redis://127.0.0.1:7000").unwrap();
        assert_eq!(
            (u.addr.as_str(), u.db, u.password),
            ("127.0.0.1:7000", None, None)
        );
        let u = RedisUrl::parse("redis://:pw@localhost/3").unwrap();
        assert_eq!(u.addr, "localhost:6379");
        assert_eq!(
            (u.username, u.password.as_deref(), u.db),
            (None, Some("pw"), Some(3))
        );
        assert!(RedisUrl::parse("rediss://x").is_err());
    }

    #[test]
    fn commands_and_replies() {
        let mut out = Vec::new();
        encode_command(&mut out, &[b"XADD", b"s", b"*"]);
        assert_eq!(out, b"*3\r\n$4\r\nXADD\r\n$1\r\ns\r\n$1\r\n*\r\n");
        let replies = b"$3\r\n1-0\r\n-ERR no\r\n+OK\r\n$15\r\n1700000000000-";
        let (mut count, mut errors) = (0, Default::default());
        let used = parse_replies(replies, &mut count, &mut errors).unwrap();
        assert_eq!((count, used), (3, 23));
        assert_eq!(errors.get("ERR no"), Some(&1));
    }
}
