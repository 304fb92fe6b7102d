//! Relay behaviour over real sockets on 127.0.0.1: integrity, ordering,
//! half-close, resets, backpressure, close_all, shutdown and concurrency.

mod common;

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    Harness, WAIT, checksum, random_bytes, read_to_end, send_then_shutdown, wait_for, with_timeout,
};
use rand::Rng;
use throng_relay::{CloseReason, Relay, RelayConfig, RelayError};

/// Sends `up` from the device and `down` from the handler at the same time
/// and checks both arrive intact and the pair completes.
fn exchange(h: &Harness, up: &[u8], down: &[u8]) {
    let ends = h.pair(Vec::new());
    with_timeout(&ends.device);
    with_timeout(&ends.handler);
    let up_writer = send_then_shutdown(&ends.device, up.to_vec());
    let down_writer = send_then_shutdown(&ends.handler, down.to_vec());
    let got_up = read_to_end(&ends.handler).unwrap();
    let got_down = read_to_end(&ends.device).unwrap();
    up_writer.join().unwrap();
    down_writer.join().unwrap();
    assert_eq!((got_up.len(), checksum(&got_up)), (up.len(), checksum(up)));
    assert_eq!(
        (got_down.len(), checksum(&got_down)),
        (down.len(), checksum(down))
    );
    assert_eq!(h.wait_closed(ends.id), CloseReason::Completed);
}

#[test]
fn bytes_flow_both_ways_intact() {
    let h = Harness::new(2, RelayConfig::default());
    let mut rng = rand::rng();
    let sizes = [
        0,
        1,
        65_535,
        65_536,
        65_537,
        rng.random_range(1..6_000_000),
        rng.random_range(1..6_000_000),
    ];
    let (mut up_total, mut down_total) = (0, 0);
    for (i, &up_len) in sizes.iter().enumerate() {
        let down_len = sizes[sizes.len() - 1 - i];
        exchange(&h, &random_bytes(up_len), &random_bytes(down_len));
        up_total += up_len as u64;
        down_total += down_len as u64;
    }
    let stats = h.relay.stats();
    assert_eq!(stats.bytes_up, up_total);
    assert_eq!(stats.bytes_down, down_total);
    assert_eq!(stats.closed.completed, sizes.len() as u64);
    assert_eq!(stats.closed.total(), sizes.len() as u64);
    assert_eq!((stats.pairs, stats.buffered_bytes), (0, 0));
    assert!(h.relay.is_empty());
}

#[test]
fn tiny_buffers_and_budget_keep_bytes_intact() {
    // A 7-byte scratch and a 13-byte read budget force partial writes,
    // pending remainders and budget re-queues on nearly every read.
    let config = RelayConfig {
        scratch_size: 7,
        read_budget: 13,
        ..RelayConfig::default()
    };
    let h = Harness::new(1, config);
    exchange(&h, &random_bytes(300_000), &random_bytes(200_000));
    assert!(h.relay.stats().peak_pair_buffered <= 2 * 7);
}

#[test]
fn pending_to_upstream_is_delivered_first() {
    let h = Harness::new(1, RelayConfig::default());
    for pending_len in [5, 3_000_000] {
        let (mut device, agent_side, handler, upstream) = h.sockets();
        with_timeout(&handler);
        // The device's bytes are already waiting when the pair is added.
        device.write_all(b"after").unwrap();
        let pending = random_bytes(pending_len);
        let id = h.relay.add(agent_side, upstream, pending.clone()).unwrap();
        device.shutdown(Shutdown::Write).unwrap();
        let got = read_to_end(&handler).unwrap();
        assert_eq!(got.len(), pending_len + 5);
        assert_eq!(checksum(&got[..pending_len]), checksum(&pending));
        assert_eq!(&got[pending_len..], b"after");
        drop(handler);
        assert_eq!(h.wait_closed(id), CloseReason::Completed);
    }
    assert_eq!(h.relay.stats().bytes_up, 3_000_005 + 10);
}

#[test]
fn half_close_from_the_device_propagates() {
    let h = Harness::new(1, RelayConfig::default());
    let mut ends = h.pair(Vec::new());
    with_timeout(&ends.device);
    with_timeout(&ends.handler);
    ends.device.write_all(b"request").unwrap();
    ends.device.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&ends.handler).unwrap(), b"request");
    assert_eq!(h.close_reason(ends.id), None, "half-closed pair stays open");
    assert_eq!(h.relay.len(), 1);

    ends.handler.write_all(b"answer").unwrap();
    let mut answer = [0; 6];
    ends.device.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"answer");
    ends.handler.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&ends.device).unwrap(), b"");
    assert_eq!(h.wait_closed(ends.id), CloseReason::Completed);
    assert_eq!(h.relay.len(), 0);
}

