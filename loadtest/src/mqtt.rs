//! The few MQTT packets the load tool needs, hand-encoded.
//!
//! Only what a load generator sends (CONNECT, SUBSCRIBE, PUBLISH, the QoS 1/2
//! acknowledgements, PINGREQ, DISCONNECT) and what it reads (CONNACK and its
//! MQTT 5 properties, SUBACK, PUBLISH, the acknowledgements) live here; the
//! broker's codec is not used on purpose, so a codec bug cannot hide behind a
//! matching encoder.

/// MQTT protocol level: 4 = 3.1.1, 5 = 5.0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Protocol {
    V311,
    V5,
}

impl Protocol {
    pub fn from_level(level: u8) -> anyhow::Result<Self> {
        match level {
            4 => Ok(Self::V311),
            5 => Ok(Self::V5),
            other => anyhow::bail!("unsupported MQTT protocol level {other} (use 4 or 5)"),
        }
    }

    pub fn level(self) -> u8 {
        match self {
            Self::V311 => 4,
            Self::V5 => 5,
        }
    }
}

/// Options of a CONNECT packet.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ConnectOptions {
    pub protocol: Protocol,
    pub keepalive_secs: u16,
    pub clean: bool,
    pub username: Option<String>,
    pub password: Option<String>,
    /// MQTT 5 Session Expiry Interval property, seconds.
    pub session_expiry: Option<u32>,
}

pub const PINGREQ: [u8; 2] = [0xC0, 0x00];
pub const PINGRESP: [u8; 2] = [0xD0, 0x00];
pub const DISCONNECT: [u8; 2] = [0xE0, 0x00];

pub const TYPE_CONNACK: u8 = 2;
pub const TYPE_PUBLISH: u8 = 3;
pub const TYPE_PUBACK: u8 = 4;
pub const TYPE_PUBREC: u8 = 5;
pub const TYPE_PUBREL: u8 = 6;
pub const TYPE_PUBCOMP: u8 = 7;
pub const TYPE_SUBACK: u8 = 9;
pub const TYPE_PINGRESP: u8 = 13;
pub const TYPE_DISCONNECT: u8 = 14;

/// A PUBACK for `packet_id` (3.1.1, and 5 with reason Success left out).
pub fn puback(packet_id: u16) -> [u8; 4] {
    let [hi, lo] = packet_id.to_be_bytes();
    [0x40, 0x02, hi, lo]
}

/// A PUBREC for `packet_id` (QoS 2, receiver side, step 1).
pub fn pubrec(packet_id: u16) -> [u8; 4] {
    let [hi, lo] = packet_id.to_be_bytes();
    [0x50, 0x02, hi, lo]
}

/// A PUBREL for `packet_id` (QoS 2, sender side; flags 0b0010 are mandatory).
pub fn pubrel(packet_id: u16) -> [u8; 4] {
    let [hi, lo] = packet_id.to_be_bytes();
    [0x62, 0x02, hi, lo]
}

/// A PUBCOMP for `packet_id` (QoS 2, receiver side, step 2).
pub fn pubcomp(packet_id: u16) -> [u8; 4] {
    let [hi, lo] = packet_id.to_be_bytes();
    [0x70, 0x02, hi, lo]
}

/// Packet id and reason code of a PUBACK, PUBREC, PUBREL or PUBCOMP from its
/// variable header (reason 0 when left out, as 3.1.1 always does).
pub fn parse_ack(body: &[u8]) -> Option<(u16, u8)> {
    let id = u16::from_be_bytes([*body.first()?, *body.get(1)?]);
    Some((id, body.get(2).copied().unwrap_or(0)))
}

/// Encodes a SUBSCRIBE of one filter at `qos` (MQTT 5: no properties, default options).
pub fn encode_subscribe(protocol: Protocol, packet_id: u16, filter: &str, qos: u8) -> Vec<u8> {
    let mut body = Vec::with_capacity(8 + filter.len());
    body.extend_from_slice(&packet_id.to_be_bytes());
    if protocol == Protocol::V5 {
        body.push(0);
    }
    put_str(&mut body, filter.as_bytes());
    body.push(qos & 0x03);
    let mut pkt = Vec::with_capacity(body.len() + 5);
    pkt.push(0x82);
    put_varint(&mut pkt, body.len());
    pkt.extend_from_slice(&body);
    pkt
}

