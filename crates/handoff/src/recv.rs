//! The handler's side: reads one frame at a time from a Unix stream connection,
//! never asking for more bytes than the current frame has left, and collects the
//! descriptors that come with it.

use std::io::{self, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::TcpStream;
use std::os::fd::OwnedFd;

use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags};
use tokio::io::Interest;
use tokio::net::UnixStream;

use crate::frame::{self, PREFIX_LEN};
use crate::{HandoffError, HandoffMeta};

/// Room for at least this many descriptors per read (the buffer's alignment slack
/// may fit a couple more): enough to see and close a few extra ones; beyond the
/// room the kernel closes them itself and flags MSG_CTRUNC.
const FDS_PER_READ: usize = 4;

/// Receives the next hand-off on `sock`: the device's socket (blocking mode as
/// sent; the caller sets it), its metadata and the bytes already read from it.
/// `Ok(None)` when the agent closed the connection between frames.
///
/// On an error that is not [fatal](HandoffError::is_fatal) the whole frame was
/// read and its descriptors closed; call again for the next one. Not cancel-safe
/// in the middle of a frame: drop the connection if the future is dropped.
pub async fn recv(
    sock: &UnixStream,
) -> Result<Option<(TcpStream, HandoffMeta, Vec<u8>)>, HandoffError> {
    let mut state = FrameFds::default();
    let mut prefix = [0u8; PREFIX_LEN];
    let mut filled = 0;
    while filled < PREFIX_LEN {
        match read_some(sock, &mut prefix[filled..], &mut state, filled == 0).await? {
            0 if filled == 0 && state.fds.is_empty() => return Ok(None),
            0 => return Err(HandoffError::Truncated),
            n => filled += n,
        }
    }
    let prefix_info = frame::parse_prefix(&prefix)?;
    let mut body = vec![0u8; prefix_info.body_len];
    let mut filled = 0;
    while filled < body.len() {
        match read_some(sock, &mut body[filled..], &mut state, false).await? {
            0 => return Err(HandoffError::Truncated),
            n => filled += n,
        }
    }
    // The frame is consumed: from here on errors leave the stream in step.
    if state.truncated {
        return Err(HandoffError::ControlTruncated);
    }
    if state.misplaced {
        return Err(HandoffError::MisplacedFd);
    }
    let fd = match <[OwnedFd; 1]>::try_from(state.fds) {
        Ok([fd]) => fd,
        Err(fds) => return Err(HandoffError::FdCount(fds.len())),
    };
    let (meta, already_read) = frame::parse_body(prefix_info, &body)?;
    if !is_tcp(&fd) {
        return Err(HandoffError::NotTcp);
    }
    Ok(Some((TcpStream::from(fd), meta, already_read)))
}

/// Descriptors and control-data flags seen while reading one frame.
#[derive(Default)]
struct FrameFds {
    fds: Vec<OwnedFd>,
    truncated: bool,
    /// A descriptor came with a read that did not start the frame.
    misplaced: bool,
}

/// One `recvmsg` of at most `buf.len()` bytes, waiting until some arrive.
async fn read_some(
    sock: &UnixStream,
    buf: &mut [u8],
    state: &mut FrameFds,
    frame_start: bool,
) -> io::Result<usize> {
    loop {
        sock.readable().await?;
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FDS_PER_READ))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let received = sock.try_io(Interest::READABLE, || {
            Ok(rustix::net::recvmsg(
                sock,
                &mut [IoSliceMut::new(buf)],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            )?)
        });
        let msg = match received {
            Ok(msg) => msg,
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(err) => return Err(err),
        };
        let before = state.fds.len();
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = message {
                state.fds.extend(fds);
            }
        }
        if state.fds.len() > before && !frame_start {
            state.misplaced = true;
        }
        if msg.flags.contains(ReturnFlags::CTRUNC) {
            state.truncated = true;
        }
        return Ok(msg.bytes);
    }
}

/// Whether `fd` is a TCP socket (IPv4 or IPv6, MPTCP too): one getsockopt, as
/// only those report these protocols.
fn is_tcp(fd: &OwnedFd) -> bool {
    use rustix::net::ipproto::{MPTCP, TCP};
    rustix::net::sockopt::socket_protocol(fd)
        .is_ok_and(|protocol| matches!(protocol, Some(p) if p == TCP || p == MPTCP))
}
