//! Admission: caps, guard release, token buckets, per-/64 grouping, cleanup and
//! exact counts under concurrency. Times are explicit `Instant`s, never sleeps;
//! they start an hour ahead so that a guard's drop (which reads the real clock)
//! always sees per-IP buckets as not yet refilled.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use throng_agent::admission::{Admission, AdmissionConfig, AdmissionConfigError, Refusal};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn v4(n: u32) -> IpAddr {
    IpAddr::V4(n.into())
}

fn config(max: usize, per_ip: usize) -> AdmissionConfig {
    AdmissionConfig {
        max_connections: max,
        max_connections_per_ip: per_ip,
        per_ip_rate: None,
        global_rate: None,
    }
}

fn start() -> Instant {
    Instant::now() + Duration::from_secs(3600)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn global_cap_refuses_over_capacity_and_guard_drop_frees_a_slot() {
    let adm = Admission::new(config(3, 10));
    let t = start();
    let guards: Vec<_> = (1..=3).map(|n| adm.try_admit(v4(n), t).unwrap()).collect();
    assert_eq!(adm.active(), 3);
    assert_eq!(adm.try_admit(v4(4), t).unwrap_err(), Refusal::OverCapacity);
    assert_eq!(adm.try_admit(v4(1), t).unwrap_err(), Refusal::OverCapacity);
    drop(guards);
    assert_eq!(adm.active(), 0);
    let _g = adm.try_admit(v4(4), t).unwrap();
    assert_eq!(adm.active(), 1);
}

#[test]
fn per_ip_cap_refuses_quota_exceeded_for_that_ip_only() {
    let adm = Admission::new(config(100, 2));
    let t = start();
    let a = ip("192.0.2.1");
    let g1 = adm.try_admit(a, t).unwrap();
    let _g2 = adm.try_admit(a, t).unwrap();
    assert_eq!(adm.try_admit(a, t).unwrap_err(), Refusal::QuotaExceeded);
    assert_eq!(adm.connections_from(a), 2);
    let _other = adm.try_admit(ip("192.0.2.2"), t).unwrap();
    drop(g1);
    assert_eq!(adm.connections_from(a), 1);
    let _g3 = adm.try_admit(a, t).unwrap();
    assert_eq!(adm.connections_from(a), 2);
    assert_eq!(adm.active(), 3);
}

#[test]
fn per_ip_bucket_allows_burst_then_refills_at_rate() {
    let adm = Admission::new(AdmissionConfig {
        per_ip_rate: Some((10.0, 3)),
        ..config(100, 100)
    });
    let t = start();
    let a = ip("198.51.100.9");
    for _ in 0..3 {
        drop(adm.try_admit(a, t).unwrap());
    }
    assert_eq!(adm.try_admit(a, t).unwrap_err(), Refusal::RateLimited);
    assert_eq!(
        adm.try_admit(a, t + ms(99)).unwrap_err(),
        Refusal::RateLimited
    );
    drop(adm.try_admit(a, t + ms(100)).unwrap());
    assert_eq!(
        adm.try_admit(a, t + ms(100)).unwrap_err(),
        Refusal::RateLimited
    );
    // Another address has its own bucket.
    drop(adm.try_admit(ip("198.51.100.10"), t).unwrap());
    // Long after, the bucket is full again: exactly `burst` more.
    let later = t + Duration::from_secs(10);
    for _ in 0..3 {
        drop(adm.try_admit(a, later).unwrap());
    }
    assert_eq!(adm.try_admit(a, later).unwrap_err(), Refusal::RateLimited);
}

#[test]
fn global_bucket_limits_all_addresses_together() {
    let adm = Admission::new(AdmissionConfig {
        global_rate: Some((2.0, 2)),
        ..config(100, 100)
    });
    let t = start();
    drop(adm.try_admit(v4(1), t).unwrap());
    drop(adm.try_admit(v4(2), t).unwrap());
    assert_eq!(adm.try_admit(v4(3), t).unwrap_err(), Refusal::RateLimited);
    assert_eq!(
        adm.try_admit(v4(3), t + ms(499)).unwrap_err(),
        Refusal::RateLimited
    );
    drop(adm.try_admit(v4(3), t + ms(500)).unwrap());
    assert_eq!(
        adm.try_admit(v4(4), t + ms(500)).unwrap_err(),
        Refusal::RateLimited
    );
    assert_eq!(adm.tracked_ips(), 0, "refusals leave no entries");
}

#[test]
fn refused_attempts_consume_no_tokens() {
    let adm = Admission::new(AdmissionConfig {
        per_ip_rate: Some((1.0, 1)),
        global_rate: Some((1.0, 1)),
        ..config(100, 1)
    });
    let t = start();
    let a = v4(1);
    let _held = adm.try_admit(a, t).unwrap();
    // A is at its cap and its bucket is empty; B finds the global bucket empty.
    assert_eq!(
        adm.try_admit(a, t + ms(1000)).unwrap_err(),
        Refusal::QuotaExceeded
    );
    assert_eq!(
        adm.try_admit(v4(2), t + ms(500)).unwrap_err(),
        Refusal::RateLimited
    );
    // Neither refusal took the token that refilled at t + 1 s.
    let _b = adm.try_admit(v4(2), t + ms(1000)).unwrap();
    // B's per-IP refusal below does not take a global token either.
    assert_eq!(
        adm.try_admit(v4(2), t + ms(1500)).unwrap_err(),
        Refusal::QuotaExceeded
    );
    let _c = adm.try_admit(v4(3), t + ms(2000)).unwrap();
}

#[test]
fn ipv6_clients_are_grouped_by_64_and_mapped_ipv4_by_address() {
    let adm = Admission::new(config(100, 2));
    let t = start();
    let _a = adm.try_admit(ip("2001:db8:aa:1::1"), t).unwrap();
    let _b = adm
        .try_admit(ip("2001:db8:aa:1:ffff:ffff:ffff:ffff"), t)
        .unwrap();
    assert_eq!(
        adm.try_admit(ip("2001:db8:aa:1::99"), t).unwrap_err(),
        Refusal::QuotaExceeded
    );
    assert_eq!(adm.connections_from(ip("2001:db8:aa:1::1234")), 2);
    let _other_64 = adm.try_admit(ip("2001:db8:aa:2::1"), t).unwrap();
    assert_eq!(adm.tracked_ips(), 2);

    let _v4 = adm.try_admit(ip("203.0.113.5"), t).unwrap();
    let _mapped = adm.try_admit(ip("::ffff:203.0.113.5"), t).unwrap();
    assert_eq!(
        adm.try_admit(ip("203.0.113.5"), t).unwrap_err(),
        Refusal::QuotaExceeded
    );
    let _neighbour = adm.try_admit(ip("203.0.113.6"), t).unwrap();
}

#[test]
fn entries_go_when_idle_and_bucket_full() {
    let plain = Admission::new(config(100, 10));
    let t = start();
    let g = plain.try_admit(v4(1), t).unwrap();
    assert_eq!(plain.tracked_ips(), 1);
    drop(g);
    assert_eq!(plain.tracked_ips(), 0, "no bucket: removed on last drop");

    let limited = Admission::new(AdmissionConfig {
        per_ip_rate: Some((1.0, 5)),
        ..config(100, 10)
    });
    let g1 = limited.try_admit(v4(1), t).unwrap();
    let g2 = limited.try_admit(v4(1), t).unwrap();
    drop(g1);
    drop(g2);
    assert_eq!(limited.tracked_ips(), 1, "bucket not yet full: kept");
    assert_eq!(limited.sweep(t + ms(1999)), 0);
    assert_eq!(limited.sweep(t + ms(2000)), 1);
    assert_eq!(limited.tracked_ips(), 0);

    let held = limited.try_admit(v4(2), t).unwrap();
    assert_eq!(
        limited.sweep(t + Duration::from_secs(60)),
        0,
        "live entry kept"
    );
    assert_eq!(limited.connections_from(v4(2)), 1);
    drop(held);
}

#[test]
fn a_scan_from_many_addresses_stays_bounded_without_explicit_sweeps() {
    let adm = Admission::new(AdmissionConfig {
        per_ip_rate: Some((1.0, 1)),
        ..config(100, 10)
    });
    let t = start();
    for n in 0..20_000u32 {
        let now = t + Duration::from_secs(2 * u64::from(n));
        drop(adm.try_admit(v4(n), now).unwrap());
        assert!(
            adm.tracked_ips() <= 64 * 64,
            "{} tracked",
            adm.tracked_ips()
        );
    }
    adm.sweep(t + Duration::from_secs(100_000));
    assert_eq!(adm.tracked_ips(), 0);
}

#[test]
fn a_full_client_table_refuses_new_addresses_only() {
    let adm = Admission::with_max_tracked_ips(
        AdmissionConfig {
            per_ip_rate: Some((1.0, 2)),
            ..config(100, 10)
        },
        4,
    );
    let t = start();
    for n in 1..=4 {
        drop(adm.try_admit(v4(n), t).unwrap());
    }
    assert_eq!(adm.tracked_ips(), 4);
    assert_eq!(adm.try_admit(v4(5), t).unwrap_err(), Refusal::OverCapacity);
    // Known addresses are still served.
    drop(adm.try_admit(v4(1), t).unwrap());
    assert_eq!(
        adm.try_admit(v4(5), t + ms(500)).unwrap_err(),
        Refusal::OverCapacity
    );
    // Once buckets of 2..=4 are full again (t + 1 s), a sweep makes room.
    let _g = adm.try_admit(v4(5), t + ms(1500)).unwrap();
    assert!(adm.tracked_ips() <= 4);
    assert_eq!(adm.connections_from(v4(5)), 1);
}

#[test]
fn refusal_codes_and_labels() {
    use Refusal::*;
    for r in [OverCapacity, QuotaExceeded, RateLimited] {
        assert_eq!(r.connack_code(false), 0x03);
    }
    assert_eq!(OverCapacity.connack_code(true), 0x89);
    assert_eq!(QuotaExceeded.connack_code(true), 0x97);
    assert_eq!(RateLimited.connack_code(true), 0x9F);
    assert_eq!(OverCapacity.metric_label(), "over_capacity");
    assert_eq!(QuotaExceeded.metric_label(), "quota_exceeded");
    assert_eq!(RateLimited.metric_label(), "rate_limited");
}

#[test]
fn config_validation() {
    assert_eq!(config(1, 1).validate(), Ok(()));
    assert_eq!(
        config(0, 1).validate(),
        Err(AdmissionConfigError::ZeroMaxConnections)
    );
    assert_eq!(
        config(1, 0).validate(),
        Err(AdmissionConfigError::ZeroMaxConnectionsPerIp)
    );
    for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let c = AdmissionConfig {
            global_rate: Some((rate, 1)),
            ..config(1, 1)
        };
        assert!(matches!(
            c.validate(),
            Err(AdmissionConfigError::BadRate { .. })
        ));
    }
    let c = AdmissionConfig {
        per_ip_rate: Some((1.0, 0)),
        ..config(1, 1)
    };
    assert_eq!(
        c.validate(),
        Err(AdmissionConfigError::ZeroBurst { which: "per-IP" })
    );
}

