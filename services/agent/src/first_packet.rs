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

/// What the bytes read so far hold.
pub enum Parsed {
    Connect(FirstPacket),
    /// Not a whole CONNECT yet: read on.
    Incomplete(Vec<u8>),
    Failed(FirstPacketError, Vec<u8>),
}

/// Looks for one whole CONNECT (packet type 1) at the start of `buf`, without
/// reading; bytes after it stay in the buffer for the handler.
pub fn parse_connect(buf: Vec<u8>, max_size: usize) -> Parsed {
    // Anything but CONNECT is refused from its first byte.
    if buf.first().is_some_and(|&b| b >> 4 != 1) {
        return Parsed::Failed(FirstPacketError::NotConnect, buf);
    }
    match throng_codec::check(&buf, max_size) {
        Ok(Some(len)) => match throng_codec::decode(&buf[..len], ProtocolVersion::V3_1_1) {
            Ok(Packet::Connect(connect)) => Parsed::Connect(FirstPacket {
                version: connect.protocol.unwrap_or(ProtocolVersion::V3_1_1),
                client_id: connect.client_id,
                clean_start: connect.clean_start,
                bytes: buf,
            }),
            Ok(_) => Parsed::Failed(FirstPacketError::NotConnect, buf),
            Err(err) => Parsed::Failed(FirstPacketError::Malformed(err), buf),
        },
        Ok(None) => Parsed::Incomplete(buf),
        Err(DecodeError::PacketTooLarge { .. }) => {
            Parsed::Failed(FirstPacketError::TooLarge(max_size), buf)
        }
        Err(err) => Parsed::Failed(FirstPacketError::Malformed(err), buf),
    }
}

/// How much one read may take: never more than `max_size` in hand, so a whole
/// CONNECT still fits and what comes with it stays within the fd hand-off's
/// already-read limit.
pub fn read_size(max_size: usize, have: usize) -> usize {
    max_size.saturating_sub(have).clamp(1, READ_CHUNK)
}

const READ_CHUNK: usize = 1024;

/// Reads until `buf` holds one whole CONNECT (packet type 1). Bytes after it stay in
/// the returned buffer for the handler.
pub async fn read_connect<S: AsyncRead + Unpin>(
    stream: &mut S,
    mut buf: Vec<u8>,
    max_size: usize,
) -> Result<FirstPacket, (FirstPacketError, Vec<u8>)> {
    loop {
        buf = match parse_connect(buf, max_size) {
            Parsed::Connect(first) => return Ok(first),
            Parsed::Failed(err, buf) => return Err((err, buf)),
            Parsed::Incomplete(buf) => buf,
        };
        let mut chunk = [0u8; READ_CHUNK];
        let want = read_size(max_size, buf.len());
        match stream.read(&mut chunk[..want]).await {
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

#[cfg(test)]
mod tests {
    use super::*;
    use throng_codec::Connect;
    use tokio::io::AsyncWriteExt;

    fn connect_bytes(version: ProtocolVersion, client_id: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let packet = Packet::Connect(Box::new(Connect {
            protocol: Some(version),
            clean_start: true,
            keep_alive: 30,
            client_id: client_id.into(),
            ..Connect::default()
        }));
        throng_codec::encode(&packet, version, &mut out).unwrap();
        out
    }

    async fn read(input: Vec<u8>, max: usize) -> Result<FirstPacket, (FirstPacketError, Vec<u8>)> {
        let (mut client, mut server) = tokio::io::duplex(1 << 20);
        client.write_all(&input).await.unwrap();
        drop(client);
        read_connect(&mut server, Vec::new(), max).await
    }

    #[tokio::test]
    async fn reads_a_connect_and_keeps_what_follows() {
        let mut input = connect_bytes(ProtocolVersion::V5, "dev-1");
        let len = input.len();
        input.extend_from_slice(&[0xC0, 0x00]); // PINGREQ right behind it
        let first = read(input.clone(), 1024).await.unwrap();
        assert_eq!(first.client_id, "dev-1");
        assert_eq!(first.version, ProtocolVersion::V5);
        assert!(first.clean_start);
        assert_eq!(first.bytes, input);
        assert_eq!(&first.bytes[len..], &[0xC0, 0x00]);
    }

    #[tokio::test]
    async fn anything_but_connect_is_refused_from_its_first_byte() {
        let (err, _) = read(vec![0x30, 0x7F], 1024).await.unwrap_err();
        assert!(matches!(err, FirstPacketError::NotConnect));
        assert_eq!(err.connack(&[0x30]), None);
    }

    #[tokio::test]
    async fn an_oversized_v5_connect_gets_packet_too_large() {
        let input = connect_bytes(ProtocolVersion::V5, &"x".repeat(200));
        let (err, bytes) = read(input, 64).await.unwrap_err();
        assert!(matches!(err, FirstPacketError::TooLarge(64)));
        assert_eq!(
            err.connack(&bytes),
            Some((ProtocolVersion::V5, reason::PACKET_TOO_LARGE))
        );
    }

    #[tokio::test]
    async fn an_unknown_protocol_level_gets_the_v3_refusal() {
        let mut input = connect_bytes(ProtocolVersion::V3_1_1, "a");
        input[8] = 6; // protocol level byte of "MQTT"
        let (err, bytes) = read(input, 1024).await.unwrap_err();
        assert_eq!(
            err.connack(&bytes),
            Some((
                ProtocolVersion::V3_1_1,
                reason::v3::UNACCEPTABLE_PROTOCOL_VERSION
            ))
        );
    }

    #[tokio::test]
    async fn a_closed_connection_before_connect_is_reported() {
        let input = connect_bytes(ProtocolVersion::V3_1_1, "a");
        let (err, _) = read(input[..5].to_vec(), 1024).await.unwrap_err();
        assert!(matches!(err, FirstPacketError::Closed));
    }
}
