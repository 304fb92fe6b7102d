//! MQTT 3.1.1 helpers: a rumqttc client whose event loop runs in a task and feeds a
//! channel (no reconnects; dropping it cuts the socket without DISCONNECT), and
//! raw-packet shortcuts for byte-exact tests.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, Incoming, MqttOptions, Publish, QoS, SubscribeReasonCode,
};
use throng_codec::{
    ConnAck, Connect, Packet, ProtocolVersion, QoS as WireQoS, Subscribe, SubscriptionOptions,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::RawClient;

const WAIT: Duration = Duration::from_secs(5);

/// Options for a client of the test server: keepalive 30 s, clean session.
pub fn options(addr: SocketAddr, client_id: &str) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(1024 * 1024, 1024 * 1024);
    options
}

/// A connected rumqttc client.
pub struct Mqtt3 {
    pub client: AsyncClient,
    events: mpsc::UnboundedReceiver<Result<Incoming, String>>,
    /// Publishes seen while waiting for something else.
    publishes: VecDeque<Publish>,
    task: JoinHandle<()>,
}

impl Drop for Mqtt3 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Mqtt3 {
    /// Connects with default options and a clean session; panics when refused.
    pub async fn connect(addr: SocketAddr, client_id: &str) -> Mqtt3 {
        Mqtt3::connect_with(options(addr, client_id))
            .await
            .expect("connect refused")
            .0
    }

    /// Connects; returns the client and the CONNACK's session present flag, or the
    /// refusal's return code.
    pub async fn connect_with(options: MqttOptions) -> Result<(Mqtt3, bool), ConnectReturnCode> {
        let (client, mut eventloop) = AsyncClient::new(options, 1000);
        let (tx, events) = mpsc::unbounded_channel();
        let (ack_tx, ack_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut ack_tx = Some(ack_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                        if let Some(ack_tx) = ack_tx.take() {
                            let _ = ack_tx.send(Ok(ack.session_present));
                        }
                    }
                    Ok(Event::Incoming(incoming)) => {
                        let _ = tx.send(Ok(incoming));
                    }
                    Ok(Event::Outgoing(_)) => {}
                    Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
                        if let Some(ack_tx) = ack_tx.take() {
                            let _ = ack_tx.send(Err(code));
                        }
                        return;
                    }
                    Err(err) => {
                        let _ = tx.send(Err(err.to_string()));
                        return;
                    }
                }
            }
        });
        let session_present = tokio::time::timeout(WAIT, ack_rx)
            .await
            .expect("no CONNACK within 5 s")
            .expect("connection failed before CONNACK")?;
        Ok((
            Mqtt3 {
                client,
                events,
                publishes: VecDeque::new(),
                task,
            },
            session_present,
        ))
    }

    async fn next_event(&mut self, within: Duration) -> Option<Result<Incoming, String>> {
        tokio::time::timeout(within, self.events.recv())
            .await
            .ok()
            .flatten()
    }

    /// Waits for an incoming packet matching `pred`, keeping publishes seen meanwhile.
    async fn wait_for(&mut self, what: &str, pred: impl Fn(&Incoming) -> bool) -> Incoming {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Some(Ok(incoming)) if pred(&incoming) => return incoming,
                Some(Ok(Incoming::Publish(publish))) => self.publishes.push_back(publish),
                Some(Ok(_)) => {}
                Some(Err(err)) => panic!("connection failed waiting for {what}: {err}"),
                None => panic!("no {what} within 5 s"),
            }
        }
    }

    /// The next PUBLISH received; panics after 5 s.
    pub async fn recv(&mut self) -> Publish {
        self.recv_within(WAIT).await.expect("no PUBLISH within 5 s")
    }

    /// The next PUBLISH received within `within`, if any.
    pub async fn recv_within(&mut self, within: Duration) -> Option<Publish> {
        if let Some(publish) = self.publishes.pop_front() {
            return Some(publish);
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await? {
                Ok(Incoming::Publish(publish)) => return Some(publish),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// Asserts that no PUBLISH arrives within `within`.
    pub async fn assert_silent(&mut self, within: Duration) {
        if let Some(publish) = self.recv_within(within).await {
            panic!("unexpected PUBLISH: {publish:?}");
        }
    }

    /// Subscribes and returns the SUBACK codes.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> Vec<SubscribeReasonCode> {
        self.client.subscribe(filter, qos).await.unwrap();
        match self
            .wait_for("SUBACK", |i| matches!(i, Incoming::SubAck(_)))
            .await
        {
            Incoming::SubAck(ack) => ack.return_codes,
            _ => unreachable!(),
        }
    }

    /// Subscribes to several filters in one SUBSCRIBE and returns the SUBACK codes.
    pub async fn subscribe_many(&mut self, filters: &[(&str, QoS)]) -> Vec<SubscribeReasonCode> {
        let filters = filters
            .iter()
            .map(|(filter, qos)| rumqttc::SubscribeFilter::new(filter.to_string(), *qos));
        self.client.subscribe_many(filters).await.unwrap();
        match self
            .wait_for("SUBACK", |i| matches!(i, Incoming::SubAck(_)))
            .await
        {
            Incoming::SubAck(ack) => ack.return_codes,
            _ => unreachable!(),
        }
    }

    /// Publishes and, for QoS 1/2, waits for the flow to complete.
    pub async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: &[u8]) {
        self.client
            .publish(topic, qos, retain, payload.to_vec())
            .await
            .unwrap();
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                self.wait_for("PUBACK", |i| matches!(i, Incoming::PubAck(_)))
                    .await;
            }
            QoS::ExactlyOnce => {
                self.wait_for("PUBCOMP", |i| matches!(i, Incoming::PubComp(_)))
                    .await;
            }
        }
    }

    /// A SUBSCRIBE/SUBACK round trip: everything sent before it has been processed.
    pub async fn sync(&mut self) {
        self.client
            .subscribe("throng-test/sync", QoS::AtMostOnce)
            .await
            .unwrap();
        self.wait_for("SUBACK", |i| matches!(i, Incoming::SubAck(_)))
            .await;
    }

    /// Sends DISCONNECT and waits for the connection to end.
    pub async fn disconnect(mut self) {
        self.client.disconnect().await.unwrap();
        let _ = tokio::time::timeout(WAIT, async {
            while let Some(Ok(_)) = self.events.recv().await {}
        })
        .await;
    }

    /// True when the connection ends (server closed it) within `within`.
    pub async fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.events.recv()).await {
                Err(_) => return false,
                Ok(None) | Ok(Some(Err(_))) => return true,
                Ok(Some(Ok(_))) => {}
            }
        }
    }
}

