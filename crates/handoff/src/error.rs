//! Hand-off errors, and which of them leave the Unix connection usable.

use std::io;
use std::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    /// Nothing went out: the device's socket is handed back (see
    /// [`HandoffError::into_stream`]) so the caller can still refuse the device.
    #[error("hand-off not sent: {source}")]
    NotSent {
        #[source]
        source: io::Error,
        stream: TcpStream,
    },
    /// The Unix connection failed, or a frame was only partly sent.
    #[error("hand-off connection: {0}")]
    Io(#[from] io::Error),
    /// The fixed prefix is wrong (magic, version, flags, body length): the stream
    /// is not a hand-off stream or is out of step.
    #[error("bad hand-off frame: {0}")]
    BadFrame(&'static str),
    /// The connection closed in the middle of a frame.
    #[error("hand-off connection closed inside a frame")]
    Truncated,
    /// The body's fields do not parse.
    #[error("bad hand-off metadata: {0}")]
    BadMeta(&'static str),
    /// A frame came with no file descriptor or with several.
    #[error("hand-off carried {0} file descriptors, expected exactly one")]
    FdCount(usize),
    /// A file descriptor came with a later part of a frame, not with its start.
    #[error("hand-off file descriptor not at the start of its frame")]
    MisplacedFd,
    /// More control data came than fits (the kernel closed the excess descriptors).
    #[error("hand-off control data truncated")]
    ControlTruncated,
    /// The descriptor passed is not a TCP (IPv4/IPv6 stream) socket.
    #[error("hand-off descriptor is not a TCP socket")]
    NotTcp,
}

impl HandoffError {
    /// True when the Unix connection can carry no further frames: the error came
    /// from the connection itself or left the byte stream out of step. After any
    /// other receive error the whole frame was consumed (and its descriptors
    /// closed), so the next [`crate::recv`] starts on a frame boundary.
    /// On the sending side, a [`HandoffError::NotSent`] for bad input or a full
    /// non-blocking socket leaves the connection usable; any other failure does not.
    pub fn is_fatal(&self) -> bool {
        match self {
            HandoffError::NotSent { source, .. } => !matches!(
                source.kind(),
                io::ErrorKind::InvalidInput | io::ErrorKind::WouldBlock
            ),
            HandoffError::Io(_) | HandoffError::BadFrame(_) | HandoffError::Truncated => true,
            HandoffError::BadMeta(_)
            | HandoffError::FdCount(_)
            | HandoffError::MisplacedFd
            | HandoffError::ControlTruncated
            | HandoffError::NotTcp => false,
        }
    }

    /// The device's socket, when the hand-off failed before anything was sent.
    pub fn into_stream(self) -> Option<TcpStream> {
        match self {
            HandoffError::NotSent { stream, .. } => Some(stream),
            _ => None,
        }
    }
}
