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

/// Topic aliases this server assigned towards the client.
#[derive(Debug, Default)]
pub(crate) struct AliasesOut {
    by_topic: HashMap<Arc<str>, u16>,
}

impl Connection {
    /// Sends queued messages while the in-flight window has room.
    pub(super) fn drain_session(&mut self, out: &mut Vec<u8>) {
        let window = usize::from(
            self.client_receive_maximum
                .min(self.broker.config.receive_maximum),
        );
        let now = Instant::now();
        let session = self.session.clone();
        let mut state = session.state.lock();
        while let Some(front) = state.queue.front() {
            if front.qos != QoS::AtMostOnce && state.inflight.len() >= window {
                break;
            }
            let delivery = state.queue.pop_front().expect("front exists");
            if delivery.message.is_expired(now) {
                self.broker.metrics.dropped(DropReason::Expired);
                continue;
            }
            let packet_id = match delivery.qos {
                QoS::AtMostOnce => None,
                _ => Some(state.allocate_packet_id()),
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
                state.inflight.push_back(Inflight {
                    packet_id,
                    stage,
                    delivery,
                });
            }
        }
    }

    /// After a session is resumed: every unacknowledged message again, with DUP, or
    /// PUBREL where PUBREC had come.
    pub(super) fn resend_inflight(&mut self, out: &mut Vec<u8>) {
        let now = Instant::now();
        let session = self.session.clone();
        let state = session.state.lock();
        for inflight in &state.inflight {
            match inflight.stage {
                InflightStage::AwaitingPubComp => {
                    let rel = Packet::PubRel(self.resp(inflight.packet_id, reason::SUCCESS));
                    self.send(&rel, out);
                }
                _ => {
                    self.write_publish(
                        &inflight.delivery,
                        Some(inflight.packet_id),
                        true,
                        now,
                        out,
                    );
                }
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
        if self.version.is_v5() {
            properties.message_expiry_interval = message.remaining_expiry(now);
            properties.subscription_identifiers = delivery.subscription_ids.clone();
            if let Some((alias, known)) = self.outgoing_alias(&message.topic) {
                properties.topic_alias = Some(alias);
                if known {
                    topic.clear();
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
        self.send(&packet, out);
        self.broker.metrics.messages_sent.inc();
        true
    }

    /// The alias for `topic` and whether the client already knows it; `None` when the
    /// client takes no aliases or all are in use.
    fn outgoing_alias(&mut self, topic: &Arc<str>) -> Option<(u16, bool)> {
        if self.client_topic_alias_maximum == 0 {
            return None;
        }
        let aliases = self.aliases_out.get_or_insert_with(Box::default);
        if let Some(&alias) = aliases.by_topic.get(topic) {
            return Some((alias, true));
        }
        let next = u16::try_from(aliases.by_topic.len() + 1).ok()?;
        if next > self.client_topic_alias_maximum {
            return None;
        }
        aliases.by_topic.insert(topic.clone(), next);
        Some((next, false))
    }
}
