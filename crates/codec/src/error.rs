//! Errors from decoding and encoding, and the MQTT 5.0 reason code for each
//! decode failure (what a server puts in its CONNACK or DISCONNECT).

use crate::reason;
use thiserror::Error;

/// Why bytes from the peer are not an acceptable MQTT packet.
///
/// For 3.1/3.1.1 peers the distinction is informational only: those versions
/// have no reason codes and the server simply closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The bytes cannot be parsed as the packet they claim to be.
    #[error("malformed packet: {0}")]
    MalformedPacket(&'static str),
    /// The packet parses but breaks a rule of the protocol.
    #[error("protocol error: {0}")]
    ProtocolError(&'static str),
    /// The whole frame (fixed header included) is larger than allowed.
    #[error("packet of {size} bytes exceeds the maximum packet size {max}")]
    PacketTooLarge { size: usize, max: usize },
    /// CONNECT named a known protocol with a level this codec does not speak.
    #[error("unsupported protocol level {0}")]
    UnsupportedProtocolVersion(u8),
    /// A topic name (PUBLISH or will topic) is empty or contains a wildcard.
    #[error("topic name invalid")]
    TopicNameInvalid,
}

impl DecodeError {
    /// The MQTT 5.0 reason code a server reports for this error.
    pub fn reason_code(&self) -> u8 {
        match self {
            DecodeError::MalformedPacket(_) => reason::MALFORMED_PACKET,
            DecodeError::ProtocolError(_) => reason::PROTOCOL_ERROR,
            DecodeError::PacketTooLarge { .. } => reason::PACKET_TOO_LARGE,
            DecodeError::UnsupportedProtocolVersion(_) => reason::UNSUPPORTED_PROTOCOL_VERSION,
            DecodeError::TopicNameInvalid => reason::TOPIC_NAME_INVALID,
        }
    }
}

/// Why a packet cannot be written to the wire.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    /// A string or binary field is longer than its 16-bit length prefix allows.
    #[error("field of {0} bytes exceeds 65535")]
    FieldTooLong(usize),
    /// The remaining length (or a property block) exceeds 268,435,455 bytes.
    #[error("remaining length {0} exceeds 268435455")]
    PacketTooLarge(usize),
    /// The packet holds values no peer would accept for this protocol version.
    #[error("packet cannot be encoded: {0}")]
    Invalid(&'static str),
}
