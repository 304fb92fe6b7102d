//! PROXY protocol v2: the binary header (signature, command, family, length,
//! address block, TLVs), parsing and encoding.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::Bytes;

use crate::error::ProxyError;
use crate::header::{Command, ProxyHeader, Tlv};

/// The 12-byte v2 signature.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Signature, version/command, family/protocol and length.
pub(crate) const HEADER_LEN: usize = 16;
/// Largest accepted length of addresses plus TLVs.
pub const MAX_V2_PAYLOAD: usize = 4096;

const VERSION: u8 = 2;
const CMD_LOCAL: u8 = 0x0;
const CMD_PROXY: u8 = 0x1;
/// Family and protocol bytes: AF_UNSPEC, TCP over IPv4, TCP over IPv6.
const FAM_UNSPEC: u8 = 0x00;
const FAM_TCP4: u8 = 0x11;
const FAM_TCP6: u8 = 0x21;
const TCP4_ADDR_LEN: usize = 12;
const TCP6_ADDR_LEN: usize = 36;

/// Parses a v2 header; `buf` is known to start with [`SIGNATURE`].
pub(crate) fn parse(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let Some(&[ver_cmd, family, len_hi, len_lo]) = buf.get(SIGNATURE.len()..HEADER_LEN) else {
        return Ok(None);
    };
    if ver_cmd >> 4 != VERSION {
        return Err(ProxyError::V2Version(ver_cmd >> 4));
    }
    let len = usize::from(u16::from_be_bytes([len_hi, len_lo]));
    if len > MAX_V2_PAYLOAD {
        return Err(ProxyError::V2TooLong(len));
    }
    let address_len = family_address_len(family);
    let command = match ver_cmd & 0x0F {
        CMD_LOCAL => Command::Local,
        CMD_PROXY => Command::Proxy,
        other => return Err(ProxyError::V2Command(other)),
    };
    let address_len = match (command, address_len) {
        (Command::Proxy, None) => return Err(ProxyError::V2Family(family)),
        (Command::Proxy, Some(needed)) if len < needed => {
            return Err(ProxyError::V2AddressLength { needed, len });
        }
        // LOCAL: the spec says to ignore the protocol block; TLVs are kept
        // only when the family tells where they start.
        (Command::Local, Some(needed)) if len < needed => None,
        (_, known) => known,
    };
    let Some(payload) = buf.get(HEADER_LEN..HEADER_LEN + len) else {
        return Ok(None);
    };
    let header = match address_len {
        None => ProxyHeader::local(),
        Some(address_len) => {
            let (addresses, tlvs) = payload.split_at(address_len);
            let (source, destination) = match command {
                Command::Local => (None, None),
                Command::Proxy => parse_addresses(addresses),
            };
            ProxyHeader {
                command,
                source,
                destination,
                tlvs: parse_tlvs(tlvs)?,
            }
        }
    };
    Ok(Some((header, HEADER_LEN + len)))
}

fn family_address_len(family: u8) -> Option<usize> {
    match family {
        FAM_UNSPEC => Some(0),
        FAM_TCP4 => Some(TCP4_ADDR_LEN),
        FAM_TCP6 => Some(TCP6_ADDR_LEN),
        _ => None,
    }
}

/// Decodes a 0-, 12- or 36-byte address block.
fn parse_addresses(block: &[u8]) -> (Option<SocketAddr>, Option<SocketAddr>) {
    let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
    let (source, destination) = match block.len() {
        TCP4_ADDR_LEN => {
            let ip = |at: usize| IpAddr::V4(Ipv4Addr::from(array::<4>(&block[at..at + 4])));
            (
                SocketAddr::new(ip(0), port(8)),
                SocketAddr::new(ip(4), port(10)),
            )
        }
        TCP6_ADDR_LEN => {
            let ip = |at: usize| IpAddr::V6(Ipv6Addr::from(array::<16>(&block[at..at + 16])));
            (
                SocketAddr::new(ip(0), port(32)),
                SocketAddr::new(ip(16), port(34)),
            )
        }
        _ => return (None, None),
    };
    (Some(source), Some(destination))
}

fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(bytes);
    out
}

fn parse_tlvs(mut rest: &[u8]) -> Result<Vec<Tlv>, ProxyError> {
    let mut tlvs = Vec::new();
    while !rest.is_empty() {
        let Some(&[kind, len_hi, len_lo]) = rest.get(..3) else {
            return Err(ProxyError::V2TlvTruncated);
        };
        let len = usize::from(u16::from_be_bytes([len_hi, len_lo]));
        let value = rest.get(3..3 + len).ok_or(ProxyError::V2TlvTruncated)?;
        tlvs.push(Tlv {
            kind,
            value: Bytes::copy_from_slice(value),
        });
        rest = &rest[3 + len..];
    }
    Ok(tlvs)
}

/// Appends `header` to `out` in v2 format.
///
/// LOCAL headers, and PROXY headers missing either address, are sent as
/// `AF_UNSPEC` (addresses dropped). Mixed IPv4/IPv6 addresses are sent as
/// IPv6 with IPv4-mapped addresses. Fails, leaving `out` untouched, when
/// addresses plus TLVs exceed [`MAX_V2_PAYLOAD`] bytes.
pub fn encode_v2(header: &ProxyHeader, out: &mut Vec<u8>) -> Result<(), ProxyError> {
    let addresses = match (header.command, header.source, header.destination) {
        (Command::Proxy, Some(source), Some(destination)) => Some((source, destination)),
        _ => None,
    };
    let (family, address_len) = match addresses {
        None => (FAM_UNSPEC, 0),
        Some((SocketAddr::V4(_), SocketAddr::V4(_))) => (FAM_TCP4, TCP4_ADDR_LEN),
        Some(_) => (FAM_TCP6, TCP6_ADDR_LEN),
    };
    let len = address_len + header.tlvs.iter().map(|t| 3 + t.value.len()).sum::<usize>();
    if len > MAX_V2_PAYLOAD {
        return Err(ProxyError::V2TooLong(len));
    }
    let command = match header.command {
        Command::Local => CMD_LOCAL,
        Command::Proxy => CMD_PROXY,
    };
    out.reserve(HEADER_LEN + len);
    out.extend_from_slice(&SIGNATURE);
    out.extend_from_slice(&[VERSION << 4 | command, family]);
    out.extend_from_slice(
        &u16::try_from(len)
            .expect("len <= MAX_V2_PAYLOAD")
            .to_be_bytes(),
    );
    if let Some((source, destination)) = addresses {
        match (source.ip(), destination.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                out.extend_from_slice(&s.octets());
                out.extend_from_slice(&d.octets());
            }
            (s, d) => {
                out.extend_from_slice(&to_v6(s).octets());
                out.extend_from_slice(&to_v6(d).octets());
            }
        }
        out.extend_from_slice(&source.port().to_be_bytes());
        out.extend_from_slice(&destination.port().to_be_bytes());
    }
    for tlv in &header.tlvs {
        out.push(tlv.kind);
        out.extend_from_slice(
            &u16::try_from(tlv.value.len())
                .expect("len <= MAX")
                .to_be_bytes(),
        );
        out.extend_from_slice(&tlv.value);
    }
    Ok(())
}

fn to_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}