/// A v3.1.1 CONNECT packet.
pub fn connect_packet(client_id: &str, clean: bool, keep_alive: u16) -> Packet {
    Packet::Connect(Box::new(Connect {
        protocol: Some(ProtocolVersion::V3_1_1),
        clean_start: clean,
        keep_alive,
        client_id: client_id.into(),
        ..Connect::default()
    }))
}

/// Opens a raw connection, sends `connect` and returns the CONNACK.
pub async fn raw_connect(addr: SocketAddr, connect: Packet) -> (RawClient, ConnAck) {
    let version = match &connect {
        Packet::Connect(c) => c.protocol.unwrap_or(ProtocolVersion::V3_1_1),
        _ => ProtocolVersion::V3_1_1,
    };
    let mut client = RawClient::connect(addr, version).await;
    client.send(&connect).await;
    match client.recv().await {
        Some(Packet::ConnAck(ack)) => (client, ack),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

/// Raw v3.1.1 client with a clean session, CONNACK checked.
pub async fn raw_v3(addr: SocketAddr, client_id: &str) -> RawClient {
    let (client, ack) = raw_connect(addr, connect_packet(client_id, true, 30)).await;
    assert_eq!(ack.code, 0, "connect refused");
    client
}

/// A raw connection with a 16 KiB receive buffer, so a client that stops reading
/// backs up into the server quickly.
pub async fn raw_small_rcvbuf(addr: SocketAddr) -> RawClient {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    RawClient {
        stream: socket.connect(addr).await.unwrap(),
        version: ProtocolVersion::V3_1_1,
        buf: bytes::BytesMut::new(),
    }
}

/// A bare CONNECT frame with any protocol name and level (for refusals the codec
/// cannot encode).
pub fn connect_bytes(name: &[u8], level: u8, flags: u8, client_id: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(name.len() as u16).to_be_bytes());
    body.extend_from_slice(name);
    body.push(level);
    body.push(flags);
    body.extend_from_slice(&30u16.to_be_bytes());
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    let mut frame = vec![0x10, body.len() as u8];
    frame.extend_from_slice(&body);
    frame
}

/// Subscribes a raw client to one filter and checks the SUBACK grants `qos`.
pub async fn raw_subscribe(raw: &mut RawClient, filter: &str, qos: WireQoS) {
    raw.send(&Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![(
            filter.into(),
            SubscriptionOptions {
                qos,
                ..Default::default()
            },
        )],
        ..Subscribe::default()
    }))
    .await;
    match raw.recv().await {
        Some(Packet::SubAck(ack)) => assert_eq!(ack.codes, vec![qos as u8]),
        other => panic!("expected SUBACK, got {other:?}"),
    }
}
