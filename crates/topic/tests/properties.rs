//! Properties: both tries agree with the naive [`matches()`] over every stored
//! filter or topic, through random inserts and removals, and prune back to no
//! nodes at all; [`matches()`] agrees with a separately written reference.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use proptest::sample::{Index, select};
use throng_topic::{
    RetainedIndex, SubscriptionIndex, matches, validate_filter, validate_topic_name,
};

const TOPIC_LEVELS: &[&str] = &["a", "b", "", "$SYS", "$x"];
const FILTER_LEVELS: &[&str] = &["a", "b", "", "$SYS", "+"];

fn topic() -> impl Strategy<Value = String> {
    prop::collection::vec(select(TOPIC_LEVELS), 1..5)
        .prop_map(|levels| levels.join("/"))
        .prop_filter("valid topic", |t| validate_topic_name(t).is_ok())
}

fn filter() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(select(FILTER_LEVELS), 1..5),
        any::<bool>(),
    )
        .prop_map(|(mut levels, hash)| {
            if hash {
                *levels.last_mut().expect("at least one level") = "#";
            }
            levels.join("/")
        })
        .prop_filter("valid filter", |f| validate_filter(f).is_ok())
}

/// Section 4.7 restated over level slices, independently of `matches`.
fn reference(filter: &str, topic: &str) -> bool {
    fn levels_match(filter: &[&str], topic: &[&str]) -> bool {
        match (filter, topic) {
            (["#"], _) => true,
            (["+", f @ ..], [_, t @ ..]) => levels_match(f, t),
            ([fl, f @ ..], [tl, t @ ..]) => fl == tl && levels_match(f, t),
            ([], []) => true,
            _ => false,
        }
    }
    let f: Vec<&str> = filter.split('/').collect();
    let t: Vec<&str> = topic.split('/').collect();
    let wildcard_first = f[0] == "+" || f[0] == "#";
    !(topic.starts_with('$') && wildcard_first) && levels_match(&f, &t)
}

/// How many trie nodes the paths need: one per distinct non-empty level prefix.
fn nodes_needed<'a>(paths: impl Iterator<Item = &'a str>) -> usize {
    let mut prefixes = BTreeSet::new();
    for path in paths {
        let levels: Vec<&str> = path.split('/').collect();
        for end in 1..=levels.len() {
            prefixes.insert(levels[..end].to_vec());
        }
    }
    prefixes.len()
}

#[derive(Debug, Clone)]
enum SubOp {
    Insert(String, u8, u16),
    RemoveExisting(Index),
    RemoveAny(String, u8),
    Match(String),
}

fn sub_op() -> impl Strategy<Value = SubOp> {
    prop_oneof![
        4 => (filter(), 0u8..3, any::<u16>()).prop_map(|(f, k, v)| SubOp::Insert(f, k, v)),
        2 => any::<Index>().prop_map(SubOp::RemoveExisting),
        1 => (filter(), 0u8..3).prop_map(|(f, k)| SubOp::RemoveAny(f, k)),
        3 => topic().prop_map(SubOp::Match),
    ]
}

type SubModel = BTreeMap<(String, u8), u16>;

fn check_subscriptions(index: &SubscriptionIndex<u8, u16>, model: &SubModel, topic: &str) {
    let mut found = Vec::new();
    index.for_each_match(topic, |f, k, v| found.push((f.to_owned(), *k, *v)));
    found.sort();
    let expected: Vec<_> = model
        .iter()
        .filter(|((f, _), _)| matches(f, topic))
        .map(|((f, k), v)| (f.clone(), *k, *v))
        .collect();
    assert_eq!(found, expected, "topic {topic:?}");
}

#[derive(Debug, Clone)]
enum RetOp {
    Set(String, u16),
    RemoveExisting(Index),
    RemoveAny(String),
    Match(String),
}

fn ret_op() -> impl Strategy<Value = RetOp> {
    prop_oneof![
        4 => (topic(), any::<u16>()).prop_map(|(t, v)| RetOp::Set(t, v)),
        2 => any::<Index>().prop_map(RetOp::RemoveExisting),
        1 => topic().prop_map(RetOp::RemoveAny),
        3 => filter().prop_map(RetOp::Match),
    ]
}

