//! The CONNECT phase: read the first packet under a deadline and a size cap, check
//! protocol, client id, credentials and keepalive, attach the session and answer
//! with CONNACK.

use std::net::SocketAddr;
use std::sync::Arc;

use throng_codec::{ConnAck, ConnAckProperties, Connect, Packet, ProtocolVersion, reason};
use tokio::net::TcpStream;

use super::{Connection, io};
use crate::broker::Broker;
use crate::security::Login;
use crate::session::{ConnLink, ConnSignal, PendingWill};

/// What is known about a connection before its CONNECT.
#[derive(Debug, Clone)]
pub struct ConnectMeta {
    /// The device's address (from a PROXY header when one came first).
    pub peer: SocketAddr,
    /// Connection id given by an agent, for logs; the handler numbers its own.
    pub conn_id: Option<u64>,
    /// Client id an agent assigned to an empty one; used instead of making one up.
    pub assigned_client_id: Option<String>,
}

/// A refusal: the CONNACK code to send (if any) and the metric label.
struct Refusal {
    code: Option<u8>,
    result: &'static str,
}

fn refuse(version: ProtocolVersion, v5_code: u8, v3_code: u8, result: &'static str) -> Refusal {
    Refusal {
        code: Some(if version.is_v5() { v5_code } else { v3_code }),
        result,
    }
}

/// Runs the CONNECT phase; `None` when the connection was refused or lost.
pub(super) async fn handshake(
    stream: TcpStream,
    meta: ConnectMeta,
    initial: Vec<u8>,
    conn_id: u64,
    broker: &Arc<Broker>,
) -> Option<Connection> {
    let mut buf = initial;
    let timeout = broker.config.connect_timeout;
    let frame_len =
        match tokio::time::timeout(timeout, read_first_frame(&stream, &mut buf, broker)).await {
            Ok(Ok(len)) => len,
            Ok(Err(result)) => {
                tracing::debug!(result, "connect failed");
                broker.metrics.connect(result);
                if result == "packet_too_large" {
                    send_early_refusal(&stream, &buf, reason::PACKET_TOO_LARGE);
                }
                return None;
            }
            Err(_) => {
                tracing::debug!("no connect before the deadline");
                broker.metrics.connect("timeout");
                return None;
            }
        };
    handshake_read(stream, meta, buf, frame_len, conn_id, broker)
}

/// The CONNECT phase once `buf` starts with the whole first frame, `frame_len`
/// bytes: nothing in it waits.
pub(super) fn handshake_read(
    stream: TcpStream,
    meta: ConnectMeta,
    buf: Vec<u8>,
    frame_len: usize,
    conn_id: u64,
    broker: &Arc<Broker>,
) -> Option<Connection> {
    let connect = match throng_codec::decode(&buf[..frame_len], ProtocolVersion::V3_1_1) {
        Ok(Packet::Connect(connect)) => connect,
        Ok(_) => {
            broker.metrics.connect("bad_first_packet");
            return None;
        }
        Err(throng_codec::DecodeError::UnsupportedProtocolVersion(level)) => {
            tracing::debug!(level, "unsupported protocol version");
            broker.metrics.connect("bad_protocol");
            let code = if level == 5 {
                reason::UNSUPPORTED_PROTOCOL_VERSION
            } else {
                reason::v3::UNACCEPTABLE_PROTOCOL_VERSION
            };
            write_connack(&stream, ProtocolVersion::V3_1_1, code);
            return None;
        }
        Err(err) => {
            tracing::debug!(error = %err, "malformed connect");
            broker.metrics.connect("malformed");
            send_early_refusal(&stream, &buf[..frame_len], err.reason_code());
            return None;
        }
    };
    let rest = buf[frame_len..].to_vec();
    let version = connect.protocol.unwrap_or(ProtocolVersion::V3_1_1);
    match accept(stream, *connect, &meta, conn_id, broker) {
        Ok(mut conn) => {
            broker.metrics.connect("accepted");
            if !rest.is_empty() {
                let mut out = io::take_output(&mut conn.pending_write);
                let result = conn.on_bytes(&rest, &mut out);
                if io::write_output(&conn.stream, out, &mut conn.pending_write).is_err()
                    || result.is_err()
                {
                    let close = result.err().unwrap_or(super::Close::Lost);
                    conn.finish(close);
                    return None;
                }
            }
            Some(conn)
        }
        Err((stream, refusal)) => {
            tracing::debug!(result = refusal.result, "connect refused");
            broker.metrics.connect(refusal.result);
            if let Some(code) = refusal.code {
                write_connack(&stream, version, code);
            }
            None
        }
    }
}

