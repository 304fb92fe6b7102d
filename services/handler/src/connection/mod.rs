//! One client connection: the CONNECT phase, then a loop that waits on socket
//! readiness, its session's wake-up and the keepalive deadline. Everything between
//! awaits is synchronous, so an idle connection holds only this struct.

mod connect;
mod inbound;
mod io;
mod outbound;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use throng_codec::{Disconnect, Packet, ProtocolVersion, reason};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::broker::Broker;
use crate::broker::Departure;
use crate::cluster::ForwardQueue;
use crate::session::{ConnSignal, Session};

pub use connect::ConnectMeta;

/// Pending output beyond this stops reading from the client until it drains.
const WRITE_HIGH_WATER: usize = 256 * 1024;
/// Reads per readiness event before giving other connections a turn.
const READS_PER_WAKE: usize = 4;
/// Rounds of work per poll before yielding to other tasks.
const STEPS_PER_POLL: usize = 8;

/// Why the connection is closing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Close {
    /// DISCONNECT from the client.
    Disconnected(Departure),
    /// A protocol violation: v5 gets DISCONNECT with this reason first; the will goes out.
    Protocol(u8),
    KeepAliveTimeout,
    /// The peer closed or the socket failed.
    Lost,
    /// Another connection took the session, or the server is shutting down.
    Kicked(u8),
}

/// Per-connection state after a successful CONNECT.
pub(crate) struct Connection {
    stream: TcpStream,
    broker: Arc<Broker>,
    session: Arc<Session>,
    signal: Arc<ConnSignal>,
    version: ProtocolVersion,
    /// Bytes of an incomplete frame; empty at rest.
    partial: Vec<u8>,
    /// Bytes the socket would not take yet; empty at rest.
    pending_write: Vec<u8>,
    /// The client's limits (v5 CONNECT properties).
    client_receive_maximum: u16,
    client_max_packet_size: u32,
    client_topic_alias_maximum: u16,
    session_expiry_was_zero: bool,
    /// Topic aliases and forward backpressure, allocated on first use: an idle
    /// connection pays one pointer for them.
    rare: Option<Box<Rare>>,
}

/// The parts of a connection few connections need at a time.
#[derive(Default)]
struct Rare {
    aliases: outbound::Aliases,
    /// The distributor stream a publish of ours found over its forward limit:
    /// no reading until it drains (`forward_gate_open`).
    forward_wait: Option<Arc<ForwardQueue>>,
    /// The pause episode our waker is registered for on `forward_wait`; 0: none.
    forward_episode: u32,
}

/// Serves one accepted socket: runs the CONNECT phase in this task, then hands the
/// connection to a task of its own whose future is just the `Connection` (see
/// `ConnectionTask`). `initial` holds bytes already read (after a PROXY header or by
/// an agent). `stop` ends the CONNECT phase at shutdown; a connected client is told
/// to go by its session's kick instead.
pub async fn serve(
    stream: TcpStream,
    meta: ConnectMeta,
    initial: Vec<u8>,
    broker: Arc<Broker>,
    stop: CancellationToken,
    permit: OwnedSemaphorePermit,
    tracker: TaskTracker,
) {
    // The handler's own id links the connection to its session; an agent's id (unique
    // only per agent) is for following a device across logs.
    let conn_id = broker.next_conn_id();
    let span =
        tracing::debug_span!("conn", peer = %meta.peer, conn_id, agent_conn_id = meta.conn_id);
    // Counted from accept; the connection task takes the count over once connected.
    broker.metrics.connections.inc();
    let connected = async {
        tokio::select! {
            connected = connect::handshake(stream, meta, initial, conn_id, &broker) => connected,
            () = stop.cancelled() => {
                tracing::debug!("shutting down before connect");
                None
            }
        }
    }
    .instrument(span)
    .await;
    start(connected, &broker, &stop, permit, &tracker);
}

/// Whether `initial` already holds the whole first frame (an agent read it): then
/// [`serve_now`] runs the CONNECT phase without waiting.
pub fn connect_ready(initial: &[u8], broker: &Broker) -> bool {
    matches!(
        connect::first_frame_len(initial, broker.config.max_packet_size as usize),
        Ok(Some(_))
    )
}