#[test]
fn half_close_from_the_handler_propagates() {
    let h = Harness::new(1, RelayConfig::default());
    let mut ends = h.pair(Vec::new());
    with_timeout(&ends.device);
    with_timeout(&ends.handler);
    ends.handler.write_all(b"bye").unwrap();
    ends.handler.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&ends.device).unwrap(), b"bye");
    ends.device.write_all(b"late words").unwrap();
    let mut late = [0; 10];
    ends.handler.read_exact(&mut late).unwrap();
    assert_eq!(&late, b"late words");
    drop(ends.device);
    assert_eq!(read_to_end(&ends.handler).unwrap(), b"");
    assert_eq!(h.wait_closed(ends.id), CloseReason::Completed);
}

/// Makes `close` send a reset instead of a FIN.
fn reset(stream: std::net::TcpStream) {
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(stream);
}

/// Round-trips a byte so the pair is surely registered and relaying.
fn ping(ends: &mut common::Ends) {
    ends.device.write_all(b"p").unwrap();
    let mut byte = [0];
    ends.handler.read_exact(&mut byte).unwrap();
    ends.handler.write_all(b"q").unwrap();
    ends.device.read_exact(&mut byte).unwrap();
}

/// The far end of a closed pair reads EOF or a reset, not a hang.
fn assert_closed(stream: &std::net::TcpStream) {
    match read_to_end(stream) {
        Ok(rest) => assert_eq!(rest, b""),
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset),
    }
}

#[test]
fn reset_of_the_handler_closes_the_device() {
    let h = Harness::new(1, RelayConfig::default());
    let mut ends = h.pair(Vec::new());
    with_timeout(&ends.device);
    with_timeout(&ends.handler);
    ping(&mut ends);
    reset(ends.handler);
    assert_closed(&ends.device);
    assert_eq!(
        h.wait_closed(ends.id),
        CloseReason::UpstreamError(io::ErrorKind::ConnectionReset)
    );
    assert_eq!(h.relay.stats().closed.upstream_error, 1);
}

#[test]
fn reset_of_the_device_closes_the_handler() {
    let h = Harness::new(1, RelayConfig::default());
    let mut ends = h.pair(Vec::new());
    with_timeout(&ends.device);
    with_timeout(&ends.handler);
    ping(&mut ends);
    reset(ends.device);
    assert_closed(&ends.handler);
    assert_eq!(
        h.wait_closed(ends.id),
        CloseReason::ClientError(io::ErrorKind::ConnectionReset)
    );
    assert_eq!(h.relay.stats().closed.client_error, 1);
}

