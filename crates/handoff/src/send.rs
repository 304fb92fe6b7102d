//! The agent's side: one `sendmsg` per hand-off carrying the whole frame and the
//! device's socket; a short send is finished with plain writes (the descriptor
//! already went with the first byte).

use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
use tokio::io::Interest;

use crate::{HandoffError, HandoffMeta, frame};

/// How long a blocking [`send`] waits for room to finish a frame it started on a
/// non-blocking socket.
const FINISH_TIMEOUT: Duration = Duration::from_secs(5);

/// Hands `stream` to the handler at the other end of `sock`, with `meta` and the
/// bytes already read from it (at most [`crate::MAX_ALREADY_READ`]).
///
/// On success the caller's descriptor is closed: the handler now holds the only
/// one. When nothing could be sent the error is [`HandoffError::NotSent`] and
/// [`HandoffError::into_stream`] gives the socket back. Any other error means a
/// frame went out only in part: drop the Unix connection. Blocks while the
/// socket's buffer is full (a handler at its connection limit stops reading); on
/// a non-blocking `sock` a full buffer is `NotSent` with `WouldBlock`.
pub fn send(
    sock: &UnixStream,
    stream: TcpStream,
    meta: &HandoffMeta,
    already_read: &[u8],
) -> Result<(), HandoffError> {
    let head = match frame::encode_head(meta, already_read.len()) {
        Ok(head) => head,
        Err(source) => return Err(HandoffError::NotSent { source, stream }),
    };
    let sent = loop {
        match sendmsg_with_fd(sock.as_fd(), &head, already_read, stream.as_fd()) {
            Ok(sent) => break sent,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => return Err(HandoffError::NotSent { source, stream }),
        }
    };
    // The kernel holds its own reference to the socket now.
    drop(stream);
    let mut rest = Remaining::new(&head, already_read, sent);
    while let Some(chunk) = rest.next_chunk() {
        match rustix::net::send(sock, chunk, SendFlags::NOSIGNAL) {
            Ok(n) => rest.advance(n),
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::AGAIN) => wait_writable(sock)?,
            Err(err) => return Err(HandoffError::Io(err.into())),
        }
    }
    Ok(())
}

/// [`send`] for an async agent: waits for room instead of blocking the thread.
///
/// Not cancel-safe once the first byte is out: dropping the future in the middle
/// of a frame leaves the connection out of step, so drop the connection too.
pub async fn send_async(
    sock: &tokio::net::UnixStream,
    stream: TcpStream,
    meta: &HandoffMeta,
    already_read: &[u8],
) -> Result<(), HandoffError> {
    let head = match frame::encode_head(meta, already_read.len()) {
        Ok(head) => head,
        Err(source) => return Err(HandoffError::NotSent { source, stream }),
    };
    let sent = loop {
        if let Err(source) = sock.writable().await {
            return Err(HandoffError::NotSent { source, stream });
        }
        let sent = sock.try_io(Interest::WRITABLE, || {
            sendmsg_with_fd(sock.as_fd(), &head, already_read, stream.as_fd())
        });
        match sent {
            Ok(sent) => break sent,
            Err(err) if retry(&err) => {}
            Err(source) => return Err(HandoffError::NotSent { source, stream }),
        }
    };
    drop(stream);
    let mut rest = Remaining::new(&head, already_read, sent);
    while let Some(chunk) = rest.next_chunk() {
        sock.writable().await?;
        match sock.try_write(chunk) {
            Ok(n) => rest.advance(n),
            Err(err) if retry(&err) => {}
            Err(err) => return Err(HandoffError::Io(err)),
        }
    }
    Ok(())
}

/// What [`try_send`] got out.
#[derive(Debug)]
pub enum TrySent {
    /// The whole frame.
    Whole,
    /// The descriptor and the start of the frame: write these bytes (with
    /// [`finish_async`]) before anything else on the connection.
    Part(Vec<u8>),
}

/// [`send_async`] without waiting: one `sendmsg` if tokio saw the connection
/// writable. `NotSent` with `WouldBlock` means no room now; wait with
/// [`send_async`] instead.
pub fn try_send(
    sock: &tokio::net::UnixStream,
    stream: TcpStream,
    meta: &HandoffMeta,
    already_read: &[u8],
) -> Result<TrySent, HandoffError> {
    let head = match frame::encode_head(meta, already_read.len()) {
        Ok(head) => head,
        Err(source) => return Err(HandoffError::NotSent { source, stream }),
    };
    let sent = loop {
        let sent = sock.try_io(Interest::WRITABLE, || {
            sendmsg_with_fd(sock.as_fd(), &head, already_read, stream.as_fd())
        });
        match sent {
            Ok(sent) => break sent,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => return Err(HandoffError::NotSent { source, stream }),
        }
    };
    drop(stream);
    let rest = Remaining::new(&head, already_read, sent);
    if rest.next_chunk().is_none() {
        return Ok(TrySent::Whole);
    }
    Ok(TrySent::Part([rest.head, rest.already_read].concat()))
}

/// Writes the rest of a frame [`try_send`] started.
pub async fn finish_async(sock: &tokio::net::UnixStream, rest: &[u8]) -> io::Result<()> {
    let mut rest = rest;
    while !rest.is_empty() {
        sock.writable().await?;
        match sock.try_write(rest) {
            Ok(n) => rest = &rest[n..],
            Err(err) if retry(&err) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

fn retry(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// One `sendmsg`: header and bytes already read as the data, `fd` as SCM_RIGHTS.
/// Returns how many data bytes went (the descriptor went with the first).
fn sendmsg_with_fd(
    sock: BorrowedFd<'_>,
    head: &[u8],
    already_read: &[u8],
    fd: BorrowedFd<'_>,
) -> io::Result<usize> {
    let fds = [fd];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("control buffer too small"));
    }
    let iov = [IoSlice::new(head), IoSlice::new(already_read)];
    Ok(rustix::net::sendmsg(
        sock,
        &iov,
        &mut control,
        SendFlags::NOSIGNAL,
    )?)
}

/// Blocks until `sock` has room, or fails after [`FINISH_TIMEOUT`].
fn wait_writable(sock: &UnixStream) -> io::Result<()> {
    let timeout = Timespec {
        tv_sec: FINISH_TIMEOUT.as_secs() as _,
        tv_nsec: 0,
    };
    let mut fds = [PollFd::new(sock, PollFlags::OUT)];
    match rustix::event::poll(&mut fds, Some(&timeout)) {
        Ok(0) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "hand-off connection stayed full in the middle of a frame",
        )),
        Ok(_) | Err(rustix::io::Errno::INTR) => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// The bytes of a frame not yet sent: the tail of `head`, then of `already_read`.
struct Remaining<'a> {
    head: &'a [u8],
    already_read: &'a [u8],
}

impl<'a> Remaining<'a> {
    fn new(head: &'a [u8], already_read: &'a [u8], sent: usize) -> Self {
        let mut rest = Remaining { head, already_read };
        rest.advance(sent);
        rest
    }

    fn next_chunk(&self) -> Option<&'a [u8]> {
        [self.head, self.already_read]
            .into_iter()
            .find(|chunk| !chunk.is_empty())
    }

    fn advance(&mut self, mut n: usize) {
        let from_head = n.min(self.head.len());
        self.head = &self.head[from_head..];
        n -= from_head;
        self.already_read = &self.already_read[n.min(self.already_read.len())..];
    }
}
