//! Unit tests of `ClusterIndex`: counting per session subscription, cluster-wide
//! share groups, interest sets, and a property test against a naive model.

use super::*;
use proptest::prelude::*;
use std::collections::BTreeSet;
use throng_topic::matches;

fn h(name: &str) -> Arc<str> {
    Arc::from(name)
}

fn change(filter: &str, group: Option<&str>, op: Op) -> Change {
    Change {
        filter: filter.to_owned(),
        share_group: group.map(str::to_owned),
        op,
    }
}

/// The reference model: counts per (handler, filter, group).
type ModelKey = (String, String, Option<String>);
type Model = HashMap<ModelKey, u32>;

fn model_apply(model: &mut Model, handler: &str, c: &Change) {
    let key = (handler.to_owned(), c.filter.clone(), c.share_group.clone());
    match c.op {
        Op::Add => *model.entry(key).or_insert(0) += 1,
        Op::Remove => {
            if let Some(n) = model.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    model.remove(&key);
                }
            }
        }
    }
}

fn naive_route(model: &Model, topic: &str, from: Option<&str>) -> Route {
    let mut handlers = BTreeSet::new();
    let mut shared: std::collections::BTreeMap<(String, String), BTreeSet<String>> =
        Default::default();
    for (handler, filter, group) in model.keys() {
        if !matches(filter, topic) {
            continue;
        }
        match group {
            None if from != Some(handler.as_str()) => {
                handlers.insert(handler.clone());
            }
            None => {}
            Some(group) => {
                shared
                    .entry((group.clone(), filter.clone()))
                    .or_default()
                    .insert(handler.clone());
            }
        }
    }
    Route {
        handlers: handlers.into_iter().map(Arc::from).collect(),
        shared: shared
            .into_iter()
            .map(|((g, f), hs)| (g, f, hs.into_iter().map(Arc::from).collect()))
            .collect(),
    }
}

