//! The hand-off frame, sans-IO: encoding, the prefix and body parsers, and the
//! fuzzing entry point. The layout is in the crate docs. Every field has one
//! encoding, so a decoded frame re-encodes to the same bytes.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::{HandoffError, HandoffMeta};

pub const MAGIC: [u8; 4] = *b"THFD";
pub const VERSION: u8 = 1;
pub const PREFIX_LEN: usize = 10;
/// Most bytes already read that one hand-off carries.
pub const MAX_ALREADY_READ: usize = 64 * 1024;
/// Longest assigned client id, bytes.
pub const MAX_CLIENT_ID: usize = u16::MAX as usize;

const FLAG_CLIENT_ID: u8 = 0x01;
const V4_ADDR: usize = 1 + 4 + 2;
const V6_ADDR: usize = 1 + 16 + 2 + 4 + 4;
const MIN_BODY: usize = 8 + 2 * V4_ADDR;
/// Largest body accepted.
pub const MAX_BODY: usize = 8 + 2 * V6_ADDR + 2 + MAX_CLIENT_ID + MAX_ALREADY_READ;

/// A checked prefix.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Prefix {
    flags: u8,
    pub body_len: usize,
}

/// The frame up to (not including) the bytes already read, which follow it.
pub(crate) fn encode_head(meta: &HandoffMeta, already_read_len: usize) -> io::Result<Vec<u8>> {
    let invalid = |msg: &str| io::Error::new(io::ErrorKind::InvalidInput, msg.to_string());
    if already_read_len > MAX_ALREADY_READ {
        return Err(invalid("more than 64 KiB already read"));
    }
    let mut body = Vec::with_capacity(8 + 2 * V6_ADDR + 2);
    body.extend_from_slice(&meta.conn_id.to_be_bytes());
    put_addr(&mut body, meta.peer);
    put_addr(&mut body, meta.local);
    let mut flags = 0;
    if let Some(id) = &meta.assigned_client_id {
        let len = u16::try_from(id.len()).map_err(|_| invalid("client id over 65535 bytes"))?;
        flags |= FLAG_CLIENT_ID;
        body.extend_from_slice(&len.to_be_bytes());
        body.extend_from_slice(id.as_bytes());
    }
    let body_len = u32::try_from(body.len() + already_read_len).expect("bounded above");
    let mut head = Vec::with_capacity(PREFIX_LEN + body.len());
    head.extend_from_slice(&MAGIC);
    head.push(VERSION);
    head.push(flags);
    head.extend_from_slice(&body_len.to_be_bytes());
    head.extend_from_slice(&body);
    Ok(head)
}

fn put_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => {
            out.push(4);
            out.extend_from_slice(&v4.ip().octets());
            out.extend_from_slice(&v4.port().to_be_bytes());
        }
        SocketAddr::V6(v6) => {
            out.push(6);
            out.extend_from_slice(&v6.ip().octets());
            out.extend_from_slice(&v6.port().to_be_bytes());
            out.extend_from_slice(&v6.flowinfo().to_be_bytes());
            out.extend_from_slice(&v6.scope_id().to_be_bytes());
        }
    }
}

/// Checks the fixed prefix. Any error here means the byte stream cannot be trusted.
pub(crate) fn parse_prefix(prefix: &[u8; PREFIX_LEN]) -> Result<Prefix, HandoffError> {
    if prefix[..4] != MAGIC {
        return Err(HandoffError::BadFrame("bad magic"));
    }
    if prefix[4] != VERSION {
        return Err(HandoffError::BadFrame("unsupported version"));
    }
    let flags = prefix[5];
    if flags & !FLAG_CLIENT_ID != 0 {
        return Err(HandoffError::BadFrame("unknown flags"));
    }
    let body_len = u32::from_be_bytes([prefix[6], prefix[7], prefix[8], prefix[9]]) as usize;
    if !(MIN_BODY..=MAX_BODY).contains(&body_len) {
        return Err(HandoffError::BadFrame("body length out of range"));
    }
    Ok(Prefix { flags, body_len })
}

