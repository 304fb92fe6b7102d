//! A device for the cluster tests: the raw `Mqtt` client with every QoS flow
//! both ways (PUBACK; PUBREC → PUBREL → PUBCOMP), its own packet ids, and an
//! inbox for the PUBLISHes that arrive while it waits for something else.

use std::collections::VecDeque;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use throng_codec::{
    Connect, ConnectProperties, Packet, ProtocolVersion, PubResp, Publish, QoS, Subscribe,
    SubscriptionOptions,
};

use super::{Mqtt, WAIT, v5};

pub struct Device {
    pub id: String,
    pub mqtt: Mqtt,
    inbox: VecDeque<Publish>,
    next_packet_id: u16,
}

/// What one read from the socket brought.
enum Pumped {
    Nothing,
    /// A PUBLISH, acknowledged and put in the inbox.
    Message,
    /// Anything else but PUBREL (answered with PUBCOMP).
    Control(Box<Packet>),
}

/// Subscription options with `qos` and nothing else set.
pub fn sub_qos(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions {
        qos,
        ..SubscriptionOptions::default()
    }
}

pub fn qos_of(n: u8) -> QoS {
    QoS::from_u8(n).expect("QoS 0..=2")
}

fn resp(packet_id: u16) -> PubResp {
    PubResp {
        packet_id,
        ..PubResp::default()
    }
}

impl Device {
    /// Connects through `agent` with a clean session.
    pub fn connect(agent: SocketAddr, id: &str, version: ProtocolVersion) -> Device {
        Device::connect_with(agent, id, version, true, None).0
    }

    /// A session that outlives its connection: clean session 0 in 3.1.1; in 5,
    /// a session expiry of one hour, a clean start unless `resume`. Returns the
    /// session-present flag.
    pub fn connect_persistent(
        agent: SocketAddr,
        id: &str,
        version: ProtocolVersion,
        resume: bool,
    ) -> (Device, bool) {
        if version == v5() {
            Device::connect_with(agent, id, version, !resume, Some(3600))
        } else {
            Device::connect_with(agent, id, version, false, None)
        }
    }

    fn connect_with(
        agent: SocketAddr,
        id: &str,
        version: ProtocolVersion,
        clean: bool,
        expiry: Option<u32>,
    ) -> (Device, bool) {
        let mut mqtt = Mqtt::over(TcpStream::connect(agent).unwrap(), version);
        mqtt.send(&Packet::Connect(Box::new(Connect {
            protocol: Some(version),
            clean_start: clean,
            keep_alive: 60,
            client_id: id.to_owned(),
            properties: ConnectProperties {
                session_expiry_interval: expiry,
                ..ConnectProperties::default()
            },
            ..Connect::default()
        })));
        let present = match mqtt.recv() {
            Packet::ConnAck(ack) => {
                assert_eq!(ack.code, 0, "{id}: CONNACK {ack:?}");
                ack.session_present
            }
            other => panic!("{id}: expected CONNACK, got {other:?}"),
        };
        let device = Device {
            id: id.to_owned(),
            mqtt,
            inbox: VecDeque::new(),
            next_packet_id: 1,
        };
        (device, present)
    }

    fn packet_id(&mut self) -> u16 {
        let id = self.next_packet_id;
        self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
        id
    }

    /// Reads at most one packet within `within`.
    fn pump(&mut self, within: Duration) -> Pumped {
        let Some(packet) = self.mqtt.recv_within(within) else {
            return Pumped::Nothing;
        };
        match packet {
            Packet::Publish(publish) => {
                match (publish.qos, publish.packet_id) {
                    (QoS::AtLeastOnce, Some(id)) => self.mqtt.send(&Packet::PubAck(resp(id))),
                    (QoS::ExactlyOnce, Some(id)) => self.mqtt.send(&Packet::PubRec(resp(id))),
                    (QoS::AtMostOnce, None) => {}
                    _ => panic!("{}: PUBLISH with a bad packet id: {publish:?}", self.id),
                }
                self.inbox.push_back(publish);
                Pumped::Message
            }
            Packet::PubRel(rel) => {
                self.mqtt.send(&Packet::PubComp(resp(rel.packet_id)));
                Pumped::Nothing
            }
            other => Pumped::Control(Box::new(other)),
        }
    }

