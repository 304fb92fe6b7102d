//! Host-wide memory readings that user-space RSS leaves out: the kernel's slab
//! (socket, file, inode and epoll objects of both ends of every loopback
//! connection), TCP buffer pages, and what is left for everyone (MemAvailable).

use serde::Serialize;

/// One reading of /proc/meminfo and /proc/net/sockstat.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HostSample {
    pub mem_available_bytes: u64,
    pub slab_bytes: u64,
    pub slab_unreclaimable_bytes: u64,
    /// TCP sockets in use (both ends of a loopback connection count).
    pub tcp_in_use: u64,
    /// Memory the TCP stack holds in socket buffers (sockstat `mem`, pages).
    pub tcp_buffer_bytes: u64,
}

/// Reads the host now; `None` where /proc cannot be read.
pub fn sample() -> Option<HostSample> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    Some(parse(&meminfo, &sockstat))
}

fn parse(meminfo: &str, sockstat: &str) -> HostSample {
    let kb = |name: &str| {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |v| v * 1024)
    };
    let tcp: Vec<&str> = sockstat
        .lines()
        .find_map(|l| l.strip_prefix("TCP:"))
        .map(|rest| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |name: &str| {
        tcp.iter()
            .position(|w| *w == name)
            .and_then(|i| tcp.get(i + 1)?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    HostSample {
        mem_available_bytes: kb("MemAvailable"),
        slab_bytes: kb("Slab"),
        slab_unreclaimable_bytes: kb("SUnreclaim"),
        tcp_in_use: field("inuse"),
        tcp_buffer_bytes: field("mem") * page_size(),
    }
}

/// The kernel's page size (sockstat counts pages), from KernelPageSize in
/// /proc/self/smaps; 4 KiB where unknown.
fn page_size() -> u64 {
    static PAGE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| {
        std::fs::read_to_string("/proc/self/smaps")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("KernelPageSize:"))
                    .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            })
            .map_or(4096, |kb| kb * 1024)
    })
}

/// Peak resident memory of this process (VmHWM), bytes; 0 if unreadable.
pub fn peak_rss_self() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Host memory at the report's points, and per connection.
#[derive(Clone, Debug, Default, Serialize)]
pub struct HostReport {
    pub before: Option<HostSample>,
    pub connected: Option<HostSample>,
    pub held: Option<HostSample>,
    /// Per live connection, from before to the end of the hold (or to connected):
    /// the drop of MemAvailable (everything: kernel, broker, load tool).
    pub mem_available_drop_per_connection_bytes: Option<f64>,
    /// Slab growth per connection: the kernel objects of both ends (reclaimable
    /// caches such as dentries included, so other activity on the host shows).
    pub slab_per_connection_bytes: Option<f64>,
    /// Unreclaimable slab growth per connection: the sockets themselves.
    pub slab_unreclaimable_per_connection_bytes: Option<f64>,
    /// TCP socket buffer growth per connection.
    pub tcp_buffer_per_connection_bytes: Option<f64>,
}

impl HostReport {
    pub fn derive(&mut self, live: u64) {
        let (Some(before), Some(end)) = (self.before, self.held.or(self.connected)) else {
            return;
        };
        let per = |a: u64, b: u64| (live > 0).then(|| (a as f64 - b as f64) / live as f64);
        self.mem_available_drop_per_connection_bytes =
            per(before.mem_available_bytes, end.mem_available_bytes);
        self.slab_per_connection_bytes = per(end.slab_bytes, before.slab_bytes);
        self.slab_unreclaimable_per_connection_bytes = per(
            end.slab_unreclaimable_bytes,
            before.slab_unreclaimable_bytes,
        );
        self.tcp_buffer_per_connection_bytes = per(end.tcp_buffer_bytes, before.tcp_buffer_bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_meminfo_and_sockstat() {
        let meminfo =
            "MemTotal: 100 kB\nMemAvailable:   2000 kB\nSlab:  300 kB\nSUnreclaim: 50 kB\n";
        let sockstat =
            "sockets: used 23\nTCP: inuse 7 orphan 0 tw 2 alloc 9 mem 3\nUDP: inuse 0 mem 0\n";
        let s = parse(meminfo, sockstat);
        assert_eq!(s.mem_available_bytes, 2000 * 1024);
        assert_eq!(s.slab_bytes, 300 * 1024);
        assert_eq!(s.slab_unreclaimable_bytes, 50 * 1024);
        assert_eq!(s.tcp_in_use, 7);
        assert_eq!(s.tcp_buffer_bytes, 3 * page_size());
        assert!(sample().is_some());
        assert!(peak_rss_self() > 0);
    }

    #[test]
    fn derives_per_connection() {
        let at = |avail, slab| HostSample {
            mem_available_bytes: avail,
            slab_bytes: slab,
            ..HostSample::default()
        };
        let mut r = HostReport {
            before: Some(at(10_000, 1000)),
            connected: Some(at(6000, 4000)),
            ..HostReport::default()
        };
        r.derive(2);
        assert_eq!(r.mem_available_drop_per_connection_bytes, Some(2000.0));
        assert_eq!(r.slab_per_connection_bytes, Some(1500.0));
    }
}
