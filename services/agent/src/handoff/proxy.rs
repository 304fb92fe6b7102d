//! Proxy hand-off: connect to the handler's hand-off listener, send a PROXY v2
//! header (device addresses, conn id, assigned client id) and the bytes read so
//! far, then give both sockets to the relay, which holds no buffer while idle.

use std::time::Duration;

use throng_proxy_protocol::{ProxyHeader, encode_v2};
use throng_relay::Relay;
use throng_ring::Member;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::{Handed, HandoffError, Outgoing};
use crate::table::ConnTable;

pub struct ProxyHandoff {
    pub relay: Relay,
    pub timeout: Duration,
    pub table: std::sync::Arc<ConnTable>,
}

impl ProxyHandoff {
    pub async fn hand(&self, member: &Member, conn: Outgoing) -> Handed {
        let id = member.id.clone();
        let upstream =
            match tokio::time::timeout(self.timeout, TcpStream::connect(&*member.addr)).await {
                Ok(Ok(upstream)) => upstream,
                Ok(Err(err)) => {
                    return Handed::Retry(Box::new(conn), HandoffError::Unreachable(id, err));
                }
                Err(_) => return Handed::Retry(Box::new(conn), HandoffError::Timeout(id)),
            };
        let mut header = ProxyHeader::proxied(conn.peer, conn.local).with_conn_id(conn.conn_id);
        if let Some(client_id) = &conn.assigned_client_id {
            header = header.with_assigned_client_id(client_id);
        }
        let mut first = Vec::with_capacity(64 + conn.bytes.len());
        if let Err(err) = encode_v2(&header, &mut first) {
            return Handed::Lost(HandoffError::Failed(id, err.to_string()));
        }
        first.extend_from_slice(&conn.bytes);
        let mut upstream = upstream;
        match tokio::time::timeout(self.timeout, upstream.write_all(&first)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                return Handed::Retry(Box::new(conn), HandoffError::Unreachable(id, err));
            }
            Err(_) => return Handed::Retry(Box::new(conn), HandoffError::Timeout(id)),
        }
        let conn_id = conn.conn_id;
        // The relay wants TCP_NODELAY on both sides; the fd hand-off leaves it to the handler.
        let _ = conn.stream.set_nodelay(true);
        let client = conn.stream;
        let upstream = match upstream.into_std() {
            Ok(upstream) => upstream,
            Err(err) => return Handed::Lost(HandoffError::Failed(id, err.to_string())),
        };
        match self.relay.add(client, upstream, Vec::new()) {
            Ok(pair) => {
                self.table.relayed(conn_id, pair.get());
                Handed::Done { relayed: true }
            }
            Err(err) => Handed::Lost(HandoffError::Failed(id, err.to_string())),
        }
    }
}
