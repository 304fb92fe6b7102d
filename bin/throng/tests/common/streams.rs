//! Redis for the cluster tests: a throwaway `redis-server` (throng-testkit) and
//! blocking reads of the streams backends see (downlink group state, dead
//! letters, uplink entries).

use std::collections::HashMap;

use redis::{Commands, Value};
use throng_testkit::RedisServer;

pub const DOWNLINK: &str = "throng:downlink";
pub const DEAD: &str = "throng:downlink:dead";
pub const UPLINK: &str = "throng:uplink";
pub const GROUP: &str = "throng-distributors";

/// A `redis-server` on a free port, stopped when dropped.
pub fn start_redis() -> RedisServer {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(RedisServer::start())
}

pub fn redis_conn(server: &RedisServer) -> redis::Connection {
    server.client().get_connection().unwrap()
}

/// One stream entry: its id and fields (values as lossy UTF-8).
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: String,
    pub fields: HashMap<String, String>,
}

impl Entry {
    pub fn field(&self, name: &str) -> &str {
        self.fields
            .get(name)
            .unwrap_or_else(|| panic!("entry {} has no {name}: {:?}", self.id, self.fields))
    }
}

/// Every entry of `stream`, oldest first.
pub fn read_stream(conn: &mut redis::Connection, stream: &str) -> Vec<Entry> {
    let reply: redis::streams::StreamRangeReply = conn.xrange_all(stream).unwrap();
    reply
        .ids
        .into_iter()
        .map(|entry| Entry {
            id: entry.id,
            fields: entry
                .map
                .into_iter()
                .map(|(k, v)| {
                    let bytes: Vec<u8> = redis::from_redis_value(&v).unwrap();
                    (k, String::from_utf8_lossy(&bytes).into_owned())
                })
                .collect(),
        })
        .collect()
}

/// XADDs `fields` to `stream`, returning the entry id.
pub fn xadd(conn: &mut redis::Connection, stream: &str, fields: &[(&str, &str)]) -> String {
    conn.xadd(stream, "*", fields).unwrap()
}

/// The downlink group's (pending, lag) from XINFO GROUPS; `None` until the
/// group exists. The lag is `None` when Redis cannot tell it.
pub fn group_state(conn: &mut redis::Connection) -> Option<(u64, Option<u64>)> {
    let groups: Value = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(DOWNLINK)
        .query(conn)
        .ok()?;
    let Value::Array(groups) = groups else {
        return None;
    };
    groups.iter().find_map(|group| {
        let fields = pairs(group);
        let name: String = redis::from_redis_value(fields.get("name")?).ok()?;
        if name != GROUP {
            return None;
        }
        let pending: u64 = redis::from_redis_value(fields.get("pending")?).ok()?;
        let lag = fields
            .get("lag")
            .and_then(|v| redis::from_redis_value::<u64>(v).ok());
        Some((pending, lag))
    })
}

/// Pending entries of the group per consumer (XPENDING summary).
pub fn pending_by_consumer(conn: &mut redis::Connection) -> HashMap<String, u64> {
    let summary: Value = redis::cmd("XPENDING")
        .arg(DOWNLINK)
        .arg(GROUP)
        .query(conn)
        .unwrap();
    let Value::Array(parts) = summary else {
        panic!("XPENDING: {summary:?}");
    };
    let mut out = HashMap::new();
    if let Some(Value::Array(consumers)) = parts.get(3) {
        for consumer in consumers {
            let (name, count): (String, String) = redis::from_redis_value(consumer).unwrap();
            out.insert(name, count.parse().unwrap());
        }
    }
    out
}

/// A reply that is a map, or a flat array of key/value pairs (RESP2), as a map.
fn pairs(value: &Value) -> HashMap<String, Value> {
    match value {
        Value::Map(entries) => entries
            .iter()
            .filter_map(|(k, v)| Some((redis::from_redis_value(k).ok()?, v.clone())))
            .collect(),
        Value::Array(flat) => flat
            .chunks(2)
            .filter_map(|kv| match kv {
                [k, v] => Some((redis::from_redis_value(k).ok()?, v.clone())),
                _ => None,
            })
            .collect(),
        _ => HashMap::new(),
    }
}
