//! Decoding PUBLISH: fixed-header flags, topic name rules, packet identifier,
//! properties and payload.

use super::{Result, packet_id, violation};
use crate::error::DecodeError;
use crate::packet::{ProtocolVersion, Publish, PublishProperties, QoS};
use crate::prop::{Prop, has_wildcard, not_allowed, once, publish_common, read_props};
use crate::read::{Ctx, Reader};

/// PUBLISH. Subscription identifiers are accepted (a client receives them);
/// a server must reject them on PUBLISH packets from clients.
pub(super) fn publish(
    flags: u8,
    r: &mut Reader<'_>,
    version: ProtocolVersion,
    ctx: Ctx<'_>,
) -> Result<Publish> {
    let v5 = version.is_v5();
    let dup = flags & 0x08 != 0;
    let qos =
        QoS::from_u8((flags >> 1) & 0x03).ok_or(DecodeError::MalformedPacket("publish qos 3"))?;
    if dup && qos == QoS::AtMostOnce {
        return Err(violation(version, "dup set on a qos 0 publish"));
    }
    let topic = r.str()?;
    if has_wildcard(topic) {
        return Err(DecodeError::TopicNameInvalid);
    }
    if topic.is_empty() && !v5 {
        return Err(DecodeError::TopicNameInvalid);
    }
    let packet_id = match qos {
        QoS::AtMostOnce => None,
        _ => Some(packet_id(r, version)?),
    };
    let mut properties = PublishProperties::default();
    if v5 {
        let p = &mut properties;
        read_props(r, |prop| match publish_common(p, prop, ctx)? {
            None => Ok(()),
            Some(Prop::TopicAlias(v)) => once(&mut p.topic_alias, v),
            Some(Prop::SubscriptionIdentifier(v)) => {
                p.subscription_identifiers.push(v);
                Ok(())
            }
            Some(_) => Err(not_allowed()),
        })?;
        if topic.is_empty() && properties.topic_alias.is_none() {
            return Err(DecodeError::ProtocolError(
                "empty topic name without topic alias",
            ));
        }
    }
    Ok(Publish {
        dup,
        qos,
        retain: flags & 0x01 != 0,
        topic: topic.to_owned(),
        packet_id,
        payload: ctx.bytes(r.rest()),
        properties,
    })
}