/// [`serve`] for a connection that passed [`connect_ready`], in the caller's task:
/// no task of its own for the CONNECT phase.
pub fn serve_now(
    stream: TcpStream,
    meta: ConnectMeta,
    initial: Vec<u8>,
    broker: &Arc<Broker>,
    stop: &CancellationToken,
    permit: OwnedSemaphorePermit,
    tracker: &TaskTracker,
) {
    let max = broker.config.max_packet_size as usize;
    let Ok(Some(frame_len)) = connect::first_frame_len(&initial, max) else {
        debug_assert!(false, "serve_now without a whole first frame");
        return;
    };
    let conn_id = broker.next_conn_id();
    let span =
        tracing::debug_span!("conn", peer = %meta.peer, conn_id, agent_conn_id = meta.conn_id);
    broker.metrics.connections.inc();
    let connected = span
        .in_scope(|| connect::handshake_read(stream, meta, initial, frame_len, conn_id, broker));
    start(connected, broker, stop, permit, tracker);
}

/// Gives a connected client its task.
fn start(
    connected: Option<Connection>,
    broker: &Broker,
    stop: &CancellationToken,
    permit: OwnedSemaphorePermit,
    tracker: &TaskTracker,
) {
    let Some(mut conn) = connected else {
        broker.metrics.connections.dec();
        return;
    };
    if stop.is_cancelled() {
        // Attached after shutdown began, possibly too late for the kick.
        conn.finish(Close::Kicked(reason::SERVER_SHUTTING_DOWN));
        broker.metrics.connections.dec();
        return;
    }
    tracker.spawn(ConnectionTask {
        conn,
        _permit: permit,
    });
}

/// The task of a connected client. Its future is the connection itself, polled by
/// hand: no timers, buffers or waiter nodes of its own, so an idle client costs the
/// `Connection`, its session and the socket's registration.
struct ConnectionTask {
    conn: Connection,
    _permit: OwnedSemaphorePermit,
}

