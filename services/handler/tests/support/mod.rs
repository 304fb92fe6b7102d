//! Test harness: a real handler on 127.0.0.1 port-0 listeners inside the test
//! process, raw MQTT sockets, and metric scraping.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use throng_codec::{Packet, ProtocolVersion};
use throng_handler::{HandlerConfig, HandlerListeners};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running handler; shut down when dropped.
pub struct TestServer {
    pub mqtt: SocketAddr,
    pub handoff: SocketAddr,
    pub admin: SocketAddr,
    /// Unix socket of the `fd` hand-off listener (in a temp dir the server owns).
    pub fd_handoff: std::path::PathBuf,
    _fd_dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::with_config(HandlerConfig::default()).await
    }

    pub async fn with_config(config: HandlerConfig) -> TestServer {
        let mqtt = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let handoff = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fd_dir = tempfile::tempdir().unwrap();
        let fd_handoff = fd_dir.path().join("handoff.sock");
        let fd_listener = tokio::net::UnixListener::bind(&fd_handoff).unwrap();
        let addrs = (
            mqtt.local_addr().unwrap(),
            handoff.local_addr().unwrap(),
            admin.local_addr().unwrap(),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let listeners = HandlerListeners {
            mqtt: Some(mqtt),
            handoff: Some(handoff),
            fd_handoff: Some(fd_listener),
            admin: Some(admin),
        };
        let task = tokio::spawn(throng_handler::run(config, listeners, None, async move {
            let _ = stopped.await;
        }));
        TestServer {
            mqtt: addrs.0,
            handoff: addrs.1,
            admin: addrs.2,
            fd_handoff,
            _fd_dir: fd_dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Graceful shutdown; returns once the handler's run() has returned.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    pub fn port(&self) -> u16 {
        self.mqtt.port()
    }

    /// The admin port's /metrics text.
    pub async fn metrics(&self) -> String {
        http_get(self.admin, "/metrics").await
    }

    /// Value of one sample, e.g. `throng_handler_connections` or
    /// `throng_handler_connects_total{result="accepted"}`; 0 when absent.
    pub async fn metric(&self, sample: &str) -> f64 {
        metric_value(&self.metrics().await, sample).unwrap_or(0.0)
    }

    /// Polls a metric until `pred` holds (bounded: 10 s).
    pub async fn wait_metric(&self, sample: &str, pred: impl Fn(f64) -> bool) -> f64 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let value = self.metric(sample).await;
            if pred(value) {
                return value;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "metric {sample} stuck at {value}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub fn metric_value(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == sample).then(|| value.parse().ok())?
        })
}

pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

