//! The `fd` hand-off listener: agents on the same host or pod connect to a Unix
//! socket and pass each device's TCP socket over it (SCM_RIGHTS, with the
//! connection's metadata and the bytes already read; see `throng_handoff`). Each
//! agent link carries many hand-offs; each hand-off is then served like a
//! connection from the TCP hand-off listener after its PROXY header.
//!
//! Bounds: each link takes a permit from the handler's connection semaphore before
//! it reads its next hand-off (as a TCP accept loop does before `accept`), so a
//! handler at its limit stops reading and the agent's sends wait, the sockets
//! queued in the kernel; agent links themselves are capped at [`MAX_AGENT_LINKS`].

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::Broker;
use crate::connection::{self, ConnectMeta};

/// Agent links served at once; further ones wait in the listen backlog.
const MAX_AGENT_LINKS: usize = 1024;

pub(crate) async fn accept_loop(
    listener: UnixListener,
    broker: Arc<Broker>,
    permits: Arc<Semaphore>,
    tracker: TaskTracker,
    stop: CancellationToken,
) {
    let links = Arc::new(Semaphore::new(MAX_AGENT_LINKS));
    loop {
        let link_permit = tokio::select! {
            permit = links.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            () = stop.cancelled() => return,
        };
        let link = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((link, _)) => link,
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %err, "fd hand-off accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.cancelled() => return,
        };
        let broker = broker.clone();
        let permits = permits.clone();
        let stop = stop.clone();
        let connection_tracker = tracker.clone();
        tracker.spawn(async move {
            serve_link(link, broker, permits, connection_tracker, stop).await;
            drop(link_permit);
        });
    }
}

/// Receives hand-offs from one agent link until it closes, breaks, or shutdown.
async fn serve_link(
    link: UnixStream,
    broker: Arc<Broker>,
    permits: Arc<Semaphore>,
    tracker: TaskTracker,
    stop: CancellationToken,
) {
    tracing::debug!("agent fd hand-off link open");
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            () = stop.cancelled() => return,
        };
        // Dropping `recv` mid-frame is fine here: the link is dropped with it.
        let received = tokio::select! {
            received = throng_handoff::recv(&link) => received,
            () = stop.cancelled() => return,
        };
        let (stream, meta, already_read) = match received {
            Ok(Some(handoff)) => handoff,
            Ok(None) => {
                tracing::debug!("agent fd hand-off link closed");
                return;
            }
            Err(err) => {
                broker.metrics.connect("bad_handoff");
                tracing::debug!(error = %err, "bad fd hand-off");
                if err.is_fatal() {
                    return;
                }
                continue;
            }
        };
        let stream = match stream
            .set_nonblocking(true)
            .and_then(|()| TcpStream::from_std(stream))
        {
            Ok(stream) => stream,
            Err(err) => {
                broker.metrics.connect("bad_handoff");
                tracing::debug!(peer = %meta.peer, error = %err, "cannot serve a handed-off socket");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tracing::trace!(peer = %meta.peer, local = %meta.local, conn_id = meta.conn_id, "fd hand-off");
        let connect = ConnectMeta {
            peer: meta.peer,
            conn_id: Some(meta.conn_id),
            assigned_client_id: meta.assigned_client_id,
        };
        if connection::connect_ready(&already_read, &broker) {
            // The usual case: the agent read the whole CONNECT, so nothing here waits.
            connection::serve_now(
                stream,
                connect,
                already_read,
                &broker,
                &stop,
                permit,
                &tracker,
            );
            continue;
        }
        let broker = broker.clone();
        let stop = stop.clone();
        let connection_tracker = tracker.clone();
        tracker.spawn(connection::serve(
            stream,
            connect,
            already_read,
            broker,
            stop,
            permit,
            connection_tracker,
        ));
    }
}
