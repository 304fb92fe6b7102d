//! What the `downlink` parent, its producers and its device workers agree on:
//! the payload layout, which device a message is for, and the worker protocol.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::hist::LatencyWire;
use crate::mqtt::ConnectOptions;

/// Bytes of a payload that carry data: sequence number, send time, device index.
pub const PAYLOAD_HEADER: usize = 20;

/// Appends a payload of `size` bytes (at least [`PAYLOAD_HEADER`]): `seq` and
/// `sent_us` (unix µs) as little-endian u64, the target device's index as u32,
/// then zeros.
pub fn encode_payload(out: &mut Vec<u8>, seq: u64, sent_us: u64, device: u64, size: usize) {
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&sent_us.to_le_bytes());
    out.extend_from_slice(&(device as u32).to_le_bytes());
    out.resize(out.len() + size.saturating_sub(PAYLOAD_HEADER), 0);
}

/// `(seq, sent_us, device)` of a payload made by [`encode_payload`].
pub fn decode_payload(p: &[u8]) -> Option<(u64, u64, u64)> {
    let seq = u64::from_le_bytes(p.get(..8)?.try_into().ok()?);
    let sent = u64::from_le_bytes(p.get(8..16)?.try_into().ok()?);
    let device = u32::from_le_bytes(p.get(16..20)?.try_into().ok()?);
    Some((seq, sent, u64::from(device)))
}

/// How messages are spread over the devices.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pick {
    /// Message `seq` goes to device `seq % devices`.
    RoundRobin,
    /// A uniform pseudo-random device per message (a fixed hash of `seq`).
    Random,
}

impl Pick {
    /// The device message `seq` is for.
    pub fn device(self, seq: u64, devices: u64) -> u64 {
        match self {
            Pick::RoundRobin => seq % devices,
            Pick::Random => splitmix64(seq) % devices,
        }
    }
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Client id of device `index`.
pub fn client_id(prefix: &str, index: u64) -> String {
    format!("{prefix}-{index}")
}

/// Topic a client-targeted downlink message arrives on (the distributor's
/// `$throng/downlink/<client id>`; the ids made here need no escaping).
pub fn client_topic(client_id: &str) -> String {
    format!("$throng/downlink/{client_id}")
}

/// Microseconds since the Unix epoch (the clock producers and devices share).
pub fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// First stdin line of a device worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerConfig {
    pub worker: usize,
    /// Devices this worker connects.
    pub devices: u64,
    /// Global index of its first device.
    pub first_index: u64,
    pub targets: Vec<SocketAddr>,
    /// Empty: let the kernel choose the source address.
    pub source_ips: Vec<IpAddr>,
    /// Handshakes in flight at most (this worker's share).
    pub in_flight: usize,
    pub connect: ConnectOptions,
    pub client_id_prefix: String,
    /// Per-handshake timeout, milliseconds.
    pub timeout_ms: u64,
    pub threads: usize,
    /// Messages the whole run sends (sequence numbers are below it).
    pub messages: u64,
    /// A device that wrote nothing for this long sends PINGREQ, milliseconds.
    pub ping_every_ms: u64,
    /// Instead of devices: attach to a distributor as these handlers and
    /// acknowledge every delivery (the distributor measured alone).
    pub sink: Option<SinkConfig>,
}

impl crate::workers::Config for WorkerConfig {
    fn worker(&self) -> usize {
        self.worker
    }

    fn connections(&self) -> u64 {
        self.devices
    }
}

/// The sink: stands in for the handlers on a distributor's Attach stream.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SinkConfig {
    /// The distributor's gRPC address.
    pub distributor: String,
    /// Handler ids to attach as (the distributor's --handlers ring).
    pub handlers: Vec<String>,
}

/// A stdin line of a worker after its config: report and exit.
pub const CMD_FINISH: &str = "finish";

/// A stdout line of a device worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerMsg {
    /// While connecting, about once a second.
    Connecting { ok: u64, failed: u64 },
    /// Every handshake of this worker has finished.
    Connected(Box<ConnectedReport>),
    /// While receiving, every [`PROGRESS_MS`] ms: cumulative counts.
    Progress(Counts),
    /// After `finish`.
    Final(Box<FinalReport>),
    /// The worker cannot go on.
    Error { message: String },
}

/// Period of [`WorkerMsg::Progress`], milliseconds.
pub const PROGRESS_MS: u64 = 100;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ConnectedReport {
    pub ok: u64,
    pub failures: BTreeMap<String, u64>,
    /// Start of each TCP connect to its CONNACK, µs.
    pub connack_latency: LatencyWire,
}

/// Message counts of one worker.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Counts {
    /// PUBLISH packets received.
    pub received: u64,
    /// Distinct sequence numbers received.
    pub unique: u64,
    /// Sequence numbers received again.
    pub duplicates: u64,
    /// Arrived at another device than the one they were sent to.
    pub misdelivered: u64,
    /// On another topic than `$throng/downlink/<own client id>`.
    pub wrong_topic: u64,
    /// Unparseable packets or payloads, or sequence numbers out of range.
    pub malformed: u64,
    /// Received at QoS 0, 1, 2.
    pub by_qos: [u64; 3],
    /// Devices whose connection ended during the run.
    pub connections_lost: u64,
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        self.received += o.received;
        self.unique += o.unique;
        self.duplicates += o.duplicates;
        self.misdelivered += o.misdelivered;
        self.wrong_topic += o.wrong_topic;
        self.malformed += o.malformed;
        for (a, b) in self.by_qos.iter_mut().zip(o.by_qos) {
            *a += b;
        }
        self.connections_lost += o.connections_lost;
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FinalReport {
    pub counts: Counts,
    /// Send time (in the payload) to arrival, µs, per unique message.
    pub latency: LatencyWire,
    /// Earliest and latest arrival of a message, unix µs (0: none arrived).
    pub first_arrival_us: u64,
    pub last_arrival_us: u64,
    /// Unique arrivals per 100 ms, as (unix time / 100 ms, count).
    pub arrivals: Vec<(u64, u64)>,
    /// Why connections ended during the run.
    pub lost: BTreeMap<String, u64>,
    /// CPU time (user + system) from all connected to finish, µs.
    pub cpu_us: u64,
    pub rss_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_roundtrip() {
        let mut p = Vec::new();
        encode_payload(&mut p, 42, 1_700_000_000_000_000, 1999, 64);
        assert_eq!(p.len(), 64);
        assert_eq!(decode_payload(&p), Some((42, 1_700_000_000_000_000, 1999)));
        let mut short = Vec::new();
        encode_payload(&mut short, 1, 2, 3, 0);
        assert_eq!(short.len(), PAYLOAD_HEADER);
        assert_eq!(decode_payload(&short[..19]), None);
    }

    #[test]
    fn picks_stay_in_range_and_spread() {
        let mut hits = [0u32; 10];
        for seq in 0..10_000 {
            assert_eq!(Pick::RoundRobin.device(seq, 10), seq % 10);
            hits[Pick::Random.device(seq, 10) as usize] += 1;
        }
        assert!(hits.iter().all(|&h| (800..1200).contains(&h)), "{hits:?}");
    }
}
