//! One MQTT client handshake (TCP connect, CONNECT, CONNACK) and the causes a
//! handshake fails for, shared by every scenario.

use std::io::{self, ErrorKind};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::mqtt::{self, ConnectOptions, Varint};
use crate::net::client_socket;

/// Why a handshake failed.
#[derive(Debug)]
pub enum Failure {
    Io(io::Error),
    Timeout,
    /// CONNACK with a non-zero return / reason code.
    Code(u8),
    /// Something other than a well-formed CONNACK arrived.
    Protocol(&'static str),
}

impl Failure {
    /// The cause as the reports show it.
    pub fn key(&self) -> String {
        match self {
            Failure::Io(e) => io_key(e),
            Failure::Timeout => "timeout".into(),
            Failure::Code(code) => format!("connack_code_0x{code:02x}"),
            Failure::Protocol(what) => format!("protocol: {what}"),
        }
    }
}

/// Groups I/O errors into the causes the reports show.
pub fn io_key(e: &io::Error) -> String {
    match e.kind() {
        ErrorKind::ConnectionRefused => "refused".into(),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
            "reset".into()
        }
        ErrorKind::UnexpectedEof => "closed_before_connack".into(),
        ErrorKind::TimedOut => "timeout".into(),
        ErrorKind::AddrInUse | ErrorKind::AddrNotAvailable => "no_source_port".into(),
        _ => match e.raw_os_error() {
            Some(23 | 24) => "fd_limit".into(),
            _ => format!("io: {e}"),
        },
    }
}

/// Opens a TCP connection from `source` (kernel's choice when `None`) to
/// `target`, sends CONNECT and waits for a successful CONNACK. Reads exactly the
/// CONNACK, so whatever the broker sends next stays in the socket. `tcp_us` is
/// set once the TCP connection is up (µs since `t0`). No deadline: wrap the
/// call in one.
pub async fn connect(
    source: Option<IpAddr>,
    target: SocketAddr,
    opts: &ConnectOptions,
    client_id: &str,
    t0: Instant,
    tcp_us: &mut Option<u64>,
) -> Result<TcpStream, Failure> {
    let socket = client_socket(source, target).map_err(Failure::Io)?;
    let mut stream = socket.connect(target).await.map_err(Failure::Io)?;
    *tcp_us = Some(t0.elapsed().as_micros() as u64);

    let packet = mqtt::encode_connect(opts, client_id);
    stream.write_all(&packet).await.map_err(Failure::Io)?;

    // Fixed header: type byte, then the remaining length (1–4 bytes).
    let mut header = [0u8; 5];
    stream
        .read_exact(&mut header[..2])
        .await
        .map_err(Failure::Io)?;
    let mut have = 2;
    let remaining = loop {
        match mqtt::get_varint(&header[1..have]) {
            Varint::Done(len, _) => break len,
            Varint::Malformed => return Err(Failure::Protocol("bad remaining length")),
            Varint::Incomplete => {
                stream
                    .read_exact(&mut header[have..=have])
                    .await
                    .map_err(Failure::Io)?;
                have += 1;
            }
        }
    };
    match header[0] >> 4 {
        mqtt::TYPE_CONNACK => {}
        mqtt::TYPE_DISCONNECT => return Err(Failure::Protocol("DISCONNECT instead of CONNACK")),
        _ => return Err(Failure::Protocol("not a CONNACK")),
    }
    let mut variable = [0u8; 512];
    if !(2..=variable.len()).contains(&remaining) {
        return Err(Failure::Protocol("CONNACK length out of range"));
    }
    stream
        .read_exact(&mut variable[..remaining])
        .await
        .map_err(Failure::Io)?;
    match mqtt::connack_code(&variable[..remaining]) {
        Some(0) => Ok(stream),
        Some(code) => Err(Failure::Code(code)),
        None => Err(Failure::Protocol("short CONNACK")),
    }
}
