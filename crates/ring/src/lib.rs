//! The ring: which handler owns a client id. Every agent, distributor and trbroker
//! builds it from the same member list and gets the same answer without talking.
//!
//! It is rendezvous (highest-random-weight) hashing: a key's owner is the member
//! whose hash of (member id, key) is highest, and the order of the others by that
//! score is the key's fallback order. Compared with a ring of virtual nodes this
//! balances as well as randomness allows (no per-member variance from point
//! placement), and membership changes move the minimum: adding a member moves only
//! the keys it now wins, all to it; removing one moves only its keys. Lookup costs
//! one 64-bit hash per member, which is cheap for the handful to hundreds of handlers
//! a cluster has.

use std::sync::Arc;

/// A handler: its member id (the StatefulSet pod name) and where to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Member {
    pub id: Arc<str>,
    /// `host:port` of the handler's hand-off listener.
    pub addr: Arc<str>,
}

impl Member {
    pub fn new(id: impl Into<Arc<str>>, addr: impl Into<Arc<str>>) -> Member {
        Member {
            id: id.into(),
            addr: addr.into(),
        }
    }
}

/// An immutable snapshot of the membership.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ring {
    /// Sorted by id, deduplicated by id; each with its id's hash seed.
    members: Vec<(Member, u64)>,
}

impl Ring {
    /// Builds a ring; members with the same id keep the last address given.
    pub fn new(members: impl IntoIterator<Item = Member>) -> Ring {
        let mut members: Vec<Member> = members.into_iter().collect();
        members.reverse();
        members.sort_by(|a, b| a.id.cmp(&b.id));
        members.dedup_by(|a, b| a.id == b.id);
        Ring {
            members: members
                .into_iter()
                .map(|m| {
                    let seed = fnv1a(m.id.as_bytes(), FNV_OFFSET);
                    (m, seed)
                })
                .collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().map(|(m, _)| m)
    }

    pub fn get(&self, id: &str) -> Option<&Member> {
        self.members
            .binary_search_by(|(m, _)| (*m.id).cmp(id))
            .ok()
            .map(|i| &self.members[i].0)
    }

    /// The member that owns `key`; `None` when the ring is empty.
    pub fn owner(&self, key: &str) -> Option<&Member> {
        let key_hash = fnv1a(key.as_bytes(), FNV_OFFSET);
        self.members
            .iter()
            .max_by_key(|(m, seed)| (score(*seed, key_hash), &m.id))
            .map(|(m, _)| m)
    }

    /// Every member in the order `key` tries them: the owner first, then the
    /// member that would own it if the owner were gone, and so on.
    pub fn candidates(&self, key: &str) -> Vec<&Member> {
        let key_hash = fnv1a(key.as_bytes(), FNV_OFFSET);
        let mut scored: Vec<(u64, &Member)> = self
            .members
            .iter()
            .map(|(m, seed)| (score(*seed, key_hash), m))
            .collect();
        scored.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.id.cmp(&a.1.id)));
        scored.into_iter().map(|(_, m)| m).collect()
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a: stable across processes, versions and platforms (unlike std's hasher),
/// which every process computing the same ring depends on.
fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    bytes
        .iter()
        .fold(seed, |h, &b| (h ^ u64::from(b)).wrapping_mul(FNV_PRIME))
}

/// Mixes a member's seed with a key's hash into a well-spread score (the
/// splitmix64 finalizer; FNV alone correlates for similar ids).
fn score(member_seed: u64, key_hash: u64) -> u64 {
    let mut z = member_seed ^ key_hash.rotate_left(32);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(n: usize) -> Ring {
        Ring::new((0..n).map(|i| Member::new(format!("handler-{i}"), format!("10.0.0.{i}:1884"))))
    }

    #[test]
    fn empty_ring_has_no_owner() {
        assert_eq!(Ring::default().owner("a"), None);
        assert!(Ring::default().candidates("a").is_empty());
    }

    #[test]
    fn owner_is_first_candidate_and_stable() {
        let r = ring(5);
        for key in ["a", "device-1", "", "ünïcode"] {
            let candidates = r.candidates(key);
            assert_eq!(candidates.len(), 5);
            assert_eq!(Some(candidates[0]), r.owner(key));
            assert_eq!(r.owner(key), ring(5).owner(key));
        }
    }

    #[test]
    fn order_of_members_given_does_not_matter() {
        let a = ring(6);
        let b = Ring::new(a.members().cloned().collect::<Vec<_>>().into_iter().rev());
        assert_eq!(a, b);
    }

    #[test]
    fn known_answer_pins_the_hash() {
        // Changing the hash would move every client between handlers on upgrade.
        let r = ring(3);
        let owners: Vec<&str> = ["device-1", "device-2", "device-3", "device-4"]
            .iter()
            .map(|k| &*r.owner(k).unwrap().id)
            .collect();
        assert_eq!(owners, KNOWN_OWNERS);
    }

    const KNOWN_OWNERS: [&str; 4] = ["handler-0", "handler-0", "handler-2", "handler-2"];
}