/// Packet id and return / reason codes of a SUBACK's variable header + payload
/// (0–2: granted QoS; 0x80 and up: refused).
pub fn parse_suback(body: &[u8], protocol: Protocol) -> Result<(u16, &[u8]), &'static str> {
    let short = "short SUBACK";
    let id = u16::from_be_bytes([*body.first().ok_or(short)?, *body.get(1).ok_or(short)?]);
    let mut at = 2;
    if protocol == Protocol::V5 {
        match get_varint(body.get(at..).ok_or(short)?) {
            Varint::Done(props, n) => at += n + props,
            _ => return Err("bad SUBACK properties length"),
        }
    }
    let codes = body.get(at..).ok_or(short)?;
    if codes.is_empty() {
        return Err("SUBACK without return codes");
    }
    Ok((id, codes))
}

/// Appends a complete PUBLISH (MQTT 5: no properties). `packet_id` is used for QoS 1 and 2.
pub fn put_publish(
    out: &mut Vec<u8>,
    protocol: Protocol,
    topic: &[u8],
    qos: u8,
    packet_id: u16,
    payload: &[u8],
) {
    let mut remaining = 2 + topic.len() + payload.len();
    if qos > 0 {
        remaining += 2;
    }
    if protocol == Protocol::V5 {
        remaining += 1;
    }
    out.push(0x30 | ((qos & 0x03) << 1));
    put_varint(out, remaining);
    put_str(out, topic);
    if qos > 0 {
        out.extend_from_slice(&packet_id.to_be_bytes());
    }
    if protocol == Protocol::V5 {
        out.push(0);
    }
    out.extend_from_slice(payload);
}

/// The CONNACK properties (MQTT 5) a client has to obey.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnackProperties {
    /// QoS 1 and 2 PUBLISHes the server accepts unacknowledged (default 65,535).
    pub receive_maximum: Option<u16>,
    /// Highest QoS the server supports (default 2).
    pub maximum_qos: Option<u8>,
    /// Keep-alive the server imposes instead of the client's.
    pub server_keep_alive: Option<u16>,
    /// Largest packet the server accepts.
    pub maximum_packet_size: Option<u32>,
}

/// Reads the properties of an MQTT 5 CONNACK's variable header (flags, reason
/// code, properties); unknown property identifiers are malformed.
pub fn connack_properties(variable: &[u8]) -> Result<ConnackProperties, &'static str> {
    let Varint::Done(len, n) = get_varint(variable.get(2..).ok_or("short CONNACK")?) else {
        return Err("bad CONNACK properties length");
    };
    let props = variable
        .get(2 + n..2 + n + len)
        .ok_or("CONNACK properties overrun")?;
    let mut out = ConnackProperties::default();
    let mut at = 0;
    while at < props.len() {
        let id = props[at];
        at += 1;
        let rest = &props[at..];
        let short = "short CONNACK property";
        let u16_at = |r: &[u8]| -> Result<u16, &'static str> {
            Ok(u16::from_be_bytes([
                *r.first().ok_or(short)?,
                *r.get(1).ok_or(short)?,
            ]))
        };
        at += match id {
            // Byte properties.
            0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => {
                let v = *rest.first().ok_or(short)?;
                if id == 0x24 {
                    out.maximum_qos = Some(v);
                }
                1
            }
            // Two byte integers.
            0x13 | 0x21 | 0x22 | 0x23 => {
                let v = u16_at(rest)?;
                match id {
                    0x13 => out.server_keep_alive = Some(v),
                    0x21 => out.receive_maximum = Some(v),
                    _ => {}
                }
                2
            }
            // Four byte integers.
            0x02 | 0x11 | 0x18 | 0x27 => {
                let b = rest.get(..4).ok_or(short)?;
                if id == 0x27 {
                    out.maximum_packet_size = Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                }
                4
            }
            0x0B => match get_varint(rest) {
                Varint::Done(_, n) => n,
                _ => return Err(short),
            },
            // UTF-8 strings and binary data.
            0x03 | 0x08 | 0x09 | 0x12 | 0x15 | 0x16 | 0x1A | 0x1C | 0x1F => {
                2 + usize::from(u16_at(rest)?)
            }
            // User property: a string pair.
            0x26 => {
                let k = 2 + usize::from(u16_at(rest)?);
                k + 2 + usize::from(u16_at(rest.get(k..).ok_or(short)?)?)
            }
            _ => return Err("unknown CONNACK property"),
        };
        if at > props.len() {
            return Err("CONNACK property overrun");
        }
    }
    Ok(out)
}

