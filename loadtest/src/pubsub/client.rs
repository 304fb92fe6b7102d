//! Setting up one client: TCP connect, CONNECT, CONNACK (with the MQTT 5
//! properties a publisher must obey), and for a subscriber SUBSCRIBE and its
//! SUBACK. Bytes read past the last packet stay in the connection's buffer.

use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::handshake::{Failure, io_key};
use crate::mqtt::{self, ConnackProperties, ConnectOptions, Frame, Protocol};
use crate::net::client_socket;

/// Read buffer of a client at first (grows for a larger packet).
pub const READ_BUF: usize = 16 * 1024;

/// A connected client and what it read but did not handle yet.
pub struct Conn {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
    pub filled: usize,
    pub props: ConnackProperties,
}

impl Conn {
    /// Reads until a complete packet starts the buffer.
    async fn frame(&mut self) -> Result<Frame, String> {
        loop {
            if let Some(frame) = mqtt::next_frame(&self.buf[..self.filled])
                .map_err(|what| format!("protocol: {what}"))?
            {
                return Ok(frame);
            }
            if self.filled == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
            match self.stream.read(&mut self.buf[self.filled..]).await {
                Ok(0) => return Err("closed_by_broker".into()),
                Ok(n) => self.filled += n,
                Err(e) => return Err(io_key(&e)),
            }
        }
    }

    /// Drops the first `len` bytes of the buffer.
    pub fn consume(&mut self, len: usize) {
        self.buf.copy_within(len..self.filled, 0);
        self.filled -= len;
    }
}

/// Connects and waits for a successful CONNACK.
pub async fn connect(
    source: Option<IpAddr>,
    target: SocketAddr,
    opts: &ConnectOptions,
    client_id: &str,
) -> Result<Conn, String> {
    let socket = client_socket(source, target).map_err(|e| Failure::Io(e).key())?;
    let mut stream = socket
        .connect(target)
        .await
        .map_err(|e| Failure::Io(e).key())?;
    stream
        .write_all(&mqtt::encode_connect(opts, client_id))
        .await
        .map_err(|e| io_key(&e))?;
    let mut conn = Conn {
        stream,
        buf: vec![0; READ_BUF],
        filled: 0,
        props: ConnackProperties::default(),
    };
    let frame = conn.frame().await.map_err(|e| match e.as_str() {
        "closed_by_broker" => "closed_before_connack".to_owned(),
        _ => e,
    })?;
    let variable = &conn.buf[frame.body..frame.len];
    match frame.first >> 4 {
        mqtt::TYPE_CONNACK => {}
        mqtt::TYPE_DISCONNECT => return Err("protocol: DISCONNECT instead of CONNACK".into()),
        _ => return Err("protocol: not a CONNACK".into()),
    }
    match mqtt::connack_code(variable) {
        Some(0) => {}
        Some(code) => return Err(Failure::Code(code).key()),
        None => return Err("protocol: short CONNACK".into()),
    }
    if opts.protocol == Protocol::V5 {
        conn.props =
            mqtt::connack_properties(variable).map_err(|what| format!("protocol: {what}"))?;
    }
    conn.consume(frame.len);
    Ok(conn)
}

/// Subscribes to `filter` and returns the QoS granted.
pub async fn subscribe(
    conn: &mut Conn,
    protocol: Protocol,
    filter: &str,
    qos: u8,
) -> Result<u8, String> {
    const PACKET_ID: u16 = 1;
    conn.stream
        .write_all(&mqtt::encode_subscribe(protocol, PACKET_ID, filter, qos))
        .await
        .map_err(|e| io_key(&e))?;
    let frame = conn.frame().await?;
    if frame.first >> 4 != mqtt::TYPE_SUBACK {
        return Err(format!(
            "protocol: packet type {} instead of SUBACK",
            frame.first >> 4
        ));
    }
    let (id, codes) = mqtt::parse_suback(&conn.buf[frame.body..frame.len], protocol)
        .map_err(|what| format!("protocol: {what}"))?;
    if id != PACKET_ID {
        return Err("protocol: SUBACK for another packet id".into());
    }
    let code = codes[0];
    conn.consume(frame.len);
    match code {
        0..=2 => Ok(code),
        _ => Err(format!("suback_code_0x{code:02x}")),
    }
}
