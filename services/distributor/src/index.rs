//! `ClusterIndex`: the distributor's view of which handlers have which
//! subscriptions, built from the handlers' `SubscriptionDelta`s.
//!
//! A handler sends one ADD / REMOVE per session subscription, so several
//! sessions on one handler may hold the same (filter, share group): the index
//! keeps a count per (handler, filter, group) and forgets the entry when the
//! count reaches zero. Matching goes through a [`SubscriptionIndex`] keyed by
//! (handler, group), so routing a topic costs what the matching filters cost,
//! not a scan of every filter.

use std::collections::HashMap;
use std::sync::Arc;

use throng_topic::{SubscriptionIndex, TopicError, parse_shared, validate_filter};

/// What a [`Change`] does to a handler's count for its (filter, group).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// One more subscription on the handler.
    Add,
    /// One subscription fewer on the handler; unknown entries are ignored.
    Remove,
}

/// One subscription change reported by a handler.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Change {
    /// Topic filter without any `$share/<group>/` prefix.
    pub filter: String,
    /// Shared-subscription group, `None` for an ordinary subscription.
    pub share_group: Option<String>,
    /// Add or remove.
    pub op: Op,
}

/// Where a publish on one topic has to go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Route {
    /// Every handler with a matching non-shared subscription, except the
    /// sender; sorted and deduplicated.
    pub handlers: Vec<Arc<str>>,
    /// For each matching (group, filter), sorted: the handlers with members in
    /// that group (the sender included), sorted. The caller picks one handler
    /// per entry.
    pub shared: Vec<(String, String, Vec<Arc<str>>)>,
}

/// Key of an entry in the trie: (handler, share group).
type Key = (Arc<str>, Option<Arc<str>>);
/// Key of an entry in a handler's own table: (filter, share group).
type Entry = (Arc<str>, Option<Arc<str>>);

/// The cluster-wide subscription index. See the module documentation.
#[derive(Debug, Default)]
pub struct ClusterIndex {
    trie: SubscriptionIndex<Key, u32>,
    /// Per handler, every (filter, group) it holds with its count (never 0).
    handlers: HashMap<Arc<str>, HashMap<Entry, u32>>,
    /// Per filter, the handlers holding it with how many groups (never 0): what
    /// the interest sets are made of.
    holders: HashMap<Arc<str>, HashMap<Arc<str>, u32>>,
}

fn check(filter: &str, group: Option<&str>) -> Result<(), TopicError> {
    match group {
        None => validate_filter(filter),
        Some(group) => parse_shared(&format!("$share/{group}/{filter}")).map(|_| ()),
    }
}

