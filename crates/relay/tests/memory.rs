//! Resident memory per idle relayed pair, measured from this process's VmRSS.
//! Alone in its own test binary so no other test allocates meanwhile.

mod common;

use std::net::TcpStream;

use common::{Harness, wait_for, with_timeout};
use throng_relay::RelayConfig;

const PAIRS: usize = 2_000;

fn vm_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .expect("VmRSS line");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("VmRSS value");
    kib * 1024
}

#[test]
fn idle_pairs_cost_little_resident_memory() {
    let h = Harness::new(2, RelayConfig::default());
    // Warm up: both threads touch their scratch and the test's helpers run once.
    for _ in 0..4 {
        let mut ends = h.pair(Vec::new());
        with_timeout(&ends.device);
        with_timeout(&ends.handler);
        std::io::Write::write_all(&mut ends.device, &[7; 100_000]).unwrap();
        let mut sink = vec![0; 100_000];
        std::io::Read::read_exact(&mut ends.handler, &mut sink).unwrap();
    }
    h.relay.close_all();

    // The test's own side: one Vec slot per socket, reserved up front.
    let mut held: Vec<(TcpStream, TcpStream)> = Vec::with_capacity(PAIRS);
    let before = vm_rss_bytes();
    for _ in 0..PAIRS {
        let ends = h.pair(Vec::new());
        held.push((ends.device, ends.handler));
    }
    wait_for("pairs registered", || {
        (h.relay.stats().added == (PAIRS + 4) as u64).then_some(())
    });
    let after = vm_rss_bytes();
    let per_pair = after.saturating_sub(before) as f64 / PAIRS as f64;
    println!(
        "VmRSS {before} -> {after} bytes for {PAIRS} idle pairs: {per_pair:.0} bytes per pair"
    );
    assert_eq!(h.relay.len(), PAIRS);
    assert_eq!(h.relay.stats().buffered_bytes, 0);
    assert!(per_pair < 1024.0, "{per_pair:.0} bytes per idle pair");
    assert_eq!(h.relay.close_all(), PAIRS);
}
