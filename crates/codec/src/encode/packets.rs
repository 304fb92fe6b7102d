//! Encoding the bodies of CONNECT, CONNACK, PUBLISH, SUBSCRIBE, SUBACK,
//! UNSUBSCRIBE and UNSUBACK.

use super::props::{ReasonProps, SubscribeProps, WillProps, put_props};
use super::{Result, Sink, put_binary, put_packet_id, put_str};
use crate::error::EncodeError;
use crate::packet::{
    ConnAck, Connect, ProtocolVersion, Publish, QoS, SubAck, Subscribe, SubscriptionOptions,
    UnsubAck, Unsubscribe,
};

pub(super) fn connect<S: Sink>(c: &Connect, version: ProtocolVersion, s: &mut S) -> Result<()> {
    let (name, level): (&[u8], u8) = match version {
        ProtocolVersion::V3_1 => (b"MQIsdp", 3),
        ProtocolVersion::V3_1_1 => (b"MQTT", 4),
        ProtocolVersion::V5 => (b"MQTT", 5),
    };
    let v5 = version.is_v5();
    if !v5 && c.password.is_some() && c.username.is_none() {
        return Err(EncodeError::Invalid(
            "password without user name in mqtt 3.1.x",
        ));
    }
    let mut flags = u8::from(c.clean_start) << 1;
    if let Some(will) = &c.will {
        flags |= 0x04 | ((will.qos as u8) << 3) | (u8::from(will.retain) << 5);
    }
    flags |= u8::from(c.password.is_some()) << 6;
    flags |= u8::from(c.username.is_some()) << 7;

    put_binary(s, name)?;
    s.put_u8(level);
    s.put_u8(flags);
    s.put_u16(c.keep_alive);
    if v5 {
        put_props(s, &c.properties)?;
    }
    put_str(s, &c.client_id)?;
    if let Some(will) = &c.will {
        if v5 {
            put_props(s, &WillProps(will))?;
        }
        put_str(s, &will.topic)?;
        put_binary(s, &will.payload)?;
    }
    if let Some(username) = &c.username {
        put_str(s, username)?;
    }
    if let Some(password) = &c.password {
        put_binary(s, password)?;
    }
    Ok(())
}

pub(super) fn connack<S: Sink>(a: &ConnAck, v5: bool, s: &mut S) -> Result<()> {
    s.put_u8(u8::from(a.session_present));
    s.put_u8(a.code);
    if v5 {
        put_props(s, &a.properties)?;
    }
    Ok(())
}

pub(super) fn publish<S: Sink>(p: &Publish, v5: bool, s: &mut S) -> Result<()> {
    put_str(s, &p.topic)?;
    if p.qos != QoS::AtMostOnce {
        let id = p.packet_id.ok_or(EncodeError::Invalid(
            "qos 1 or 2 publish without a packet identifier",
        ))?;
        put_packet_id(s, id)?;
    }
    if v5 {
        put_props(s, &p.properties)?;
    }
    s.put_slice(&p.payload);
    Ok(())
}

pub(super) fn subscribe<S: Sink>(sub: &Subscribe, v5: bool, s: &mut S) -> Result<()> {
    if sub.filters.is_empty() {
        return Err(EncodeError::Invalid("subscribe without topic filters"));
    }
    put_packet_id(s, sub.packet_id)?;
    if v5 {
        let props = SubscribeProps {
            subscription_identifier: sub.subscription_identifier,
            user_properties: &sub.user_properties,
        };
        put_props(s, &props)?;
    }
    for (filter, options) in &sub.filters {
        put_str(s, filter)?;
        s.put_u8(options_byte(options, v5)?);
    }
    Ok(())
}

/// In 3.1.x only the QoS bits exist; the 5.0 options are dropped.
fn options_byte(o: &SubscriptionOptions, v5: bool) -> Result<u8> {
    let qos = o.qos as u8;
    if !v5 {
        return Ok(qos);
    }
    if o.retain_handling > 2 {
        return Err(EncodeError::Invalid("retain handling above 2"));
    }
    Ok(qos
        | (u8::from(o.no_local) << 2)
        | (u8::from(o.retain_as_published) << 3)
        | (o.retain_handling << 4))
}

pub(super) fn suback<S: Sink>(a: &SubAck, v5: bool, s: &mut S) -> Result<()> {
    if a.codes.is_empty() {
        return Err(EncodeError::Invalid("suback without return codes"));
    }
    put_packet_id(s, a.packet_id)?;
    if v5 {
        let props = ReasonProps {
            reason_string: a.reason_string.as_deref(),
            user_properties: &a.user_properties,
        };
        put_props(s, &props)?;
    }
    s.put_slice(&a.codes);
    Ok(())
}

pub(super) fn unsubscribe<S: Sink>(u: &Unsubscribe, v5: bool, s: &mut S) -> Result<()> {
    if u.filters.is_empty() {
        return Err(EncodeError::Invalid("unsubscribe without topic filters"));
    }
    put_packet_id(s, u.packet_id)?;
    if v5 {
        let props = ReasonProps {
            reason_string: None,
            user_properties: &u.user_properties,
        };
        put_props(s, &props)?;
    }
    for filter in &u.filters {
        put_str(s, filter)?;
    }
    Ok(())
}

pub(super) fn unsuback<S: Sink>(a: &UnsubAck, v5: bool, s: &mut S) -> Result<()> {
    put_packet_id(s, a.packet_id)?;
    if v5 {
        if a.codes.is_empty() {
            return Err(EncodeError::Invalid("unsuback without reason codes"));
        }
        let props = ReasonProps {
            reason_string: a.reason_string.as_deref(),
            user_properties: &a.user_properties,
        };
        put_props(s, &props)?;
        s.put_slice(&a.codes);
    }
    Ok(())
}
