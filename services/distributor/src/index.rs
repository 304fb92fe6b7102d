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
#[path = "index_tests.rs"]
mod tests;
