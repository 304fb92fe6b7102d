//! Hand-offs over real socket pairs, with real TCP connections whose far end then
//! talks through the passed descriptor.

use std::io::{IoSlice, Read, Write};
use std::mem::MaybeUninit;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};

use crate::{HandoffError, HandoffMeta, MAX_ALREADY_READ, encode_frame, recv, send, send_async};

/// A connected TCP pair on loopback: (device side, server side).
fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let device = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    device
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    (device, server)
}

/// A Unix pair: the agent's blocking end and the handler's tokio end.
fn unix_pair() -> (UnixStream, tokio::net::UnixStream) {
    let (agent, handler) = UnixStream::pair().unwrap();
    handler.set_nonblocking(true).unwrap();
    (agent, tokio::net::UnixStream::from_std(handler).unwrap())
}

fn meta_for(device: &TcpStream, conn_id: u64, id: Option<&str>) -> HandoffMeta {
    HandoffMeta {
        conn_id,
        peer: device.local_addr().unwrap(),
        local: device.peer_addr().unwrap(),
        assigned_client_id: id.map(str::to_string),
    }
}

/// Sends `data` with `fds` attached, bypassing [`send`].
fn send_raw(sock: &UnixStream, data: &[u8], fds: &[BorrowedFd<'_>]) {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(16))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() {
        assert!(control.push(SendAncillaryMessage::ScmRights(fds)));
    }
    let sent = rustix::net::sendmsg(
        sock,
        &[IoSlice::new(data)],
        &mut control,
        SendFlags::empty(),
    )
    .unwrap();
    assert_eq!(sent, data.len());
}

async fn recv_ok(sock: &tokio::net::UnixStream) -> (TcpStream, HandoffMeta, Vec<u8>) {
    tokio::time::timeout(Duration::from_secs(5), recv(sock))
        .await
        .expect("a hand-off within 5 s")
        .expect("a good hand-off")
        .expect("not end of stream")
}

async fn recv_err(sock: &tokio::net::UnixStream) -> HandoffError {
    match tokio::time::timeout(Duration::from_secs(5), recv(sock))
        .await
        .expect("an answer within 5 s")
    {
        Err(err) => err,
        Ok(other) => panic!("expected an error, got {other:?}"),
    }
}

/// The device sees the handler's bytes and the handler the device's, through the
/// passed descriptor; closing the handler's copy closes the connection, so no
/// other copy is left open.
fn assert_passed(device: &mut TcpStream, mut passed: TcpStream, meta: &HandoffMeta) {
    assert_eq!(passed.peer_addr().unwrap(), meta.peer);
    assert_eq!(passed.local_addr().unwrap(), meta.local);
    passed.write_all(b"to device").unwrap();
    let mut buf = [0u8; 9];
    device.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"to device");
    device.write_all(b"to handler").unwrap();
    let mut buf = [0u8; 10];
    passed.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"to handler");
    drop(passed);
    assert_closed(device);
}

fn assert_closed(device: &mut TcpStream) {
    let mut buf = [0u8; 1];
    assert_eq!(device.read(&mut buf).unwrap(), 0, "device still connected");
}

#[tokio::test]
async fn round_trip_passes_the_socket_and_consumes_the_callers_copy() {
    let (agent, handler) = unix_pair();
    let (mut device, server) = tcp_pair();
    let meta = meta_for(&device, 42, Some("assigned-7"));
    send(&agent, server, &meta, b"\x10\x0cCONNECT").unwrap();
    let (passed, got, already_read) = recv_ok(&handler).await;
    assert_eq!(got, meta);
    assert_eq!(already_read, b"\x10\x0cCONNECT");
    assert_passed(&mut device, passed, &meta);
}