impl Future for ConnectionTask {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let conn = &mut self.conn;
        let _span = tracing::debug_span!("conn", client_id = %conn.session.client_id, conn_id = conn.signal.conn_id).entered();
        match conn.poll_run(cx) {
            Poll::Ready(close) => {
                conn.finish(close);
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for ConnectionTask {
    fn drop(&mut self) {
        self.conn.broker.metrics.connections.dec();
    }
}

impl Connection {
    /// One scheduling of the connection: wake-ups from the session (messages, kicks,
    /// keepalive expiry) and socket readiness, handled without intrusive waiters.
    fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<Close> {
        for _ in 0..STEPS_PER_POLL {
            self.signal.register(cx.waker());
            let mut progressed = false;
            let mut step = Ok(());
            if self.forward_paused() && self.signal.expired() {
                // Silent because we stopped reading it, not because it went away.
                self.signal.revive(self.broker.keepalive.now_ms());
                self.broker.keepalive.track(&self.signal);
            }
            if self.signal.take_woken() || self.signal.kicked().is_some() || self.signal.expired() {
                step = self.on_wake();
                progressed = true;
            }
            if step.is_ok()
                && self.pending_write.len() < WRITE_HIGH_WATER
                && self.forward_gate_open(cx)
                && let Poll::Ready(ready) = self.stream.poll_read_ready(cx)
            {
                step = ready
                    .map_err(|_| Close::Lost)
                    .and_then(|()| self.on_readable());
                progressed = true;
            }
            if step.is_ok()
                && !self.pending_write.is_empty()
                && let Poll::Ready(ready) = self.stream.poll_write_ready(cx)
            {
                step = ready
                    .map_err(|_| Close::Lost)
                    .and_then(|()| self.on_writable());
                progressed = true;
            }
            if let Err(close) = step {
                return Poll::Ready(close);
            }
            if !progressed {
                return Poll::Pending;
            }
        }
        // Busy connection: let the others run, then come back.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Whether reading may go on: not while a distributor stream our publishes
    /// went to is over its forward limit. The waker is registered with the
    /// queue once per pause episode and woken when it drains below low water.
    fn forward_gate_open(&mut self, cx: &Context<'_>) -> bool {
        let Some(rare) = self.rare.as_deref_mut() else {
            return true;
        };
        let Some(queue) = &rare.forward_wait else {
            return true;
        };
        match queue.wait(cx.waker(), rare.forward_episode) {
            Some(episode) => {
                if episode != rare.forward_episode {
                    self.broker.metrics.forward_paused.inc();
                    rare.forward_episode = episode;
                }
                false
            }
            None => {
                rare.forward_wait = None;
                rare.forward_episode = 0;
                true
            }
        }
    }

    fn forward_paused(&self) -> bool {
        self.rare.as_ref().is_some_and(|r| r.forward_wait.is_some())
    }

    /// Called when a publish met a forward queue over its limit: reading stops
    /// after the bytes already read (`on_readable` reads no further this wake).
    pub(super) fn wait_for_forwards(&mut self, queue: Arc<ForwardQueue>) {
        let rare = self.rare.get_or_insert_with(Box::default);
        if !rare
            .forward_wait
            .as_ref()
            .is_some_and(|q| Arc::ptr_eq(q, &queue))
        {
            rare.forward_wait = Some(queue);
            rare.forward_episode = 0;
        }
    }

    fn on_wake(&mut self) -> Result<(), Close> {
        if let Some(reason) = self.signal.kicked() {
            return Err(Close::Kicked(reason));
        }
        if self.signal.expired() && !self.heard_from_after_all()? {
            return Err(Close::KeepAliveTimeout);
        }
        let mut out = io::take_output(&mut self.pending_write);
        self.drain_session(&mut out);
        io::write_output(&self.stream, out, &mut self.pending_write).map_err(|_| Close::Lost)
    }

    /// Second look before a keepalive close. The wheel judges by the last read this
    /// task made, and a busy handler may not have read bytes the kernel already
    /// holds (a PINGREQ in the socket buffer, its readiness event not yet seen).
    /// Bytes waiting count as being heard from; the readiness path reads them.
    fn heard_from_after_all(&mut self) -> Result<bool, Close> {
        let now = self.broker.keepalive.now_ms();
        let heard = match self.signal.keepalive_deadline_ms() {
            Some(deadline) if deadline > now => true,
            _ => {
                let mut byte = [std::mem::MaybeUninit::uninit()];
                match socket2::SockRef::from(&self.stream).peek(&mut byte) {
                    Ok(0) => return Err(Close::Lost),
                    Ok(_) => true,
                    Err(_) => false,
                }
            }
        };
        if heard {
            self.signal.revive(now);
            self.broker.keepalive.track(&self.signal);
        }
        Ok(heard)
    }

    /// Writes what the socket takes now, then refills from the session's queue.
    fn on_writable(&mut self) -> Result<(), Close> {
        io::flush_pending(&self.stream, &mut self.pending_write).map_err(|_| Close::Lost)?;
        if self.pending_write.len() >= WRITE_HIGH_WATER {
            return Ok(());
        }
        let mut out = io::take_output(&mut self.pending_write);
        self.drain_session(&mut out);
        io::write_output(&self.stream, out, &mut self.pending_write).map_err(|_| Close::Lost)
    }

    fn on_readable(&mut self) -> Result<(), Close> {
        let mut out = io::take_output(&mut self.pending_write);
        let mut result = Ok(());
        for _ in 0..READS_PER_WAKE {
            let step = io::with_read_scratch(|buf| match self.stream.try_read(buf) {
                Ok(0) => Err(Close::Lost),
                Ok(n) => self.on_bytes(&buf[..n], &mut out).map(|()| true),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
                Err(_) => Err(Close::Lost),
            });
            match step {
                Ok(true) if !self.forward_paused() => continue,
                Ok(_) => break,
                Err(close) => {
                    result = Err(close);
                    break;
                }
            }
        }
        if result.is_ok() {
            self.drain_session(&mut out);
        }
        let written = io::write_output(&self.stream, out, &mut self.pending_write);
        result?;
        written.map_err(|_| Close::Lost)
    }

    /// Feeds freshly read bytes through the frame parser.
    fn on_bytes(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), Close> {
        self.signal.touch(self.broker.keepalive.now_ms());
        if self.partial.is_empty() {
            let used = self.on_frames(bytes, out)?;
            if used < bytes.len() {
                self.partial = bytes[used..].to_vec();
            }
        } else {
            let mut buf = std::mem::take(&mut self.partial);
            buf.extend_from_slice(bytes);
            let used = self.on_frames(&buf, out)?;
            if used < buf.len() {
                buf.drain(..used);
                self.partial = buf;
            }
        }
        Ok(())
    }

    /// Handles every whole frame in `buf`; returns the bytes consumed.
    fn on_frames(&mut self, buf: &[u8], out: &mut Vec<u8>) -> Result<usize, Close> {
        let max = self.broker.config.max_packet_size as usize;
        let mut used = 0;
        loop {
            match throng_codec::check(&buf[used..], max) {
                Ok(Some(len)) => {
                    let frame = &buf[used..used + len];
                    used += len;
                    match throng_codec::decode(frame, self.version) {
                        Ok(packet) => self.on_packet(packet, out)?,
                        Err(err) => {
                            tracing::debug!(error = %err, "bad packet");
                            return Err(Close::Protocol(disconnect_reason(&err)));
                        }
                    }
                }
                Ok(None) => return Ok(used),
                Err(err) => {
                    tracing::debug!(error = %err, "bad packet");
                    return Err(Close::Protocol(err.reason_code()));
                }
            }
        }
    }

    /// Closes the connection: tells a v5 client why when the spec allows, then
    /// detaches from the session.
    fn finish(&mut self, close: Close) {
        let departure = match close {
            Close::Disconnected(departure) => departure,
            Close::Kicked(_) | Close::Protocol(_) | Close::KeepAliveTimeout | Close::Lost => {
                Departure::WithWill
            }
        };
        let notify_reason = match close {
            Close::Protocol(code) | Close::Kicked(code) => Some(code),
            Close::KeepAliveTimeout => Some(reason::KEEP_ALIVE_TIMEOUT),
            Close::Disconnected(_) | Close::Lost => None,
        };
        if let (Some(code), true) = (notify_reason, self.version.is_v5()) {
            let mut out = io::take_output(&mut self.pending_write);
            let packet = Packet::Disconnect(Disconnect {
                reason: code,
                ..Disconnect::default()
            });
            if throng_codec::encode(&packet, self.version, &mut out).is_ok() {
                let _ = io::write_output(&self.stream, out, &mut self.pending_write);
            }
        }
        tracing::debug!(?close, "connection closed");
        self.broker.metrics.disconnected(match close {
            Close::Disconnected(_) => "client_disconnect",
            Close::KeepAliveTimeout => "keepalive_timeout",
            Close::Protocol(_) => "protocol_error",
            Close::Lost => "connection_lost",
            Close::Kicked(reason::SERVER_SHUTTING_DOWN) => "server_shutdown",
            Close::Kicked(_) => "taken_over",
        });
        match close {
            // A taken-over session belongs to the new connection now; on shutdown
            // the session stays as it is.
            Close::Kicked(_) => {}
            _ => self
                .broker
                .detach(&self.session, self.signal.conn_id, departure),
        }
    }
}

/// The DISCONNECT reason for a packet that failed to decode. The codec reports
/// Topic Alias 0 as a generic protocol error; the more specific 0x94 (Topic Alias
/// invalid) tells the client what it did, as for an alias above the maximum.
fn disconnect_reason(err: &throng_codec::DecodeError) -> u8 {
    match err {
        throng_codec::DecodeError::ProtocolError("topic alias 0") => reason::TOPIC_ALIAS_INVALID,
        _ => err.reason_code(),
    }
}

#[cfg(test)]
mod tests {
    /// tokio allocates a task as one cell aligned to 128 bytes: header, this future,
    /// trailer. At 152 bytes the cell of a connection's task is 256 bytes; 8 more and
    /// it is 384 (measured: +128 B per idle connection). Grow it only on purpose.
    #[test]
    fn a_connection_task_fits_a_256_byte_task_cell() {
        let size = std::mem::size_of::<super::ConnectionTask>();
        assert!(size <= 152, "ConnectionTask is {size} bytes");
    }
}
