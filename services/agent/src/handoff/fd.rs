//! Fd hand-off (the paper's PIPE hand-off): the device's socket goes to the handler
//! over a Unix socket with SCM_RIGHTS, with its metadata and the bytes already read.
//! One Unix connection per handler carries hand-offs one after another.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use throng_handoff::{HandoffError as SendError, HandoffMeta, TrySent, send_async};
use throng_ring::Member;
use tokio::net::UnixStream;
use tokio::sync::Mutex;

use super::{Handed, HandoffError, Outgoing};

/// The Unix connection to one handler; `None` until opened or after an error.
type HandlerSocket = Arc<Mutex<Option<UnixStream>>>;

pub struct FdHandoff {
    /// `<dir>/<member id>.sock` is each handler's fd hand-off listener.
    pub dir: PathBuf,
    pub timeout: Duration,
    /// One connection per handler, opened on first use and replaced after an error.
    connections: parking_lot::Mutex<HashMap<Arc<str>, HandlerSocket>>,
}

impl FdHandoff {
    pub fn new(dir: PathBuf, timeout: Duration) -> FdHandoff {
        FdHandoff {
            dir,
            timeout,
            connections: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    fn slot(&self, member: &Member) -> HandlerSocket {
        self.connections
            .lock()
            .entry(member.id.clone())
            .or_default()
            .clone()
    }

    /// The hand-off over an open, idle link with room for the frame; anything else
    /// (no link yet, link busy, full) gives the connection back for [`Self::hand`].
    pub fn try_hand(&self, member: &Member, conn: Outgoing) -> Result<Handed, Outgoing> {
        let Ok(mut slot) = self.slot(member).try_lock_owned() else {
            return Err(conn);
        };
        let Some(sock) = slot.as_ref() else {
            return Err(conn);
        };
        let meta = meta_of(&conn);
        let Outgoing { stream, bytes, .. } = conn;
        match throng_handoff::try_send(sock, stream, &meta, &bytes) {
            Ok(TrySent::Whole) => Ok(Handed::Done { relayed: false }),
            Ok(TrySent::Part(rest)) => {
                // Rare (the link's buffer nearly full): the descriptor went, the rest
                // of the frame follows before the link is used again.
                let timeout = self.timeout;
                tokio::spawn(async move {
                    let sock = slot.as_ref().expect("checked above");
                    let finish = throng_handoff::finish_async(sock, &rest);
                    if !matches!(tokio::time::timeout(timeout, finish).await, Ok(Ok(()))) {
                        *slot = None;
                    }
                });
                Ok(Handed::Done { relayed: false })
            }
            Err(SendError::NotSent { source, stream }) => {
                if source.kind() != std::io::ErrorKind::WouldBlock {
                    // `hand` tries once more over a fresh link.
                    *slot = None;
                }
                Err(outgoing(stream, meta, bytes))
            }
            Err(err) => {
                *slot = None;
                Ok(Handed::Lost(HandoffError::Failed(
                    member.id.clone(),
                    err.to_string(),
                )))
            }
        }
    }

    pub async fn hand(&self, member: &Member, conn: Outgoing) -> Handed {
        let slot = self.slot(member);
        let mut slot = slot.lock().await;
        // A link opened earlier is stale if the handler restarted since: before
        // moving on along the ring, try once more over a fresh one.
        let reused = slot.is_some();
        match self.send(member, &mut slot, conn).await {
            Handed::Retry(conn, _) if reused => self.send(member, &mut slot, *conn).await,
            handed => handed,
        }
    }

    /// One attempt over the handler's link, opening it if there is none.
    async fn send(&self, member: &Member, slot: &mut Option<UnixStream>, conn: Outgoing) -> Handed {
        let id = member.id.clone();
        if slot.is_none() {
            let path = self.dir.join(format!("{}.sock", member.id));
            match tokio::time::timeout(self.timeout, UnixStream::connect(&path)).await {
                Ok(Ok(sock)) => *slot = Some(sock),
                Ok(Err(err)) => {
                    return Handed::Retry(Box::new(conn), HandoffError::Unreachable(id, err));
                }
                Err(_) => return Handed::Retry(Box::new(conn), HandoffError::Timeout(id)),
            }
        }
        let sock = slot.as_ref().expect("connected above");
        let meta = meta_of(&conn);
        let Outgoing { stream, bytes, .. } = conn;
        match tokio::time::timeout(self.timeout, send_async(sock, stream, &meta, &bytes)).await {
            Ok(Ok(())) => Handed::Done { relayed: false },
            Ok(Err(SendError::NotSent { source, stream })) => {
                *slot = None;
                Handed::Retry(
                    Box::new(outgoing(stream, meta, bytes)),
                    HandoffError::Unreachable(id, source),
                )
            }
            Ok(Err(err)) => {
                // Part of a frame went out: this Unix connection is out of step.
                *slot = None;
                Handed::Lost(HandoffError::Failed(id, err.to_string()))
            }
            Err(_) => {
                *slot = None;
                Handed::Lost(HandoffError::Timeout(id))
            }
        }
    }
}

fn meta_of(conn: &Outgoing) -> HandoffMeta {
    HandoffMeta {
        conn_id: conn.conn_id,
        peer: conn.peer,
        local: conn.local,
        assigned_client_id: conn.assigned_client_id.as_deref().map(str::to_string),
    }
}

fn outgoing(stream: std::net::TcpStream, meta: HandoffMeta, bytes: Vec<u8>) -> Outgoing {
    Outgoing {
        stream,
        conn_id: meta.conn_id,
        peer: meta.peer,
        local: meta.local,
        assigned_client_id: meta.assigned_client_id.map(Arc::from),
        bytes,
    }
}