impl ClusterIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// The handlers that hold at least one subscription, sorted.
    pub fn handlers(&self) -> Vec<Arc<str>> {
        let mut out: Vec<_> = self.handlers.keys().cloned().collect();
        out.sort();
        out
    }

    /// The number of (handler, filter, group) entries.
    pub fn len(&self) -> usize {
        self.trie.len()
    }

    /// Whether no handler holds anything.
    pub fn is_empty(&self) -> bool {
        self.trie.is_empty()
    }

    /// The count of `handler`'s subscriptions to (`filter`, `group`).
    pub fn count(&self, handler: &str, filter: &str, group: Option<&str>) -> u32 {
        let Some(table) = self.handlers.get(handler) else {
            return 0;
        };
        table
            .get(&(Arc::from(filter), group.map(Arc::from)))
            .copied()
            .unwrap_or(0)
    }

    /// Applies one change from `handler`. A malformed filter or group is
    /// rejected and changes nothing; removing an entry the handler does not
    /// hold is a no-op.
    pub fn apply(&mut self, handler: &Arc<str>, change: Change) -> Result<(), TopicError> {
        check(&change.filter, change.share_group.as_deref())?;
        let filter: Arc<str> = change.filter.into();
        let group: Option<Arc<str>> = change.share_group.map(Arc::from);
        match change.op {
            Op::Add => self.add(handler, filter, group, 1),
            Op::Remove => self.remove_one(handler, filter, group),
        }
        Ok(())
    }

    /// Replaces everything known for `handler` with `snapshot`, a list of
    /// (filter, group, count). Entries repeated in the snapshot add up;
    /// zero counts are ignored. On a malformed entry nothing changes.
    pub fn replace(
        &mut self,
        handler: &Arc<str>,
        snapshot: impl IntoIterator<Item = (String, Option<String>, u32)>,
    ) -> Result<(), TopicError> {
        let mut entries = Vec::new();
        for (filter, group, count) in snapshot {
            check(&filter, group.as_deref())?;
            if count > 0 {
                entries.push((Arc::<str>::from(filter), group.map(Arc::<str>::from), count));
            }
        }
        self.remove_handler(handler);
        for (filter, group, count) in entries {
            self.add(handler, filter, group, count);
        }
        Ok(())
    }

    /// Forgets every subscription of `handler`.
    pub fn remove_handler(&mut self, handler: &str) {
        let Some((handler, table)) = self.handlers.remove_entry(handler) else {
            return;
        };
        for ((filter, group), _) in table {
            self.trie.remove(&filter, &(handler.clone(), group));
            self.unhold(&filter, &handler);
        }
    }

    /// The handlers holding `filter` (in any group or none), sorted.
    pub fn holders(&self, filter: &str) -> Vec<Arc<str>> {
        let mut out: Vec<Arc<str>> = self
            .holders
            .get(filter)
            .map(|by| by.keys().cloned().collect())
            .unwrap_or_default();
        out.sort();
        out
    }

    /// The filters `handler` holds (in any group or none).
    pub fn filters_of(&self, handler: &str) -> Vec<Arc<str>> {
        let mut out: Vec<Arc<str>> = self
            .handlers
            .get(handler)
            .map(|table| table.keys().map(|(filter, _)| filter.clone()).collect())
            .unwrap_or_default();
        out.sort();
        out.dedup();
        out
    }

    fn add(&mut self, handler: &Arc<str>, filter: Arc<str>, group: Option<Arc<str>>, n: u32) {
        let table = self.handlers.entry(handler.clone()).or_default();
        let count = table.entry((filter.clone(), group.clone())).or_insert(0);
        if *count == 0 {
            *self
                .holders
                .entry(filter.clone())
                .or_default()
                .entry(handler.clone())
                .or_insert(0) += 1;
        }
        *count = count.saturating_add(n);
        self.trie.insert(&filter, (handler.clone(), group), *count);
    }

    fn unhold(&mut self, filter: &Arc<str>, handler: &Arc<str>) {
        let Some(by) = self.holders.get_mut(filter) else {
            return;
        };
        if let Some(groups) = by.get_mut(handler) {
            *groups -= 1;
            if *groups == 0 {
                by.remove(handler);
            }
        }
        if by.is_empty() {
            self.holders.remove(filter);
        }
    }

    fn remove_one(&mut self, handler: &Arc<str>, filter: Arc<str>, group: Option<Arc<str>>) {
        let Some(table) = self.handlers.get_mut(handler) else {
            return;
        };
        let entry = (filter, group);
        let Some(count) = table.get_mut(&entry) else {
            return;
        };
        *count -= 1;
        let count = *count;
        let (filter, group) = entry;
        if count == 0 {
            table.remove(&(filter.clone(), group.clone()));
            if table.is_empty() {
                self.handlers.remove(handler);
            }
            self.trie.remove(&filter, &(handler.clone(), group));
            self.unhold(&filter, handler);
        } else {
            self.trie.insert(&filter, (handler.clone(), group), count);
        }
    }

    /// Where a publish on `topic` from handler `from` (if any) has to go.
    pub fn route(&self, topic: &str, from: Option<&str>) -> Route {
        let mut handlers: Vec<Arc<str>> = Vec::new();
        let mut shared: HashMap<(Arc<str>, String), Vec<Arc<str>>> = HashMap::new();
        self.trie
            .for_each_match(topic, |filter, (handler, group), _| match group {
                None => {
                    if from != Some(&**handler) {
                        handlers.push(handler.clone());
                    }
                }
                Some(group) => shared
                    .entry((group.clone(), filter.to_owned()))
                    .or_default()
                    .push(handler.clone()),
            });
        handlers.sort();
        handlers.dedup();
        let mut shared: Vec<(String, String, Vec<Arc<str>>)> = shared
            .into_iter()
            .map(|((group, filter), mut members)| {
                members.sort();
                members.dedup();
                (group.to_string(), filter, members)
            })
            .collect();
        shared.sort();
        Route { handlers, shared }
    }

    /// The filters (without `$share/` prefix, sorted, deduplicated) that
    /// handlers other than `handler` subscribe to: what `handler` checks before
    /// forwarding a publish to a distributor.
    pub fn interest_for(&self, handler: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .holders
            .iter()
            .filter(|(_, by)| by.keys().any(|h| &**h != handler))
            .map(|(filter, _)| filter.to_string())
            .collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
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
}