#[test]
#[should_panic(expected = "invalid admission config")]
fn new_panics_on_invalid_config() {
    let _ = Admission::new(config(0, 1));
}

/// Runs `f(thread index)` on `threads` threads and sums what they return.
fn on_threads(threads: usize, f: impl Fn(usize) -> usize + Sync) -> usize {
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = (0..threads).map(|i| s.spawn(move || f(i))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    })
}

#[test]
fn concurrent_admits_never_exceed_caps_and_counts_return_to_zero() {
    let adm = Admission::new(config(20, 3));
    let t = start();
    let admitted = on_threads(4, |thread| {
        let mut held = VecDeque::new();
        let mut admitted = 0;
        for i in 0..20_000usize {
            let addr = v4(((i * 7 + thread) % 16) as u32);
            if let Ok(guard) = adm.try_admit(addr, t) {
                admitted += 1;
                assert!(adm.active() <= 20);
                assert!(adm.connections_from(addr) <= 3);
                held.push_back(guard);
            }
            if held.len() > 4 || i % 3 == 0 {
                held.pop_front();
            }
        }
        admitted
    });
    assert!(admitted > 1000, "only {admitted} admitted");
    assert_eq!(adm.active(), 0);
    assert_eq!(adm.tracked_ips(), 0);
}