/// The length of the first frame when `buf` holds all of it; an error (a metric
/// label) as soon as it cannot be a CONNECT within `max` bytes.
pub(super) fn first_frame_len(buf: &[u8], max: usize) -> Result<Option<usize>, &'static str> {
    // Anything but CONNECT is refused from its first byte, without buffering the
    // body it announces.
    if buf.first().is_some_and(|&first| first >> 4 != 1) {
        return Err("bad_first_packet");
    }
    match throng_codec::check(buf, max) {
        Ok(len) => Ok(len),
        Err(throng_codec::DecodeError::PacketTooLarge { .. }) => Err("packet_too_large"),
        Err(_) => Err("malformed"),
    }
}

/// Reads until `buf` holds one whole frame; returns its length or a metric label.
async fn read_first_frame(
    stream: &TcpStream,
    buf: &mut Vec<u8>,
    broker: &Broker,
) -> Result<usize, &'static str> {
    let max = broker.config.max_packet_size as usize;
    loop {
        if let Some(len) = first_frame_len(buf, max)? {
            return Ok(len);
        }
        if stream.readable().await.is_err() {
            return Err("lost");
        }
        let mut chunk = [0u8; 512];
        match stream.try_read(&mut chunk) {
            Ok(0) => return Err("lost"),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return Err("lost"),
        }
    }
}

/// Best effort CONNACK for a v5 client whose CONNECT was refused before parsing.
fn send_early_refusal(stream: &TcpStream, frame: &[u8], code: u8) {
    if throng_codec::peek_protocol_level(frame) == Some(5) {
        write_connack(stream, ProtocolVersion::V5, code);
    }
}

fn write_connack(stream: &TcpStream, version: ProtocolVersion, code: u8) {
    let packet = Packet::ConnAck(ConnAck {
        session_present: false,
        code,
        properties: ConnAckProperties::default(),
    });
    let mut out = Vec::with_capacity(8);
    if throng_codec::encode(&packet, version, &mut out).is_ok() {
        let _ = stream.try_write(&out);
    }
}