/// Parses a whole body (`body.len() == prefix.body_len`).
pub(crate) fn parse_body(
    prefix: Prefix,
    body: &[u8],
) -> Result<(HandoffMeta, Vec<u8>), HandoffError> {
    let mut reader = Reader(body);
    let conn_id = u64::from_be_bytes(reader.array()?);
    let peer = reader.addr()?;
    let local = reader.addr()?;
    let assigned_client_id = if prefix.flags & FLAG_CLIENT_ID != 0 {
        let len = u16::from_be_bytes(reader.array()?) as usize;
        let id = std::str::from_utf8(reader.take(len)?)
            .map_err(|_| HandoffError::BadMeta("client id is not UTF-8"))?;
        Some(id.to_string())
    } else {
        None
    };
    if reader.0.len() > MAX_ALREADY_READ {
        return Err(HandoffError::BadMeta("more than 64 KiB already read"));
    }
    let meta = HandoffMeta {
        conn_id,
        peer,
        local,
        assigned_client_id,
    };
    Ok((meta, reader.0.to_vec()))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], HandoffError> {
        if self.0.len() < n {
            return Err(HandoffError::BadMeta("body ends inside a field"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], HandoffError> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }

    fn addr(&mut self) -> Result<SocketAddr, HandoffError> {
        match self.array::<1>()?[0] {
            4 => {
                let ip = Ipv4Addr::from(self.array::<4>()?);
                let port = u16::from_be_bytes(self.array()?);
                Ok(SocketAddrV4::new(ip, port).into())
            }
            6 => {
                let ip = Ipv6Addr::from(self.array::<16>()?);
                let port = u16::from_be_bytes(self.array()?);
                let flowinfo = u32::from_be_bytes(self.array()?);
                let scope_id = u32::from_be_bytes(self.array()?);
                Ok(SocketAddrV6::new(ip, port, flowinfo, scope_id).into())
            }
            _ => Err(HandoffError::BadMeta("unknown address family")),
        }
    }
}

/// A whole frame as bytes (no descriptor): for tests and tools.
#[doc(hidden)]
pub fn encode_frame(meta: &HandoffMeta, already_read: &[u8]) -> io::Result<Vec<u8>> {
    let mut frame = encode_head(meta, already_read.len())?;
    frame.extend_from_slice(already_read);
    Ok(frame)
}

/// Decodes one frame at the start of `buf`: `Ok(None)` while `buf` is a strict
/// prefix of a frame, otherwise the metadata, the bytes already read and the
/// frame's length. Never panics.
#[doc(hidden)]
pub fn decode_frame(buf: &[u8]) -> Result<Option<(HandoffMeta, Vec<u8>, usize)>, HandoffError> {
    let Some(prefix) = buf.first_chunk::<PREFIX_LEN>() else {
        return Ok(None);
    };
    let prefix = parse_prefix(prefix)?;
    let end = PREFIX_LEN + prefix.body_len;
    let Some(body) = buf.get(PREFIX_LEN..end) else {
        return Ok(None);
    };
    let (meta, already_read) = parse_body(prefix, body)?;
    Ok(Some((meta, already_read, end)))
}

/// Fuzzing entry point for the frame parser: decodes `data` and checks its
/// invariants (bounds, canonical re-encoding, prefixes are partial). Panics on a bug.
#[doc(hidden)]
pub fn fuzz_one(data: &[u8]) {
    match decode_frame(data) {
        Ok(Some((meta, already_read, used))) => {
            assert!((PREFIX_LEN + MIN_BODY..=data.len()).contains(&used));
            assert!(already_read.len() <= MAX_ALREADY_READ);
            let again = encode_frame(&meta, &already_read).expect("a decoded frame re-encodes");
            assert_eq!(again, data[..used], "re-encoding differs");
            for cut in [0, 1, PREFIX_LEN - 1, PREFIX_LEN, used - 1] {
                assert!(
                    matches!(decode_frame(&data[..cut]), Ok(None)),
                    "a strict prefix must be partial"
                );
            }
        }
        Ok(None) => assert!(data.len() < PREFIX_LEN + MAX_BODY),
        Err(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn meta(peer: SocketAddr, id: Option<&str>) -> HandoffMeta {
        HandoffMeta {
            conn_id: 0x0102_0304_0506_0708,
            peer,
            local: "10.0.0.5:1883".parse().unwrap(),
            assigned_client_id: id.map(str::to_string),
        }
    }

    #[test]
    fn layout_is_as_documented() {
        let frame = encode_frame(
            &meta("203.0.113.7:51234".parse().unwrap(), Some("ab")),
            b"xyz",
        )
        .unwrap();
        let body_len = 8 + 7 + 7 + 2 + 2 + 3;
        let mut expected = b"THFD\x01\x01".to_vec();
        expected.extend_from_slice(&(body_len as u32).to_be_bytes());
        expected.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        expected.extend_from_slice(&[4, 203, 0, 113, 7, 0xc8, 0x22]);
        expected.extend_from_slice(&[4, 10, 0, 0, 5, 0x07, 0x5b]);
        expected.extend_from_slice(b"\x00\x02abxyz");
        assert_eq!(frame, expected);
    }

    #[test]
    fn limits_are_enforced_when_encoding() {
        let long = "x".repeat(MAX_CLIENT_ID + 1);
        let peer = "[::1]:1".parse().unwrap();
        let err = encode_frame(&meta(peer, Some(&long)), b"").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let err = encode_frame(&meta(peer, None), &vec![0; MAX_ALREADY_READ + 1]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);

        let longest = "x".repeat(MAX_CLIENT_ID);
        let frame = encode_frame(&meta(peer, Some(&longest)), &vec![7; MAX_ALREADY_READ]).unwrap();
        let (decoded, already_read, used) = decode_frame(&frame).unwrap().unwrap();
        assert_eq!(used, frame.len());
        assert_eq!(used, PREFIX_LEN + MAX_BODY - V6_ADDR + V4_ADDR);
        assert_eq!(
            decoded.assigned_client_id.as_deref(),
            Some(longest.as_str())
        );
        assert_eq!(already_read.len(), MAX_ALREADY_READ);
    }

    #[test]
    fn bad_prefixes_are_fatal() {
        let good = encode_frame(&meta("1.2.3.4:5".parse().unwrap(), None), b"").unwrap();
        let cases: [(usize, u8, &str); 4] = [
            (0, b'X', "bad magic"),
            (4, 2, "unsupported version"),
            (5, 0x80, "unknown flags"),
            (6, 0x7f, "body length out of range"),
        ];
        for (at, value, why) in cases {
            let mut bad = good.clone();
            bad[at] = value;
            let err = decode_frame(&bad).unwrap_err();
            assert!(err.is_fatal(), "{why}: {err}");
            assert!(err.to_string().contains(why), "{why}: {err}");
        }
        let mut short = good.clone();
        short[6..10].copy_from_slice(&((MIN_BODY - 1) as u32).to_be_bytes());
        assert!(matches!(
            decode_frame(&short),
            Err(HandoffError::BadFrame(_))
        ));
    }

    #[test]
    fn bad_bodies_are_not_fatal() {
        let peer = "1.2.3.4:5".parse().unwrap();
        let mut family = encode_frame(&meta(peer, None), b"").unwrap();
        family[PREFIX_LEN + 8] = 5;
        let mut utf8 = encode_frame(&meta(peer, Some("é")), b"").unwrap();
        let at = utf8.len() - 1;
        utf8[at] = 0xff;
        // Claims a client id longer than the body.
        let mut id_len = encode_frame(&meta(peer, Some("a")), b"").unwrap();
        let at = id_len.len() - 3;
        id_len[at] = 9;
        for frame in [family, utf8, id_len] {
            let err = decode_frame(&frame).unwrap_err();
            assert!(matches!(err, HandoffError::BadMeta(_)), "{err}");
            assert!(!err.is_fatal());
        }
    }

    fn any_addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>())
                .prop_map(|(ip, port)| SocketAddr::from((Ipv4Addr::from(ip), port))),
            (any::<[u8; 16]>(), any::<u16>(), any::<u32>(), any::<u32>()).prop_map(
                |(ip, port, flow, scope)| SocketAddrV6::new(ip.into(), port, flow, scope).into()
            ),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(
            conn_id in any::<u64>(),
            peer in any_addr(),
            local in any_addr(),
            id in proptest::option::of(".{0,40}"),
            already_read in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let meta = HandoffMeta { conn_id, peer, local, assigned_client_id: id };
            let frame = encode_frame(&meta, &already_read).unwrap();
            fuzz_one(&frame);
            let (decoded, rest, used) = decode_frame(&frame).unwrap().unwrap();
            prop_assert_eq!(decoded, meta);
            prop_assert_eq!(rest, already_read);
            prop_assert_eq!(used, frame.len());
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            fuzz_one(&data);
        }

        #[test]
        fn corrupted_frames_never_panic(at in 0usize..60, value in any::<u8>()) {
            let meta = HandoffMeta {
                conn_id: 9,
                peer: "[2001:db8::1]:4000".parse().unwrap(),
                local: "10.1.2.3:1883".parse().unwrap(),
                assigned_client_id: Some("client".into()),
            };
            let mut frame = encode_frame(&meta, b"\x10\x0c\x00\x04MQTT").unwrap();
            let at = at % frame.len();
            frame[at] = value;
            fuzz_one(&frame);
        }
    }
}
