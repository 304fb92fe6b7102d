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
    /// PINGREQ period of every held connection, milliseconds (0: no pings). Pings
    /// start as soon as a connection is up, while the others still connect.
    pub ping_every_ms: u64,
}

impl crate::workers::Config for WorkerConfig {
    fn worker(&self) -> usize {
        self.worker
    }

    fn connections(&self) -> u64 {
        self.connections
    }
}

/// A stdin line of a worker after its config.
pub const CMD_FINISH: &str = "finish";

/// A stdout line of a worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerMsg {
    /// Cumulative counts, about once a second, while connecting and holding.
    Progress(Progress),
    /// Every handshake of this worker has finished (success or failure).
    Connected(Box<ConnectedReport>),
    /// After the parent's `finish`: how many connections stayed up.
    Held(HeldReport),
    /// The worker cannot go on.
    Error { message: String },
}

/// A worker's counts so far.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Progress {
    /// Handshakes that succeeded / failed.
    pub ok: u64,
    pub failed: u64,
    /// Connections up now (succeeded minus closed by the broker since).
    pub up: u64,
    /// Connections the broker closed after their CONNACK.
    pub closed: u64,
    pub pings_sent: u64,
    pub pongs: u64,
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
    /// Failed handshakes in each second since the shared start.
    pub failed_timeline: Vec<u64>,
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
    /// Connections the broker closed after their CONNACK while the others were
    /// still connecting, by cause (`eof`, `reset`, `disconnect_0x8d`, …).
    pub closed_while_connecting: BTreeMap<String, u64>,
    /// The same, after every handshake had finished.
    pub closed_during_hold: BTreeMap<String, u64>,
    pub pings_sent: u64,
    pub pongs: u64,
    /// PINGREQs not sent because a socket's send buffer was full.
    pub pings_blocked: u64,
    /// Packets other than PINGRESP and DISCONNECT received while holding.
    pub other_packets: u64,
    /// Longest a connection went without a PINGREQ, milliseconds.
    pub max_ping_gap_ms: u64,
    /// This worker's resident memory at the end of the hold, and its peak, bytes.
    pub rss_held: u64,
    pub rss_peak: u64,
    /// This worker's CPU time from all connected to the end of the hold, µs.
    pub cpu_held_us: u64,
}