#[test]
fn a_handler_that_does_not_read_bounds_relay_memory() {
    let scratch = 64 * 1024;
    let config = RelayConfig {
        scratch_size: scratch,
        ..RelayConfig::default()
    };
    let h = Harness::new(1, config);
    let mut ends = h.pair(Vec::new());
    ends.device.set_nonblocking(true).unwrap();
    let block = random_bytes(256 * 1024);
    let mut sent: Vec<u8> = Vec::new();
    let deadline = Instant::now() + WAIT;
    let mut stalled_since: Option<Instant> = None;
    // Write until the device's writes have blocked for a while: the relay
    // has stopped reading because the handler side is full.
    loop {
        assert!(Instant::now() < deadline, "device writes never blocked");
        let offset = sent.len() % block.len();
        match ends.device.write(&block[offset..]) {
            Ok(n) => {
                sent.extend_from_slice(&block[offset..offset + n]);
                stalled_since = None;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let since = *stalled_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_millis(300) {
                    break;
                }
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("device write failed: {e}"),
        }
        let stats = h.relay.stats();
        assert!(stats.buffered_bytes <= scratch as u64, "{stats:?}");
        assert!(stats.peak_pair_buffered <= scratch as u64, "{stats:?}");
    }
    let stats = h.relay.stats();
    println!(
        "device blocked after {} bytes; relay holds {} buffered, peak {}",
        sent.len(),
        stats.buffered_bytes,
        stats.peak_pair_buffered
    );
    assert!(stats.peak_pair_buffered <= scratch as u64, "{stats:?}");

    // Once the handler reads, everything arrives in order and the buffer goes.
    ends.device.set_nonblocking(false).unwrap();
    ends.device.shutdown(Shutdown::Write).unwrap();
    with_timeout(&ends.handler);
    let got = read_to_end(&ends.handler).unwrap();
    assert_eq!((got.len(), checksum(&got)), (sent.len(), checksum(&sent)));
    drop(ends.handler);
    assert_eq!(h.wait_closed(ends.id), CloseReason::Completed);
    assert_eq!(h.relay.stats().buffered_bytes, 0);
}

#[test]
fn close_all_closes_every_pair_and_the_relay_keeps_working() {
    let h = Harness::new(2, RelayConfig::default());
    let mut pairs: Vec<_> = (0..40).map(|_| h.pair(Vec::new())).collect();
    for ends in &mut pairs {
        with_timeout(&ends.device);
        with_timeout(&ends.handler);
        ping(ends);
    }
    assert_eq!(h.relay.len(), 40);
    assert_eq!(h.relay.close_all(), 40);
    assert_eq!(h.relay.len(), 0);
    for ends in &pairs {
        assert_closed(&ends.device);
        assert_closed(&ends.handler);
        assert_eq!(h.close_reason(ends.id), Some(CloseReason::Aborted));
    }
    assert_eq!(h.relay.stats().closed.aborted, 40);
    exchange(&h, b"still", b"working");
}

#[test]
fn shutdown_closes_pairs_and_refuses_new_ones() {
    let h = Harness::new(2, RelayConfig::default());
    let mut ends = h.pair(Vec::new());
    with_timeout(&ends.device);
    with_timeout(&ends.handler);
    ping(&mut ends);
    let handle = h.relay.clone();
    handle.shutdown();
    assert_closed(&ends.device);
    assert_eq!(h.close_reason(ends.id), Some(CloseReason::Aborted));
    let (_device, agent_side, _handler, upstream) = h.sockets();
    assert!(matches!(
        h.relay.add(agent_side, upstream, Vec::new()),
        Err(RelayError::Shutdown)
    ));
    h.relay.shutdown();
}

#[test]
fn many_concurrent_pairs_across_threads() {
    let h = Harness::new(4, RelayConfig::default());
    let mut workers = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..32 {
        let ends = h.pair(Vec::new());
        with_timeout(&ends.device);
        with_timeout(&ends.handler);
        ids.push(ends.id);
        // The handler echoes until EOF, then half-closes.
        let mut handler = ends.handler;
        let echo = thread::spawn(move || {
            let mut reader = handler.try_clone().unwrap();
            io::copy(&mut reader, &mut handler).unwrap();
            handler.shutdown(Shutdown::Write).unwrap();
        });
        let data = random_bytes(rand::rng().random_range(1..1_000_000));
        let writer = send_then_shutdown(&ends.device, data.clone());
        let device = ends.device;
        workers.push(thread::spawn(move || {
            let echoed = read_to_end(&device).unwrap();
            writer.join().unwrap();
            echo.join().unwrap();
            assert_eq!(
                (echoed.len(), checksum(&echoed)),
                (data.len(), checksum(&data))
            );
        }));
    }
    for worker in workers {
        worker.join().unwrap();
    }
    for id in ids {
        assert_eq!(h.wait_closed(id), CloseReason::Completed);
    }
    let stats = h.relay.stats();
    assert_eq!((stats.added, stats.closed.completed), (32, 32));
    assert_eq!(stats.bytes_up, stats.bytes_down);
}

#[test]
fn invalid_config_is_refused() {
    let err = Relay::start(0, RelayConfig::default()).err().unwrap();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    let config = RelayConfig {
        scratch_size: 0,
        ..RelayConfig::default()
    };
    let err = Relay::start(1, config).err().unwrap();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn the_handle_is_a_cheap_shared_value() {
    fn assert_traits<T: Clone + Send + Sync + 'static>() {}
    assert_traits::<Relay>();
    let relay = Relay::start(1, RelayConfig::default()).unwrap();
    let clone = relay.clone();
    wait_for("empty relay", || clone.is_empty().then_some(()));
    drop(relay);
    assert!(clone.is_empty());
}

#[test]
fn dropping_the_last_handle_stops_the_relay() {
    let h = Harness::new(1, RelayConfig::default());
    let mut ends = h.pair(Vec::new());
    with_timeout(&ends.device);
    with_timeout(&ends.handler);
    ping(&mut ends);
    let Harness { relay, closed, .. } = h;
    drop(relay);
    assert_closed(&ends.device);
    assert_closed(&ends.handler);
    assert_eq!(
        *closed.lock().unwrap(),
        vec![(ends.id, CloseReason::Aborted)]
    );
}

#[test]
fn shutdown_from_the_close_callback_does_not_deadlock() {
    let relay_cell: Arc<OnceLock<Relay>> = Arc::new(OnceLock::new());
    let cell = Arc::clone(&relay_cell);
    let config = RelayConfig {
        on_close: Some(Arc::new(move |_, _| {
            if let Some(relay) = cell.get() {
                relay.shutdown();
            }
        })),
        ..RelayConfig::default()
    };
    let relay = Relay::start(1, config).unwrap();
    relay_cell.set(relay.clone()).ok().unwrap();
    let agent = TcpListener::bind("127.0.0.1:0").unwrap();
    let handler = TcpListener::bind("127.0.0.1:0").unwrap();
    let device = TcpStream::connect(agent.local_addr().unwrap()).unwrap();
    let upstream = TcpStream::connect(handler.local_addr().unwrap()).unwrap();
    let (agent_side, _) = agent.accept().unwrap();
    let (handler_side, _) = handler.accept().unwrap();
    relay.add(agent_side, upstream, Vec::new()).unwrap();
    drop(device);
    drop(handler_side);
    wait_for("relay stopped by its callback", || {
        matches!(
            relay.add(
                TcpStream::connect(agent.local_addr().unwrap()).unwrap(),
                TcpStream::connect(handler.local_addr().unwrap()).unwrap(),
                Vec::new()
            ),
            Err(RelayError::Shutdown)
        )
        .then_some(())
    });
    relay.shutdown();
}
