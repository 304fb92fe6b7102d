//! What the `pubsub` parent and its workers say to each other: the worker's
//! config (first stdin line), the commands that move a run from phase to
//! phase (further stdin lines) and the reports (JSON stdout lines).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use super::plan::Plan;
use super::track::Tally;
use crate::hist::LatencyWire;
use crate::mqtt::ConnectOptions;

/// First stdin line of a worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerConfig {
    pub worker: usize,
    pub plan: Plan,
    /// This worker's publishers: indexes `first_publisher..first_publisher + publishers`.
    pub first_publisher: u32,
    pub publishers: u32,
    /// This worker's subscribers, likewise.
    pub first_subscriber: u32,
    pub subscribers: u32,
    pub targets: Vec<SocketAddr>,
    /// Empty: let the kernel choose the source address.
    pub source_ips: Vec<IpAddr>,
    pub connect: ConnectOptions,
    /// Handshakes (CONNECT, and SUBSCRIBE for a subscriber) in flight at most.
    pub in_flight: usize,
    /// Per-client setup timeout (connect, CONNACK, SUBACK), milliseconds.
    pub setup_timeout_ms: u64,
    pub threads: usize,
    /// Period of the probes each publisher sends until the run starts, ms.
    pub probe_every_ms: u64,
    /// A publisher gives up when its window stayed full (or, once done, its
    /// last acks did not come) for this long, ms.
    pub ack_timeout_ms: u64,
}

impl crate::workers::Config for WorkerConfig {
    fn worker(&self) -> usize {
        self.worker
    }

    fn connections(&self) -> u64 {
        u64::from(self.publishers + self.subscribers)
    }
}

/// A stdin line after the config: start probing.
pub const CMD_PROBE: &str = "probe";
/// `start <unix µs>`: publish (warmup until that time, measured from it).
pub const CMD_START: &str = "start";
/// Publishers stop now and report (the parent gave up waiting for them).
pub const CMD_STOP: &str = "stop";
/// `finish <JSON array: measured messages sent by each publisher>`: subscribers
/// stop, the worker makes its final report and exits.
pub const CMD_FINISH: &str = "finish";

/// A stdout line of a worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerMsg {
    /// While setting up, about once a second.
    Connecting { ok: u64, failed: u64 },
    /// Every client of this worker is connected (and subscribed) or failed.
    Ready(Box<ReadyReport>),
    /// Every [`PROGRESS_MS`] ms once ready: cumulative counts.
    Progress(Progress),
    /// Every publisher of this worker is done (or stopped).
    Published(Box<PublishedReport>),
    /// After `finish`.
    Final(Box<FinalReport>),
    /// The worker cannot go on.
    Error { message: String },
}

/// Period of [`WorkerMsg::Progress`], milliseconds.
pub const PROGRESS_MS: u64 = 100;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ReadyReport {
    pub ok: u64,
    pub failures: BTreeMap<String, u64>,
    /// TCP connect to CONNACK (and SUBACK for subscribers), µs.
    pub setup_latency: LatencyWire,
    /// Subscriptions granted at QoS 0, 1, 2.
    pub granted: [u64; 3],
    /// Smallest Receive Maximum a server announced (MQTT 5).
    pub receive_maximum: Option<u16>,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Progress {
    /// Subscribers that saw a probe from every publisher they receive from.
    pub probes_ready: u64,
    pub probes_received: u64,
    pub warmup_received: u64,
    /// Measured PUBLISHes received (duplicates included).
    pub received: u64,
    /// Measured messages received for the first time (per subscriber).
    pub unique: u64,
    /// Measured messages published.
    pub sent: u64,
    /// Publishers of this worker that are done.
    pub publishers_done: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PublishedReport {
    /// (publisher index, measured messages it sent).
    pub per_publisher: Vec<(u32, u64)>,
    pub warmup_sent: u64,
    pub probes_sent: u64,
    /// Measured QoS 1/2 messages acknowledged (PUBACK, PUBCOMP).
    pub acked: u64,
    /// Acknowledgements with a failure reason code (MQTT 5), by code.
    pub refused: BTreeMap<String, u64>,
    /// First and last measured send, unix µs (0: none).
    pub first_send_us: u64,
    pub last_send_us: u64,
    /// PUBLISH to PUBACK / PUBCOMP, µs (measured messages).
    pub ack_latency: LatencyWire,
    /// Publishers that ended early, by cause.
    pub failed: BTreeMap<String, u64>,
    /// The in-flight window publishers used (smallest).
    pub window: u16,
}

/// Counts of one worker's subscribers, all publishers together.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Counts {
    #[serde(flatten)]
    pub tally: Tally,
    /// Measured PUBLISHes received (duplicates included).
    pub received: u64,
    /// From a publisher this subscriber should not hear from.
    pub unexpected: u64,
    /// Topic does not match the publisher in the payload.
    pub wrong_topic: u64,
    /// Unparseable packets or payloads.
    pub malformed: u64,
    /// Measured PUBLISHes received at QoS 0, 1, 2.
    pub by_qos: [u64; 3],
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        self.tally.add(&o.tally);
        self.received += o.received;
        self.unexpected += o.unexpected;
        self.wrong_topic += o.wrong_topic;
        self.malformed += o.malformed;
        for (a, b) in self.by_qos.iter_mut().zip(o.by_qos) {
            *a += b;
        }
    }
}

/// One subscriber's accounting.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SubscriberRow {
    pub subscriber: u32,
    #[serde(flatten)]
    pub counts: Counts,
    /// Why its connection ended during the run, if it did.
    pub ended: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FinalReport {
    pub subscribers: Vec<SubscriberRow>,
    /// Send time (in the payload) to arrival, µs, per unique measured message.
    pub latency: LatencyWire,
    /// Earliest and latest unique measured arrival, unix µs (0: none).
    pub first_arrival_us: u64,
    pub last_arrival_us: u64,
    /// Unique measured arrivals per 100 ms, as (unix time / 100 ms, count).
    pub arrivals: Vec<(u64, u64)>,
    /// CPU time (user + system) of the worker from ready to finish, µs.
    pub cpu_us: u64,
    pub rss_bytes: u64,
}