/// Where the first complete packet in `buf` lies.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    /// First byte: packet type (high nibble) and flags.
    pub first: u8,
    /// Offset of the variable header.
    pub body: usize,
    /// Length of the whole packet.
    pub len: usize,
}

/// The first complete packet at the start of `buf`; `Ok(None)` if more bytes are needed.
pub fn next_frame(buf: &[u8]) -> Result<Option<Frame>, &'static str> {
    if buf.len() < 2 {
        return Ok(None);
    }
    match get_varint(&buf[1..]) {
        Varint::Done(remaining, n) => {
            let body = 1 + n;
            Ok((buf.len() >= body + remaining).then_some(Frame {
                first: buf[0],
                body,
                len: body + remaining,
            }))
        }
        Varint::Incomplete => Ok(None),
        Varint::Malformed => Err("bad remaining length"),
    }
}

/// The parts of a PUBLISH the load tool looks at.
#[derive(Debug, PartialEq, Eq)]
pub struct Publish<'a> {
    pub qos: u8,
    pub topic: &'a [u8],
    /// Present for QoS 1 and 2.
    pub packet_id: Option<u16>,
    pub payload: &'a [u8],
}

/// Parses a PUBLISH from its first byte and its variable header + payload.
pub fn parse_publish(
    first: u8,
    body: &[u8],
    protocol: Protocol,
) -> Result<Publish<'_>, &'static str> {
    let qos = (first >> 1) & 0x03;
    if qos == 3 {
        return Err("PUBLISH with QoS 3");
    }
    let short = "short PUBLISH";
    let topic_len = usize::from(u16::from_be_bytes([
        *body.first().ok_or(short)?,
        *body.get(1).ok_or(short)?,
    ]));
    let mut at = 2 + topic_len;
    let topic = body.get(2..at).ok_or(short)?;
    let packet_id = if qos > 0 {
        let id = u16::from_be_bytes([*body.get(at).ok_or(short)?, *body.get(at + 1).ok_or(short)?]);
        at += 2;
        Some(id)
    } else {
        None
    };
    if protocol == Protocol::V5 {
        match get_varint(body.get(at..).ok_or(short)?) {
            Varint::Done(props, n) => at += n + props,
            _ => return Err("bad PUBLISH properties length"),
        }
    }
    let payload = body.get(at..).ok_or(short)?;
    Ok(Publish {
        qos,
        topic,
        packet_id,
        payload,
    })
}

