//! PROXY protocol v1: the human-readable `PROXY TCP4|TCP6|UNKNOWN ...\r\n` line.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::MAX_V1_LEN;
use crate::error::ProxyError;
use crate::header::{Command, ProxyHeader};

pub(crate) const PREFIX: &[u8] = b"PROXY ";

/// Parses a v1 line; `buf` is known to start with [`PREFIX`].
pub(crate) fn parse(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    // The CR of the final CRLF is at index MAX_V1_LEN - 2 at the latest.
    let window = &buf[..buf.len().min(MAX_V1_LEN - 1)];
    let Some(cr) = window.iter().position(|&b| b == b'\r' || b == b'\n') else {
        return if buf.len() >= MAX_V1_LEN - 1 {
            Err(ProxyError::V1TooLong)
        } else {
            Ok(None)
        };
    };
    if buf[cr] == b'\n' {
        return Err(ProxyError::V1Malformed("line feed without carriage return"));
    }
    match buf.get(cr + 1) {
        None => return Ok(None),
        Some(b'\n') => {}
        Some(_) => return Err(ProxyError::V1Malformed("carriage return without line feed")),
    }
    let line = std::str::from_utf8(&buf[PREFIX.len()..cr])
        .map_err(|_| ProxyError::V1Malformed("not ASCII"))?;
    Ok(Some((parse_line(line)?, cr + 2)))
}

/// Parses what follows `PROXY ` up to (excluding) the CRLF.
fn parse_line(line: &str) -> Result<ProxyHeader, ProxyError> {
    if line == "UNKNOWN" || line.starts_with("UNKNOWN ") {
        // The spec tells receivers to ignore whatever follows UNKNOWN.
        return Ok(ProxyHeader {
            command: Command::Proxy,
            source: None,
            destination: None,
            tlvs: Vec::new(),
        });
    }
    let fields: Vec<&str> = line.split(' ').collect();
    let [protocol, source, destination, source_port, destination_port] = fields[..] else {
        return Err(ProxyError::V1Malformed("expected 5 space-separated fields"));
    };
    let (source, destination) = match protocol {
        "TCP4" => (
            IpAddr::V4(parse_ip::<Ipv4Addr>(source)?),
            IpAddr::V4(parse_ip::<Ipv4Addr>(destination)?),
        ),
        "TCP6" => (
            IpAddr::V6(parse_ip::<Ipv6Addr>(source)?),
            IpAddr::V6(parse_ip::<Ipv6Addr>(destination)?),
        ),
        _ => return Err(ProxyError::V1Malformed("unknown protocol")),
    };
    Ok(ProxyHeader::proxied(
        SocketAddr::new(source, parse_port(source_port)?),
        SocketAddr::new(destination, parse_port(destination_port)?),
    ))
}

fn parse_ip<T: std::str::FromStr>(s: &str) -> Result<T, ProxyError> {
    s.parse()
        .map_err(|_| ProxyError::V1Malformed("invalid address"))
}

fn parse_port(s: &str) -> Result<u16, ProxyError> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ProxyError::V1Malformed("invalid port"));
    }
    s.parse()
        .map_err(|_| ProxyError::V1Malformed("invalid port"))
}
