//! Encoding packets: [`encode`] and [`encoded_len`], the byte sink both are
//! built on (so the predicted length is exact by construction), primitive
//! writers, and the small packets. CONNECT/CONNACK, PUBLISH and the
//! subscription packets live in `packets.rs`, properties in `props.rs`.

mod packets;
mod props;

use crate::error::EncodeError;
use crate::frame::MAX_REMAINING_LENGTH;
use crate::packet::{Auth, Disconnect, Packet, ProtocolVersion, PubResp};
use props::{AuthProps, DisconnectProps, ReasonProps, put_props};

type Result<T> = std::result::Result<T, EncodeError>;

/// Appends the wire bytes of `packet` for `version` to `out`.
///
/// Fields that `version` lacks are skipped: for 3.1/3.1.1 every property,
/// the PUBACK-family and DISCONNECT reason codes and the UNSUBACK codes. A
/// CONNECT names `version`, whatever its `protocol` field says. 5.0 acks and
/// DISCONNECT/AUTH use their short forms when they carry nothing but
/// defaults. A QoS 0 PUBLISH never writes its `packet_id`.
///
/// On error nothing is appended.
pub fn encode(packet: &Packet, version: ProtocolVersion, out: &mut Vec<u8>) -> Result<()> {
    let mut count = Count(0);
    body(packet, version, &mut count)?;
    let remaining = count.0;
    if remaining > MAX_REMAINING_LENGTH {
        return Err(EncodeError::PacketTooLarge(remaining));
    }
    out.reserve(1 + varint_len(remaining) + remaining);
    let orig = out.len();
    out.push(first_byte(packet));
    out.put_varint(remaining);
    let start = out.len();
    if let Err(e) = body(packet, version, out) {
        out.truncate(orig);
        return Err(e);
    }
    debug_assert_eq!(out.len() - start, remaining);
    Ok(())
}

/// The exact number of bytes [`encode`] appends for `packet`, fixed header
/// included, or `usize::MAX` when `encode` would fail. Compare it with a
/// peer's Maximum Packet Size before sending.
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> usize {
    let mut count = Count(0);
    match body(packet, version, &mut count) {
        Ok(()) if count.0 <= MAX_REMAINING_LENGTH => 1 + varint_len(count.0) + count.0,
        _ => usize::MAX,
    }
}

fn first_byte(packet: &Packet) -> u8 {
    match packet {
        Packet::Connect(_) => 0x10,
        Packet::ConnAck(_) => 0x20,
        Packet::Publish(p) => {
            0x30 | (u8::from(p.dup) << 3) | ((p.qos as u8) << 1) | u8::from(p.retain)
        }
        Packet::PubAck(_) => 0x40,
        Packet::PubRec(_) => 0x50,
        Packet::PubRel(_) => 0x62,
        Packet::PubComp(_) => 0x70,
        Packet::Subscribe(_) => 0x82,
        Packet::SubAck(_) => 0x90,
        Packet::Unsubscribe(_) => 0xA2,
        Packet::UnsubAck(_) => 0xB0,
        Packet::PingReq => 0xC0,
        Packet::PingResp => 0xD0,
        Packet::Disconnect(_) => 0xE0,
        Packet::Auth(_) => 0xF0,
    }
}

/// Writes everything after the fixed header.
fn body<S: Sink>(packet: &Packet, version: ProtocolVersion, s: &mut S) -> Result<()> {
    let v5 = version.is_v5();
    match packet {
        Packet::Connect(c) => packets::connect(c, version, s),
        Packet::ConnAck(a) => packets::connack(a, v5, s),
        Packet::Publish(p) => packets::publish(p, v5, s),
        Packet::PubAck(p) | Packet::PubRec(p) | Packet::PubRel(p) | Packet::PubComp(p) => {
            pub_resp(p, v5, s)
        }
        Packet::Subscribe(sub) => packets::subscribe(sub, v5, s),
        Packet::SubAck(a) => packets::suback(a, v5, s),
        Packet::Unsubscribe(u) => packets::unsubscribe(u, v5, s),
        Packet::UnsubAck(a) => packets::unsuback(a, v5, s),
        Packet::PingReq | Packet::PingResp => Ok(()),
        Packet::Disconnect(d) => disconnect(d, v5, s),
        Packet::Auth(a) if v5 => auth(a, s),
        Packet::Auth(_) => Err(EncodeError::Invalid("auth exists only in mqtt 5.0")),
    }
}

