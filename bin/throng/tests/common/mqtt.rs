//! A blocking raw MQTT client built on `throng-codec`: exact packets in and out,
//! an optional source address (127.0.0.x), and a view of exactly what arrives
//! before a close.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use throng_codec::{
    ConnAck, Connect, Packet, ProtocolVersion, PubResp, Publish, QoS, Subscribe,
    SubscriptionOptions,
};

/// A TCP connection to `addr` from source address `from` (any 127.0.0.x works on
/// Linux loopback).
pub fn tcp_from(from: IpAddr, addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::new(from, 0).into()).unwrap();
    socket.connect(&addr.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_nodelay(true).unwrap();
    stream
}

/// What a read found on a socket the peer may have closed.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadEnd {
    /// End of stream (FIN) or a reset, after these bytes.
    Closed(Vec<u8>),
    /// Still open when the read timeout passed, after these bytes.
    Open(Vec<u8>),
}

/// Reads until the peer closes or `within` passes.
pub fn read_until_closed(stream: &mut TcpStream, within: Duration) -> ReadEnd {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return ReadEnd::Open(got);
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return ReadEnd::Closed(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return ReadEnd::Open(got);
            }
            Err(err) if err.kind() == ErrorKind::ConnectionReset => return ReadEnd::Closed(got),
            Err(err) => panic!("read: {err}"),
        }
    }
}

/// A blocking raw MQTT client: exact packets in, exact packets out.
pub struct Mqtt {
    pub stream: TcpStream,
    pub version: ProtocolVersion,
    buf: BytesMut,
}

pub fn v311() -> ProtocolVersion {
    ProtocolVersion::V3_1_1
}

pub fn v5() -> ProtocolVersion {
    ProtocolVersion::V5
}

pub fn connect_packet(client_id: &str, version: ProtocolVersion, clean: bool) -> Packet {
    Packet::Connect(Box::new(Connect {
        protocol: Some(version),
        clean_start: clean,
        keep_alive: 60,
        client_id: client_id.to_owned(),
        ..Connect::default()
    }))
}

pub fn encode(packet: &Packet, version: ProtocolVersion) -> Vec<u8> {
    let mut out = Vec::new();
    throng_codec::encode(packet, version, &mut out).unwrap();
    out
}

impl Mqtt {
    pub fn over(stream: TcpStream, version: ProtocolVersion) -> Mqtt {
        stream.set_nodelay(true).unwrap();
        Mqtt {
            stream,
            version,
            buf: BytesMut::new(),
        }
    }

    /// Sends CONNECT on `stream` and returns the CONNACK, whatever its code.
    pub fn handshake(
        stream: TcpStream,
        client_id: &str,
        version: ProtocolVersion,
        clean: bool,
    ) -> (Mqtt, ConnAck) {
        let mut client = Mqtt::over(stream, version);
        client.send(&connect_packet(client_id, version, clean));
        match client.recv() {
            Packet::ConnAck(ack) => (client, ack),
            other => panic!("{client_id}: expected CONNACK, got {other:?}"),
        }
    }

    /// Connects through `agent` and expects the CONNACK to accept.
    pub fn connect(agent: SocketAddr, client_id: &str, version: ProtocolVersion) -> Mqtt {
        Mqtt::connect_session(agent, client_id, version, true).0
    }

    /// As `connect`, with `clean` chosen; returns the session-present flag too.
    pub fn connect_session(
        agent: SocketAddr,
        client_id: &str,
        version: ProtocolVersion,
        clean: bool,
    ) -> (Mqtt, bool) {
        let (client, ack) = Mqtt::handshake(
            TcpStream::connect(agent).unwrap(),
            client_id,
            version,
            clean,
        );
        assert_eq!(ack.code, 0, "{client_id}: CONNACK {ack:?}");
        (client, ack.session_present)
    }

    pub fn send(&mut self, packet: &Packet) {
        self.stream
            .write_all(&encode(packet, self.version))
            .unwrap();
    }

    /// The next packet, within 10 s.
    pub fn recv(&mut self) -> Packet {
        self.recv_within(Duration::from_secs(10))
            .expect("no packet within 10 s")
    }

    /// The next packet, or `None` if none came within `within`; panics if the
    /// connection closes.
    pub fn recv_within(&mut self, within: Duration) -> Option<Packet> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(packet) =
                throng_codec::read_packet(&mut self.buf, self.version, 1 << 20).unwrap()
            {
                return Some(packet);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!("connection closed while waiting for a packet"),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return None;
                }
                Err(err) => panic!("read: {err}"),
            }
        }
    }

    /// PINGREQ → PINGRESP.
    pub fn ping(&mut self) {
        self.send(&Packet::PingReq);
        assert_eq!(self.recv(), Packet::PingResp);
    }

    pub fn subscribe(&mut self, filter: &str, qos: QoS) {
        self.send(&Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![(
                filter.to_owned(),
                SubscriptionOptions {
                    qos,
                    ..SubscriptionOptions::default()
                },
            )],
            ..Subscribe::default()
        }));
        match self.recv() {
            Packet::SubAck(ack) => assert_eq!(ack.codes, vec![qos as u8], "SUBACK {ack:?}"),
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// QoS 0 or QoS 1 (waits for the PUBACK).
    pub fn publish(&mut self, topic: &str, payload: &[u8], qos: QoS) {
        self.send(&publish_packet(topic, payload, qos));
        if qos == QoS::AtLeastOnce {
            match self.recv() {
                Packet::PubAck(ack) => assert_eq!(ack.packet_id, 7),
                other => panic!("expected PUBACK, got {other:?}"),
            }
        }
    }

    /// The next PUBLISH (acknowledged if QoS 1), skipping nothing else.
    pub fn expect_publish(&mut self) -> Publish {
        match self.recv() {
            Packet::Publish(publish) => {
                if let (QoS::AtLeastOnce, Some(packet_id)) = (publish.qos, publish.packet_id) {
                    self.send(&Packet::PubAck(PubResp {
                        packet_id,
                        ..PubResp::default()
                    }));
                }
                publish
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    /// Sends DISCONNECT and closes the socket.
    pub fn disconnect(mut self) {
        let disconnect = Packet::Disconnect(throng_codec::Disconnect::default());
        self.send(&disconnect);
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    /// Expects the connection to end within `within` with nothing more received.
    pub fn expect_closed(&mut self, within: Duration) {
        assert!(self.buf.is_empty(), "unread bytes: {:?}", self.buf);
        match read_until_closed(&mut self.stream, within) {
            ReadEnd::Closed(rest) => assert!(rest.is_empty(), "bytes before close: {rest:?}"),
            ReadEnd::Open(rest) => panic!("still open after {within:?} (got {rest:?})"),
        }
    }
}

/// A PUBLISH with packet id 7 when QoS > 0.
pub fn publish_packet(topic: &str, payload: &[u8], qos: QoS) -> Packet {
    Packet::Publish(Publish {
        qos,
        topic: topic.to_owned(),
        packet_id: (qos != QoS::AtMostOnce).then_some(7),
        payload: bytes::Bytes::copy_from_slice(payload),
        ..Publish::default()
    })
}
