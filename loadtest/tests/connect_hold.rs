//! `throng-load connect` and `hold` end to end: the real binary and its worker
//! processes against a scripted broker in this test (127.0.0.1:0, a thread per
//! connection) that answers CONNECT and PINGREQ and closes some connections
//! with an MQTT 5 DISCONNECT; the JSON report must account for every one.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

use serde_json::Value;

/// The broker's counts.
#[derive(Default)]
struct Seen {
    connects: AtomicU64,
    pings: AtomicU64,
    disconnects: AtomicU64,
}

/// Accepts forever; every `close_every`-th connection (by accept order) is sent
/// DISCONNECT 0x8D after its first PINGREQ.
fn scripted_broker(close_every: u64) -> (SocketAddr, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let counts = seen.clone();
    thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { continue };
            let seen = counts.clone();
            let close = close_every > 0 && (n as u64).is_multiple_of(close_every);
            thread::spawn(move || serve(stream, &seen, close));
        }
    });
    (addr, seen)
}

/// Reads one packet: (first byte, body).
fn read_packet(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut first = [0u8; 1];
    s.read_exact(&mut first).ok()?;
    let (mut len, mut shift) = (0usize, 0);
    loop {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).ok()?;
        len |= usize::from(b[0] & 0x7F) << shift;
        shift += 7;
        if b[0] & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    Some((first[0], body))
}

fn serve(mut s: TcpStream, seen: &Seen, close_after_ping: bool) {
    let Some((0x10, connect)) = read_packet(&mut s) else {
        return;
    };
    seen.connects.fetch_add(1, Ordering::Relaxed);
    // Protocol level is the byte after the "MQTT" name; v5 CONNACKs carry properties.
    let connack: &[u8] = if connect.get(6) == Some(&5) {
        &[0x20, 3, 0, 0, 0]
    } else {
        &[0x20, 2, 0, 0]
    };
    if s.write_all(connack).is_err() {
        return;
    }
    while let Some((first, _)) = read_packet(&mut s) {
        match first {
            0xC0 => {
                seen.pings.fetch_add(1, Ordering::Relaxed);
                if close_after_ping {
                    let _ = s.write_all(&[0xE0, 1, 0x8D]);
                    return;
                }
                if s.write_all(&[0xD0, 0]).is_err() {
                    return;
                }
            }
            0xE0 => {
                seen.disconnects.fetch_add(1, Ordering::Relaxed);
                return;
            }
            _ => return,
        }
    }
}

fn run_load(args: &[&str], json: &PathBuf) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_throng-load"))
        .args(args)
        .args(["--source-ips", "none", "--quiet", "--json"])
        .arg(json)
        .output()
        .expect("running throng-load");
    assert!(
        out.status.success(),
        "throng-load failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("CONNACK latency"), "no table: {table}");
    let report = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    let _ = std::fs::remove_file(json);
    report
}

fn json_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("throng-load-{name}-{}.json", std::process::id()))
}

fn sum(v: &Value) -> u64 {
    v.as_object()
        .map_or(0, |m| m.values().filter_map(Value::as_u64).sum())
}

#[test]
fn hold_pings_and_sorts_broker_closes() {
    let (addr, seen) = scripted_broker(10);
    let target = addr.to_string();
    let r = run_load(
        &[
            "hold",
            "--target",
            &target,
            "-n",
            "50",
            "--workers",
            "2",
            "--protocol",
            "5",
            "--keepalive",
            "2",
            "--ping-interval",
            "0.5",
            "--duration",
            "2.5",
        ],
        &json_path("hold"),
    );
    assert_eq!(r["scenario"], "hold");
    assert_eq!(
        (r["ok"].as_u64(), r["failed"].as_u64()),
        (Some(50), Some(0))
    );
    assert_eq!(
        r["timeline_per_s"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_u64)
            .sum::<u64>(),
        50
    );
    let hold = &r["hold"];
    // Every 10th connection was closed with DISCONNECT 0x8D after its first ping,
    // whichever phase the tool noticed it in.
    assert_eq!(hold["alive"].as_u64(), Some(45));
    let closed = sum(&hold["closed"]) + sum(&r["closed_while_connecting"]);
    assert_eq!(closed, 5, "{hold}");
    for by_cause in [&hold["closed"], &r["closed_while_connecting"]] {
        for key in by_cause.as_object().unwrap().keys() {
            assert_eq!(key, "disconnect_0x8d");
        }
    }
    // 45 connections pinged every 0.5 s for at least 2.5 s; each ping answered.
    let sent = hold["pings_sent"].as_u64().unwrap();
    assert!(sent >= 45 * 4, "{hold}");
    assert_eq!(hold["pings_answered"].as_u64(), Some(sent - 5), "{hold}");
    assert!(hold["max_ping_gap_ms"].as_u64().unwrap() >= 400);
    assert_eq!(seen.connects.load(Ordering::Relaxed), 50);
    assert_eq!(seen.pings.load(Ordering::Relaxed), sent);
    assert_eq!(r["load_tool"]["workers"], 2);
    assert!(r["load_tool"]["rss_held_bytes"].as_u64().unwrap() > 0);
}

#[test]
fn connect_reports_every_connection_and_disconnects() {
    let (addr, seen) = scripted_broker(0);
    let r = run_load(
        &[
            "connect",
            "--target",
            &addr.to_string(),
            "-n",
            "30",
            "--in-flight",
            "8",
            "--clean",
        ],
        &json_path("connect"),
    );
    assert_eq!(r["scenario"], "connect");
    assert_eq!(r["ok"].as_u64(), Some(30));
    assert_eq!(r["in_flight"].as_u64(), Some(8));
    assert!(r["hold"].is_null());
    assert_eq!(r["connack_latency_us"]["count"].as_u64(), Some(30));
    // The workers said DISCONNECT on every connection before exiting.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while seen.disconnects.load(Ordering::Relaxed) < 30 && std::time::Instant::now() < deadline {
        thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(seen.disconnects.load(Ordering::Relaxed), 30);
}

#[test]
fn refused_connections_are_failures_by_cause() {
    // A port nothing listens on: every handshake is refused.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let r = run_load(
        &[
            "connect",
            "--target",
            &format!("127.0.0.1:{port}"),
            "-n",
            "5",
        ],
        &json_path("refused"),
    );
    assert_eq!((r["ok"].as_u64(), r["failed"].as_u64()), (Some(0), Some(5)));
    assert_eq!(r["failures"]["refused"].as_u64(), Some(5));
    assert_eq!(
        r["failures_per_s"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_u64)
            .sum::<u64>(),
        5
    );
}
