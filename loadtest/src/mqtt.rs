//! The few MQTT packets the load tool needs, hand-encoded.
//!
//! Only what a load generator sends (CONNECT, PINGREQ, PUBACK, DISCONNECT) and
//! what it reads (CONNACK, PUBLISH) live here; the broker's codec is not used
//! on purpose, so a codec bug cannot hide behind a matching encoder.

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
pub const TYPE_PINGRESP: u8 = 13;
pub const TYPE_DISCONNECT: u8 = 14;

/// A PUBACK for `packet_id` (3.1.1, and 5 with reason Success left out).
pub fn puback(packet_id: u16) -> [u8; 4] {
    let [hi, lo] = packet_id.to_be_bytes();
    [0x40, 0x02, hi, lo]
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
    fn connack_codes() {
        assert_eq!(connack_code(&[0, 0]), Some(0));
        assert_eq!(connack_code(&[1, 0x87, 0]), Some(0x87));
        assert_eq!(connack_code(&[0]), None);
    }
}
