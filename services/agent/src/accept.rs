//! The per-connection pipeline: accept → PROXY header from the load balancer →
//! blocklist → admission → CONNECT (deadline, size cap) → client id → ring owner →
//! hand-off, falling back along the ring when a handler cannot be reached.

use std::net::SocketAddr;
use std::sync::Arc;

use throng_codec::{ProtocolVersion, reason};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::Core;
use crate::admission::{AdmitGuard, Refusal};
use crate::first_packet::{FirstPacket, read_connect, send_refusal};
use crate::handoff::{Handed, Outgoing};
use crate::prefixed::Prefixed;
use crate::tls::TlsConfigWatcher;

pub(crate) async fn accept_loop(
    listener: TcpListener,
    core: Arc<Core>,
    tls: Option<TlsConfigWatcher>,
) {
    loop {
        let permit = tokio::select! {
            permit = core.pending.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            () = core.stop.cancelled() => return,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = core.stop.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let core_for_task = core.clone();
        let tls = tls.clone();
        core.tracker.spawn(async move {
            core_for_task.metrics.connections.inc();
            let relayed = serve(stream, peer, &core_for_task, tls, permit).await;
            if !relayed {
                core_for_task.metrics.connections.dec();
            }
        });
    }
}

/// Runs the pipeline for one connection; true when the relay now carries it (the
/// relay's close callback then ends its accounting).
async fn serve(
    stream: TcpStream,
    tcp_peer: SocketAddr,
    core: &Arc<Core>,
    tls: Option<TlsConfigWatcher>,
    pending: tokio::sync::OwnedSemaphorePermit,
) -> bool {
    let deadline = Instant::now() + core.config.connect_timeout;
    let Ok(local) = stream.local_addr() else {
        return false;
    };
    let (peer, local, initial) = if core.config.proxy_protocol {
        match tokio::time::timeout_at(deadline, throng_proxy_protocol::read_header(&stream)).await {
            Ok(Ok((header, rest))) => (
                header.source.unwrap_or(tcp_peer),
                header.destination.unwrap_or(local),
                rest,
            ),
            Ok(Err(err)) => {
                tracing::debug!(peer = %tcp_peer, error = %err, "bad PROXY header from the load balancer");
                core.metrics.accept("bad_connect");
                return false;
            }
            Err(_) => {
                core.metrics.accept("timeout");
                return false;
            }
        }
    } else {
        (tcp_peer, local, Vec::new())
    };
    if core
        .blocklist
        .as_ref()
        .is_some_and(|list| list.contains(peer.ip()))
    {
        // Closed at once, nothing sent.
        core.metrics.accept("blocked");
        return false;
    }
    let admission = core
        .admission
        .try_admit(peer.ip(), std::time::Instant::now());
    match tls {
        None => {
            let mut stream = stream;
            let Some(admitted) = admit(&mut stream, initial, deadline, admission, core).await
            else {
                return false;
            };
            // The CONNECT phase is over.
            drop(pending);
            let out = Outgoing {
                stream,
                conn_id: admitted.conn_id,
                peer,
                local,
                assigned_client_id: admitted.assigned,
                bytes: admitted.first.bytes,
            };
            route(out, admitted.client_id, admitted.first.version, core).await
        }
        Some(tls) => {
            let handshake = tls.acceptor().accept(Prefixed::new(initial, stream));
            let mut stream = match tokio::time::timeout_at(deadline, handshake).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(err)) => {
                    tracing::debug!(peer = %peer, error = %err, "tls handshake failed");
                    core.metrics.accept("bad_connect");
                    return false;
                }
                Err(_) => {
                    core.metrics.accept("timeout");
                    return false;
                }
            };
            let Some(admitted) = admit(&mut stream, Vec::new(), deadline, admission, core).await
            else {
                return false;
            };
            drop(pending);
            let conn_id = admitted.conn_id;
            crate::tls_proxy::route(stream, admitted, peer, local, core).await;
            core.table.close(conn_id);
            false
        }
    }
}

/// A device past the CONNECT phase, filed in the connection table.
pub(crate) struct Admitted {
    pub first: FirstPacket,
    pub conn_id: u64,
    /// The id to route by.
    pub client_id: Arc<str>,
    /// Set when the agent assigned the id (the device sent an empty one).
    pub assigned: Option<Arc<str>>,
}