#[test]
fn concurrent_admits_fill_caps_and_buckets_exactly() {
    let t = start();
    let global = Admission::new(config(100, 1000));
    let all_tried = Barrier::new(8);
    let won = on_threads(8, |thread| {
        let held: Vec<_> = (0..50)
            .filter_map(|n| global.try_admit(v4((thread * 1000 + n) as u32), t).ok())
            .collect();
        // Hold the guards until every thread has tried.
        all_tried.wait();
        held.len()
    });
    assert_eq!(won, 100);
    assert_eq!(global.active(), 0);

    let per_ip = Admission::new(config(1000, 7));
    let shared = ip("2001:db8::1");
    let won = on_threads(8, |_| {
        let held: Vec<_> = (0..20)
            .filter_map(|_| per_ip.try_admit(shared, t).ok())
            .collect();
        let count = held.len();
        std::mem::forget(held);
        count
    });
    assert_eq!(won, 7);
    assert_eq!(per_ip.active(), 7, "forgotten guards keep their slots");

    let bucket = Admission::new(AdmissionConfig {
        global_rate: Some((1.0, 33)),
        ..config(1000, 1000)
    });
    let won = on_threads(8, |thread| {
        (0..20)
            .filter(|n| bucket.try_admit(v4((thread * 100 + n) as u32), t).is_ok())
            .count()
    });
    assert_eq!(won, 33);
}
