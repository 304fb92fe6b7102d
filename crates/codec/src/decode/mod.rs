//! Decoding one whole frame into a [`Packet`]: fixed-header validation and
//! dispatch, plus the small packets (PUBACK family, PING, DISCONNECT, AUTH).
//! CONNECT/CONNACK, PUBLISH and the subscription packets have their own files.

mod connect;
mod publish;
mod subscribe;

use crate::codes;
use crate::error::DecodeError;
use crate::frame::fixed_header;
use crate::packet::{Auth, Disconnect, Packet, ProtocolVersion, PubResp};
use crate::prop::{Prop, not_allowed, once, push_user, read_props, reason_props};
use crate::read::{Ctx, Reader};
use bytes::Bytes;

type Result<T> = std::result::Result<T, DecodeError>;

/// Decodes exactly one frame (as delimited by [`check`](crate::check)).
///
/// `version` is the one negotiated by the connection's CONNECT; a CONNECT
/// itself ignores it and reports the version it names in `Connect::protocol`.
/// String, topic and binary fields are copied out of `frame`.
///
/// Direction-dependent rules are left to the caller, which knows who sent the
/// packet: a server must still reject a PUBLISH from a client that carries
/// subscription identifiers, and topic filters are not validated here.
pub fn decode(frame: &[u8], version: ProtocolVersion) -> Result<Packet> {
    decode_with(frame, version, Ctx::copying())
}

/// Like [`decode`], but payloads and other binary fields are slices of
/// `frame` instead of copies. They keep the whole of `frame`'s allocation
/// alive, so use this only when frames are not carved from a long-lived
/// read buffer.
pub fn decode_bytes(frame: &Bytes, version: ProtocolVersion) -> Result<Packet> {
    decode_with(frame, version, Ctx::sharing(frame))
}

fn decode_with(frame: &[u8], version: ProtocolVersion, ctx: Ctx<'_>) -> Result<Packet> {
    let Some((header_len, remaining)) = fixed_header(frame)? else {
        return Err(DecodeError::MalformedPacket("incomplete fixed header"));
    };
    if header_len + remaining != frame.len() {
        return Err(DecodeError::MalformedPacket(
            "frame length does not match remaining length",
        ));
    }
    let kind = frame[0] >> 4;
    let flags = frame[0] & 0x0F;
    let mut r = Reader::new(&frame[header_len..]);
    let v5 = version.is_v5();
    Ok(match kind {
        1 => {
            expect_flags(flags, 0)?;
            Packet::Connect(Box::new(connect::connect(&mut r, ctx)?))
        }
        2 => {
            expect_flags(flags, 0)?;
            Packet::ConnAck(connect::connack(&mut r, version, ctx)?)
        }
        3 => Packet::Publish(publish::publish(flags, &mut r, version, ctx)?),
        4 => {
            expect_flags(flags, 0)?;
            Packet::PubAck(pub_resp(&mut r, version, codes::PUBACK)?)
        }
        5 => {
            expect_flags(flags, 0)?;
            Packet::PubRec(pub_resp(&mut r, version, codes::PUBACK)?)
        }
        6 => {
            expect_flags_qos1(flags, version)?;
            Packet::PubRel(pub_resp(&mut r, version, codes::PUBREL)?)
        }
        7 => {
            expect_flags(flags, 0)?;
            Packet::PubComp(pub_resp(&mut r, version, codes::PUBREL)?)
        }
        8 => {
            expect_flags_qos1(flags, version)?;
            Packet::Subscribe(subscribe::subscribe(&mut r, version)?)
        }
        9 => {
            expect_flags(flags, 0)?;
            Packet::SubAck(subscribe::suback(&mut r, version)?)
        }
        10 => {
            expect_flags_qos1(flags, version)?;
            Packet::Unsubscribe(subscribe::unsubscribe(&mut r, version)?)
        }
        11 => {
            expect_flags(flags, 0)?;
            Packet::UnsubAck(subscribe::unsuback(&mut r, version)?)
        }
        12 => {
            expect_flags(flags, 0)?;
            r.finish("pingreq with a body")?;
            Packet::PingReq
        }
        13 => {
            expect_flags(flags, 0)?;
            r.finish("pingresp with a body")?;
            Packet::PingResp
        }
        14 => {
            expect_flags(flags, 0)?;
            Packet::Disconnect(disconnect(&mut r, v5)?)
        }
        15 if v5 => {
            expect_flags(flags, 0)?;
            Packet::Auth(auth(&mut r, ctx)?)
        }
        _ => return Err(DecodeError::MalformedPacket("reserved packet type")),
    })
}

