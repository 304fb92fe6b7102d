//! Reading a PROXY header off a socket: bytes are read only as far as needed, and
//! whatever arrived after the header is handed back with it.

use tokio::net::TcpStream;

use crate::{MAX_V2_PAYLOAD, ProxyError, ProxyHeader, parse};

/// Largest header accepted (v2 fixed part plus the largest address/TLV block).
const MAX_HEADER: usize = MAX_V2_PAYLOAD + 16;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("bad PROXY header: {0}")]
    Header(#[from] ProxyError),
    #[error("PROXY header longer than {MAX_HEADER} bytes")]
    TooLong,
    #[error("connection closed before the PROXY header ended")]
    Closed,
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one PROXY v1/v2 header; returns it and the bytes read past it. The caller
/// bounds the time it may take.
pub async fn read_header(stream: &TcpStream) -> Result<(ProxyHeader, Vec<u8>), ReadError> {
    read_header_after(stream, Vec::with_capacity(256)).await
}

/// [`read_header`] for a connection whose first bytes, `buf`, were already read.
pub async fn read_header_after(
    stream: &TcpStream,
    mut buf: Vec<u8>,
) -> Result<(ProxyHeader, Vec<u8>), ReadError> {
    loop {
        if let Some((header, used)) = parse(&buf)? {
            return Ok((header, buf.split_off(used)));
        }
        if buf.len() >= MAX_HEADER {
            return Err(ReadError::TooLong);
        }
        stream.readable().await?;
        let mut chunk = [0u8; 512];
        match stream.try_read(&mut chunk) {
            Ok(0) => return Err(ReadError::Closed),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
    }
}
