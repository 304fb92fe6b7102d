//! TLS connections: their pipeline and routing. The agent terminates TLS, so it
//! must keep relaying decrypted bytes itself: proxy hand-off only, copied by a task
//! per connection (rustls holds buffers per connection anyway; the buffer-free
//! relay serves plain TCP).

use std::net::SocketAddr;
use std::sync::Arc;

use throng_codec::{ProtocolVersion, reason};
use throng_proxy_protocol::{ProxyHeader, encode_v2};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use crate::Core;
use crate::accept::{Admitted, admit, proxy_header};
use crate::first_packet::send_refusal;
use crate::prefixed::Prefixed;
use crate::tls::TlsConfigWatcher;

/// The pipeline for a TLS connection (always relayed by a task of the agent).
pub(crate) async fn serve(
    stream: std::net::TcpStream,
    tcp_peer: SocketAddr,
    local: Option<SocketAddr>,
    core: &Arc<Core>,
    tls: TlsConfigWatcher,
    pending: OwnedSemaphorePermit,
) {
    let deadline = Instant::now() + core.config.connect_timeout;
    let Ok(stream) = TcpStream::from_std(stream) else {
        return;
    };
    let _ = stream.set_nodelay(true);
    let Some(local) = local.or_else(|| stream.local_addr().ok()) else {
        return;
    };
    let Some((peer, local, initial)) =
        proxy_header(&stream, tcp_peer, local, Vec::new(), deadline, core).await
    else {
        return;
    };
    let Some(admission) = crate::fast::check_peer(peer, core) else {
        return;
    };
    let handshake = tls.acceptor().accept(Prefixed::new(initial, stream));
    let mut stream = match tokio::time::timeout_at(deadline, handshake).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => {
            tracing::debug!(peer = %peer, error = %err, "tls handshake failed");
            core.metrics.accept("bad_connect");
            return;
        }
        Err(_) => {
            core.metrics.accept("timeout");
            return;
        }
    };
    let Some(admitted) = admit(&mut stream, Vec::new(), deadline, admission, core).await else {
        return;
    };
    drop(pending);
    let conn_id = admitted.conn_id;
    route(stream, admitted, peer, local, core).await;
    core.table.close(conn_id);
}

async fn route<S: AsyncRead + AsyncWrite + Unpin>(
    mut device: S,
    admitted: Admitted,
    peer: SocketAddr,
    local: SocketAddr,
    core: &Arc<Core>,
) {
    let Admitted {
        first,
        conn_id,
        client_id,
        assigned,
    } = admitted;
    let ring = core.ring.borrow().clone();
    let started = Instant::now();
    let mut header = ProxyHeader::proxied(peer, local).with_conn_id(conn_id);
    if let Some(assigned) = &assigned {
        header = header.with_assigned_client_id(assigned);
    }
    let mut hello = Vec::with_capacity(64 + first.bytes.len());
    if encode_v2(&header, &mut hello).is_err() {
        return;
    }
    hello.extend_from_slice(&first.bytes);
    for member in ring.candidates(&client_id) {
        let timeout = core.config.handoff_timeout;
        let connected = tokio::time::timeout(timeout, async {
            let mut upstream = TcpStream::connect(&*member.addr).await?;
            upstream.set_nodelay(true)?;
            upstream.write_all(&hello).await?;
            Ok::<_, std::io::Error>(upstream)
        })
        .await;
        match connected {
            Ok(Ok(mut upstream)) => {
                core.metrics
                    .handoff_seconds
                    .observe(started.elapsed().as_secs_f64());
                core.metrics.routed_to(&member.id);
                core.table
                    .routed(conn_id, client_id.clone(), member.id.clone());
                let _ = tokio::io::copy_bidirectional(&mut device, &mut upstream).await;
                return;
            }
            Ok(Err(err)) => {
                tracing::warn!(%client_id, handler = %member.id, error = %err, "handler unreachable, trying the next in ring order");
            }
            Err(_) => {
                tracing::warn!(%client_id, handler = %member.id, "handler did not answer in time, trying the next in ring order");
            }
        }
        core.metrics.handoff_failed(&member.id);
    }
    let code = if first.version.is_v5() {
        reason::SERVER_UNAVAILABLE
    } else {
        reason::v3::SERVER_UNAVAILABLE
    };
    let version: ProtocolVersion = first.version;
    send_refusal(&mut device, version, code).await;
}