fn expect_flags(flags: u8, want: u8) -> Result<()> {
    if flags == want {
        Ok(())
    } else {
        Err(DecodeError::MalformedPacket("invalid fixed header flags"))
    }
}

/// PUBREL, SUBSCRIBE and UNSUBSCRIBE carry flags 0b0010. MQTT 3.1 clients may
/// also set DUP on a retry, which 3.1 allowed.
fn expect_flags_qos1(flags: u8, version: ProtocolVersion) -> Result<()> {
    if version == ProtocolVersion::V3_1 && flags == 0b1010 {
        return Ok(());
    }
    expect_flags(flags, 0b0010)
}

/// A rule violation: a Protocol Error in 5.0; 3.1.x treats every violation
/// as a malformed packet.
pub(crate) fn violation(version: ProtocolVersion, msg: &'static str) -> DecodeError {
    if version.is_v5() {
        DecodeError::ProtocolError(msg)
    } else {
        DecodeError::MalformedPacket(msg)
    }
}

pub(crate) fn packet_id(r: &mut Reader<'_>, version: ProtocolVersion) -> Result<u16> {
    match r.u16()? {
        0 => Err(violation(version, "packet identifier 0")),
        id => Ok(id),
    }
}

pub(crate) fn check_code(allowed: &[u8], code: u8) -> Result<()> {
    if allowed.contains(&code) {
        Ok(())
    } else {
        Err(DecodeError::ProtocolError("invalid reason code"))
    }
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP. In 5.0 the reason code and properties
/// may be omitted (remaining length 2), or only the properties (length 3).
fn pub_resp(r: &mut Reader<'_>, version: ProtocolVersion, allowed: &[u8]) -> Result<PubResp> {
    let mut p = PubResp {
        packet_id: packet_id(r, version)?,
        ..PubResp::default()
    };
    if version.is_v5() && !r.is_empty() {
        p.reason = r.u8()?;
        check_code(allowed, p.reason)?;
        if !r.is_empty() {
            read_props(r, |prop| {
                reason_props(prop, &mut p.reason_string, &mut p.user_properties)
            })?;
        }
    }
    r.finish("trailing bytes after acknowledgement")?;
    Ok(p)
}

/// DISCONNECT: empty in 3.1.x; in 5.0 the reason code and properties may be
/// omitted (remaining length 0), or only the properties (length 1).
fn disconnect(r: &mut Reader<'_>, v5: bool) -> Result<Disconnect> {
    let mut d = Disconnect::default();
    if v5 && !r.is_empty() {
        d.reason = r.u8()?;
        check_code(codes::DISCONNECT, d.reason)?;
        if !r.is_empty() {
            read_props(r, |prop| match prop {
                Prop::SessionExpiryInterval(v) => once(&mut d.session_expiry_interval, v),
                Prop::ReasonString(v) => once(&mut d.reason_string, v.to_owned()),
                Prop::ServerReference(v) => once(&mut d.server_reference, v.to_owned()),
                Prop::UserProperty(k, v) => {
                    push_user(&mut d.user_properties, k, v);
                    Ok(())
                }
                _ => Err(not_allowed()),
            })?;
        }
    }
    r.finish("trailing bytes after disconnect")?;
    Ok(d)
}

/// AUTH (5.0 only): remaining length 0 means Success without properties.
fn auth(r: &mut Reader<'_>, ctx: Ctx<'_>) -> Result<Auth> {
    let mut a = Auth::default();
    if !r.is_empty() {
        a.reason = r.u8()?;
        check_code(codes::AUTH, a.reason)?;
        if !r.is_empty() {
            read_props(r, |prop| match prop {
                Prop::AuthenticationMethod(v) => once(&mut a.authentication_method, v.to_owned()),
                Prop::AuthenticationData(v) => once(&mut a.authentication_data, ctx.bytes(v)),
                Prop::ReasonString(v) => once(&mut a.reason_string, v.to_owned()),
                Prop::UserProperty(k, v) => {
                    push_user(&mut a.user_properties, k, v);
                    Ok(())
                }
                _ => Err(not_allowed()),
            })?;
        }
    }
    r.finish("trailing bytes after auth")?;
    Ok(a)
}
