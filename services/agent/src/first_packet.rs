//! The first packet of a device: read only as far as the CONNECT goes, under the
//! caller's deadline and a size cap, and understood well enough to route it.

use throng_codec::{ConnAck, DecodeError, Packet, ProtocolVersion, reason};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A complete, well-formed CONNECT and everything read so far.
#[derive(Debug)]
pub struct FirstPacket {
    pub version: ProtocolVersion,
    /// As the client sent it; may be empty.
    pub client_id: String,
    pub clean_start: bool,
    /// The CONNECT bytes and anything the client sent after them.
    pub bytes: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum FirstPacketError {
    #[error("connection closed before CONNECT")]
    Closed,
    #[error("first packet is not CONNECT")]
    NotConnect,
    #[error("CONNECT larger than {0} bytes")]
    TooLarge(usize),
    #[error("malformed CONNECT: {0}")]
    Malformed(DecodeError),
    #[error("reading CONNECT: {0}")]
    Io(#[from] std::io::Error),
}

impl FirstPacketError {
    /// The CONNACK a client gets before the close, where MQTT allows one.
    pub fn connack(&self, bytes: &[u8]) -> Option<(ProtocolVersion, u8)> {
        match self {
            FirstPacketError::Malformed(DecodeError::UnsupportedProtocolVersion(_)) => Some((
                ProtocolVersion::V3_1_1,
                reason::v3::UNACCEPTABLE_PROTOCOL_VERSION,
            )),
            FirstPacketError::Malformed(err)
                if throng_codec::peek_protocol_level(bytes) == Some(5) =>
            {
                Some((ProtocolVersion::V5, err.reason_code()))
            }
            FirstPacketError::TooLarge(_)
                if throng_codec::peek_protocol_level(bytes) == Some(5) =>
            {
                Some((ProtocolVersion::V5, reason::PACKET_TOO_LARGE))
            }
            _ => None,
        }
    }
}

/// Reads until `buf` holds one whole CONNECT (packet type 1). Bytes after it stay in
/// the returned buffer for the handler.
pub async fn read_connect<S: AsyncRead + Unpin>(
    stream: &mut S,
    mut buf: Vec<u8>,
    max_size: usize,
) -> Result<FirstPacket, (FirstPacketError, Vec<u8>)> {
    loop {
        // Anything but CONNECT is refused from its first byte.
        if buf.first().is_some_and(|&b| b >> 4 != 1) {
            return Err((FirstPacketError::NotConnect, buf));
        }
        match throng_codec::check(&buf, max_size) {
            Ok(Some(len)) => {
                return match throng_codec::decode(&buf[..len], ProtocolVersion::V3_1_1) {
                    Ok(Packet::Connect(connect)) => Ok(FirstPacket {
                        version: connect.protocol.unwrap_or(ProtocolVersion::V3_1_1),
                        client_id: connect.client_id,
                        clean_start: connect.clean_start,
                        bytes: buf,
                    }),
                    Ok(_) => Err((FirstPacketError::NotConnect, buf)),
                    Err(err) => Err((FirstPacketError::Malformed(err), buf)),
                };
            }
            Ok(None) => {}
            Err(DecodeError::PacketTooLarge { .. }) => {
                return Err((FirstPacketError::TooLarge(max_size), buf));
            }
            Err(err) => return Err((FirstPacketError::Malformed(err), buf)),
        }
        let mut chunk = [0u8; 1024];
        match stream.read(&mut chunk).await {
            Ok(0) => return Err((FirstPacketError::Closed, buf)),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err((e.into(), buf)),
        }
    }
}

/// Best-effort CONNACK with a refusal code (bounded to one second); the caller
/// closes the connection next.
pub async fn send_refusal<S: AsyncWrite + Unpin>(
    stream: &mut S,
    version: ProtocolVersion,
    code: u8,
) {
    let packet = Packet::ConnAck(ConnAck {
        code,
        ..ConnAck::default()
    });
    let mut out = Vec::with_capacity(8);
    if throng_codec::encode(&packet, version, &mut out).is_ok() {
        let write = async {
            stream.write_all(&out).await?;
            stream.flush().await
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), write).await;
    }
}