fn naive_interest(model: &Model, handler: &str) -> Vec<String> {
    model
        .keys()
        .filter(|(h, _, _)| h != handler)
        .map(|(_, f, _)| f.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

const HANDLERS: [&str; 3] = ["h1", "h2", "h3"];
const FILTERS: [&str; 10] = [
    "a", "a/b", "a/+", "+/b", "#", "a/#", "+", "b/+/c", "$sys/a", "+/+",
];
const TOPICS: [&str; 9] = [
    "a", "a/b", "b", "b/b", "b/x/c", "$sys/a", "a/b/c", "x/b", "",
];
const GROUPS: [Option<&str>; 3] = [None, None, Some("g")];

fn op_strategy() -> impl Strategy<Value = (usize, usize, usize, bool)> {
    (
        0..HANDLERS.len(),
        0..FILTERS.len(),
        0..GROUPS.len(),
        any::<bool>(),
    )
}

fn to_change((_, f, g, add): (usize, usize, usize, bool)) -> Change {
    let group = if g == 1 { Some("k") } else { GROUPS[g] };
    change(FILTERS[f], group, if add { Op::Add } else { Op::Remove })
}

fn check_all(index: &ClusterIndex, model: &Model) {
    for topic in TOPICS {
        for from in [None, Some("h1"), Some("h2"), Some("h4")] {
            assert_eq!(
                index.route(topic, from),
                naive_route(model, topic, from),
                "topic {topic:?} from {from:?}"
            );
        }
    }
    for handler in HANDLERS {
        assert_eq!(index.interest_for(handler), naive_interest(model, handler));
        for filter in index.filters_of(handler) {
            assert!(index.holders(&filter).iter().any(|h| **h == *handler));
        }
    }
    assert_eq!(index.len(), model.len());
    for ((handler, filter, group), n) in model {
        assert_eq!(index.count(handler, filter, group.as_deref()), *n);
    }
}

proptest! {
    #[test]
    fn route_matches_naive(ops in prop::collection::vec(op_strategy(), 0..80)) {
        let mut index = ClusterIndex::new();
        let mut model = Model::new();
        for op in ops {
            let handler = HANDLERS[op.0];
            let c = to_change(op);
            model_apply(&mut model, handler, &c);
            index.apply(&h(handler), c).unwrap();
            check_all(&index, &model);
        }
        // Remove everything one by one: the index ends empty.
        let remaining: Vec<_> = model.iter().map(|(k, n)| (k.clone(), *n)).collect();
        for ((handler, filter, group), n) in remaining {
            for _ in 0..n {
                let c = change(&filter, group.as_deref(), Op::Remove);
                model_apply(&mut model, &handler, &c);
                index.apply(&h(&handler), c).unwrap();
            }
        }
        check_all(&index, &model);
        prop_assert!(index.is_empty());
        prop_assert!(index.handlers().is_empty());
    }

    #[test]
    fn replace_equals_remove_then_add(
        before in prop::collection::vec(op_strategy(), 0..40),
        snapshot in prop::collection::vec((0..FILTERS.len(), 0..GROUPS.len(), 0u32..4), 0..10),
        target in 0..HANDLERS.len(),
    ) {
        let handler = h(HANDLERS[target]);
        let mut replaced = ClusterIndex::new();
        let mut rebuilt = ClusterIndex::new();
        let mut model = Model::new();
        for op in before {
            let c = to_change(op);
            model_apply(&mut model, HANDLERS[op.0], &c);
            replaced.apply(&h(HANDLERS[op.0]), c.clone()).unwrap();
            rebuilt.apply(&h(HANDLERS[op.0]), c).unwrap();
        }
        let snapshot: Vec<(String, Option<String>, u32)> = snapshot
            .into_iter()
            .map(|(f, g, n)| {
                let c = to_change((0, f, g, true));
                (c.filter, c.share_group, n)
            })
            .collect();
        replaced.replace(&handler, snapshot.clone()).unwrap();
        // Remove everything of the handler change by change, then add.
        model.retain(|(hd, _, _), _| **hd != *handler);
        for ((hd, filter, group), n) in rebuilt_entries(&rebuilt, &handler) {
            for _ in 0..n {
                rebuilt.apply(&h(&hd), change(&filter, group.as_deref(), Op::Remove)).unwrap();
            }
        }
        for (filter, group, n) in snapshot {
            for _ in 0..n {
                let c = change(&filter, group.as_deref(), Op::Add);
                model_apply(&mut model, &handler, &c);
                rebuilt.apply(&handler, c).unwrap();
            }
        }
        check_all(&replaced, &model);
        check_all(&rebuilt, &model);
    }

    #[test]
    fn remove_handler_leaves_nothing(
        ops in prop::collection::vec(op_strategy(), 0..60),
        target in 0..HANDLERS.len(),
    ) {
        let mut index = ClusterIndex::new();
        let mut model = Model::new();
        for op in ops {
            let c = to_change(op);
            model_apply(&mut model, HANDLERS[op.0], &c);
            index.apply(&h(HANDLERS[op.0]), c).unwrap();
        }
        index.remove_handler(HANDLERS[target]);
        model.retain(|(hd, _, _), _| hd != HANDLERS[target]);
        check_all(&index, &model);
        prop_assert!(!index.handlers().iter().any(|x| &**x == HANDLERS[target]));
        for topic in TOPICS {
            let route = index.route(topic, None);
            prop_assert!(!route.handlers.iter().any(|x| &**x == HANDLERS[target]));
            prop_assert!(!route.shared.iter().any(|(_, _, hs)| hs.iter().any(|x| &**x == HANDLERS[target])));
        }
    }
}

fn rebuilt_entries(index: &ClusterIndex, handler: &str) -> Vec<(ModelKey, u32)> {
    index
        .handlers
        .get(handler)
        .into_iter()
        .flatten()
        .map(|((f, g), n)| {
            (
                (
                    handler.to_owned(),
                    f.to_string(),
                    g.as_deref().map(str::to_owned),
                ),
                *n,
            )
        })
        .collect()
}

#[test]
fn counts_per_session_subscription() {
    let mut index = ClusterIndex::new();
    let a = h("a");
    index.apply(&a, change("x/+", None, Op::Add)).unwrap();
    index.apply(&a, change("x/+", None, Op::Add)).unwrap();
    index.apply(&a, change("x/+", None, Op::Remove)).unwrap();
    assert_eq!(index.route("x/y", None).handlers, vec![a.clone()]);
    index.apply(&a, change("x/+", None, Op::Remove)).unwrap();
    assert_eq!(index.route("x/y", None), Route::default());
    // Removing what is not there is a no-op.
    index.apply(&a, change("x/+", None, Op::Remove)).unwrap();
    assert!(index.is_empty());
}

#[test]
fn shared_groups_are_cluster_wide_and_include_sender() {
    let mut index = ClusterIndex::new();
    let (a, b) = (h("a"), h("b"));
    index.apply(&a, change("s/#", Some("g"), Op::Add)).unwrap();
    index.apply(&b, change("s/#", Some("g"), Op::Add)).unwrap();
    index.apply(&b, change("s/+", Some("g"), Op::Add)).unwrap();
    index.apply(&b, change("s/#", None, Op::Add)).unwrap();
    let route = index.route("s/1", Some("b"));
    assert!(route.handlers.is_empty());
    assert_eq!(
        route.shared,
        vec![
            ("g".into(), "s/#".into(), vec![a.clone(), b.clone()]),
            ("g".into(), "s/+".into(), vec![b.clone()]),
        ]
    );
    assert_eq!(index.route("s/1", Some("a")).handlers, vec![b.clone()]);
}

#[test]
fn interest_excludes_own_only_filters() {
    let mut index = ClusterIndex::new();
    let (a, b) = (h("a"), h("b"));
    index.apply(&a, change("only/a", None, Op::Add)).unwrap();
    index.apply(&a, change("both", None, Op::Add)).unwrap();
    index.apply(&b, change("both", Some("g"), Op::Add)).unwrap();
    index.apply(&b, change("both", None, Op::Add)).unwrap();
    assert_eq!(index.interest_for("a"), vec!["both".to_owned()]);
    assert_eq!(
        index.interest_for("b"),
        vec!["both".to_owned(), "only/a".to_owned()]
    );
    assert_eq!(
        index.interest_for("c"),
        vec!["both".to_owned(), "only/a".to_owned()]
    );
}

#[test]
fn malformed_changes_are_rejected() {
    let mut index = ClusterIndex::new();
    let a = h("a");
    assert!(index.apply(&a, change("a/#/b", None, Op::Add)).is_err());
    assert!(index.apply(&a, change("a", Some("g+"), Op::Add)).is_err());
    assert!(index.apply(&a, change("a", Some(""), Op::Add)).is_err());
    index.apply(&a, change("keep", None, Op::Add)).unwrap();
    assert!(
        index
            .replace(&a, [("bad/#/x".to_owned(), None, 1)])
            .is_err()
    );
    assert_eq!(index.count("a", "keep", None), 1);
    assert_eq!(index.len(), 1);
}
