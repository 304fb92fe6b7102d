//! The per-connection pipeline: accept → PROXY header from the load balancer →
//! blocklist → admission → CONNECT (deadline, size cap) → client id → ring owner →
//! hand-off, falling back along the ring when a handler cannot be reached.

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;

use throng_codec::{ProtocolVersion, reason};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use crate::Core;
use crate::admission::{AdmitGuard, Refusal};
use crate::fast::{self, Now};
use crate::first_packet::{FirstPacket, read_connect, send_refusal};
use crate::handoff::{Handed, Outgoing};
use crate::tls::TlsConfigWatcher;

pub(crate) async fn accept_loop(
    listener: TcpListener,
    core: Arc<Core>,
    tls: Option<TlsConfigWatcher>,
) {
    // A listener bound to one address gives every connection that local address:
    // no getsockname per connection.
    let local = listener
        .local_addr()
        .ok()
        .filter(|addr| !addr.ip().is_unspecified());
    let listener = match readiness(listener) {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!(error = %err, "cannot serve the listener");
            return;
        }
    };
    loop {
        if core.stop.is_cancelled() {
            return;
        }
        let permit = match core.pending.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => tokio::select! {
                permit = core.pending.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
                () = core.stop.cancelled() => return,
            },
        };
        let accepted = loop {
            // Biased: while connections keep coming, no cancellation waiter is
            // registered and removed per accept (the loop checks `stop` above).
            let mut ready = tokio::select! {
                biased;
                ready = listener.readable() => match ready {
                    Ok(ready) => ready,
                    Err(err) => break Err(err),
                },
                () = core.stop.cancelled() => return,
            };
            // Drains the backlog: readiness is cleared only on WouldBlock.
            if let Ok(accepted) = ready.try_io(|listener| accept_nonblocking(listener.get_ref())) {
                break accepted;
            }
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
        core.metrics.connections.inc();
        match &tls {
            None => start_plain(stream, peer, local, &core, permit),
            Some(tls) => {
                let core = core.clone();
                let tls = tls.clone();
                core.clone().tracker.spawn(async move {
                    crate::tls_proxy::serve(stream, peer, local, &core, tls, permit).await;
                    core.metrics.connections.dec();
                });
            }
        }
    }
}

/// The listener as tokio sees it: readiness only, so that accepted sockets stay
/// plain std sockets, not registered with tokio until they have to wait.
// `AsyncFd::register` is `unsafe` (denied here); its contract holds all the same:
// the AsyncFd owns the listener, so the fd cannot close while registered.
#[allow(deprecated)]
fn readiness(listener: TcpListener) -> std::io::Result<AsyncFd<std::net::TcpListener>> {
    AsyncFd::with_interest(listener.into_std()?, tokio::io::Interest::READABLE)
}

/// `accept4` with the socket non-blocking from the start (one syscall fewer than
/// std's accept and `set_nonblocking`).
fn accept_nonblocking(
    listener: &std::net::TcpListener,
) -> std::io::Result<(std::net::TcpStream, SocketAddr)> {
    use rustix::net::SocketFlags;
    let (fd, peer) = rustix::net::acceptfrom_with(
        listener.as_fd(),
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
    )?;
    let peer = peer
        .and_then(|peer| SocketAddr::try_from(peer).ok())
        .ok_or_else(|| std::io::Error::other("accepted a socket with no IP peer address"))?;
    Ok((std::net::TcpStream::from(fd), peer))
}

/// A plain connection: done here and now when everything it needs is already
/// there, else by a task that waits.
fn start_plain(
    stream: std::net::TcpStream,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    core: &Arc<Core>,
    pending: OwnedSemaphorePermit,
) {
    let task_core = core.clone();
    match fast::serve_now(stream, peer, local, core, pending) {
        Now::Done { relayed } => {
            if !relayed {
                core.metrics.connections.dec();
            }
        }
        Now::Wait(waiting) => {
            core.tracker.spawn(async move {
                if !serve_plain(waiting, &task_core).await {
                    task_core.metrics.connections.dec();
                }
            });
        }
        Now::Route(out, client_id, version) => {
            core.tracker.spawn(async move {
                if !route(out, client_id, version, &task_core).await {
                    task_core.metrics.connections.dec();
                }
            });
        }
    }
}

/// A plain connection that has to wait, and what was done for it so far.
pub(crate) struct Waiting {
    pub stream: std::net::TcpStream,
    pub tcp_peer: SocketAddr,
    pub local: SocketAddr,
    pub deadline: Instant,
    pub pending: OwnedSemaphorePermit,
    /// Bytes read from the socket so far.
    pub read: Vec<u8>,
    /// Device address, local address and admission verdict, once the PROXY header
    /// (if any) is read and the blocklist and admission have been asked.
    pub admitted: Option<(SocketAddr, SocketAddr, Result<AdmitGuard, Refusal>)>,
}