fn check_retained(index: &RetainedIndex<u16>, model: &BTreeMap<String, u16>, filter: &str) {
    let mut found = Vec::new();
    index.for_each_match(filter, |t, v| found.push((t.to_owned(), *v)));
    found.sort();
    let expected: Vec<_> = model
        .iter()
        .filter(|(t, _)| matches(filter, t))
        .map(|(t, v)| (t.clone(), *v))
        .collect();
    assert_eq!(found, expected, "filter {filter:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn matches_agrees_with_reference(filter in filter(), topic in topic()) {
        prop_assert_eq!(matches(&filter, &topic), reference(&filter, &topic));
    }

    #[test]
    fn subscription_index_agrees_with_naive_matching(
        ops in prop::collection::vec(sub_op(), 0..80),
        probes in prop::collection::vec(topic(), 1..10),
    ) {
        let mut index = SubscriptionIndex::new();
        let mut model = SubModel::new();
        for op in ops {
            match op {
                SubOp::Insert(f, k, v) => {
                    prop_assert_eq!(index.insert(&f, k, v), model.insert((f, k), v));
                }
                SubOp::RemoveExisting(i) => {
                    if !model.is_empty() {
                        let (f, k) = model.keys().nth(i.index(model.len())).cloned().expect("in range");
                        prop_assert_eq!(index.remove(&f, &k), model.remove(&(f, k)));
                    }
                }
                SubOp::RemoveAny(f, k) => {
                    prop_assert_eq!(index.remove(&f, &k), model.remove(&(f, k)));
                }
                SubOp::Match(t) => check_subscriptions(&index, &model, &t),
            }
            prop_assert_eq!(index.len(), model.len());
            let filters: BTreeSet<&str> = model.keys().map(|(f, _)| f.as_str()).collect();
            prop_assert_eq!(index.filter_count(), filters.len());
            prop_assert_eq!(index.node_count(), nodes_needed(filters.into_iter()));
        }
        for t in &probes {
            check_subscriptions(&index, &model, t);
        }
        for ((f, k), v) in &model {
            prop_assert_eq!(index.get(f, k), Some(v));
        }
        for ((f, k), v) in std::mem::take(&mut model) {
            prop_assert_eq!(index.remove(&f, &k), Some(v));
        }
        prop_assert!(index.is_empty());
        prop_assert_eq!(index.filter_count(), 0);
        prop_assert_eq!(index.node_count(), 0);
        for t in &probes {
            check_subscriptions(&index, &model, t);
        }
    }

    #[test]
    fn retained_index_agrees_with_naive_scan(
        ops in prop::collection::vec(ret_op(), 0..80),
        probes in prop::collection::vec(filter(), 1..10),
    ) {
        let mut index = RetainedIndex::new();
        let mut model = BTreeMap::new();
        for op in ops {
            match op {
                RetOp::Set(t, v) => prop_assert_eq!(index.set(&t, v), model.insert(t, v)),
                RetOp::RemoveExisting(i) => {
                    if !model.is_empty() {
                        let t = model.keys().nth(i.index(model.len())).cloned().expect("in range");
                        prop_assert_eq!(index.remove(&t), model.remove(&t));
                    }
                }
                RetOp::RemoveAny(t) => prop_assert_eq!(index.remove(&t), model.remove(&t)),
                RetOp::Match(f) => check_retained(&index, &model, &f),
            }
            prop_assert_eq!(index.len(), model.len());
            prop_assert_eq!(index.node_count(), nodes_needed(model.keys().map(String::as_str)));
        }
        for f in &probes {
            check_retained(&index, &model, f);
        }
        for (t, v) in &model {
            prop_assert_eq!(index.get(t), Some(v));
        }
        for (t, v) in std::mem::take(&mut model) {
            prop_assert_eq!(index.remove(&t), Some(v));
        }
        prop_assert!(index.is_empty());
        prop_assert_eq!(index.node_count(), 0);
    }
}
