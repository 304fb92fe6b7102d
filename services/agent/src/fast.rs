//! The pipeline done in the accept loop itself. In a connect storm the CONNECT is
//! usually in the socket buffer by the time `accept` returns, and the handler's link
//! has room: then the connection is read, admitted and handed off here, on a socket
//! tokio never registers (no task, no epoll_ctl, no wake-up). Whatever would wait
//! goes to a task with what was done so far ([`Waiting`]), which repeats no step
//! and so behaves exactly as if it had done them all.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;

use throng_codec::ProtocolVersion;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use crate::Core;
use crate::accept::{Waiting, handed, route_id};
use crate::admission::{AdmitGuard, Refusal};
use crate::first_packet::{Parsed, parse_connect, read_size};
use crate::handoff::{Handed, Outgoing};

/// The first read when a PROXY header comes first (as `read_header` reads).
const PROXY_READ: usize = 512;

/// Where a connection stands after [`serve_now`].
pub(crate) enum Now {
    /// Handed off or closed; `relayed` when the relay now carries it.
    Done { relayed: bool },
    /// It has to wait for bytes (or must be refused, which writes).
    Wait(Waiting),
    /// Admitted; the hand-off has to wait.
    Route(Outgoing, Arc<str>, ProtocolVersion),
}

/// Runs as much of the pipeline as needs no waiting.
pub(crate) fn serve_now(
    stream: std::net::TcpStream,
    tcp_peer: SocketAddr,
    local: Option<SocketAddr>,
    core: &Arc<Core>,
    pending: OwnedSemaphorePermit,
) -> Now {
    let deadline = Instant::now() + core.config.connect_timeout;
    let Some(local) = local.or_else(|| stream.local_addr().ok()) else {
        return Now::Done { relayed: false };
    };
    let proxy = core.config.proxy_protocol;
    let max = core.config.max_connect_size;
    let read = read_now(&stream, if proxy { PROXY_READ } else { read_size(max, 0) });
    let wait = move |stream, pending, read, admitted| {
        Now::Wait(Waiting {
            stream,
            tcp_peer,
            local,
            deadline,
            pending,
            read,
            admitted,
        })
    };
    let (peer, local, initial) = if proxy {
        match throng_proxy_protocol::parse(&read) {
            Ok(Some((header, used))) => (
                header.source.unwrap_or(tcp_peer),
                header.destination.unwrap_or(local),
                read[used..].to_vec(),
            ),
            _ => return wait(stream, pending, read, None),
        }
    } else if read.is_empty() {
        return wait(stream, pending, read, None);
    } else {
        (tcp_peer, local, read)
    };
    let Some(admission) = check_peer(peer, core) else {
        return Now::Done { relayed: false };
    };
    let first = match parse_connect(initial, max) {
        Parsed::Connect(first) => first,
        Parsed::Incomplete(read) | Parsed::Failed(_, read) => {
            return wait(stream, pending, read, Some((peer, local, admission)));
        }
    };
    let guard = match admission {
        Ok(guard) => guard,
        Err(refusal) => {
            return wait(
                stream,
                pending,
                first.bytes,
                Some((peer, local, Err(refusal))),
            );
        }
    };
    let Ok((client_id, assigned)) = route_id(&first) else {
        return wait(stream, pending, first.bytes, Some((peer, local, Ok(guard))));
    };
    core.metrics.accept("admitted");
    let conn_id = core.table.open(Some(guard));
    // The CONNECT phase is over.
    drop(pending);
    let out = Outgoing {
        stream,
        conn_id,
        peer,
        local,
        assigned_client_id: assigned,
        bytes: first.bytes,
    };
    route_now(out, client_id, first.version, core)
}

/// One read without waiting; empty when nothing is there yet (or the read failed:
/// the task's read then sees the same).
fn read_now(mut stream: &std::net::TcpStream, want: usize) -> Vec<u8> {
    let mut chunk = [0u8; 1024];
    match stream.read(&mut chunk[..want.min(1024)]) {
        Ok(n) => chunk[..n].to_vec(),
        Err(_) => Vec::new(),
    }
}

/// Blocklist, then admission; `None` for a blocked address (closed at once,
/// nothing sent).
pub(crate) fn check_peer(peer: SocketAddr, core: &Core) -> Option<Result<AdmitGuard, Refusal>> {
    if core
        .blocklist
        .as_ref()
        .is_some_and(|list| list.contains(peer.ip()))
    {
        core.metrics.accept("blocked");
        return None;
    }
    Some(
        core.admission
            .try_admit(peer.ip(), std::time::Instant::now()),
    )
}

/// The hand-off to the ring owner, when its link takes it without waiting.
fn route_now(out: Outgoing, client_id: Arc<str>, version: ProtocolVersion, core: &Core) -> Now {
    let ring = core.ring.borrow().clone();
    let Some(owner) = ring.owner(&client_id) else {
        return Now::Route(out, client_id, version);
    };
    let started = Instant::now();
    let conn_id = out.conn_id;
    match core.handoff.try_hand(owner, out) {
        Ok(Handed::Done { relayed }) => {
            core.metrics.fast_handoffs.inc();
            Now::Done {
                relayed: handed(core, owner, conn_id, client_id, relayed, started),
            }
        }
        Ok(Handed::Retry(out, _)) => Now::Route(*out, client_id, version),
        Ok(Handed::Lost(err)) => {
            tracing::warn!(%client_id, error = %err, "connection lost during hand-off");
            core.metrics.handoff_failed(&owner.id);
            core.table.close(conn_id);
            Now::Done { relayed: false }
        }
        Err(out) => Now::Route(out, client_id, version),
    }
}
