//! Accept loops: the plain MQTT listener, and the internal hand-off listener where
//! every connection starts with a PROXY protocol v2 header from an agent. Both are
//! bounded by one connection semaphore shared by the handler.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::Broker;
use crate::connection::{self, ConnectMeta};

/// What a listener expects first on each connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// MQTT straight away.
    Mqtt,
    /// A PROXY v2 header (device address, conn id, assigned client id), then MQTT.
    Handoff,
}

/// Listen backlog asked for; the kernel caps it at `net.core.somaxconn`. A connection
/// storm queues here instead of being dropped and retried a second later.
const LISTEN_BACKLOG: i32 = 65535;

/// Binds a TCP listener with a deep accept backlog (tokio's default is 1024).
pub fn bind_listener(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    TcpListener::from_std(socket.into())
}

pub(crate) async fn accept_loop(
    listener: TcpListener,
    kind: ListenerKind,
    broker: Arc<Broker>,
    permits: Arc<Semaphore>,
    tracker: TaskTracker,
    stop: CancellationToken,
) {
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            () = stop.cancelled() => return,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.cancelled() => return,
        };
        let _ = stream.set_nodelay(true);
        let broker = broker.clone();
        let stop = stop.clone();
        let connection_tracker = tracker.clone();
        tracker.spawn(async move {
            let meta = ConnectMeta {
                peer,
                conn_id: None,
                assigned_client_id: None,
            };
            match kind {
                ListenerKind::Mqtt => {
                    connection::serve(
                        stream,
                        meta,
                        Vec::new(),
                        broker,
                        stop,
                        permit,
                        connection_tracker,
                    )
                    .await;
                }
                ListenerKind::Handoff => {
                    serve_handoff(stream, meta, broker, stop, permit, connection_tracker).await
                }
            }
        });
    }
}

async fn serve_handoff(
    stream: TcpStream,
    mut meta: ConnectMeta,
    broker: Arc<Broker>,
    stop: CancellationToken,
    permit: OwnedSemaphorePermit,
    tracker: TaskTracker,
) {
    let deadline = broker.config.connect_timeout;
    // Boxed: the header phase's state is freed before the connection is served.
    let header = Box::pin(async {
        tokio::select! {
            header = tokio::time::timeout(deadline, throng_proxy_protocol::read_header(&stream)) => Some(header),
            () = stop.cancelled() => None,
        }
    })
    .await;
    let Some(header) = header else { return };
    match header {
        Ok(Ok((header, rest))) => {
            if let Some(source) = header.source {
                meta.peer = source;
            }
            meta.conn_id = header.conn_id();
            meta.assigned_client_id = header.assigned_client_id().map(str::to_string);
            connection::serve(stream, meta, rest, broker, stop, permit, tracker).await;
        }
        Ok(Err(err)) => {
            tracing::debug!(peer = %meta.peer, error = %err, "bad hand-off header");
            broker.metrics.connect("bad_handoff");
        }
        Err(_) => {
            tracing::debug!(peer = %meta.peer, "no hand-off header before the deadline");
            broker.metrics.connect("timeout");
        }
    }
}
