//! Messages from the session to the client: the in-flight window (the client's
//! Receive Maximum), packet ids, redelivery with DUP after reconnect, expiry, the
//! client's Maximum Packet Size, and outgoing topic aliases.

use std::collections::HashMap;
use std::sync::Arc;

use throng_codec::{Packet, Publish, QoS, reason};
use tokio::time::Instant;

use super::Connection;
use crate::message::Delivery;
use crate::metrics::DropReason;
use crate::session::{Inflight, InflightStage};

/// Topic aliases of one connection, both directions.
#[derive(Debug, Default)]
pub(crate) struct Aliases {
    /// Aliases the client set for topics it publishes to.
    pub inbound: HashMap<u16, Arc<str>>,
    /// Aliases this server assigned towards the client.
    by_topic: HashMap<Arc<str>, u16>,
}

impl Connection {
    /// Sends queued messages while the in-flight window has room and the client's
    /// unwritten bytes stay under the high-water mark; the rest waits in the
    /// session's bounded queue.
    pub(super) fn drain_session(&mut self, out: &mut Vec<u8>) {
        let window = usize::from(
            self.client_receive_maximum
                .min(self.broker.config.receive_maximum),
        );
        let now = Instant::now();
        let session = self.session.clone();
        let mut state = session.state.lock();
        let Some(traffic) = state.traffic.as_deref_mut() else {
            return;
        };
        // Resumed messages first, in their original order and with their original ids;
        // a PUBREL is not a PUBLISH and needs no room in the window.
        let mut sent = traffic.inflight.iter().filter(|f| !f.resend).count();
        for inflight in traffic.inflight.iter_mut().filter(|f| f.resend) {
            if out.len() >= super::WRITE_HIGH_WATER {
                break;
            }
            if inflight.stage == InflightStage::AwaitingPubComp {
                let rel = Packet::PubRel(self.resp(inflight.packet_id, reason::SUCCESS));
                self.send(&rel, out);
            } else if sent < window {
                self.write_publish(&inflight.delivery, Some(inflight.packet_id), true, now, out);
            } else {
                continue;
            }
            inflight.resend = false;
            sent += 1;
        }
        while let Some(front) = traffic.queue.front() {
            if out.len() >= super::WRITE_HIGH_WATER {
                break;
            }
            if front.qos != QoS::AtMostOnce && traffic.inflight.len() >= window {
                break;
            }
            let delivery = traffic.queue.pop_front().expect("front exists");
            if delivery.message.is_expired(now) {
                self.broker.metrics.dropped(DropReason::Expired);
                continue;
            }
            let packet_id = match delivery.qos {
                QoS::AtMostOnce => None,
                _ => Some(traffic.allocate_packet_id()),
            };
            if !self.write_publish(&delivery, packet_id, false, now, out) {
                continue;
            }
            if let Some(packet_id) = packet_id {
                let stage = if delivery.qos == QoS::AtLeastOnce {
                    InflightStage::AwaitingPubAck
                } else {
                    InflightStage::AwaitingPubRec
                };
                traffic.inflight.push_back(Inflight {
                    packet_id,
                    stage,
                    delivery,
                    resend: false,
                });
            }
        }
        state.trim_traffic();
    }

    /// After a session is resumed: marks every unacknowledged message for resending
    /// (PUBLISH with DUP, or PUBREL where PUBREC had come); [`Self::drain_session`]
    /// sends them within the new connection's Receive Maximum (MQTT-3.3.4-9).
    pub(super) fn resend_inflight(&mut self) {
        if let Some(traffic) = self.session.state.lock().traffic.as_deref_mut() {
            for inflight in traffic.inflight.iter_mut() {
                inflight.resend = true;
            }
        }
    }

    /// Encodes one PUBLISH; false when it was dropped instead (too large for the client).
    fn write_publish(
        &mut self,
        delivery: &Delivery,
        packet_id: Option<u16>,
        dup: bool,
        now: Instant,
        out: &mut Vec<u8>,
    ) -> bool {
        let message = &delivery.message;
        let mut properties = if self.version.is_v5() {
            message.properties.clone()
        } else {
            Default::default()
        };
        let mut topic = String::from(&*message.topic);
        let mut new_alias = None;
        if self.version.is_v5() {
            properties.message_expiry_interval = message.remaining_expiry(now);
            properties.subscription_identifiers = delivery.subscription_ids.clone();
            if let Some((alias, known)) = self.outgoing_alias(&message.topic) {
                properties.topic_alias = Some(alias);
                if known {
                    topic.clear();
                } else {
                    new_alias = Some(alias);
                }
            }
        }
        let packet = Packet::Publish(Publish {
            dup,
            qos: delivery.qos,
            retain: delivery.retain,
            topic,
            packet_id,
            payload: message.payload.clone(),
            properties,
        });
        if self.client_max_packet_size != u32::MAX
            && throng_codec::encoded_len(&packet, self.version)
                > self.client_max_packet_size as usize
        {
            self.broker.metrics.dropped(DropReason::TooLarge);
            return false;
        }
        // Only a PUBLISH that is really sent teaches the client an alias.
        if let Some(alias) = new_alias {
            self.rare
                .get_or_insert_with(Box::default)
                .aliases
                .by_topic
                .insert(message.topic.clone(), alias);
        }
        self.send(&packet, out);
        self.broker.metrics.messages_sent.inc();
        true
    }

    /// The alias for `topic` and whether the client already knows it; `None` when the
    /// client takes no aliases or all are in use. A new alias is not recorded here:
    /// the caller records it once the PUBLISH carrying the topic is sent.
    fn outgoing_alias(&self, topic: &Arc<str>) -> Option<(u16, bool)> {
        if self.client_topic_alias_maximum == 0 {
            return None;
        }
        let by_topic = self.rare.as_ref().map(|r| &r.aliases.by_topic);
        if let Some(&alias) = by_topic.and_then(|b| b.get(topic)) {
            return Some((alias, true));
        }
        let next = u16::try_from(by_topic.map_or(0, |b| b.len()) + 1).ok()?;
        if next > self.client_topic_alias_maximum {
            return None;
        }
        Some((next, false))
    }
}
