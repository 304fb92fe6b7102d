//! A small benchmark: device sockets relayed to an echo "handler".
//!
//! `cargo run --release -p throng-relay --example relay_echo -- [pairs] [mib_per_pair] [threads]`
//!
//! Streams `mib_per_pair` MiB through each of `pairs` pairs at once (echoed
//! back, so each byte crosses the relay twice) and reports throughput, then
//! measures 64-byte round trips over one pair and reports p50/p99 latency.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use throng_relay::{Relay, RelayConfig};

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let pairs = args.next().transpose().map_err(invalid)?.unwrap_or(16);
    let mib = args.next().transpose().map_err(invalid)?.unwrap_or(64);
    let threads = args.next().transpose().map_err(invalid)?.unwrap_or(2);

    let relay = Relay::start(threads, RelayConfig::default())?;
    let agent = TcpListener::bind("127.0.0.1:0")?;
    let handler = TcpListener::bind("127.0.0.1:0")?;
    let handler_addr = handler.local_addr()?;
    thread::spawn(move || echo_server(handler));

    let mut devices = Vec::with_capacity(pairs);
    for _ in 0..pairs {
        let device = TcpStream::connect(agent.local_addr()?)?;
        let (agent_side, _) = agent.accept()?;
        let upstream = TcpStream::connect(handler_addr)?;
        relay
            .add(agent_side, upstream, Vec::new())
            .map_err(io::Error::other)?;
        devices.push(device);
    }

    let bytes = mib * 1024 * 1024;
    let started = Instant::now();
    let streams: Vec<_> = devices
        .iter()
        .map(|device| {
            let writer = device.try_clone()?;
            let reader = device.try_clone()?;
            Ok(thread::spawn(move || stream_through(writer, reader, bytes)))
        })
        .collect::<io::Result<_>>()?;
    for stream in streams {
        stream.join().expect("stream thread")?;
    }
    let elapsed = started.elapsed();
    let total = (pairs * bytes * 2) as f64;
    println!(
        "{pairs} pairs x {mib} MiB echoed in {:.2?}: {:.0} MiB/s through the relay ({threads} threads)",
        elapsed,
        total / elapsed.as_secs_f64() / (1024.0 * 1024.0)
    );

    let mut latencies = round_trips(&devices[0], 10_000)?;
    latencies.sort_unstable();
    let pct = |p: usize| latencies[(latencies.len() * p / 100).min(latencies.len() - 1)];
    println!(
        "64-byte round trip over one pair: p50 {:?}, p99 {:?}",
        pct(50),
        pct(99)
    );

    let closed = relay.close_all();
    relay.shutdown();
    println!("closed {closed} pairs; {:?}", relay.stats());
    Ok(())
}

fn invalid(e: std::num::ParseIntError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e)
}

fn echo_server(listener: TcpListener) {
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        thread::spawn(move || {
            let mut reader = conn.try_clone()?;
            io::copy(&mut reader, &mut conn)?;
            conn.shutdown(Shutdown::Write)
        });
    }
}

/// Writes `bytes` on one thread while reading the echo on this one.
fn stream_through(mut writer: TcpStream, mut reader: TcpStream, bytes: usize) -> io::Result<()> {
    let sender = thread::spawn(move || -> io::Result<()> {
        let chunk = vec![0x5a; 64 * 1024];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len());
            writer.write_all(&chunk[..n])?;
            left -= n;
        }
        Ok(())
    });
    let mut buf = vec![0; 64 * 1024];
    let mut left = bytes;
    while left > 0 {
        let n = reader.read(&mut buf[..left.min(64 * 1024)])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        left -= n;
    }
    sender.join().expect("sender thread")
}

fn round_trips(device: &TcpStream, count: usize) -> io::Result<Vec<Duration>> {
    let mut device = device.try_clone()?;
    let message = [0xa5; 64];
    let mut echo = [0; 64];
    (0..count)
        .map(|_| {
            let sent = Instant::now();
            device.write_all(&message)?;
            device.read_exact(&mut echo)?;
            Ok(sent.elapsed())
        })
        .collect()
}