/// Runs the rest of the pipeline for a plain connection; true when the relay now
/// carries it (the relay's close callback then ends its accounting).
async fn serve_plain(waiting: Waiting, core: &Arc<Core>) -> bool {
    let Waiting {
        stream,
        tcp_peer,
        local,
        deadline,
        pending,
        read,
        admitted,
    } = waiting;
    let Ok(mut stream) = TcpStream::from_std(stream) else {
        return false;
    };
    let (peer, local, initial, admission) = match admitted {
        Some((peer, local, admission)) => (peer, local, read, admission),
        None => {
            let Some((peer, local, initial)) =
                proxy_header(&stream, tcp_peer, local, read, deadline, core).await
            else {
                return false;
            };
            let Some(admission) = fast::check_peer(peer, core) else {
                return false;
            };
            (peer, local, initial, admission)
        }
    };
    let Some(admitted) = admit(&mut stream, initial, deadline, admission, core).await else {
        return false;
    };
    // The CONNECT phase is over.
    drop(pending);
    let Ok(stream) = stream.into_std() else {
        core.table.close(admitted.conn_id);
        return false;
    };
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

/// The device and local addresses: from the PROXY header when the load balancer
/// sends one (`read` holds its first bytes), else the TCP ones.
pub(crate) async fn proxy_header(
    stream: &TcpStream,
    tcp_peer: SocketAddr,
    local: SocketAddr,
    read: Vec<u8>,
    deadline: Instant,
    core: &Core,
) -> Option<(SocketAddr, SocketAddr, Vec<u8>)> {
    if !core.config.proxy_protocol {
        return Some((tcp_peer, local, read));
    }
    let header = throng_proxy_protocol::read_header_after(stream, read);
    match tokio::time::timeout_at(deadline, header).await {
        Ok(Ok((header, rest))) => Some((
            header.source.unwrap_or(tcp_peer),
            header.destination.unwrap_or(local),
            rest,
        )),
        Ok(Err(err)) => {
            tracing::debug!(peer = %tcp_peer, error = %err, "bad PROXY header from the load balancer");
            core.metrics.accept("bad_connect");
            None
        }
        Err(_) => {
            core.metrics.accept("timeout");
            None
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
pub(crate) async fn admit<S: AsyncRead + AsyncWrite + Unpin>(
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
    match route_id(first) {
        Ok(ids) => Some(ids),
        Err(code) => {
            core.metrics.accept("bad_connect");
            send_refusal(stream, first.version, code).await;
            None
        }
    }
}

/// The id to route by and the assigned one, or the CONNACK code refusing an empty
/// id the protocol does not allow.
pub(crate) fn route_id(first: &FirstPacket) -> Result<(Arc<str>, Option<Arc<str>>), u8> {
    if !first.client_id.is_empty() {
        return Ok((Arc::from(first.client_id.as_str()), None));
    }
    let allowed =
        first.version.is_v5() || (first.version == ProtocolVersion::V3_1_1 && first.clean_start);
    if !allowed {
        return Err(if first.version.is_v5() {
            reason::CLIENT_IDENTIFIER_NOT_VALID
        } else {
            reason::v3::IDENTIFIER_REJECTED
        });
    }
    let assigned: Arc<str> = Arc::from(format!("throng-{:016x}", rand::random::<u64>()));
    Ok((assigned.clone(), Some(assigned)))
}

/// Hands the connection to its ring owner, or to the next member when the owner
/// cannot take it; refuses it with "server unavailable" when nobody can.
pub(crate) async fn route(
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
                return handed(core, member, conn_id, client_id, relayed, started);
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
    if let Ok(mut stream) = TcpStream::from_std(out.stream) {
        send_refusal(&mut stream, version, code).await;
    }
    core.table.close(conn_id);
    false
}

/// Books a connection a handler took; returns `relayed`.
pub(crate) fn handed(
    core: &Core,
    member: &throng_ring::Member,
    conn_id: u64,
    client_id: Arc<str>,
    relayed: bool,
    started: Instant,
) -> bool {
    core.metrics
        .handoff_seconds
        .observe(started.elapsed().as_secs_f64());
    core.metrics.routed_to(&member.id);
    if relayed {
        core.table.routed(conn_id, client_id, member.id.clone());
    } else {
        core.table.close(conn_id);
    }
    relayed
}
