//! A cluster inside the test process: real handlers attached over real gRPC on
//! loopback to a real distributor, and MQTT 5 devices on the handlers' own
//! listeners. Used by the `tests/cluster_*.rs` files only (included with
//! `#[path]`, so the other tests do not build it).
//!
//! Interest propagates asynchronously: tests wait for it with route probes
//! (`wait_for_route`) or with acknowledged ingest messages (`sync_through` in
//! `cluster_distributors.rs`).
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use throng_codec::{Connect, Disconnect, Packet, Publish, QoS};
use throng_distributor::{Distributor, HubConfig};
use throng_handler::{Handler, HandlerConfig, ListenerKind};
use throng_proto::v1::ingest_client::IngestClient;
use throng_proto::v1::{PublishOutcome, PublishRequest, PublishResult, UserProperty};
use throng_ring::{Member, Ring};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::{Instant, sleep};
use tonic::transport::Channel;
use tonic::transport::server::TcpIncoming;

use crate::support::v5::{connect_packet, connect_with, opts, recv_within, resp, subscribe};
use crate::support::{RawClient, metric_value};

/// Bound for anything the tests wait for (the machine is shared and noisy).
pub const WAIT: Duration = Duration::from_secs(30);
/// How long "nothing else arrives" is watched for.
pub const QUIET: Duration = Duration::from_millis(500);

/// Polls `check` until it holds; fails after [`WAIT`] naming `what`.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(20)).await;
    }
}

fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text
}

