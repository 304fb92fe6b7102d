//! The per-client table: connection count and bucket state per IPv4 address or
//! IPv6 /64, in 64 mutex-guarded shards, with a cap on the number of entries and
//! the sweeps that remove idle ones.

use std::collections::HashMap;
use std::collections::hash_map::{Entry, RandomState};
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, MutexGuard};

const SHARDS: usize = 64;
/// A shard is swept when it reaches this many entries, then when it has doubled.
const MIN_SWEEP_LEN: usize = 64;
const FULL_SWEEP_INTERVAL: Duration = Duration::from_millis(100);

/// Who a connection is counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum ClientKey {
    V4(u32),
    V6Prefix(u64),
}

impl From<IpAddr> for ClientKey {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => ClientKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey::V4(u32::from(v4)),
                None => ClientKey::V6Prefix((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

pub(super) struct ClientState {
    pub(super) connections: u32,
    /// GCRA arrival time, ns since the admission's epoch; `<= now` means full.
    pub(super) tat: u64,
}

impl ClientState {
    fn idle(&self, now: u64) -> bool {
        self.connections == 0 && self.tat <= now
    }
}

pub(super) struct ShardMap {
    pub(super) clients: HashMap<ClientKey, ClientState>,
    sweep_at: usize,
}

#[repr(align(64))]
struct Shard(Mutex<ShardMap>);

pub(super) struct ClientTable {
    shards: Box<[Shard]>,
    hasher: RandomState,
    tracked: AtomicUsize,
    max_tracked: usize,
    next_full_sweep: AtomicU64,
}

impl ClientTable {
    pub(super) fn new(max_tracked: usize) -> Self {
        let shards = (0..SHARDS)
            .map(|_| {
                Shard(Mutex::new(ShardMap {
                    clients: HashMap::new(),
                    sweep_at: MIN_SWEEP_LEN,
                }))
            })
            .collect();
        Self {
            shards,
            hasher: RandomState::new(),
            tracked: AtomicUsize::new(0),
            max_tracked: max_tracked.max(1),
            next_full_sweep: AtomicU64::new(0),
        }
    }

    pub(super) fn shard_of(&self, key: ClientKey) -> usize {
        (self.hasher.hash_one(key) >> 58) as usize % SHARDS
    }

    pub(super) fn lock(&self, shard: usize) -> MutexGuard<'_, ShardMap> {
        self.shards[shard].0.lock()
    }

    pub(super) fn tracked(&self) -> usize {
        self.tracked.load(Ordering::Relaxed)
    }

    /// Makes room for one more client in `map` (the locked shard), sweeping it
    /// first if it has grown enough to be worth it. `false`: the table is full.
    /// The caller inserts the client, or calls [`Self::untrack`] if it does not.
    pub(super) fn try_track(&self, map: &mut ShardMap, now: u64) -> bool {
        if map.clients.len() >= map.sweep_at {
            self.sweep_shard(map, now);
        }
        reserve(&self.tracked, self.max_tracked)
    }

    pub(super) fn untrack(&self) {
        self.tracked.fetch_sub(1, Ordering::AcqRel);
    }

    /// Ends one of `key`'s connections, removing the entry if it is now idle.
    pub(super) fn release(&self, shard: usize, key: ClientKey, now: u64) {
        let mut map = self.lock(shard);
        if let Entry::Occupied(mut entry) = map.clients.entry(key) {
            let state = entry.get_mut();
            state.connections -= 1;
            if state.idle(now) {
                entry.remove();
                self.untrack();
            }
        }
    }

    fn sweep_shard(&self, map: &mut ShardMap, now: u64) -> usize {
        let before = map.clients.len();
        map.clients.retain(|_, state| !state.idle(now));
        let removed = before - map.clients.len();
        self.tracked.fetch_sub(removed, Ordering::AcqRel);
        map.sweep_at = (map.clients.len() * 2).max(MIN_SWEEP_LEN);
        removed
    }

    /// Removes every idle client, one shard at a time; call with no shard locked.
    pub(super) fn sweep_all(&self, now: u64) -> usize {
        (0..SHARDS)
            .map(|shard| self.sweep_shard(&mut self.lock(shard), now))
            .sum()
    }

    /// Whether this caller may sweep the whole table now: at most once per
    /// [`FULL_SWEEP_INTERVAL`], so a full table of live clients does not turn every
    /// refused connect into a scan.
    pub(super) fn full_sweep_due(&self, now: u64) -> bool {
        let next = now.saturating_add(FULL_SWEEP_INTERVAL.as_nanos() as u64);
        self.next_full_sweep
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |due| {
                (now >= due).then_some(next)
            })
            .is_ok()
    }
}

/// Takes one unit of `counter` if that keeps it at or under `max`.
pub(super) fn reserve(counter: &AtomicUsize, max: usize) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
            (n < max).then_some(n + 1)
        })
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_is_keyed_by_64_and_mapped_v4_by_address() {
        let key = |s: &str| ClientKey::from(s.parse::<IpAddr>().unwrap());
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.7"), key("192.0.2.7"));
        assert_ne!(key("::ffff:192.0.2.7"), key("::192.0.2.7"));
    }
}
