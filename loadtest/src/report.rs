//! Number formatting for the human-readable tables.

use crate::hist::Summary;

/// 1234567 -> "1,234,567".
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    let head = match digits.len() % 3 {
        0 => 3,
        r => r,
    };
    out.push_str(&digits[..head.min(digits.len())]);
    for group in digits.as_bytes()[head.min(digits.len())..].chunks(3) {
        out.push(',');
        out.push_str(std::str::from_utf8(group).expect("ASCII digits"));
    }
    out
}

/// Bytes with a binary unit: "812 B", "0.79 KiB", "14.2 MiB".
pub fn bytes(b: f64) -> String {
    let a = b.abs();
    if a < 1024.0 {
        format!("{b:.0} B")
    } else if a < 1024.0 * 1024.0 {
        format!("{:.2} KiB", b / 1024.0)
    } else if a < 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / (1024.0 * 1024.0))
    } else {
        format!("{:.2} GiB", b / (1024.0 * 1024.0 * 1024.0))
    }
}

/// Microseconds as "850 µs", "12.3 ms", "1.50 s".
pub fn micros(us: u64) -> String {
    if us < 1000 {
        format!("{us} µs")
    } else if us < 1_000_000 {
        format!("{:.1} ms", us as f64 / 1000.0)
    } else {
        format!("{:.2} s", us as f64 / 1e6)
    }
}

/// A latency summary as "p50 1.2 ms  p90 …  max 9.0 ms".
pub fn latency_row(s: &Summary) -> String {
    format!(
        "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        micros(s.p50_us),
        micros(s.p90_us),
        micros(s.p99_us),
        micros(s.p999_us),
        micros(s.max_us)
    )
}

/// A rate, rounded: "1,235".
pub fn rate(v: f64) -> String {
    count(v.round() as u64)
}

/// Counts per second as "[1s] 1,200  [2s] 980".
pub fn per_second(timeline: &[u64]) -> String {
    timeline
        .iter()
        .enumerate()
        .map(|(i, n)| format!("[{}s] {}", i + 1, count(*n)))
        .collect::<Vec<_>>()
        .join("  ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(bytes(812.0), "812 B");
        assert_eq!(bytes(740.0 * 1.5), "1.08 KiB");
        assert_eq!(micros(850), "850 µs");
        assert_eq!(micros(12_300), "12.3 ms");
        assert_eq!(per_second(&[1200, 980]), "[1s] 1,200  [2s] 980");
    }
}
