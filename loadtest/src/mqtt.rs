//! The few MQTT packets the load tool needs, hand-encoded.
//!
//! Only what a load generator sends (CONNECT, PINGREQ, DISCONNECT) and the
//! one reply it waits for (CONNACK) live here; the broker's codec is not used
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
pub const TYPE_DISCONNECT: u8 = 14;

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
    fn connack_codes() {
        assert_eq!(connack_code(&[0, 0]), Some(0));
        assert_eq!(connack_code(&[1, 0x87, 0]), Some(0x87));
        assert_eq!(connack_code(&[0]), None);
    }
}
