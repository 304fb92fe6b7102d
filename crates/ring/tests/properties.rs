//! The ring's promises, tested as properties: balance over a million client ids,
//! minimal movement when one member joins or leaves (every moved key goes to the
//! newcomer; a leaver's keys go to their second candidate and nothing else moves),
//! and `candidates()` as an owner-first permutation that is the fallback order.
//!
//! Bounds on movement are statistical. The deterministic tests use fixed seeds, so
//! they are reproducible; the proptests scale their key counts with the ring size so
//! that the 10% tolerance is more than five standard deviations of the expected
//! binomial noise, which keeps them from flaking.

use std::collections::{BTreeSet, HashMap};

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use throng_ring::{Member, Ring};

/// `count` random MQTT-style client ids (1 to 23 alphanumerics), the same for a seed.
fn client_ids(seed: u64, count: usize) -> Vec<String> {
    const CHARS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = StdRng::seed_from_u64(seed);
    let mut bytes = [0u8; 24];
    (0..count)
        .map(|_| {
            // One call per id: per-character sampling dominates the run time in debug.
            rng.fill_bytes(&mut bytes);
            let len = 1 + usize::from(bytes[0]) % 23;
            bytes[1..=len]
                .iter()
                .map(|b| char::from(CHARS[usize::from(*b) % CHARS.len()]))
                .collect()
        })
        .collect()
}

/// Members named like StatefulSet pods, which is what Kubernetes discovery yields.
fn handlers(n: usize) -> Vec<Member> {
    (0..n)
        .map(|i| Member::new(format!("throng-handler-{i}"), format!("10.0.0.{i}:1884")))
        .collect()
}

fn member(id: &str) -> Member {
    Member::new(id, format!("{id}.throng-handler:1884"))
}

fn owners<'r>(ring: &'r Ring, keys: &[String]) -> Vec<&'r str> {
    keys.iter()
        .map(|k| &*ring.owner(k).expect("non-empty ring").id)
        .collect()
}

/// Asserts that growing `before` by `newcomer` moves only keys that go to the
/// newcomer, and that the share moved is within 10% of 1/(N+1).
fn check_add(before: &[Member], newcomer: &Member, keys: &[String]) {
    let old = Ring::new(before.iter().cloned());
    let new = Ring::new(before.iter().cloned().chain([newcomer.clone()]));
    let mut moved = 0usize;
    for (key, (was, is)) in keys
        .iter()
        .zip(owners(&old, keys).into_iter().zip(owners(&new, keys)))
    {
        if was != is {
            assert_eq!(
                is, &*newcomer.id,
                "key {key:?} moved from {was} to {is}, not to the newcomer"
            );
            moved += 1;
        }
    }
    let share = moved as f64 / keys.len() as f64;
    let ideal = 1.0 / (before.len() + 1) as f64;
    assert!(
        share <= 1.1 * ideal,
        "adding 1 member to {} moved {share:.5} of keys, over 1.1 x {ideal:.5}",
        before.len()
    );
    assert!(
        share >= 0.9 * ideal,
        "adding 1 member to {} moved {share:.5} of keys, under 0.9 x {ideal:.5}",
        before.len()
    );
}

/// Asserts that removing `members[gone]` moves exactly the keys it owned, each to
/// the member that was its second candidate.
fn check_remove(members: &[Member], gone: usize, keys: &[String]) {
    let old = Ring::new(members.iter().cloned());
    let mut rest = members.to_vec();
    let leaver = rest.remove(gone);
    let new = Ring::new(rest);
    for key in keys {
        let candidates = old.candidates(key);
        let is = new.owner(key).expect("non-empty ring");
        if candidates[0].id == leaver.id {
            assert_eq!(
                is, candidates[1],
                "key {key:?} did not move to its second candidate"
            );
        } else {
            assert_eq!(
                is, candidates[0],
                "key {key:?} moved although its owner stayed"
            );
        }
    }
}

