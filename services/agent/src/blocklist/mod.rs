//! The IP/CIDR blocklist checked on every accept, and its hot reload.
//!
//! A [`Blocklist`] is an immutable set of IPv4 and IPv6 ranges, parsed from a file
//! with one address or CIDR range per line (`#` starts a comment, blank lines are
//! ignored). Ranges are merged and kept sorted, so [`Blocklist::contains`] is one
//! binary search over the address family's range starts.
//!
//! Address families: an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`), whether in the
//! file or from a dual-stack socket, is treated as the IPv4 address; so is a mapped
//! range of prefix length 96 or more. Other IPv6 entries match only IPv6 clients:
//! `::/0` does not block IPv4 clients. A range whose host bits are set
//! (`10.1.2.3/8`) is taken as the network it lies in (`10.0.0.0/8`).
//!
//! A [`BlocklistHandle`] shares the current list lock-free (`arc-swap`) and, when it
//! was loaded from a file, re-reads that file when it changes. Changes are found by
//! polling ([`FileStamp`]: canonical path, size, mtime, ctime, inode), not inotify,
//! because a Kubernetes ConfigMap volume is updated by swapping the `..data`
//! symlink, and files are often replaced by rename. A file that fails to load at
//! startup is an error; on reload the failure is logged and counted, and the
//! previous list stays in force.

mod handle;
mod ranges;
mod stamp;

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

pub use handle::{BlocklistHandle, DEFAULT_POLL_INTERVAL};
use ranges::Ranges;
pub(crate) use stamp::FileStamp;

/// A blocklist file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BlocklistError {
    /// The file could not be read (missing, unreadable, not UTF-8).
    #[error("cannot read blocklist {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A line is not an address or CIDR range.
    #[error("blocklist {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: ParseError,
    },
}

/// A line of blocklist text that is not an address or CIDR range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}: {text:?}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// The entry as written, comment and surrounding blanks removed.
    pub text: String,
    pub reason: &'static str,
}

/// An immutable set of blocked IPv4 and IPv6 ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Blocklist {
    v4: Ranges<u32>,
    v6: Ranges<u128>,
    entries: usize,
}

impl Blocklist {
    /// An empty blocklist: blocks nothing.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Reads and parses a blocklist file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, BlocklistError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| BlocklistError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|source| BlocklistError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// Parses blocklist text: one address or CIDR range per line, `#` comments.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (index, raw) in text.lines().enumerate() {
            let entry = raw.split('#').next().unwrap_or_default().trim();
            if entry.is_empty() {
                continue;
            }
            match parse_entry(entry) {
                Ok(Range::V4(start, end)) => v4.push((start, end)),
                Ok(Range::V6(start, end)) => v6.push((start, end)),
                Err(reason) => {
                    return Err(ParseError {
                        line: index + 1,
                        text: entry.to_owned(),
                        reason,
                    });
                }
            }
        }
        let entries = v4.len() + v6.len();
        Ok(Self {
            v4: Ranges::build(v4),
            v6: Ranges::build(v6),
            entries,
        })
    }

    /// Whether `ip` lies in a blocked range. IPv4-mapped IPv6 addresses are looked
    /// up as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => self.v4.contains(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => self.v4.contains(u32::from(v4)),
                None => self.v6.contains(u128::from(v6)),
            },
        }
    }

    /// Number of entries (lines with an address or range) the list was built from.
    pub fn len(&self) -> usize {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Number of disjoint ranges after merging overlapping and adjacent entries.
    pub fn range_count(&self) -> usize {
        self.v4.starts.len() + self.v6.starts.len()
    }
}

enum Range {
    V4(u32, u32),
    V6(u128, u128),
}

fn parse_entry(entry: &str) -> Result<Range, &'static str> {
    let (addr, prefix) = match entry.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (entry, None),
    };
    let addr: IpAddr = addr
        .trim()
        .parse()
        .map_err(|_| "not an IP address or CIDR range")?;
    let prefix = match prefix {
        Some(p) => Some(p.trim().parse::<u8>().map_err(|_| "bad prefix length")?),
        None => None,
    };
    match addr {
        IpAddr::V4(v4) => v4_range(v4, prefix.unwrap_or(32)),
        IpAddr::V6(v6) => match (v6.to_ipv4_mapped(), prefix) {
            (Some(v4), None) => v4_range(v4, 32),
            (Some(v4), Some(p)) if p >= 96 => v4_range(v4, p.saturating_sub(96)),
            _ => v6_range(v6, prefix.unwrap_or(128)),
        },
    }
}

fn v4_range(addr: Ipv4Addr, prefix: u8) -> Result<Range, &'static str> {
    if prefix > 32 {
        return Err("prefix length over 32");
    }
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    let start = u32::from(addr) & mask;
    Ok(Range::V4(start, start | !mask))
}

fn v6_range(addr: Ipv6Addr, prefix: u8) -> Result<Range, &'static str> {
    if prefix > 128 {
        return Err("prefix length over 128");
    }
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    let start = u128::from(addr) & mask;
    Ok(Range::V6(start, start | !mask))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_overlapping_and_adjacent_ranges() {
        let list = Blocklist::parse("10.0.0.0/25\n10.0.0.128/25\n10.0.0.5\n10.0.2.0/24").unwrap();
        assert_eq!(list.len(), 4);
        assert_eq!(list.range_count(), 2);
        assert_eq!(list.v4.starts, vec![0x0a00_0000, 0x0a00_0200]);
        assert_eq!(list.v4.ends, vec![0x0a00_00ff, 0x0a00_02ff]);
    }

    #[test]
    fn full_ranges_do_not_overflow() {
        let list = Blocklist::parse("0.0.0.0/0\n255.255.255.255\n::/0\n::1").unwrap();
        assert_eq!(list.range_count(), 2);
        assert!(list.contains("255.255.255.255".parse().unwrap()));
        assert!(list.contains("ffff::ffff".parse().unwrap()));
    }
}
