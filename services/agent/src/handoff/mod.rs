//! Hand-off of an admitted connection to a handler, in one of two modes:
//! `proxy` (TCP to the handler with a PROXY v2 header, then the relay copies bytes)
//! or `fd` (the socket itself over a Unix socket; the agent keeps nothing).

mod fd;
mod proxy;

use std::net::SocketAddr;
use std::sync::Arc;

use throng_ring::Member;

pub use fd::FdHandoff;
pub use proxy::ProxyHandoff;

/// A connection ready to be handed off.
pub struct Outgoing {
    /// Non-blocking, and not registered with tokio: both hand-offs pass it on as is.
    pub stream: std::net::TcpStream,
    pub conn_id: u64,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// Set when the agent assigned the client id (the device sent an empty one).
    pub assigned_client_id: Option<Arc<str>>,
    /// The CONNECT and anything read after it.
    pub bytes: Vec<u8>,
}

/// Why a hand-off to one handler failed; the connection comes back for the next.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error("handler {0} unreachable: {1}")]
    Unreachable(Arc<str>, std::io::Error),
    #[error("handler {0} did not answer within the hand-off timeout")]
    Timeout(Arc<str>),
    #[error("hand-off to {0} failed: {1}")]
    Failed(Arc<str>, String),
}

/// What happened to a connection offered to a handler.
pub enum Handed {
    /// The handler has it. `relayed` is set when the agent keeps relaying its bytes.
    Done { relayed: bool },
    /// Try the next handler with this connection.
    Retry(Box<Outgoing>, HandoffError),
    /// The connection was lost on the way (already closed); nothing more to do.
    Lost(HandoffError),
}

pub enum Handoff {
    Proxy(ProxyHandoff),
    Fd(FdHandoff),
}

impl Handoff {
    pub async fn hand(&self, member: &Member, conn: Outgoing) -> Handed {
        match self {
            Handoff::Proxy(proxy) => proxy.hand(member, conn).await,
            Handoff::Fd(fd) => fd.hand(member, conn).await,
        }
    }

    /// A hand-off done now, without waiting, when it can be; otherwise the
    /// connection comes back untouched for [`Handoff::hand`].
    pub fn try_hand(&self, member: &Member, conn: Outgoing) -> Result<Handed, Outgoing> {
        match self {
            Handoff::Proxy(_) => Err(conn),
            Handoff::Fd(fd) => fd.try_hand(member, conn),
        }
    }
}
