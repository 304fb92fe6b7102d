//! Property tests: encode→parse round trips, prefixes need more bytes, and
//! arbitrary input never panics.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::Bytes;
use proptest::prelude::*;
use throng_proxy_protocol::{Command, ProxyHeader, Tlv, V2_SIGNATURE, encode_v2, fuzz_one, parse};

fn addresses() -> impl Strategy<Value = Option<(SocketAddr, SocketAddr)>> {
    let v4 = (any::<[u8; 4]>(), any::<u16>())
        .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port));
    let v6 = (any::<[u8; 16]>(), any::<u16>())
        .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port));
    prop_oneof![
        Just(None),
        (v4.clone(), v4).prop_map(Some),
        (v6.clone(), v6).prop_map(Some),
    ]
}

fn tlvs() -> impl Strategy<Value = Vec<Tlv>> {
    let tlv =
        (any::<u8>(), prop::collection::vec(any::<u8>(), 0..200)).prop_map(|(kind, value)| Tlv {
            kind,
            value: Bytes::from(value),
        });
    prop::collection::vec(tlv, 0..8)
}

fn header() -> impl Strategy<Value = ProxyHeader> {
    (any::<bool>(), addresses(), tlvs()).prop_map(|(local, addresses, tlvs)| ProxyHeader {
        command: if local {
            Command::Local
        } else {
            Command::Proxy
        },
        source: addresses.filter(|_| !local).map(|(s, _)| s),
        destination: addresses.filter(|_| !local).map(|(_, d)| d),
        tlvs,
    })
}

proptest! {
    #[test]
    fn encode_then_parse_round_trips(
        header in header(),
        trailing in prop::collection::vec(any::<u8>(), 0..8),
    ) {
        let mut bytes = Vec::new();
        encode_v2(&header, &mut bytes).unwrap();
        let encoded_len = bytes.len();
        for end in 0..encoded_len {
            prop_assert_eq!(parse(&bytes[..end]), Ok(None));
        }
        bytes.extend_from_slice(&trailing);
        prop_assert_eq!(parse(&bytes), Ok(Some((header, encoded_len))));
        fuzz_one(&bytes);
    }

    #[test]
    fn throng_tlvs_round_trip(
        conn_id in any::<u64>(),
        client_id in "\\PC{0,64}",
        header in header(),
    ) {
        let header = header.with_conn_id(conn_id).with_assigned_client_id(&client_id);
        let mut bytes = Vec::new();
        encode_v2(&header, &mut bytes).unwrap();
        let (parsed, _) = parse(&bytes).unwrap().unwrap();
        prop_assert_eq!(parsed.conn_id(), Some(conn_id));
        prop_assert_eq!(parsed.assigned_client_id(), Some(client_id.as_str()));
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..300)) {
        fuzz_one(&data);
    }

    #[test]
    fn arbitrary_bytes_after_a_signature_never_panic(
        data in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut bytes = V2_SIGNATURE.to_vec();
        bytes.extend_from_slice(&data);
        fuzz_one(&bytes);
        let mut line = b"PROXY ".to_vec();
        line.extend_from_slice(&data);
        fuzz_one(&line);
    }

    #[test]
    fn plausible_v2_headers_never_panic(
        ver_cmd in prop::sample::select(vec![0x20u8, 0x21, 0x22, 0x11]),
        family in prop::sample::select(vec![0x00u8, 0x11, 0x21, 0x31, 0x12]),
        declared in prop::option::of(0u16..600),
        payload in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let len = declared.unwrap_or(u16::try_from(payload.len()).unwrap());
        let mut bytes = V2_SIGNATURE.to_vec();
        bytes.extend_from_slice(&[ver_cmd, family]);
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend_from_slice(&payload);
        fuzz_one(&bytes);
    }

    #[test]
    fn v1_tcp_lines_parse(source in addresses().prop_filter_map("addresses", |a| a)) {
        let (s, d) = source;
        let protocol = if s.is_ipv4() { "TCP4" } else { "TCP6" };
        let line = format!("PROXY {protocol} {} {} {} {}\r\n", s.ip(), d.ip(), s.port(), d.port());
        prop_assert!(line.len() <= 107);
        prop_assert_eq!(
            parse(line.as_bytes()),
            Ok(Some((ProxyHeader::proxied(s, d), line.len())))
        );
        fuzz_one(line.as_bytes());
    }
}