/// Appends an MQTT variable byte integer.
pub fn put_varint(out: &mut Vec<u8>, mut v: usize) {
    loop {
        let mut byte = (v % 128) as u8;
        v /= 128;
        if v > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if v == 0 {
            break;
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    let len = u16::try_from(s.len()).expect("MQTT string longer than 65535 bytes");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s);
}

/// Encodes a complete CONNECT packet.
pub fn encode_connect(opts: &ConnectOptions, client_id: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(32 + client_id.len());
    put_str(&mut body, b"MQTT");
    body.push(opts.protocol.level());
    let mut flags = 0u8;
    if opts.clean {
        flags |= 0x02;
    }
    if opts.username.is_some() {
        flags |= 0x80;
    }
    if opts.password.is_some() {
        flags |= 0x40;
    }
    body.push(flags);
    body.extend_from_slice(&opts.keepalive_secs.to_be_bytes());
    if opts.protocol == Protocol::V5 {
        let mut props = Vec::new();
        if let Some(expiry) = opts.session_expiry {
            props.push(0x11);
            props.extend_from_slice(&expiry.to_be_bytes());
        }
        put_varint(&mut body, props.len());
        body.extend_from_slice(&props);
    }
    put_str(&mut body, client_id.as_bytes());
    if let Some(user) = &opts.username {
        put_str(&mut body, user.as_bytes());
    }
    if let Some(pass) = &opts.password {
        put_str(&mut body, pass.as_bytes());
    }
    let mut pkt = Vec::with_capacity(body.len() + 5);
    pkt.push(0x10);
    put_varint(&mut pkt, body.len());
    pkt.extend_from_slice(&body);
    pkt
}

/// Result of decoding a fixed header's remaining length from a prefix.
#[derive(Debug, PartialEq, Eq)]
pub enum Varint {
    /// Value and number of bytes it took.
    Done(usize, usize),
    /// More bytes are needed.
    Incomplete,
    /// More than four bytes: malformed.
    Malformed,
}

/// Decodes a variable byte integer at the start of `buf`.
pub fn get_varint(buf: &[u8]) -> Varint {
    let mut value = 0usize;
    for (i, &b) in buf.iter().enumerate().take(4) {
        value |= usize::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            return Varint::Done(value, i + 1);
        }
    }
    if buf.len() >= 4 {
        Varint::Malformed
    } else {
        Varint::Incomplete
    }
}

