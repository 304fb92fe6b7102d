//! Known headers from the HAProxy PROXY protocol spec, malformed input, and prefixes.

use std::net::SocketAddr;

use bytes::Bytes;
use throng_proxy_protocol::{
    Command, ProxyError, ProxyHeader, TLV_THRONG_CLIENT_ID, TLV_THRONG_CONN_ID, Tlv, V2_SIGNATURE,
    encode_v2, parse,
};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn v2(ver_cmd: u8, family: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.extend_from_slice(&[ver_cmd, family]);
    out.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Parses a complete header and checks every strict prefix needs more bytes.
fn parse_complete(bytes: &[u8]) -> ProxyHeader {
    for end in 0..bytes.len() {
        assert_eq!(parse(&bytes[..end]), Ok(None), "prefix of {end} bytes");
    }
    let mut with_payload = bytes.to_vec();
    with_payload.extend_from_slice(b"\x10\x0c\x00\x04MQTT");
    let (header, consumed) = parse(&with_payload).unwrap().unwrap();
    assert_eq!(consumed, bytes.len());
    header
}

#[test]
fn v1_spec_examples() {
    let header = parse_complete(b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n");
    assert_eq!(
        header,
        ProxyHeader::proxied(addr("192.168.0.1:56324"), addr("192.168.0.11:443"))
    );

    let tcp4_max = b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n";
    let header = parse_complete(tcp4_max);
    assert_eq!(header.source, Some(addr("255.255.255.255:65535")));

    let ffff = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
    let tcp6_max = format!("PROXY TCP6 {ffff} {ffff} 65535 65535\r\n");
    assert_eq!(tcp6_max.len(), 104);
    let header = parse_complete(tcp6_max.as_bytes());
    assert_eq!(header.destination, Some(addr(&format!("[{ffff}]:65535"))));

    let header = parse_complete(b"PROXY TCP6 2001:db8::1 ::ffff:10.0.0.1 1 0\r\n");
    assert_eq!(
        header,
        ProxyHeader::proxied(addr("[2001:db8::1]:1"), addr("[::ffff:10.0.0.1]:0"))
    );

    let unknown = ProxyHeader {
        command: Command::Proxy,
        source: None,
        destination: None,
        tlvs: vec![],
    };
    assert_eq!(parse_complete(b"PROXY UNKNOWN\r\n"), unknown);
    let unknown_max = format!("PROXY UNKNOWN {ffff} {ffff} 65535 65535\r\n");
    assert_eq!(unknown_max.len(), 107, "the spec's worst case");
    assert_eq!(parse_complete(unknown_max.as_bytes()), unknown);
}

#[test]
fn v1_malformed() {
    let cases: &[(&[u8], ProxyError)] = &[
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
            ProxyError::V1Malformed("line feed without carriage return"),
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",
            ProxyError::V1Malformed("carriage return without line feed"),
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            ProxyError::V1Malformed("expected 5 space-separated fields"),
        ),
        (
            b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
            ProxyError::V1Malformed("expected 5 space-separated fields"),
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
            ProxyError::V1Malformed("expected 5 space-separated fields"),
        ),
        (
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            ProxyError::V1Malformed("unknown protocol"),
        ),
        (
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            ProxyError::V1Malformed("invalid address"),
        ),
        (
            b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
            ProxyError::V1Malformed("invalid address"),
        ),
        (
            b"PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n",
            ProxyError::V1Malformed("invalid address"),
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
            ProxyError::V1Malformed("invalid port"),
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
            ProxyError::V1Malformed("invalid port"),
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 \r\n",
            ProxyError::V1Malformed("invalid port"),
        ),
        (b"PROXY \xff\r\n", ProxyError::V1Malformed("not ASCII")),
        (
            b"PROXY \r\n",
            ProxyError::V1Malformed("expected 5 space-separated fields"),
        ),
        (
            b"PROXY UNKNOWNX\r\n",
            ProxyError::V1Malformed("expected 5 space-separated fields"),
        ),
    ];
    for (bytes, expected) in cases {
        assert_eq!(
            parse(bytes).as_ref(),
            Err(expected),
            "{}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn v1_length_limit() {
    let mut long = b"PROXY UNKNOWN ".to_vec();
    long.resize(105, b'x');
    assert_eq!(parse(&long), Ok(None));
    long.push(b'x');
    assert_eq!(parse(&long), Err(ProxyError::V1TooLong));
    long[105] = b'\r';
    assert_eq!(parse(&long), Ok(None), "CR at the last allowed position");
    long.push(b'\n');
    assert_eq!(parse(&long).unwrap().unwrap().1, 107);
}

#[test]
fn v2_tcp4_and_tcp6() {
    let mut payload = vec![192, 168, 0, 1, 192, 168, 0, 11];
    payload.extend_from_slice(&56324u16.to_be_bytes());
    payload.extend_from_slice(&443u16.to_be_bytes());
    let bytes = v2(0x21, 0x11, &payload);
    assert_eq!(
        bytes[..16],
        *b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a\x21\x11\x00\x0c"
    );
    let header = parse_complete(&bytes);
    assert_eq!(
        header,
        ProxyHeader::proxied(addr("192.168.0.1:56324"), addr("192.168.0.11:443"))
    );
    let mut encoded = Vec::new();
    encode_v2(&header, &mut encoded).unwrap();
    assert_eq!(encoded, bytes);

    let mut payload = Vec::new();
    payload.extend_from_slice(
        &"2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    payload.extend_from_slice(
        &"2001:db8::2"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    payload.extend_from_slice(&[0x30, 0x39, 0x07, 0x5b]);
    let bytes = v2(0x21, 0x21, &payload);
    let header = parse_complete(&bytes);
    assert_eq!(
        header,
        ProxyHeader::proxied(addr("[2001:db8::1]:12345"), addr("[2001:db8::2]:1883"))
    );
    let mut encoded = Vec::new();
    encode_v2(&header, &mut encoded).unwrap();
    assert_eq!(encoded, bytes);
}

#[test]
fn v2_local_unspec_and_tlvs() {
    assert_eq!(parse_complete(&v2(0x20, 0x00, &[])), ProxyHeader::local());
    // LOCAL ignores addresses and unknown families alike.
    let local_tcp4 = v2(
        0x20,
        0x11,
        &[1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2, 0x04, 0, 0],
    );
    assert_eq!(
        parse_complete(&local_tcp4),
        ProxyHeader::local().with_tlv(0x04, Bytes::new())
    );
    assert_eq!(
        parse_complete(&v2(0x20, 0x31, &[0xAA; 216])),
        ProxyHeader::local()
    );
    assert_eq!(
        parse_complete(&v2(0x20, 0x11, &[0xAA; 3])),
        ProxyHeader::local()
    );

    let tlvs = [0x01, 0x00, 0x02, b'h', b'2', 0xE0, 0x00, 0x00];
    let header = parse_complete(&v2(0x21, 0x00, &tlvs));
    assert_eq!(header.command, Command::Proxy);
    assert_eq!((header.source, header.destination), (None, None));
    assert_eq!(
        header.tlvs,
        vec![
            Tlv {
                kind: 0x01,
                value: Bytes::from_static(b"h2")
            },
            Tlv {
                kind: 0xE0,
                value: Bytes::new()
            },
        ]
    );
    assert_eq!(header.conn_id(), None, "a conn id must be 8 bytes");
}

#[test]
fn v2_errors() {
    let tcp4 = [0u8; 12];
    let cases: &[(Vec<u8>, ProxyError)] = &[
        (v2(0x11, 0x11, &tcp4), ProxyError::V2Version(1)),
        (v2(0x31, 0x11, &tcp4), ProxyError::V2Version(3)),
        (v2(0x22, 0x11, &tcp4), ProxyError::V2Command(2)),
        (v2(0x21, 0x12, &tcp4), ProxyError::V2Family(0x12)),
        (v2(0x21, 0x10, &tcp4), ProxyError::V2Family(0x10)),
        (v2(0x21, 0x31, &[0; 216]), ProxyError::V2Family(0x31)),
        (
            v2(0x21, 0x11, &[0; 11]),
            ProxyError::V2AddressLength {
                needed: 12,
                len: 11,
            },
        ),
        (
            v2(0x21, 0x21, &[0; 12]),
            ProxyError::V2AddressLength {
                needed: 36,
                len: 12,
            },
        ),
        (v2(0x21, 0x11, &[0; 13]), ProxyError::V2TlvTruncated),
        (v2(0x21, 0x11, &[0; 14]), ProxyError::V2TlvTruncated),
        (
            v2(0x21, 0x00, &[0xE1, 0x00, 0x02, b'x']),
            ProxyError::V2TlvTruncated,
        ),
        (v2(0x21, 0x00, &[0; 4097]), ProxyError::V2TooLong(4097)),
    ];
    for (bytes, expected) in cases {
        assert_eq!(parse(bytes).as_ref(), Err(expected), "{bytes:02x?}");
    }
    // Header-level errors are reported before the payload arrives.
    assert_eq!(
        parse(&v2(0x21, 0x00, &[0; 4097])[..16]),
        Err(ProxyError::V2TooLong(4097))
    );
    assert_eq!(
        parse(&v2(0x21, 0x31, &[0; 216])[..16]),
        Err(ProxyError::V2Family(0x31))
    );
    let mut noop = vec![0x04, 0x0F, 0xFD];
    noop.resize(4096, 0);
    let (header, consumed) = parse(&v2(0x21, 0x00, &noop)).unwrap().unwrap();
    assert_eq!((consumed, header.tlvs[0].value.len()), (16 + 4096, 4093));
}

#[test]
fn garbage_is_rejected_quickly() {
    let cases: &[&[u8]] = &[
        b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c",
        b"GET / HTTP/1.1\r\n",
        b"X",
        b"proxy TCP4",
        b"PROXYTCP4",
        b"PROX\r",
        b"\r\n\r\n\x00\r\nQUIX\n",
        b"\r\r",
        b"\x16\x03\x01",
    ];
    for bytes in cases {
        assert_eq!(parse(bytes), Err(ProxyError::NotProxy), "{bytes:02x?}");
    }
    assert_eq!(parse(b""), Ok(None));
    assert_eq!(parse(b"PRO"), Ok(None));
    assert_eq!(parse(b"\r\n\r\n\x00"), Ok(None));
}

#[test]
fn throng_tlvs() {
    let header = ProxyHeader::proxied(addr("10.1.2.3:40000"), addr("10.0.0.1:1883"))
        .with_conn_id(7)
        .with_assigned_client_id("auto-1")
        .with_conn_id(0x0102_0304_0506_0708)
        .with_tlv(0xE5, Bytes::from_static(b"other"));
    assert_eq!(header.conn_id(), Some(0x0102_0304_0506_0708));
    assert_eq!(header.assigned_client_id(), Some("auto-1"));
    assert_eq!(header.tlvs.len(), 3, "setters replace, with_tlv appends");
    let mut bytes = Vec::new();
    encode_v2(&header, &mut bytes).unwrap();
    assert!(
        bytes
            .windows(11)
            .any(|w| w == [TLV_THRONG_CONN_ID, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8])
    );
    assert!(bytes.windows(9).any(|w| w == *b"\xe1\x00\x06auto-1"));
    assert_eq!(parse(&bytes), Ok(Some((header, bytes.len()))));

    let bad_utf8 = ProxyHeader::local().with_tlv(TLV_THRONG_CLIENT_ID, vec![0xff]);
    assert_eq!(bad_utf8.assigned_client_id(), None);
    assert_eq!(ProxyHeader::local().conn_id(), None);
}

#[test]
fn encode_edge_cases() {
    // Mixed families are sent as IPv6 with IPv4-mapped addresses.
    let mixed = ProxyHeader::proxied(addr("1.2.3.4:1"), addr("[::1]:2"));
    let mut bytes = Vec::new();
    encode_v2(&mixed, &mut bytes).unwrap();
    let (parsed, _) = parse(&bytes).unwrap().unwrap();
    assert_eq!(parsed.source, Some(addr("[::ffff:1.2.3.4]:1")));

    // LOCAL never carries addresses; one missing address means AF_UNSPEC.
    let mut local = ProxyHeader::proxied(addr("1.2.3.4:1"), addr("5.6.7.8:2"));
    local.command = Command::Local;
    bytes.clear();
    encode_v2(&local, &mut bytes).unwrap();
    assert_eq!(bytes, v2(0x20, 0x00, &[]));
    let half = ProxyHeader {
        destination: None,
        ..ProxyHeader::proxied(addr("1.2.3.4:1"), addr("5.6.7.8:2"))
    };
    bytes.clear();
    encode_v2(&half, &mut bytes).unwrap();
    assert_eq!(bytes, v2(0x21, 0x00, &[]));

    // Too large: error and nothing written.
    let big = ProxyHeader::local().with_assigned_client_id(&"x".repeat(4094));
    bytes.clear();
    assert_eq!(
        encode_v2(&big, &mut bytes),
        Err(ProxyError::V2TooLong(4097))
    );
    assert!(bytes.is_empty());
    let fits = ProxyHeader::local().with_assigned_client_id(&"x".repeat(4093));
    encode_v2(&fits, &mut bytes).unwrap();
    assert_eq!(parse(&bytes).unwrap().unwrap().0, fits);
}
