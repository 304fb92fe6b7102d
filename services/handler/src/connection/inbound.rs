//! Packets from a connected client: PUBLISH (QoS 0/1/2, topic aliases, ACL,
//! retained), the acknowledgement flow of both directions, SUBSCRIBE, UNSUBSCRIBE,
//! PINGREQ, DISCONNECT; anything else is a protocol error.

use std::sync::Arc;
use std::time::Duration;

use throng_codec::{
    Packet, PubResp, Publish, QoS, SubAck, Subscribe, UnsubAck, Unsubscribe, reason,
};
use tokio::time::Instant;

use super::{Close, Connection};
use crate::broker::{Departure, SubscribeOutcome};
use crate::message::Message;
use crate::metrics::DropReason;
use crate::session::InflightStage;

impl Connection {
    pub(super) fn on_packet(&mut self, packet: Packet, out: &mut Vec<u8>) -> Result<(), Close> {
        match packet {
            Packet::Publish(publish) => self.on_publish(publish, out),
            Packet::PubAck(ack) => {
                self.on_ack(ack.packet_id, InflightStage::AwaitingPubAck);
                Ok(())
            }
            Packet::PubRec(rec) => {
                self.on_pubrec(rec, out);
                Ok(())
            }
            Packet::PubComp(comp) => {
                self.on_ack(comp.packet_id, InflightStage::AwaitingPubComp);
                Ok(())
            }
            Packet::PubRel(rel) => {
                let known = self.session.state.lock().release_qos2(rel.packet_id);
                let code = if known {
                    reason::SUCCESS
                } else {
                    reason::PACKET_IDENTIFIER_NOT_FOUND
                };
                self.send(&Packet::PubComp(self.resp(rel.packet_id, code)), out);
                Ok(())
            }
            Packet::Subscribe(subscribe) => self.on_subscribe(subscribe, out),
            Packet::Unsubscribe(unsubscribe) => {
                self.on_unsubscribe(unsubscribe, out);
                Ok(())
            }
            Packet::PingReq => {
                self.send(&Packet::PingResp, out);
                Ok(())
            }
            Packet::Disconnect(disconnect) => {
                if let Some(expiry) = disconnect.session_expiry_interval {
                    if self.session_expiry_was_zero && expiry != 0 {
                        return Err(Close::Protocol(reason::PROTOCOL_ERROR));
                    }
                    let max = u32::try_from(self.broker.config.max_session_expiry.as_secs())
                        .unwrap_or(u32::MAX);
                    self.session.state.lock().expiry_interval = expiry.min(max);
                }
                let departure = if disconnect.reason == reason::DISCONNECT_WITH_WILL {
                    Departure::WithWill
                } else {
                    Departure::Clean
                };
                Err(Close::Disconnected(departure))
            }
            // No authentication method is ever agreed, so AUTH is out of place; so is
            // a second CONNECT and anything only a server sends.
            Packet::Auth(_)
            | Packet::Connect(_)
            | Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp => Err(Close::Protocol(reason::PROTOCOL_ERROR)),
        }
    }