/// A raw MQTT connection speaking through throng's codec, for byte-level tests.
pub struct RawClient {
    pub stream: TcpStream,
    pub version: ProtocolVersion,
    buf: bytes::BytesMut,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr, version: ProtocolVersion) -> RawClient {
        RawClient {
            stream: TcpStream::connect(addr).await.unwrap(),
            version,
            buf: bytes::BytesMut::new(),
        }
    }

    pub async fn send(&mut self, packet: &Packet) {
        let mut out = Vec::new();
        throng_codec::encode(packet, self.version, &mut out).unwrap();
        self.stream.write_all(&out).await.unwrap();
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Next packet, or `None` when the server closed the connection (5 s bound).
    pub async fn recv(&mut self) -> Option<Packet> {
        tokio::time::timeout(Duration::from_secs(5), self.recv_inner())
            .await
            .expect("no packet and no close within 5 s")
    }

    async fn recv_inner(&mut self) -> Option<Packet> {
        loop {
            if let Some(packet) =
                throng_codec::read_packet(&mut self.buf, self.version, usize::MAX).unwrap()
            {
                return Some(packet);
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// True when the server closes the connection within `within` (any packets
    /// before the close are skipped).
    pub async fn closed_within(&mut self, within: Duration) -> bool {
        tokio::time::timeout(within, async { while self.recv_inner().await.is_some() {} })
            .await
            .is_ok()
    }
}

/// MQTT 3.1.1 helpers (rumqttc client, raw CONNECT shortcuts).
pub mod v3;

/// MQTT 5 helpers for the `v5_*` tests: CONNECT/SUBSCRIBE/PUBLISH shorthands over
/// [`RawClient`] and bounded waits for "nothing arrives".
pub mod v5 {
    use std::net::SocketAddr;
    use std::time::Duration;

    use throng_codec::{
        ConnAck, Connect, Packet, ProtocolVersion, PubResp, Publish, QoS, SubAck, Subscribe,
        SubscriptionOptions,
    };

    use super::RawClient;

    /// A clean-start v5 CONNECT with keepalive 30 and no properties.
    pub fn connect_packet(client_id: &str) -> Connect {
        Connect {
            protocol: Some(ProtocolVersion::V5),
            clean_start: true,
            keep_alive: 30,
            client_id: client_id.into(),
            ..Connect::default()
        }
    }

    /// Sends `connect` and returns the client with the server's answer (panics
    /// when the answer is not a CONNACK).
    pub async fn connect_with(addr: SocketAddr, connect: Connect) -> (RawClient, ConnAck) {
        let mut client = RawClient::connect(addr, ProtocolVersion::V5).await;
        client.send(&Packet::Connect(Box::new(connect))).await;
        match client.recv().await {
            Some(Packet::ConnAck(ack)) => (client, ack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// A connected clean-start v5 client (CONNACK must be success).
    pub async fn client(addr: SocketAddr, client_id: &str) -> RawClient {
        let (client, ack) = connect_with(addr, connect_packet(client_id)).await;
        assert_eq!(ack.code, 0, "connect {client_id}: {ack:?}");
        client
    }

    pub fn opts(qos: QoS) -> SubscriptionOptions {
        SubscriptionOptions {
            qos,
            ..SubscriptionOptions::default()
        }
    }

    /// SUBSCRIBE with one filter; returns the SUBACK.
    pub async fn subscribe(
        client: &mut RawClient,
        packet_id: u16,
        filter: &str,
        options: SubscriptionOptions,
        id: Option<u32>,
    ) -> SubAck {
        client
            .send(&Packet::Subscribe(Subscribe {
                packet_id,
                subscription_identifier: id,
                filters: vec![(filter.into(), options)],
                ..Subscribe::default()
            }))
            .await;
        match client.recv().await {
            Some(Packet::SubAck(ack)) => {
                assert_eq!(ack.packet_id, packet_id);
                ack
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// A PUBLISH packet (packet id set for QoS > 0).
    pub fn publish_packet(topic: &str, payload: &[u8], qos: QoS, packet_id: u16) -> Publish {
        Publish {
            qos,
            topic: topic.into(),
            packet_id: (qos != QoS::AtMostOnce).then_some(packet_id),
            payload: bytes::Bytes::copy_from_slice(payload),
            ..Publish::default()
        }
    }

    /// Next packet, which must be a PUBLISH.
    pub async fn expect_publish(client: &mut RawClient) -> Publish {
        match client.recv().await {
            Some(Packet::Publish(publish)) => publish,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    /// Next packet within `within`: `None` when nothing came (the connection is
    /// still open), `Some(None)` when it closed.
    pub async fn recv_within(client: &mut RawClient, within: Duration) -> Option<Option<Packet>> {
        tokio::time::timeout(within, client.recv_inner()).await.ok()
    }

    /// Asserts that no packet arrives within `within`.
    pub async fn assert_quiet(client: &mut RawClient, within: Duration) {
        if let Some(packet) = recv_within(client, within).await {
            panic!("expected silence, got {packet:?}");
        }
    }

    /// Asserts the server sends DISCONNECT with `reason` and then closes.
    pub async fn expect_disconnect(client: &mut RawClient, reason: u8) {
        match client.recv().await {
            Some(Packet::Disconnect(d)) => assert_eq!(d.reason, reason, "{d:?}"),
            other => panic!("expected DISCONNECT {reason:#04x}, got {other:?}"),
        }
        assert!(
            client.closed_within(Duration::from_secs(5)).await,
            "connection not closed after DISCONNECT"
        );
    }

    pub fn resp(packet_id: u16) -> PubResp {
        PubResp {
            packet_id,
            ..PubResp::default()
        }
    }
}