/// A distributor serving the attach and ingest services on its own runtime, so
/// that [`TestDistributor::crash`] drops all its tasks and sockets at once, as
/// when the process is killed.
pub struct TestDistributor {
    pub addr: SocketAddr,
    pub distributor: Distributor,
    registry: Registry,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TestDistributor {
    /// Serves on `addr` (port 0: any free port; a fixed port is retried until
    /// the previous owner let go of it).
    pub async fn start(
        id: &str,
        addr: SocketAddr,
        handler_ring: watch::Receiver<Arc<Ring>>,
    ) -> TestDistributor {
        TestDistributor::start_with(id, addr, handler_ring, HubConfig::default()).await
    }

    pub async fn start_with(
        id: &str,
        addr: SocketAddr,
        handler_ring: watch::Receiver<Arc<Ring>>,
        config: HubConfig,
    ) -> TestDistributor {
        let listener = bind_retrying(addr).await;
        let addr = listener.local_addr().unwrap();
        let mut registry = Registry::default();
        let distributor = Distributor::start(id, config, handler_ring, &mut registry);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let attach = distributor.attach_service();
        let ingest = distributor.ingest_service();
        runtime.spawn(async move {
            let listener = TcpListener::from_std(listener).unwrap();
            tonic::transport::Server::builder()
                .add_service(attach)
                .add_service(ingest)
                .serve_with_incoming(TcpIncoming::from(listener))
                .await
                .unwrap();
        });
        TestDistributor {
            addr,
            distributor,
            registry,
            runtime: Some(runtime),
        }
    }

    /// Stops abruptly: every stream and the listener close without a goodbye.
    pub fn crash(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }

    pub fn attached(&self) -> usize {
        self.distributor.hub().attached().len()
    }

    /// One sample of the distributor's metrics, e.g.
    /// `throng_distributor_routed_total{kind="device"}`; 0 when absent.
    pub fn metric(&self, sample: &str) -> f64 {
        metric_value(&encode(&self.registry), sample).unwrap_or(0.0)
    }

    pub async fn ingest(&self) -> IngestClient<Channel> {
        IngestClient::connect(format!("http://{}", self.addr))
            .await
            .unwrap()
    }
}

impl Drop for TestDistributor {
    fn drop(&mut self) {
        self.crash();
    }
}

async fn bind_retrying(addr: SocketAddr) -> std::net::TcpListener {
    let deadline = Instant::now() + WAIT;
    loop {
        match std::net::TcpListener::bind(addr) {
            Ok(listener) => {
                listener.set_nonblocking(true).unwrap();
                return listener;
            }
            Err(err) => {
                assert!(Instant::now() < deadline, "bind {addr}: {err}");
                sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// A handler serving MQTT on a loopback port, attached to the distributors of
/// `distributors`.
pub struct Node {
    pub handler: Handler,
    pub mqtt: SocketAddr,
    registry: Registry,
}

impl Node {
    pub async fn start(id: &str, distributors: watch::Receiver<Arc<Ring>>) -> Node {
        Node::start_with(id, distributors, HandlerConfig::default()).await
    }

    /// A handler with `config` (its id replaced by `id`).
    pub async fn start_with(
        id: &str,
        distributors: watch::Receiver<Arc<Ring>>,
        config: HandlerConfig,
    ) -> Node {
        let mut registry = Registry::default();
        let config = HandlerConfig {
            id: id.to_owned(),
            ..config
        };
        let handler = Handler::start(config, &mut registry).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mqtt = listener.local_addr().unwrap();
        handler.serve(listener, ListenerKind::Mqtt);
        handler.join_cluster(distributors);
        Node {
            handler,
            mqtt,
            registry,
        }
    }

    /// One sample of the handler's metrics; 0 when absent.
    pub fn metric(&self, sample: &str) -> f64 {
        metric_value(&encode(&self.registry), sample).unwrap_or(0.0)
    }

    pub fn forwarded(&self) -> f64 {
        self.metric("throng_handler_forwarded_total")
    }

    pub async fn wait_attached(&self, n: usize) {
        let id = self.handler.id().to_owned();
        eventually(&format!("{id} attached to {n} distributor(s)"), || {
            self.handler.attached_distributors() == n
        })
        .await;
    }

    pub async fn wait_retained(&self, n: usize) {
        let id = self.handler.id().to_owned();
        eventually(&format!("{id} holding {n} retained message(s)"), || {
            self.metric("throng_retained_messages") == n as f64
        })
        .await;
    }
}

/// The handler ring the distributor routes client ids with: `ids`, no addresses.
pub fn handler_ring(ids: &[&str]) -> watch::Receiver<Arc<Ring>> {
    let ring = Ring::new(ids.iter().map(|id| Member::new(*id, "")));
    watch::channel(Arc::new(ring)).1
}

/// The distributor membership handlers attach to.
pub fn distributor_ring(
    members: &[(&str, SocketAddr)],
) -> (watch::Sender<Arc<Ring>>, watch::Receiver<Arc<Ring>>) {
    let ring = Ring::new(
        members
            .iter()
            .map(|(id, addr)| Member::new(*id, addr.to_string())),
    );
    watch::channel(Arc::new(ring))
}

/// A distributor and `n` handlers `h1..hn`, all attached.
pub struct TestCluster {
    pub distributor: TestDistributor,
    pub nodes: Vec<Node>,
    /// Kept so the handlers' membership never looks closed.
    pub distributors: watch::Sender<Arc<Ring>>,
}

pub fn node_id(i: usize) -> String {
    format!("h{}", i + 1)
}

impl TestCluster {
    pub async fn start(n: usize) -> TestCluster {
        TestCluster::start_with(n, HandlerConfig::default(), HubConfig::default()).await
    }

    /// Every handler with `handler` (ids set per node), the distributor with `hub`.
    pub async fn start_with(n: usize, handler: HandlerConfig, hub: HubConfig) -> TestCluster {
        let ids: Vec<String> = (0..n).map(node_id).collect();
        let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let distributor = TestDistributor::start_with(
            "d0",
            "127.0.0.1:0".parse().unwrap(),
            handler_ring(&id_refs),
            hub,
        )
        .await;
        let (distributors, ring) = distributor_ring(&[("d0", distributor.addr)]);
        let mut nodes = Vec::new();
        for id in &ids {
            nodes.push(Node::start_with(id, ring.clone(), handler.clone()).await);
        }
        let cluster = TestCluster {
            distributor,
            nodes,
            distributors,
        };
        cluster.wait_all_attached().await;
        cluster
    }

    /// Every handler has a stream to the distributor, and the distributor knows.
    pub async fn wait_all_attached(&self) {
        for node in &self.nodes {
            node.wait_attached(1).await;
        }
        let n = self.nodes.len();
        eventually("the distributor to see every handler", || {
            self.distributor.attached() == n
        })
        .await;
    }

    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }
}

/// Whether a publish is a route probe (see [`wait_for_route`]); devices skip them.
fn is_probe(publish: &Publish) -> bool {
    publish.topic.ends_with("/probe")
}

/// An MQTT 5 device over a raw connection that answers the QoS 1/2 flows
/// itself and sets route probes aside.
pub struct Device {
    pub raw: RawClient,
    pub name: String,
    next_packet_id: u16,
    pending: VecDeque<Publish>,
    /// Probes received so far.
    pub probes: u64,
}

impl Device {
    /// A clean-start device.
    pub async fn connect(addr: SocketAddr, name: &str) -> Device {
        let (device, present) = Device::connect_with(addr, connect_packet(name)).await;
        assert!(!present);
        device
    }

    /// A device with a session kept 300 s after it goes; returns whether the
    /// session was there.
    pub async fn connect_persistent(
        addr: SocketAddr,
        name: &str,
        clean_start: bool,
    ) -> (Device, bool) {
        let mut connect = connect_packet(name);
        connect.clean_start = clean_start;
        connect.properties.session_expiry_interval = Some(300);
        Device::connect_with(addr, connect).await
    }

    async fn connect_with(addr: SocketAddr, connect: Connect) -> (Device, bool) {
        let name = connect.client_id.clone();
        let (raw, ack) = connect_with(addr, connect).await;
        assert_eq!(ack.code, 0, "connect {name}: {ack:?}");
        let device = Device {
            raw,
            name,
            next_packet_id: 1,
            pending: VecDeque::new(),
            probes: 0,
        };
        (device, ack.session_present)
    }

    fn packet_id(&mut self) -> u16 {
        let id = self.next_packet_id;
        self.next_packet_id = self.next_packet_id.wrapping_add(1).max(1);
        id
    }

    pub async fn subscribe(&mut self, filter: &str, qos: QoS) {
        let id = self.packet_id();
        let ack = subscribe(&mut self.raw, id, filter, opts(qos), None).await;
        assert_eq!(
            ack.codes,
            vec![qos as u8],
            "{}: subscribe {filter}",
            self.name
        );
    }

    /// Publishes and completes the QoS flow (PUBACK, or PUBREC/PUBREL/PUBCOMP).
    pub async fn publish(&mut self, mut publish: Publish) {
        let qos = publish.qos;
        publish.packet_id = (qos != QoS::AtMostOnce).then(|| self.packet_id());
        let id = publish.packet_id.unwrap_or(0);
        self.raw.send(&Packet::Publish(publish)).await;
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => match self.raw.recv().await {
                Some(Packet::PubAck(ack)) if ack.packet_id == id => {}
                other => panic!("{}: expected PUBACK {id}, got {other:?}", self.name),
            },
            QoS::ExactlyOnce => {
                match self.raw.recv().await {
                    Some(Packet::PubRec(rec)) if rec.packet_id == id => {}
                    other => panic!("{}: expected PUBREC {id}, got {other:?}", self.name),
                }
                self.raw.send(&Packet::PubRel(resp(id))).await;
                match self.raw.recv().await {
                    Some(Packet::PubComp(comp)) if comp.packet_id == id => {}
                    other => panic!("{}: expected PUBCOMP {id}, got {other:?}", self.name),
                }
            }
        }
    }

    /// Handles the packets arriving until `deadline` (and, past it, those
    /// already there): publishes are acknowledged and queued (probes counted),
    /// PUBRELs completed. Returns early once a publish is queued.
    pub async fn pump_until(&mut self, deadline: Instant) {
        loop {
            let left = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            match recv_within(&mut self.raw, left).await {
                None => return,
                Some(None) => panic!("{}: connection closed", self.name),
                Some(Some(Packet::Publish(publish))) => {
                    match (publish.qos, publish.packet_id) {
                        (QoS::AtLeastOnce, Some(id)) => {
                            self.raw.send(&Packet::PubAck(resp(id))).await;
                        }
                        (QoS::ExactlyOnce, Some(id)) => {
                            self.raw.send(&Packet::PubRec(resp(id))).await;
                        }
                        _ => {}
                    }
                    if is_probe(&publish) {
                        self.probes += 1;
                    } else {
                        self.pending.push_back(publish);
                        return;
                    }
                }
                Some(Some(Packet::PubRel(rel))) => {
                    self.raw.send(&Packet::PubComp(resp(rel.packet_id))).await;
                }
                Some(Some(other)) => panic!("{}: unexpected {other:?}", self.name),
            }
        }
    }

    /// The next publish that is not a probe (fails after [`WAIT`]).
    pub async fn recv(&mut self) -> Publish {
        let deadline = Instant::now() + WAIT;
        while self.pending.is_empty() {
            assert!(
                Instant::now() < deadline,
                "{}: no publish within {WAIT:?}",
                self.name
            );
            self.pump_until(deadline).await;
        }
        self.pending.pop_front().unwrap()
    }

    /// A publish arriving within `within`, if any.
    pub async fn recv_within(&mut self, within: Duration) -> Option<Publish> {
        if self.pending.is_empty() {
            self.pump_until(Instant::now() + within).await;
        }
        self.pending.pop_front()
    }

    /// Nothing but probes arrives for [`QUIET`].
    pub async fn assert_quiet(&mut self) {
        let deadline = Instant::now() + QUIET;
        while Instant::now() < deadline && self.pending.is_empty() {
            self.pump_until(deadline).await;
        }
        assert!(
            self.pending.is_empty(),
            "{}: expected nothing, got {:?}",
            self.name,
            self.pending
        );
    }

    /// A normal DISCONNECT (the session stays when it has an expiry).
    pub async fn disconnect(mut self) {
        self.raw
            .send(&Packet::Disconnect(Disconnect::default()))
            .await;
        assert!(
            self.raw.closed_within(Duration::from_secs(10)).await,
            "{}: not closed after DISCONNECT",
            self.name
        );
    }
}

/// A PUBLISH of `payload` on `topic` (the packet id is set when sent).
pub fn message(topic: &str, payload: &[u8], qos: QoS) -> Publish {
    Publish {
        qos,
        topic: topic.into(),
        payload: bytes::Bytes::copy_from_slice(payload),
        ..Publish::default()
    }
}

/// Publishes QoS 0 probes on `probe_topic` (which must end in `/probe`) from
/// `publisher` until every subscriber has received one: the interest sets and
/// the distributor's index have caught up with their subscriptions. The real
/// messages sent afterwards travel the same ordered stream behind the probes.
pub async fn wait_for_route(publisher: &mut Device, probe_topic: &str, subs: &mut [&mut Device]) {
    assert!(probe_topic.ends_with("/probe"));
    let before: Vec<u64> = subs.iter().map(|s| s.probes).collect();
    let deadline = Instant::now() + WAIT;
    loop {
        publisher
            .publish(message(probe_topic, b"probe", QoS::AtMostOnce))
            .await;
        let poll_until = Instant::now() + Duration::from_millis(100);
        for sub in subs.iter_mut() {
            sub.pump_until(poll_until).await;
        }
        let reached: Vec<bool> = subs
            .iter()
            .zip(&before)
            .map(|(s, n)| s.probes > *n)
            .collect();
        if reached.iter().all(|r| *r) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "probes on {probe_topic} never reached {:?}",
            subs.iter()
                .zip(&reached)
                .filter(|(_, r)| !**r)
                .map(|(s, _)| s.name.clone())
                .collect::<Vec<_>>()
        );
    }
}

/// The distributor metric counting routed device publishes.
pub const DEVICE_ROUTED: &str = "throng_distributor_routed_total{kind=\"device\"}";

pub async fn publish(
    ingest: &mut IngestClient<Channel>,
    request: PublishRequest,
) -> (PublishOutcome, PublishResult) {
    let result = ingest
        .publish(request)
        .await
        .unwrap()
        .into_inner()
        .result
        .unwrap();
    (result.outcome(), result)
}

pub fn ingest_request(
    client_id: &str,
    topic: &str,
    payload: &str,
    message_id: &str,
) -> PublishRequest {
    PublishRequest {
        client_id: client_id.to_owned(),
        topic: topic.to_owned(),
        payload: payload.as_bytes().to_vec().into(),
        qos: 1,
        message_id: message_id.to_owned(),
        user_properties: vec![UserProperty {
            key: "from".into(),
            value: "backend".into(),
        }],
        content_type: Some("application/json".into()),
        ..PublishRequest::default()
    }
}