    fn on_publish(&mut self, publish: Publish, out: &mut Vec<u8>) -> Result<(), Close> {
        self.broker.metrics.messages_received.inc();
        let topic = self.resolve_topic_alias(&publish)?;
        let packet_id = publish.packet_id.unwrap_or(0);
        if publish.qos == QoS::ExactlyOnce {
            let mut state = self.session.state.lock();
            let traffic = state.traffic();
            if traffic.incoming_qos2.contains(&packet_id) {
                // A resend of a message already accepted: acknowledge, do not route again.
                drop(state);
                self.send(&Packet::PubRec(self.resp(packet_id, reason::SUCCESS)), out);
                return Ok(());
            }
            if traffic.incoming_qos2.len() >= usize::from(self.broker.config.receive_maximum) {
                return Err(Close::Protocol(reason::RECEIVE_MAXIMUM_EXCEEDED));
            }
            traffic.incoming_qos2.push(packet_id);
        }
        let username = self.session.state.lock().username.clone();
        let allowed = !topic.starts_with("$SYS/")
            && self
                .broker
                .security
                .can_publish(&self.session.client_id, username.as_ref(), &topic);
        let code = if allowed {
            let mut properties = publish.properties;
            properties.topic_alias = None;
            properties.subscription_identifiers.clear();
            let expires_at = properties
                .message_expiry_interval
                .map(|secs| Instant::now() + Duration::from_secs(u64::from(secs)));
            let message = Arc::new(Message {
                topic,
                payload: publish.payload,
                qos: publish.qos,
                retain: publish.retain,
                properties,
                expires_at,
                origin: Some(self.session.client_id.clone()),
                published_at_ms: throng_downlink::unix_ms(),
            });
            let published = self.broker.publish_everywhere(message.clone());
            self.broker.uplink(&self.session.client_id, &message);
            if let Some(queue) = published.backpressure.clone() {
                self.wait_for_forwards(queue);
            }
            published.reason()
        } else {
            tracing::debug!(topic = %topic, "publish refused by acl");
            self.broker.metrics.dropped(DropReason::NotAuthorized);
            reason::NOT_AUTHORIZED
        };
        match publish.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.send(&Packet::PubAck(self.resp(packet_id, code)), out),
            QoS::ExactlyOnce => {
                if code == reason::NOT_AUTHORIZED && self.version.is_v5() {
                    // A refused QoS 2 message ends its flow at PUBREC.
                    self.session.state.lock().release_qos2(packet_id);
                }
                self.send(&Packet::PubRec(self.resp(packet_id, code)), out)
            }
        }
        Ok(())
    }

    /// The topic a PUBLISH is for, after applying (and learning) its topic alias.
    fn resolve_topic_alias(&mut self, publish: &Publish) -> Result<Arc<str>, Close> {
        let Some(alias) = publish.properties.topic_alias else {
            return Ok(Arc::from(publish.topic.as_str()));
        };
        if alias == 0 || alias > self.broker.config.topic_alias_maximum {
            return Err(Close::Protocol(reason::TOPIC_ALIAS_INVALID));
        }
        let aliases = &mut self.rare.get_or_insert_with(Box::default).aliases.inbound;
        if publish.topic.is_empty() {
            aliases
                .get(&alias)
                .cloned()
                .ok_or(Close::Protocol(reason::PROTOCOL_ERROR))
        } else {
            let topic: Arc<str> = Arc::from(publish.topic.as_str());
            aliases.insert(alias, topic.clone());
            Ok(topic)
        }
    }

    /// PUBACK or PUBCOMP: the message leaves the in-flight window.
    fn on_ack(&mut self, packet_id: u16, expected: InflightStage) {
        let mut state = self.session.state.lock();
        if let Some(traffic) = state.traffic.as_deref_mut()
            && let Some(pos) = traffic.inflight_position(packet_id)
            && traffic.inflight[pos].stage == expected
        {
            traffic.inflight.remove(pos);
            state.trim_traffic();
        }
    }

    fn on_pubrec(&mut self, rec: PubResp, out: &mut Vec<u8>) {
        let code = {
            let mut state = self.session.state.lock();
            let Some(traffic) = state.traffic.as_deref_mut() else {
                drop(state);
                let rel = self.resp(rec.packet_id, reason::PACKET_IDENTIFIER_NOT_FOUND);
                self.send(&Packet::PubRel(rel), out);
                return;
            };
            match traffic.inflight_position(rec.packet_id) {
                Some(pos) if rec.reason >= 0x80 => {
                    traffic.inflight.remove(pos);
                    state.trim_traffic();
                    return;
                }
                Some(pos) => {
                    traffic.inflight[pos].stage = InflightStage::AwaitingPubComp;
                    reason::SUCCESS
                }
                None => reason::PACKET_IDENTIFIER_NOT_FOUND,
            }
        };
        self.send(&Packet::PubRel(self.resp(rec.packet_id, code)), out);
    }

    fn on_subscribe(&mut self, subscribe: Subscribe, out: &mut Vec<u8>) -> Result<(), Close> {
        let mut codes = Vec::with_capacity(subscribe.filters.len());
        for (filter, options) in &subscribe.filters {
            let outcome = self.broker.subscribe(
                &self.session,
                self.version,
                filter,
                *options,
                subscribe.subscription_identifier,
            );
            codes.push(match outcome {
                SubscribeOutcome::Granted { qos, .. } => qos,
                SubscribeOutcome::Refused(code) if self.version.is_v5() => code,
                SubscribeOutcome::Refused(_) => reason::v3::SUBACK_FAILURE,
                SubscribeOutcome::ProtocolError => {
                    return Err(Close::Protocol(reason::PROTOCOL_ERROR));
                }
            });
        }
        let suback = Packet::SubAck(SubAck {
            packet_id: subscribe.packet_id,
            codes,
            ..SubAck::default()
        });
        self.send(&suback, out);
        Ok(())
    }

    fn on_unsubscribe(&mut self, unsubscribe: Unsubscribe, out: &mut Vec<u8>) {
        let codes: Vec<u8> = unsubscribe
            .filters
            .iter()
            .map(|filter| self.broker.unsubscribe(&self.session, filter))
            .collect();
        let unsuback = Packet::UnsubAck(UnsubAck {
            packet_id: unsubscribe.packet_id,
            codes: if self.version.is_v5() {
                codes
            } else {
                Vec::new()
            },
            ..UnsubAck::default()
        });
        self.send(&unsuback, out);
    }

    /// An acknowledgement packet body for this connection's version.
    pub(super) fn resp(&self, packet_id: u16, code: u8) -> PubResp {
        PubResp {
            packet_id,
            reason: if self.version.is_v5() { code } else { 0 },
            ..PubResp::default()
        }
    }

    pub(super) fn send(&self, packet: &Packet, out: &mut Vec<u8>) {
        if let Err(err) = throng_codec::encode(packet, self.version, out) {
            tracing::warn!(error = %err, "packet could not be encoded");
        }
    }
}
