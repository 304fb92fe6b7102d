//! Decoding SUBSCRIBE, SUBACK, UNSUBSCRIBE and UNSUBACK.

use super::{Result, check_code, packet_id};
use crate::codes;
use crate::error::DecodeError;
use crate::packet::{
    ProtocolVersion, QoS, SubAck, Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe,
};
use crate::prop::{Prop, not_allowed, once, push_user, read_props, reason_props};
use crate::read::Reader;

/// SUBSCRIBE. Topic filters are checked as UTF-8 strings only; their syntax
/// is the topic matcher's concern (a 5.0 server answers 0x8F per filter).
pub(super) fn subscribe(r: &mut Reader<'_>, version: ProtocolVersion) -> Result<Subscribe> {
    let v5 = version.is_v5();
    let mut s = Subscribe {
        packet_id: packet_id(r, version)?,
        ..Subscribe::default()
    };
    if v5 {
        read_props(r, |prop| match prop {
            Prop::SubscriptionIdentifier(v) => once(&mut s.subscription_identifier, v),
            Prop::UserProperty(k, v) => {
                push_user(&mut s.user_properties, k, v);
                Ok(())
            }
            _ => Err(not_allowed()),
        })?;
    }
    while !r.is_empty() {
        let filter = r.str()?;
        let options = options(r.u8()?, v5)?;
        if options.no_local && filter.starts_with("$share/") {
            return Err(DecodeError::ProtocolError(
                "no local set on a shared subscription",
            ));
        }
        s.filters.push((filter.to_owned(), options));
    }
    if s.filters.is_empty() {
        return Err(DecodeError::ProtocolError(
            "subscribe without topic filters",
        ));
    }
    Ok(s)
}

/// The Subscription Options byte. In 3.1.x only the QoS bits may be set.
fn options(byte: u8, v5: bool) -> Result<SubscriptionOptions> {
    let reserved = if v5 { 0xC0 } else { 0xFC };
    if byte & reserved != 0 {
        return Err(DecodeError::MalformedPacket(
            "subscription options reserved bits set",
        ));
    }
    let qos =
        QoS::from_u8(byte & 0x03).ok_or(DecodeError::MalformedPacket("subscription qos 3"))?;
    let retain_handling = (byte >> 4) & 0x03;
    if retain_handling == 3 {
        return Err(DecodeError::MalformedPacket("retain handling 3"));
    }
    Ok(SubscriptionOptions {
        qos,
        no_local: byte & 0x04 != 0,
        retain_as_published: byte & 0x08 != 0,
        retain_handling,
    })
}

/// SUBACK: one return/reason code per filter of the SUBSCRIBE.
pub(super) fn suback(r: &mut Reader<'_>, version: ProtocolVersion) -> Result<SubAck> {
    let v5 = version.is_v5();
    let mut s = SubAck {
        packet_id: packet_id(r, version)?,
        ..SubAck::default()
    };
    if v5 {
        read_props(r, |prop| {
            reason_props(prop, &mut s.reason_string, &mut s.user_properties)
        })?;
    }
    let allowed = if v5 {
        codes::SUBACK_V5
    } else {
        codes::SUBACK_V3
    };
    s.codes = ack_codes(r.rest(), allowed, "suback without return codes")?;
    Ok(s)
}

/// UNSUBSCRIBE: one or more topic filters.
pub(super) fn unsubscribe(r: &mut Reader<'_>, version: ProtocolVersion) -> Result<Unsubscribe> {
    let mut u = Unsubscribe {
        packet_id: packet_id(r, version)?,
        ..Unsubscribe::default()
    };
    if version.is_v5() {
        read_props(r, |prop| match prop {
            Prop::UserProperty(k, v) => {
                push_user(&mut u.user_properties, k, v);
                Ok(())
            }
            _ => Err(not_allowed()),
        })?;
    }
    while !r.is_empty() {
        u.filters.push(r.str()?.to_owned());
    }
    if u.filters.is_empty() {
        return Err(DecodeError::ProtocolError(
            "unsubscribe without topic filters",
        ));
    }
    Ok(u)
}

/// UNSUBACK: just the packet identifier in 3.1.x; properties and one reason
/// code per filter in 5.0.
pub(super) fn unsuback(r: &mut Reader<'_>, version: ProtocolVersion) -> Result<UnsubAck> {
    let mut u = UnsubAck {
        packet_id: packet_id(r, version)?,
        ..UnsubAck::default()
    };
    if version.is_v5() {
        read_props(r, |prop| {
            reason_props(prop, &mut u.reason_string, &mut u.user_properties)
        })?;
        u.codes = ack_codes(r.rest(), codes::UNSUBACK, "unsuback without reason codes")?;
    }
    r.finish("trailing bytes after unsuback")?;
    Ok(u)
}

fn ack_codes(bytes: &[u8], allowed: &[u8], empty: &'static str) -> Result<Vec<u8>> {
    if bytes.is_empty() {
        return Err(DecodeError::ProtocolError(empty));
    }
    for &code in bytes {
        check_code(allowed, code)?;
    }
    Ok(bytes.to_vec())
}