/// Interprets a CONNACK's variable header (the bytes after the fixed header).
///
/// Returns the return/reason code (0 = accepted in both 3.1.1 and 5).
pub fn connack_code(variable: &[u8]) -> Option<u8> {
    // byte 0: acknowledge flags (session present), byte 1: return / reason code.
    variable.get(1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_v311_minimal() {
        let opts = ConnectOptions {
            protocol: Protocol::V311,
            keepalive_secs: 60,
            clean: true,
            username: None,
            password: None,
            session_expiry: None,
        };
        let pkt = encode_connect(&opts, "ab");
        assert_eq!(
            pkt,
            vec![
                0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 2, b'a', b'b'
            ]
        );
    }

    #[test]
    fn connect_v5_with_props_and_credentials() {
        let opts = ConnectOptions {
            protocol: Protocol::V5,
            keepalive_secs: 30,
            clean: false,
            username: Some("u".into()),
            password: Some("p".into()),
            session_expiry: Some(300),
        };
        let pkt = encode_connect(&opts, "c");
        assert_eq!(
            pkt,
            vec![
                0x10, 25, 0, 4, b'M', b'Q', b'T', b'T', 5, 0xC0, 0, 30, 5, 0x11, 0, 0, 1, 44, 0, 1,
                b'c', 0, 1, b'u', 0, 1, b'p'
            ]
        );
    }

    #[test]
    fn varint_roundtrip() {
        for v in [0usize, 1, 127, 128, 16_383, 16_384, 2_097_151, 268_435_455] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(get_varint(&out), Varint::Done(v, out.len()));
        }
        assert_eq!(get_varint(&[0x80]), Varint::Incomplete);
        assert_eq!(get_varint(&[0x80, 0x80, 0x80, 0x80]), Varint::Malformed);
    }

    #[test]
    fn frames_and_publishes() {
        // QoS 1 PUBLISH "a/b", id 7, payload "xy"; then half a PINGRESP.
        let v3 = [0x32, 9, 0, 3, b'a', b'/', b'b', 0, 7, b'x', b'y', 0xD0];
        let f = next_frame(&v3).unwrap().unwrap();
        assert_eq!((f.first, f.body, f.len), (0x32, 2, 11));
        let p = parse_publish(f.first, &v3[f.body..f.len], Protocol::V311).unwrap();
        assert_eq!(
            p,
            Publish {
                qos: 1,
                topic: b"a/b",
                packet_id: Some(7),
                payload: b"xy"
            }
        );
        assert_eq!(next_frame(&v3[f.len..]).unwrap(), None);
        // QoS 0 with MQTT 5 properties (one byte of them).
        let v5 = [0x30, 7, 0, 1, b't', 2, 0x01, 0x01, b'z'];
        let f = next_frame(&v5).unwrap().unwrap();
        let p = parse_publish(f.first, &v5[f.body..f.len], Protocol::V5).unwrap();
        assert_eq!(
            (p.qos, p.topic, p.packet_id, p.payload),
            (0, &b"t"[..], None, &b"z"[..])
        );
        assert!(parse_publish(0x32, &[0, 5, b'a'], Protocol::V311).is_err());
        assert_eq!(puback(0x0102), [0x40, 2, 1, 2]);
    }

    #[test]
    fn qos2_acks_and_subscribe() {
        assert_eq!(pubrec(0x0102), [0x50, 2, 1, 2]);
        assert_eq!(pubrel(7), [0x62, 2, 0, 7]);
        assert_eq!(pubcomp(7), [0x70, 2, 0, 7]);
        assert_eq!(parse_ack(&[0, 9]), Some((9, 0)));
        assert_eq!(parse_ack(&[0, 9, 0x10, 0]), Some((9, 0x10)));
        assert_eq!(parse_ack(&[0]), None);
        assert_eq!(
            encode_subscribe(Protocol::V311, 1, "a/+", 1),
            vec![0x82, 8, 0, 1, 0, 3, b'a', b'/', b'+', 1]
        );
        assert_eq!(
            encode_subscribe(Protocol::V5, 1, "t", 2),
            vec![0x82, 7, 0, 1, 0, 0, 1, b't', 2]
        );
        assert_eq!(
            parse_suback(&[0, 1, 2], Protocol::V311),
            Ok((1, &[2u8][..]))
        );
        assert_eq!(
            parse_suback(&[0, 1, 3, 0x1F, 0, 0, 0x80], Protocol::V5),
            Ok((1, &[0x80u8][..]))
        );
        assert!(parse_suback(&[0, 1], Protocol::V311).is_err());
    }

    #[test]
    fn publish_roundtrip() {
        for protocol in [Protocol::V311, Protocol::V5] {
            for qos in 0..=2 {
                let mut out = vec![0xAA];
                put_publish(&mut out, protocol, b"a/b", qos, 513, b"xyz");
                let f = next_frame(&out[1..]).unwrap().unwrap();
                assert_eq!(f.len, out.len() - 1);
                let p = parse_publish(f.first, &out[1 + f.body..1 + f.len], protocol).unwrap();
                assert_eq!(p.qos, qos);
                assert_eq!(p.topic, b"a/b");
                assert_eq!(p.packet_id, (qos > 0).then_some(513));
                assert_eq!(p.payload, b"xyz");
            }
        }
    }

    #[test]
    fn connack_props() {
        // flags, code, props: receive max 20, max QoS 1, user property ("k","v"),
        // assigned client id "c", server keep alive 30, max packet size 1024.
        let v = [
            0, 0, 24, 0x21, 0, 20, 0x24, 1, 0x26, 0, 1, b'k', 0, 1, b'v', 0x12, 0, 1, b'c', 0x13,
            0, 30, 0x27, 0, 0, 4, 0,
        ];
        assert_eq!(
            connack_properties(&v),
            Ok(ConnackProperties {
                receive_maximum: Some(20),
                maximum_qos: Some(1),
                server_keep_alive: Some(30),
                maximum_packet_size: Some(1024),
            })
        );
        assert_eq!(
            connack_properties(&[0, 0, 0]),
            Ok(ConnackProperties::default())
        );
        assert!(connack_properties(&[0, 0, 2, 0x21, 0]).is_err());
        assert!(connack_properties(&[0, 0, 1, 0x7F]).is_err());
    }

    #[test]
    fn connack_codes() {
        assert_eq!(connack_code(&[0, 0]), Some(0));
        assert_eq!(connack_code(&[1, 0x87, 0]), Some(0x87));
        assert_eq!(connack_code(&[0]), None);
    }
}