/// The CONNECT phase on an open stream: read the CONNECT, apply the admission
/// verdict (refused devices get their CONNACK now), settle the client id and file
/// the connection. `None` when the connection is done with.
async fn admit<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    initial: Vec<u8>,
    deadline: Instant,
    admission: Result<AdmitGuard, Refusal>,
    core: &Core,
) -> Option<Admitted> {
    let first = read_first(stream, initial, deadline, core).await?;
    let guard = match admission {
        Ok(guard) => guard,
        Err(refusal) => {
            core.metrics.accept(refusal.metric_label());
            let code = refusal.connack_code(first.version.is_v5());
            send_refusal(stream, first.version, code).await;
            return None;
        }
    };
    let (client_id, assigned) = client_id(stream, &first, core).await?;
    core.metrics.accept("admitted");
    Some(Admitted {
        conn_id: core.table.open(Some(guard)),
        first,
        client_id,
        assigned,
    })
}

/// Reads the CONNECT under the deadline; refuses and returns `None` on anything else.
async fn read_first<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    initial: Vec<u8>,
    deadline: Instant,
    core: &Core,
) -> Option<FirstPacket> {
    match tokio::time::timeout_at(
        deadline,
        read_connect(stream, initial, core.config.max_connect_size),
    )
    .await
    {
        Ok(Ok(first)) => Some(first),
        Ok(Err((err, bytes))) => {
            tracing::debug!(error = %err, "bad first packet");
            core.metrics.accept("bad_connect");
            if let Some((version, code)) = err.connack(&bytes) {
                send_refusal(stream, version, code).await;
            }
            None
        }
        Err(_) => {
            core.metrics.accept("timeout");
            None
        }
    }
}

/// The client id to route by, and the one the agent assigned when the device sent
/// none (where the protocol allows it).
async fn client_id<S: AsyncWrite + Unpin>(
    stream: &mut S,
    first: &FirstPacket,
    core: &Core,
) -> Option<(Arc<str>, Option<Arc<str>>)> {
    if !first.client_id.is_empty() {
        return Some((Arc::from(first.client_id.as_str()), None));
    }
    let allowed =
        first.version.is_v5() || (first.version == ProtocolVersion::V3_1_1 && first.clean_start);
    if !allowed {
        core.metrics.accept("bad_connect");
        let code = if first.version.is_v5() {
            reason::CLIENT_IDENTIFIER_NOT_VALID
        } else {
            reason::v3::IDENTIFIER_REJECTED
        };
        send_refusal(stream, first.version, code).await;
        return None;
    }
    let assigned: Arc<str> = Arc::from(format!("throng-{:016x}", rand::random::<u64>()));
    Some((assigned.clone(), Some(assigned)))
}

/// Hands the connection to its ring owner, or to the next member when the owner
/// cannot take it; refuses it with "server unavailable" when nobody can.
async fn route(
    mut out: Outgoing,
    client_id: Arc<str>,
    version: ProtocolVersion,
    core: &Arc<Core>,
) -> bool {
    let ring = core.ring.borrow().clone();
    let started = Instant::now();
    let conn_id = out.conn_id;
    for member in ring.candidates(&client_id) {
        match core.handoff.hand(member, out).await {
            Handed::Done { relayed } => {
                core.metrics
                    .handoff_seconds
                    .observe(started.elapsed().as_secs_f64());
                core.metrics.routed_to(&member.id);
                if relayed {
                    core.table.routed(conn_id, client_id, member.id.clone());
                } else {
                    core.table.close(conn_id);
                }
                return relayed;
            }
            Handed::Retry(back, err) => {
                tracing::warn!(%client_id, error = %err, "handler unreachable, trying the next in ring order");
                core.metrics.handoff_failed(&member.id);
                out = *back;
            }
            Handed::Lost(err) => {
                tracing::warn!(%client_id, error = %err, "connection lost during hand-off");
                core.metrics.handoff_failed(&member.id);
                core.table.close(conn_id);
                return false;
            }
        }
    }
    tracing::warn!(%client_id, members = ring.len(), "no handler could take the connection");
    let code = if version.is_v5() {
        reason::SERVER_UNAVAILABLE
    } else {
        reason::v3::SERVER_UNAVAILABLE
    };
    send_refusal(&mut out.stream, version, code).await;
    core.table.close(conn_id);
    false
}
