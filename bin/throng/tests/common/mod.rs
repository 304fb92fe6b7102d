//! Shared by the agent end-to-end tests: real `throng handler` and `throng agent`
//! processes (`process.rs`), their admin endpoints (metrics, `/v1/owner`,
//! `/v1/connections`), a three-handler cluster, and a blocking raw MQTT client
//! (`mqtt.rs`) that can bind its source address and see exactly what the agent
//! sends. For the cluster tests: distributors and the whole cluster with Redis
//! (`distributed.rs`), a device with every QoS flow (`device.rs`), and the Redis
//! streams (`streams.rs`).
//!
//! Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

mod device;
mod distributed;
mod mqtt;
mod process;
mod streams;

use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

pub use device::*;
// Only the cluster tests use these.
#[allow(unused_imports)]
pub use distributed::*;
pub use mqtt::*;
pub use process::*;
pub use streams::*;

/// How long any single wait in these tests may take.
pub const WAIT: Duration = Duration::from_secs(20);

/// Polls `done` every 20 ms until it holds; fails the test after `within`.
pub fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn try_http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

pub fn http_get(addr: SocketAddr, path: &str) -> String {
    try_http_get(addr, path).unwrap_or_else(|err| panic!("GET {path} from {addr}: {err}"))
}

/// The body of a `200 OK` answer.
pub fn http_get_ok(addr: SocketAddr, path: &str) -> String {
    let response = http_get(addr, path);
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "GET {path}: {response}"
    );
    let (_, body) = response.split_once("\r\n\r\n").expect("HTTP body");
    body.to_owned()
}

/// One sample from `/metrics`, e.g. `throng_agent_accepts_total{result="blocked"}`;
/// 0 when absent.
pub fn metric(admin: SocketAddr, sample: &str) -> f64 {
    http_get(admin, "/metrics")
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == sample).then(|| value.parse().ok())?
        })
        .unwrap_or(0.0)
}

pub fn accepts(admin: SocketAddr, result: &str) -> f64 {
    metric(
        admin,
        &format!("throng_agent_accepts_total{{result=\"{result}\"}}"),
    )
}

/// Client ids that differ on every run: `prefix` and 16 random hex digits.
pub fn random_ids(prefix: &str, n: usize) -> Vec<String> {
    let state = std::collections::hash_map::RandomState::new();
    (0..n)
        .map(|i| format!("{prefix}{:016x}", state.hash_one(i)))
        .collect()
}

/// A temporary directory, three handlers and one agent with `agent_args`.
pub struct Cluster {
    pub handlers: Vec<Handler>,
    pub agent: Agent,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    pub fn start(agent_args: &[&str]) -> Cluster {
        Cluster::start_with(false, agent_args)
    }

    /// `fd`: handlers also listen for fd hand-off and the agent uses it.
    pub fn start_with(fd: bool, agent_args: &[&str]) -> Cluster {
        Cluster::start_full(fd, false, agent_args)
    }

    /// `mqtts`: the agent also serves MQTT over TLS (give `--tls-cert` and `--tls-key`).
    pub fn start_full(fd: bool, mqtts: bool, agent_args: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let handlers = start_handlers(dir.path(), 3, fd, &[]);
        let mut args: Vec<String> = agent_args.iter().map(|s| s.to_string()).collect();
        if fd {
            args.extend([
                "--handoff".into(),
                "fd".into(),
                "--fd-handoff-dir".into(),
                dir.path().display().to_string(),
            ]);
        }
        let agent = start_agent(dir.path(), "agent", &handlers, &args, mqtts);
        Cluster {
            handlers,
            agent,
            dir,
        }
    }

    pub fn handler(&self, id: &str) -> &Handler {
        self.handlers
            .iter()
            .find(|h| h.id == id)
            .unwrap_or_else(|| panic!("no handler {id}"))
    }

    /// The handler the agent names as `client_id`'s owner.
    pub fn owner(&self, client_id: &str) -> String {
        owner(self.agent.admin, client_id)
    }

    /// Handler connection gauges, by handler id.
    pub fn handler_connections(&self) -> BTreeMap<String, usize> {
        self.handlers
            .iter()
            .map(|h| (h.id.clone(), h.connections() as usize))
            .collect()
    }

    /// Two fresh client ids with the same owner (for exchanges within one handler).
    pub fn ids_on_one_handler(&self, prefix: &str) -> (String, String, String) {
        let ids = random_ids(prefix, 40);
        let owners: Vec<String> = ids.iter().map(|id| self.owner(id)).collect();
        for i in 0..ids.len() {
            for j in i + 1..ids.len() {
                if owners[i] == owners[j] {
                    return (ids[i].clone(), ids[j].clone(), owners[i].clone());
                }
            }
        }
        unreachable!("40 ids over 3 handlers always share an owner")
    }
}

/// `GET /v1/owner?client_id=X` → the owning handler's member id.
pub fn owner(admin: SocketAddr, client_id: &str) -> String {
    let body = http_get_ok(admin, &format!("/v1/owner?client_id={client_id}"));
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["client_id"], client_id, "{body}");
    answer["handler"].as_str().expect("handler").to_owned()
}

/// `GET /v1/connections` → (total, by handler).
pub fn agent_connections(admin: SocketAddr) -> (usize, BTreeMap<String, usize>) {
    let body = http_get_ok(admin, "/v1/connections");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    let total = answer["total"].as_u64().expect("total") as usize;
    let by_handler = answer["by_handler"]
        .as_object()
        .expect("by_handler")
        .iter()
        .map(|(id, n)| (id.clone(), n.as_u64().unwrap() as usize))
        .collect();
    (total, by_handler)
}

/// Counts per handler, for comparing with gauges and tables.
pub fn tally<'a>(owners: impl IntoIterator<Item = &'a String>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for owner in owners {
        *counts.entry(owner.clone()).or_default() += 1;
    }
    counts
}

/// `counts` with a zero entry for every handler it lacks.
pub fn with_zeros(
    handlers: &[Handler],
    counts: &BTreeMap<String, usize>,
) -> BTreeMap<String, usize> {
    handlers
        .iter()
        .map(|h| (h.id.clone(), counts.get(&h.id).copied().unwrap_or(0)))
        .collect()
}

/// Closes `clients` one at a time (DISCONNECT) and checks each time that exactly
/// its expected handler's connection gauge drops by one: where every single
/// client was, not only how many each handler had.
pub fn check_each_location(handlers: &[&Handler], clients: Vec<(Mqtt, String, String)>) {
    let mut gauges: BTreeMap<String, usize> = handlers
        .iter()
        .map(|h| (h.id.clone(), h.connections() as usize))
        .collect();
    for (client, id, expected) in clients {
        client.disconnect();
        *gauges.get_mut(&expected).unwrap() -= 1;
        let deadline = Instant::now() + WAIT;
        loop {
            let now: BTreeMap<String, usize> = handlers
                .iter()
                .map(|h| (h.id.clone(), h.connections() as usize))
                .collect();
            if now == gauges {
                break;
            }
            assert!(
                now.iter().all(|(h, n)| *n >= gauges[h]),
                "{id} should have been on {expected}: gauges {now:?}, expected {gauges:?}"
            );
            assert!(
                Instant::now() < deadline,
                "{id} should have been on {expected}: gauges {now:?}, expected {gauges:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Sum of every sample of a labelled family, e.g. `throng_handler_connects_total`.
pub fn metric_sum(admin: SocketAddr, family: &str) -> f64 {
    http_get(admin, "/metrics")
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            let bare = name.split('{').next()?;
            (bare == family).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}