#[tokio::test]
async fn many_hand_offs_share_one_connection() {
    let (agent, handler) = unix_pair();
    let sizes = [0, 1, 7, 4096, MAX_ALREADY_READ, 100, MAX_ALREADY_READ, 3];
    let mut devices = Vec::new();
    let mut servers = Vec::new();
    for _ in sizes {
        let (device, server) = tcp_pair();
        devices.push(device);
        servers.push(server);
    }
    let metas: Vec<_> = devices
        .iter()
        .enumerate()
        .map(|(i, device)| meta_for(device, i as u64, (i % 2 == 0).then_some("id")))
        .collect();
    // More than a socket buffer in all: the sender blocks until the handler reads.
    let sender = {
        let metas = metas.clone();
        std::thread::spawn(move || {
            for ((server, meta), size) in servers.into_iter().zip(&metas).zip(sizes) {
                let already_read = vec![meta.conn_id as u8; size];
                send(&agent, server, meta, &already_read).unwrap();
            }
            agent
        })
    };
    for (i, (device, size)) in devices.iter_mut().zip(sizes).enumerate() {
        let (passed, meta, already_read) = recv_ok(&handler).await;
        assert_eq!(meta, metas[i]);
        assert_eq!(already_read, vec![i as u8; size]);
        assert_passed(device, passed, &meta);
    }
    drop(sender.join().unwrap());
    assert!(recv(&handler).await.unwrap().is_none(), "end of stream");
}

#[tokio::test]
async fn send_async_round_trip() {
    let (agent, handler) = unix_pair();
    agent.set_nonblocking(true).unwrap();
    let agent = tokio::net::UnixStream::from_std(agent).unwrap();
    let (mut device, server) = tcp_pair();
    let meta = HandoffMeta {
        peer: "[2001:db8::7]:4444".parse().unwrap(),
        ..meta_for(&device, 1, None)
    };
    let big = vec![0xab; MAX_ALREADY_READ];
    let (sent, received) = tokio::join!(send_async(&agent, server, &meta, &big), recv_ok(&handler));
    sent.unwrap();
    let (passed, got, already_read) = received;
    assert_eq!(got, meta);
    assert_eq!(already_read, big);
    let meta = HandoffMeta {
        peer: device.local_addr().unwrap(),
        ..got
    };
    assert_passed(&mut device, passed, &meta);
}

#[tokio::test]
async fn frames_without_exactly_one_fd_are_rejected_and_their_fds_closed() {
    let (agent, handler) = unix_pair();
    let (mut device, server) = tcp_pair();
    let meta = meta_for(&device, 1, None);
    let frame = encode_frame(&meta, b"abc").unwrap();

    send_raw(&agent, &frame, &[]);
    let err = recv_err(&handler).await;
    assert!(matches!(err, HandoffError::FdCount(0)), "{err}");
    assert!(!err.is_fatal());

    let (mut other_device, other_server) = tcp_pair();
    send_raw(&agent, &frame, &[server.as_fd(), other_server.as_fd()]);
    drop((server, other_server));
    let err = recv_err(&handler).await;
    assert!(matches!(err, HandoffError::FdCount(2)), "{err}");
    assert!(!err.is_fatal());
    // Neither descriptor was kept by the receiver.
    assert_closed(&mut device);
    assert_closed(&mut other_device);

    // The connection is still in step.
    let (mut device, server) = tcp_pair();
    let meta = meta_for(&device, 2, None);
    send(&agent, server, &meta, b"next").unwrap();
    let (passed, got, already_read) = recv_ok(&handler).await;
    assert_eq!((got.conn_id, already_read.as_slice()), (2, &b"next"[..]));
    assert_passed(&mut device, passed, &meta);
}

#[tokio::test]
async fn too_many_fds_truncate_the_control_data() {
    let (agent, handler) = unix_pair();
    let pairs: Vec<_> = (0..12).map(|_| tcp_pair()).collect();
    let fds: Vec<_> = pairs.iter().map(|(_, server)| server.as_fd()).collect();
    let frame = encode_frame(&meta_for(&pairs[0].0, 1, None), b"").unwrap();
    send_raw(&agent, &frame, &fds);
    drop(fds);
    let err = recv_err(&handler).await;
    assert!(matches!(err, HandoffError::ControlTruncated), "{err}");
    assert!(!err.is_fatal());
    for (mut device, server) in pairs {
        drop(server);
        assert_closed(&mut device);
    }
    let (mut device, server) = tcp_pair();
    let meta = meta_for(&device, 2, None);
    send(&agent, server, &meta, b"").unwrap();
    let (passed, _, _) = recv_ok(&handler).await;
    assert_passed(&mut device, passed, &meta);
}

