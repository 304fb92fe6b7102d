//! Sans-IO MQTT codec for 3.1, 3.1.1 and 5.0.
//!
//! - [`check`] looks at a buffer and says whether it holds a whole frame (and
//!   rejects oversized frames as soon as their fixed header is known).
//! - [`decode`] parses exactly one frame, validating it as strictly as an MQTT
//!   server must; [`decode_bytes`] does the same without copying payloads.
//! - [`encode`] appends a packet's wire bytes for a protocol version and
//!   [`encoded_len`] predicts their exact length.
//! - [`read_packet`] combines the three steps over a `BytesMut` for clients.
//!
//! No I/O and no async here: the broker and the load tester own their sockets.

mod codes;
mod decode;
mod encode;
mod error;
mod frame;
mod fuzz;
mod packet;
mod prop;
mod read;
pub mod reason;

pub use decode::{decode, decode_bytes};
pub use encode::{encode, encoded_len};
pub use error::{DecodeError, EncodeError};
pub use frame::{MAX_REMAINING_LENGTH, check, peek_protocol_level, read_packet};
#[doc(hidden)]
pub use fuzz::fuzz_one;
pub use packet::*;
