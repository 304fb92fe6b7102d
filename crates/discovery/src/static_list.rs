//! A fixed membership from configuration: `--handlers id=host:port,id2=host:port`.

use std::collections::HashSet;

use futures::Stream;
use futures::stream::{self, StreamExt};
use throng_ring::Member;

use crate::{DiscoveryError, Update};

/// Parses `id=host:port[,id=host:port...]`. Whitespace around entries, ids and
/// addresses is ignored; IPv6 hosts are written in brackets (`[::1]:1884`).
pub fn parse_static(spec: &str) -> Result<Vec<Member>, DiscoveryError> {
    if spec.trim().is_empty() {
        return Err(DiscoveryError::NoHandlers);
    }
    let mut seen = HashSet::new();
    let mut members = Vec::new();
    for (position, entry) in spec.split(',').map(str::trim).enumerate() {
        if entry.is_empty() {
            return Err(DiscoveryError::EmptyEntry {
                position: position + 1,
            });
        }
        let Some((id, addr)) = entry.split_once('=') else {
            return Err(DiscoveryError::MissingEquals {
                entry: entry.to_owned(),
            });
        };
        let (id, addr) = (id.trim(), addr.trim());
        if id.is_empty() {
            return Err(DiscoveryError::EmptyId {
                entry: entry.to_owned(),
            });
        }
        check_addr(addr).map_err(|reason| DiscoveryError::BadAddress {
            id: id.to_owned(),
            addr: addr.to_owned(),
            reason,
        })?;
        if !seen.insert(id) {
            return Err(DiscoveryError::DuplicateId { id: id.to_owned() });
        }
        members.push(Member::new(id, addr));
    }
    Ok(members)
}

/// Checks `host:port`; the error is the reason, for the message.
fn check_addr(addr: &str) -> Result<(), &'static str> {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err("expected host:port");
    };
    if host.is_empty() || host == "[]" {
        return Err("the host is empty");
    }
    let bracketed = host.starts_with('[') && host.ends_with(']');
    if host.contains(':') && !bracketed {
        return Err("an IPv6 host needs brackets, as in [::1]:1884");
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err("the port is not a number from 1 to 65535"),
        Ok(_) => Ok(()),
    }
}

/// A membership that never changes: one `Reset`, then nothing, forever.
pub fn static_updates(members: Vec<Member>) -> impl Stream<Item = Update> + Send + 'static {
    stream::once(async move { Update::Reset(members) }).chain(stream::pending())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_lists() {
        let cases: &[(&str, &[(&str, &str)])] = &[
            ("h0=10.0.0.1:1884", &[("h0", "10.0.0.1:1884")]),
            (
                "throng-handler-0=throng-handler-0.throng-handler:1884,throng-handler-1=10.0.0.2:1884",
                &[
                    ("throng-handler-0", "throng-handler-0.throng-handler:1884"),
                    ("throng-handler-1", "10.0.0.2:1884"),
                ],
            ),
            (
                " a = 127.0.0.1:1 , b=localhost:65535 ",
                &[("a", "127.0.0.1:1"), ("b", "localhost:65535")],
            ),
            ("v6=[::1]:1884", &[("v6", "[::1]:1884")]),
        ];
        for (spec, want) in cases {
            let want: Vec<Member> = want
                .iter()
                .map(|(id, addr)| Member::new(*id, *addr))
                .collect();
            assert_eq!(parse_static(spec).as_ref(), Ok(&want), "spec {spec:?}");
        }
    }

    #[test]
    fn rejects_bad_lists_with_the_reason() {
        let bad = |id: &str, addr: &str, reason| DiscoveryError::BadAddress {
            id: id.into(),
            addr: addr.into(),
            reason,
        };
        let cases = [
            ("", DiscoveryError::NoHandlers),
            ("  ", DiscoveryError::NoHandlers),
            ("h0=a:1,", DiscoveryError::EmptyEntry { position: 2 }),
            ("h0=a:1,,h1=b:1", DiscoveryError::EmptyEntry { position: 2 }),
            ("h0", DiscoveryError::MissingEquals { entry: "h0".into() }),
            (
                "h0:1884",
                DiscoveryError::MissingEquals {
                    entry: "h0:1884".into(),
                },
            ),
            (
                "=10.0.0.1:1884",
                DiscoveryError::EmptyId {
                    entry: "=10.0.0.1:1884".into(),
                },
            ),
            (
                " =a:1",
                DiscoveryError::EmptyId {
                    entry: "=a:1".into(),
                },
            ),
            ("h0=10.0.0.1", bad("h0", "10.0.0.1", "expected host:port")),
            ("h0=", bad("h0", "", "expected host:port")),
            ("h0=:1884", bad("h0", ":1884", "the host is empty")),
            ("h0=[]:1884", bad("h0", "[]:1884", "the host is empty")),
            (
                "h0=::1:1884",
                bad(
                    "h0",
                    "::1:1884",
                    "an IPv6 host needs brackets, as in [::1]:1884",
                ),
            ),
            (
                "h0=a:",
                bad("h0", "a:", "the port is not a number from 1 to 65535"),
            ),
            (
                "h0=a:0",
                bad("h0", "a:0", "the port is not a number from 1 to 65535"),
            ),
            (
                "h0=a:65536",
                bad("h0", "a:65536", "the port is not a number from 1 to 65535"),
            ),
            (
                "h0=a:-1",
                bad("h0", "a:-1", "the port is not a number from 1 to 65535"),
            ),
            (
                "h0=a:http",
                bad("h0", "a:http", "the port is not a number from 1 to 65535"),
            ),
            (
                "h0=a:1,h1=b:1,h0=c:1",
                DiscoveryError::DuplicateId { id: "h0".into() },
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(parse_static(spec), Err(want), "spec {spec:?}");
        }
    }

    #[test]
    fn error_messages_name_the_problem() {
        let err = parse_static("h0=a:1,h0=b:2").unwrap_err();
        assert_eq!(err.to_string(), "handler id \"h0\" is given twice");
        let err = parse_static("h0=a:x").unwrap_err();
        assert_eq!(
            err.to_string(),
            "handler \"h0\" has a bad address \"a:x\": the port is not a number from 1 to 65535"
        );
    }

    proptest::proptest! {
        #[test]
        fn prop_any_well_formed_list_parses_back(
            entries in proptest::collection::btree_map(
                "[a-z0-9][a-z0-9.-]{0,30}",
                ("[a-z0-9][a-z0-9.-]{0,40}|\\[[0-9a-f:]{2,20}\\]", 1u16..),
                1..20,
            ),
        ) {
            let spec: Vec<String> =
                entries.iter().map(|(id, (host, port))| format!("{id}={host}:{port}")).collect();
            let want: Vec<Member> = entries
                .iter()
                .map(|(id, (host, port))| Member::new(id.as_str(), format!("{host}:{port}")))
                .collect();
            proptest::prop_assert_eq!(parse_static(&spec.join(",")), Ok(want));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn static_updates_reset_once_then_stay_pending() {
        let members = parse_static("h0=a:1,h1=b:2").unwrap();
        let mut updates = Box::pin(static_updates(members.clone()));
        assert_eq!(updates.next().await, Some(Update::Reset(members)));
        let next = tokio::time::timeout(std::time::Duration::from_millis(50), updates.next()).await;
        assert!(next.is_err(), "the stream must stay pending, got {next:?}");
    }
}