fn accept(
    stream: TcpStream,
    connect: Connect,
    meta: &ConnectMeta,
    conn_id: u64,
    broker: &Arc<Broker>,
) -> Result<Connection, (TcpStream, Refusal)> {
    let version = connect.protocol.unwrap_or(ProtocolVersion::V3_1_1);
    let config = &broker.config;
    let props = &connect.properties;
    let mut ack_props = ConnAckProperties::default();

    // Client identifier.
    let client_id: Arc<str> = if connect.client_id.is_empty() {
        let allowed =
            version.is_v5() || (version == ProtocolVersion::V3_1_1 && connect.clean_start);
        if !allowed {
            return Err((
                stream,
                refuse(
                    version,
                    reason::CLIENT_IDENTIFIER_NOT_VALID,
                    reason::v3::IDENTIFIER_REJECTED,
                    "identifier_rejected",
                ),
            ));
        }
        let assigned = meta
            .assigned_client_id
            .clone()
            .unwrap_or_else(assign_client_id);
        if version.is_v5() {
            ack_props.assigned_client_identifier = Some(assigned.clone());
        }
        Arc::from(assigned)
    } else if connect.client_id.len() > config.max_client_id_len {
        return Err((
            stream,
            refuse(
                version,
                reason::CLIENT_IDENTIFIER_NOT_VALID,
                reason::v3::IDENTIFIER_REJECTED,
                "identifier_rejected",
            ),
        ));
    } else {
        Arc::from(connect.client_id.as_str())
    };

    // Enhanced authentication: no method is supported.
    if props.authentication_method.is_some() {
        return Err((
            stream,
            refuse(
                version,
                reason::BAD_AUTHENTICATION_METHOD,
                reason::v3::NOT_AUTHORIZED,
                "bad_auth_method",
            ),
        ));
    }
    match broker
        .security
        .login(connect.username.as_deref(), connect.password.as_deref())
    {
        Login::Accepted => {}
        Login::BadCredentials => {
            return Err((
                stream,
                refuse(
                    version,
                    reason::BAD_USER_NAME_OR_PASSWORD,
                    reason::v3::BAD_USER_NAME_OR_PASSWORD,
                    "bad_credentials",
                ),
            ));
        }
        Login::NotAuthorized => {
            return Err((
                stream,
                refuse(
                    version,
                    reason::NOT_AUTHORIZED,
                    reason::v3::NOT_AUTHORIZED,
                    "not_authorized",
                ),
            ));
        }
    }

    // Keepalive: v5 is told the server's value; v3 cannot be, so it is refused (as Mosquitto does).
    let mut keep_alive = connect.keep_alive;
    if keep_alive > config.max_keepalive
        || (keep_alive == 0 && config.max_keepalive < u16::MAX && version.is_v5())
    {
        if version.is_v5() {
            keep_alive = config.max_keepalive;
            ack_props.server_keep_alive = Some(keep_alive);
        } else if keep_alive > config.max_keepalive {
            return Err((
                stream,
                refuse(
                    version,
                    reason::CLIENT_IDENTIFIER_NOT_VALID,
                    reason::v3::IDENTIFIER_REJECTED,
                    "keepalive_too_long",
                ),
            ));
        }
    }

    // Will topic must be a valid topic name.
    if let Some(will) = &connect.will
        && throng_topic::validate_topic_name(&will.topic).is_err()
    {
        return Err((
            stream,
            refuse(
                version,
                reason::TOPIC_NAME_INVALID,
                reason::v3::NOT_AUTHORIZED,
                "bad_will_topic",
            ),
        ));
    }

    // Session expiry, capped by the server.
    let max_expiry = u32::try_from(config.max_session_expiry.as_secs()).unwrap_or(u32::MAX);
    let expiry = if version.is_v5() {
        let asked = props.session_expiry_interval.unwrap_or(0);
        if asked > max_expiry {
            ack_props.session_expiry_interval = Some(max_expiry);
        }
        asked.min(max_expiry)
    } else if connect.clean_start {
        0
    } else {
        max_expiry
    };

    let username: Option<Arc<str>> = connect.username.as_deref().map(Arc::from);
    let will = connect.will.map(|will| {
        Box::new(PendingWill {
            will,
            username: username.clone(),
        })
    });
    let signal = Arc::new(ConnSignal::new(
        conn_id,
        keep_alive,
        broker.keepalive.now_ms(),
    ));
    let link = ConnLink {
        conn_id,
        signal: signal.clone(),
    };
    let attached = broker.attach(client_id, connect.clean_start, expiry, will, username, link);

    if version.is_v5() {
        ack_props.receive_maximum = Some(config.receive_maximum);
        ack_props.maximum_packet_size = Some(config.max_packet_size);
        ack_props.topic_alias_maximum = Some(config.topic_alias_maximum);
    }
    let connack = Packet::ConnAck(ConnAck {
        session_present: attached.session_present,
        code: reason::SUCCESS,
        properties: ack_props,
    });
    let mut conn = Connection {
        stream,
        broker: broker.clone(),
        session: attached.session,
        signal,
        version,
        partial: Vec::new(),
        pending_write: Vec::new(),
        client_receive_maximum: props.receive_maximum.unwrap_or(u16::MAX),
        client_max_packet_size: props.maximum_packet_size.unwrap_or(u32::MAX),
        client_topic_alias_maximum: props.topic_alias_maximum.unwrap_or(0),
        session_expiry_was_zero: expiry == 0,
        rare: None,
    };
    broker.keepalive.track(&conn.signal);
    let mut out = io::take_output(&mut conn.pending_write);
    let encoded = throng_codec::encode(&connack, version, &mut out);
    debug_assert!(encoded.is_ok());
    conn.resend_inflight();
    conn.drain_session(&mut out);
    if io::write_output(&conn.stream, out, &mut conn.pending_write).is_err() {
        conn.finish(super::Close::Lost);
        return Err((
            conn.stream,
            Refusal {
                code: None,
                result: "lost",
            },
        ));
    }
    Ok(conn)
}

fn assign_client_id() -> String {
    format!("throng-{:016x}", rand::random::<u64>())
}