#[tokio::test]
async fn an_fd_after_the_frame_start_is_rejected() {
    let (agent, handler) = unix_pair();
    let (mut device, server) = tcp_pair();
    let frame = encode_frame(&meta_for(&device, 1, None), b"").unwrap();
    send_raw(&agent, &frame[..4], &[]);
    // Let the receiver take the first part alone.
    handler.readable().await.unwrap();
    let receiving = tokio::spawn(async move {
        let err = recv_err(&handler).await;
        (err, handler)
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    send_raw(&agent, &frame[4..], &[server.as_fd()]);
    drop(server);
    let (err, handler) = receiving.await.unwrap();
    assert!(matches!(err, HandoffError::MisplacedFd), "{err}");
    assert_closed(&mut device);
    drop((agent, handler));
}

#[tokio::test]
async fn a_descriptor_that_is_not_tcp_is_rejected() {
    let (agent, handler) = unix_pair();
    let (not_tcp, _other) = UnixStream::pair().unwrap();
    let (device, _server) = tcp_pair();
    let frame = encode_frame(&meta_for(&device, 1, None), b"").unwrap();
    send_raw(&agent, &frame, &[not_tcp.as_fd()]);
    let err = recv_err(&handler).await;
    assert!(matches!(err, HandoffError::NotTcp), "{err}");
    assert!(!err.is_fatal());
}

#[tokio::test]
async fn garbage_and_truncation_are_fatal() {
    let (mut agent, handler) = unix_pair();
    agent.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let err = recv_err(&handler).await;
    assert!(matches!(err, HandoffError::BadFrame("bad magic")), "{err}");
    assert!(err.is_fatal());

    let (mut agent, handler) = unix_pair();
    let (device, server) = tcp_pair();
    let frame = encode_frame(&meta_for(&device, 1, None), b"abc").unwrap();
    send_raw(&agent, &frame[..frame.len() - 1], &[server.as_fd()]);
    agent.flush().unwrap();
    drop(agent);
    let err = recv_err(&handler).await;
    assert!(matches!(err, HandoffError::Truncated), "{err}");
    assert!(err.is_fatal());
}

#[tokio::test]
async fn end_of_stream_between_frames_is_none() {
    let (agent, handler) = unix_pair();
    drop(agent);
    assert!(recv(&handler).await.unwrap().is_none());
}

#[test]
fn a_failed_send_hands_the_socket_back() {
    let (agent, handler) = UnixStream::pair().unwrap();
    let (mut device, server) = tcp_pair();
    let meta = meta_for(&device, 1, None);

    let err = send(&agent, server, &meta, &vec![0; MAX_ALREADY_READ + 1]).unwrap_err();
    assert!(!err.is_fatal(), "bad input leaves the connection usable");
    let server = err.into_stream().expect("socket handed back");

    let long = HandoffMeta {
        assigned_client_id: Some("x".repeat(70_000)),
        ..meta.clone()
    };
    let server = send(&agent, server, &long, b"")
        .unwrap_err()
        .into_stream()
        .unwrap();

    drop(handler);
    let err = send(&agent, server, &meta, b"").unwrap_err();
    assert!(err.is_fatal(), "a closed peer breaks the connection: {err}");
    let mut server = err.into_stream().expect("socket handed back");
    server.write_all(b"still mine").unwrap();
    let mut buf = [0u8; 10];
    device.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"still mine");
}

#[test]
fn addresses_round_trip_through_meta() {
    let peer: SocketAddr = "[fe80::1%2]:1".parse().unwrap();
    let meta = HandoffMeta {
        conn_id: u64::MAX,
        peer,
        local: "0.0.0.0:0".parse().unwrap(),
        assigned_client_id: Some(String::new()),
    };
    let frame = encode_frame(&meta, b"").unwrap();
    let (decoded, _, _) = crate::decode_frame(&frame).unwrap().unwrap();
    assert_eq!(decoded, meta);
}
