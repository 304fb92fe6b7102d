//! What the `connect` parent and its workers tell each other.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::hist::LatencyWire;
use crate::mqtt::ConnectOptions;

/// First stdin line of a worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerConfig {
    pub worker: usize,
    /// Connections this worker opens.
    pub connections: u64,
    /// Global index of this worker's first connection (client ids, targets and
    /// source addresses are chosen by global index).
    pub first_index: u64,
    pub targets: Vec<SocketAddr>,
    /// Empty: let the kernel choose the source address.
    pub source_ips: Vec<IpAddr>,
    /// Handshakes in flight at most (this worker's share).
    pub in_flight: Option<usize>,
    /// Handshakes started per second (this worker's share).
    pub rate: Option<f64>,
    pub connect: ConnectOptions,
    pub client_id_prefix: String,
    /// Per-handshake timeout (TCP connect + CONNACK), milliseconds.
    pub timeout_ms: u64,
    /// Wall-clock start shared by all workers, ms since the Unix epoch.
    pub start_at_unix_ms: u64,
    /// Tokio worker threads.
    pub threads: usize,
    /// PINGREQ sweep period during the hold, milliseconds (0: no pings).
    pub ping_every_ms: u64,
}

/// A stdin line of a worker after its config.
pub const CMD_FINISH: &str = "finish";

/// A stdout line of a worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerMsg {
    /// Cumulative counts, about once a second while connecting.
    Progress { ok: u64, failed: u64 },
    /// Every handshake of this worker has finished (success or failure).
    Connected(Box<ConnectedReport>),
    /// After the parent's `finish`: how many connections stayed up.
    Held(HeldReport),
    /// The worker cannot go on.
    Error { message: String },
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ConnectedReport {
    pub ok: u64,
    /// Failed handshakes by cause.
    pub failures: BTreeMap<String, u64>,
    /// Start of the TCP connect to CONNACK received, µs.
    pub connack_latency: LatencyWire,
    /// Start of the TCP connect to the TCP connection established, µs.
    pub tcp_latency: LatencyWire,
    /// Shared start to each successful CONNACK, µs.
    pub completion: LatencyWire,
    /// Successful handshakes completed in each second since the shared start.
    pub timeline: Vec<u64>,
    /// Time of the last finished handshake since the shared start, µs.
    pub last_done_us: u64,
    /// This worker's resident memory before connecting and when all were connected, bytes.
    pub rss_before: u64,
    pub rss_connected: u64,
    /// This worker's CPU time (user + system) spent from its start to all connected, µs.
    pub cpu_us: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HeldReport {
    /// Connections still up at the end of the hold.
    pub alive: u64,
    /// Connections lost during the hold, by cause.
    pub lost: BTreeMap<String, u64>,
    pub pings_sent: u64,
    pub pongs: u64,
    /// This worker's resident memory at the end of the hold, bytes.
    pub rss_held: u64,
}
