//! Targets, source addresses and client sockets.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

use anyhow::{Context, bail};
use socket2::{Domain, Protocol, Socket, Type};

/// Parses `HOST:PORT[,HOST:PORT…]` into socket addresses (first resolution of each).
pub fn parse_targets(spec: &str) -> anyhow::Result<Vec<SocketAddr>> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let addr = part
            .to_socket_addrs()
            .with_context(|| format!("resolving target {part:?}"))?
            .next()
            .with_context(|| format!("target {part:?} resolves to nothing"))?;
        out.push(addr);
    }
    if out.is_empty() {
        bail!("no target given");
    }
    Ok(out)
}

/// Parses source addresses: `A.B.C.D-A.B.C.E` ranges and single addresses, comma separated.
pub fn parse_source_ips(spec: &str) -> anyhow::Result<Vec<IpAddr>> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if let Some((lo, hi)) = part.split_once('-') {
            let lo: Ipv4Addr = lo
                .trim()
                .parse()
                .with_context(|| format!("bad address in {part:?}"))?;
            let hi: Ipv4Addr = hi
                .trim()
                .parse()
                .with_context(|| format!("bad address in {part:?}"))?;
            let (lo, hi) = (u32::from(lo), u32::from(hi));
            if hi < lo {
                bail!("empty source range {part:?}");
            }
            if hi - lo > 1 << 16 {
                bail!("source range {part:?} is too large");
            }
            out.extend((lo..=hi).map(|v| IpAddr::V4(Ipv4Addr::from(v))));
        } else {
            out.push(
                part.parse()
                    .with_context(|| format!("bad source address {part:?}"))?,
            );
        }
    }
    if out.is_empty() {
        bail!("no source address given");
    }
    Ok(out)
}

/// A non-blocking client socket bound to `source` (ephemeral port), ready to connect.
pub fn client_socket(
    source: Option<IpAddr>,
    target: SocketAddr,
) -> io::Result<tokio::net::TcpSocket> {
    let domain = if target.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let sock = Socket::new(
        domain,
        Type::STREAM.nonblocking().cloexec(),
        Some(Protocol::TCP),
    )?;
    sock.set_tcp_nodelay(true)?;
    // Lets a source port whose previous connection is in TIME_WAIT be reused across runs.
    sock.set_reuse_address(true)?;
    if let Some(ip) = source {
        // The port is chosen at connect: the kernel's bind-time search for a free
        // port grows with the sockets open and, at 800,000 connections, was most of
        // this tool's CPU (the connect rate fell to a few hundred per second).
        throng_sockopt::bind_address_no_port(&sock)?;
        sock.bind(&SocketAddr::new(ip, 0).into())?;
    }
    Ok(tokio::net::TcpSocket::from_std_stream(sock.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ranges() {
        let ips = parse_source_ips("127.0.0.2-127.0.0.4,127.0.1.9").unwrap();
        assert_eq!(
            ips,
            vec![
                "127.0.0.2".parse::<IpAddr>().unwrap(),
                "127.0.0.3".parse().unwrap(),
                "127.0.0.4".parse().unwrap(),
                "127.0.1.9".parse().unwrap(),
            ]
        );
        assert!(parse_source_ips("127.0.0.4-127.0.0.2").is_err());
        assert!(parse_source_ips("").is_err());
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn source_port_is_chosen_at_connect() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        let sock = client_socket(Some("127.0.0.2".parse().unwrap()), target).unwrap();
        assert_eq!(sock.local_addr().unwrap().port(), 0, "port taken at bind");
        let stream = sock.connect(target).await.unwrap();
        let local = stream.local_addr().unwrap();
        assert_eq!(local.ip().to_string(), "127.0.0.2");
        assert_ne!(local.port(), 0);
    }

    #[test]
    fn targets() {
        let t = parse_targets("127.0.0.1:1883, 127.0.0.1:1884").unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[1].port(), 1884);
        assert!(parse_targets("nonsense").is_err());
    }
}