#[test]
fn a_million_client_ids_over_ten_members_stay_within_ten_percent_of_the_mean() {
    const KEYS: usize = 1_000_000;
    let ring = Ring::new(handlers(10));
    let keys = client_ids(0x7468_726f_6e67, KEYS);
    let mut load: HashMap<&str, usize> = HashMap::new();
    for owner in owners(&ring, &keys) {
        *load.entry(owner).or_default() += 1;
    }
    assert_eq!(load.len(), 10, "every member owns keys: {load:?}");
    let mean = KEYS as f64 / 10.0;
    let max = *load.values().max().unwrap() as f64;
    assert!(
        max <= 1.1 * mean,
        "most loaded member has {max} keys, mean {mean}: {load:?}"
    );
}

#[test]
fn adding_one_member_to_n_moves_its_share_all_to_it() {
    let keys = client_ids(1, 200_000);
    for n in [1, 2, 3, 4, 5, 10, 20, 50] {
        let all = handlers(n + 1);
        check_add(&all[..n], &all[n], &keys);
    }
}

#[test]
fn removing_one_member_of_n_moves_only_its_keys() {
    let keys = client_ids(2, 50_000);
    for n in [2, 3, 5, 10, 50] {
        for gone in [0, n / 2, n - 1] {
            check_remove(&handlers(n), gone, &keys);
        }
    }
}

/// Between `min` and `max` distinct member ids: StatefulSet-style ordinals (similar
/// ids are the hardest case for a hash) or arbitrary names.
fn member_ids(min: usize, max: usize) -> impl Strategy<Value = Vec<String>> {
    let ordinals = ("[a-z][a-z-]{0,12}", 0usize..1000, min..=max).prop_map(|(prefix, start, n)| {
        (start..start + n)
            .map(|i| format!("{prefix}-{i}"))
            .collect()
    });
    let names = prop::collection::btree_set("[a-z0-9][a-z0-9.-]{0,30}", min..=max)
        .prop_map(|set| set.into_iter().collect());
    prop_oneof![ordinals, names]
}

proptest! {
    // Tens of thousands of keys a case: 32 cases keep this under five seconds in debug.
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn prop_adding_a_member_moves_about_one_in_n_plus_one_keys_all_to_it(
        ids in member_ids(2, 17),
        newcomer in any::<prop::sample::Index>(),
        seed in any::<u64>(),
    ) {
        let mut members: Vec<Member> = ids.iter().map(|id| member(id)).collect();
        let newcomer = members.remove(newcomer.index(members.len()));
        // 4,000 expected moves put the 10% bound beyond 6 standard deviations.
        let keys = client_ids(seed, 4_000 * (members.len() + 1));
        check_add(&members, &newcomer, &keys);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn prop_removing_a_member_moves_only_its_keys_to_their_second_candidate(
        ids in member_ids(2, 20),
        gone in any::<prop::sample::Index>(),
        seed in any::<u64>(),
    ) {
        let members: Vec<Member> = ids.iter().map(|id| member(id)).collect();
        let keys = client_ids(seed, 2_000);
        check_remove(&members, gone.index(members.len()), &keys);
    }
}

proptest! {
    #[test]
    fn prop_candidates_are_a_permutation_with_the_owner_first_in_fallback_order(
        ids in member_ids(0, 12),
        key in any::<String>(),
    ) {
        let ring = Ring::new(ids.iter().map(|id| member(id)));
        let candidates = ring.candidates(&key);
        prop_assert_eq!(candidates.first().copied(), ring.owner(&key));
        let listed: BTreeSet<&str> = candidates.iter().map(|m| &*m.id).collect();
        let all: BTreeSet<&str> = ring.members().map(|m| &*m.id).collect();
        prop_assert_eq!(candidates.len(), ring.len());
        prop_assert_eq!(listed, all);
        // Each candidate owns the key once every member before it is gone.
        for i in 0..candidates.len() {
            let rest = Ring::new(candidates[i..].iter().map(|m| (*m).clone()));
            prop_assert_eq!(rest.owner(&key), Some(candidates[i]));
        }
    }
}
