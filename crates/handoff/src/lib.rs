//! The `fd` hand-off (the paper's PIPE hand-off): when agent and handler share a
//! host or pod, the agent passes the device's TCP socket itself to the handler over
//! a Unix stream connection, as SCM_RIGHTS, with the connection's metadata and the
//! bytes it already read (the CONNECT). After [`send`] the agent holds nothing for
//! that device.
//!
//! One Unix stream connection carries many hand-offs, one after another. Each is
//! one frame sent by a single `sendmsg` with the descriptor attached (the kernel
//! ties it to the frame's first byte); [`recv`] reads one frame at a time and never
//! asks for bytes past its end, so every descriptor arrives with its own frame.
//! Frames are sized by their prefix, so a `SOCK_STREAM` socket (what std and tokio
//! offer safely) works as well as `SOCK_SEQPACKET` would.
//!
//! # Wire format, version 1
//!
//! All integers are big-endian.
//!
//! ```text
//! prefix, 10 bytes
//!   0  4  magic "THFD"
//!   4  1  version, 1
//!   5  1  flags: bit 0 = an assigned client id is present; other bits 0
//!   6  4  body length, u32, 22..=MAX_BODY
//! body
//!   8 bytes  connection id, u64
//!   addr     the device's address (peer)
//!   addr     the local address the device connected to
//!   2+n      assigned client id (only with flag bit 0): u16 length, UTF-8
//!   rest     the bytes already read from the device, at most MAX_ALREADY_READ
//! addr
//!   family 4: 1 byte 4, 4 bytes IPv4, u16 port                      (7 bytes)
//!   family 6: 1 byte 6, 16 bytes IPv6, u16 port, u32 flow info,
//!             u32 scope id                                          (27 bytes)
//! ancillary data
//!   SCM_RIGHTS with exactly one descriptor: the device's TCP socket
//! ```
//!
//! A receiver drops the Unix connection on a bad prefix (magic, version, flags,
//! length) or a frame cut short; after any other bad frame (body fields, not
//! exactly one descriptor, a descriptor that is not a TCP socket) it closes the
//! frame's descriptors and reads on ([`HandoffError::is_fatal`]).

mod error;
mod frame;
mod recv;
mod send;

use std::net::SocketAddr;

pub use error::HandoffError;
pub use frame::{MAX_ALREADY_READ, MAX_BODY, MAX_CLIENT_ID, PREFIX_LEN, VERSION};
#[doc(hidden)]
pub use frame::{decode_frame, encode_frame, fuzz_one};
pub use recv::recv;
pub use send::{TrySent, finish_async, send, send_async, try_send};

/// What the handler needs to know about a handed-off connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoffMeta {
    /// The agent's connection id, carried into the handler's logs.
    pub conn_id: u64,
    /// The device's address (after any PROXY header from the load balancer).
    pub peer: SocketAddr,
    /// The address the device connected to.
    pub local: SocketAddr,
    /// Client id the agent assigned to an empty one.
    pub assigned_client_id: Option<String>,
}

#[cfg(test)]
mod tests;