fn pub_resp<S: Sink>(p: &PubResp, v5: bool, s: &mut S) -> Result<()> {
    put_packet_id(s, p.packet_id)?;
    if !v5 {
        return Ok(());
    }
    let props = ReasonProps {
        reason_string: p.reason_string.as_deref(),
        user_properties: &p.user_properties,
    };
    if props.is_empty() {
        if p.reason != 0 {
            s.put_u8(p.reason);
        }
        return Ok(());
    }
    s.put_u8(p.reason);
    put_props(s, &props)
}

fn disconnect<S: Sink>(d: &Disconnect, v5: bool, s: &mut S) -> Result<()> {
    if !v5 {
        return Ok(());
    }
    let props = DisconnectProps(d);
    if props.is_empty() {
        if d.reason != 0 {
            s.put_u8(d.reason);
        }
        return Ok(());
    }
    s.put_u8(d.reason);
    put_props(s, &props)
}

/// AUTH omits everything only for Success without properties; otherwise it
/// always writes the Property Length.
fn auth<S: Sink>(a: &Auth, s: &mut S) -> Result<()> {
    let props = AuthProps(a);
    if a.reason == 0 && props.is_empty() {
        return Ok(());
    }
    s.put_u8(a.reason);
    put_props(s, &props)
}

/// Where encoded bytes go: a `Vec` when writing, a counter when measuring.
pub(crate) trait Sink {
    fn put_slice(&mut self, bytes: &[u8]);

    fn put_u8(&mut self, v: u8) {
        self.put_slice(&[v]);
    }

    fn put_u16(&mut self, v: u16) {
        self.put_slice(&v.to_be_bytes());
    }

    fn put_u32(&mut self, v: u32) {
        self.put_slice(&v.to_be_bytes());
    }

    /// A Variable Byte Integer; `v` must be at most [`MAX_REMAINING_LENGTH`].
    fn put_varint(&mut self, mut v: usize) {
        debug_assert!(v <= MAX_REMAINING_LENGTH);
        let mut buf = [0u8; 4];
        let mut n = 0;
        loop {
            let mut b = (v & 0x7F) as u8;
            v >>= 7;
            if v > 0 {
                b |= 0x80;
            }
            buf[n] = b;
            n += 1;
            if v == 0 || n == 4 {
                break;
            }
        }
        self.put_slice(&buf[..n]);
    }
}

impl Sink for Vec<u8> {
    fn put_slice(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }

    fn put_u8(&mut self, v: u8) {
        self.push(v);
    }
}

/// Counts bytes instead of writing them.
pub(crate) struct Count(pub(crate) usize);

impl Sink for Count {
    fn put_slice(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }

    fn put_varint(&mut self, v: usize) {
        self.0 += varint_len(v);
    }
}

pub(crate) fn varint_len(v: usize) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Binary Data or the bytes of a UTF-8 string, with their two-byte length.
pub(crate) fn put_binary<S: Sink>(s: &mut S, bytes: &[u8]) -> Result<()> {
    let len = u16::try_from(bytes.len()).map_err(|_| EncodeError::FieldTooLong(bytes.len()))?;
    s.put_u16(len);
    s.put_slice(bytes);
    Ok(())
}

pub(crate) fn put_str<S: Sink>(s: &mut S, v: &str) -> Result<()> {
    put_binary(s, v.as_bytes())
}

pub(crate) fn put_packet_id<S: Sink>(s: &mut S, id: u16) -> Result<()> {
    if id == 0 {
        return Err(EncodeError::Invalid("packet identifier 0"));
    }
    s.put_u16(id);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_boundaries() {
        for (v, bytes) in [
            (0usize, &[0x00][..]),
            (127, &[0x7F]),
            (128, &[0x80, 0x01]),
            (16_383, &[0xFF, 0x7F]),
            (16_384, &[0x80, 0x80, 0x01]),
            (2_097_151, &[0xFF, 0xFF, 0x7F]),
            (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
            (MAX_REMAINING_LENGTH, &[0xFF, 0xFF, 0xFF, 0x7F]),
        ] {
            let mut out = Vec::new();
            out.put_varint(v);
            assert_eq!(out, bytes, "{v}");
            assert_eq!(varint_len(v), bytes.len());
        }
    }
}