    /// The next packet that is not a PUBLISH (those go to the inbox), within 10 s.
    fn control(&mut self, what: &str) -> Packet {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "{}: no {what} within 10 s", self.id);
            if let Pumped::Control(packet) = self.pump(left) {
                return *packet;
            }
        }
    }

    /// The next message (acknowledged), or `None` if none comes within `within`.
    /// Fails on any other packet.
    pub fn next(&mut self, within: Duration) -> Option<Publish> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(publish) = self.inbox.pop_front() {
                return Some(publish);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            if let Pumped::Control(packet) = self.pump(left) {
                panic!("{}: unexpected {packet:?}", self.id);
            }
        }
    }

    /// The next message, which must come within [`WAIT`].
    pub fn expect(&mut self, what: &str) -> Publish {
        self.next(WAIT)
            .unwrap_or_else(|| panic!("{}: no message ({what}) within {WAIT:?}", self.id))
    }

    pub fn subscribe(&mut self, filter: &str, options: SubscriptionOptions) {
        let packet_id = self.packet_id();
        self.mqtt.send(&Packet::Subscribe(Subscribe {
            packet_id,
            filters: vec![(filter.to_owned(), options)],
            ..Subscribe::default()
        }));
        match self.control("SUBACK") {
            Packet::SubAck(ack) => {
                assert_eq!(ack.packet_id, packet_id);
                assert_eq!(
                    ack.codes,
                    vec![options.qos as u8],
                    "{}: SUBACK for {filter}",
                    self.id
                );
            }
            other => panic!("{}: expected SUBACK, got {other:?}", self.id),
        }
    }

    /// Publishes and completes the QoS flow (PUBACK, or PUBREC/PUBREL/PUBCOMP).
    pub fn publish(&mut self, topic: &str, payload: &[u8], qos: QoS, retain: bool) {
        let packet_id = (qos != QoS::AtMostOnce).then(|| self.packet_id());
        self.mqtt.send(&Packet::Publish(Publish {
            qos,
            retain,
            topic: topic.to_owned(),
            packet_id,
            payload: bytes::Bytes::copy_from_slice(payload),
            ..Publish::default()
        }));
        let Some(id) = packet_id else {
            return;
        };
        let (first, name) = match qos {
            QoS::AtLeastOnce => (self.control("PUBACK"), "PUBACK"),
            _ => (self.control("PUBREC"), "PUBREC"),
        };
        match (&first, qos) {
            (Packet::PubAck(ack), QoS::AtLeastOnce) | (Packet::PubRec(ack), QoS::ExactlyOnce) => {
                assert_eq!(ack.packet_id, id, "{}: {name}", self.id);
                assert!(ack.reason < 0x80, "{}: {name} {ack:?}", self.id);
            }
            _ => panic!("{}: expected {name} for {id}, got {first:?}", self.id),
        }
        if qos == QoS::ExactlyOnce {
            self.mqtt.send(&Packet::PubRel(resp(id)));
            match self.control("PUBCOMP") {
                Packet::PubComp(comp) => assert_eq!(comp.packet_id, id),
                other => panic!("{}: expected PUBCOMP, got {other:?}", self.id),
            }
        }
    }

    /// PINGREQ → PINGRESP: everything the handler wrote before is read by then.
    /// Returns the messages that came before the PINGRESP.
    pub fn sync(&mut self) -> Vec<Publish> {
        self.mqtt.send(&Packet::PingReq);
        match self.control("PINGRESP") {
            Packet::PingResp => {}
            other => panic!("{}: expected PINGRESP, got {other:?}", self.id),
        }
        self.inbox.drain(..).collect()
    }

    /// No message arrives: none is waiting now (ping round trip) and none
    /// comes within `within`.
    pub fn expect_quiet(&mut self, within: Duration) {
        let early = self.sync();
        assert!(early.is_empty(), "{}: unexpected {early:?}", self.id);
        if let Some(late) = self.next(within) {
            panic!("{}: unexpected {late:?}", self.id);
        }
    }

    pub fn disconnect(self) {
        self.mqtt.disconnect();
    }
}
