//! `SubscriptionIndex`: the level trie of subscription filters that the broker
//! walks for every PUBLISH to find the subscriptions matching its topic.

use std::collections::HashMap;
use std::collections::hash_map::IntoValues;
use std::fmt;
use std::hash::Hash;
use std::str::Split;

use crate::trie::{self, TrieNode};

/// Subscriptions keyed by (filter, `K`), each holding a `V`, found by topic.
///
/// `K` is whatever tells subscriptions to one filter apart (a session id, a
/// share group); `V` is what a delivery needs (QoS, options, identifiers).
///
/// A node per filter level: exact levels in a hash map, `+` and `#` in their
/// own slots. A lookup follows the topic's levels down the exact, `+` and `#`
/// branches only, so its cost depends on the topic and the matching filters,
/// not on how many filters there are. Filters must be valid
/// ([`crate::validate_filter`]); a shared subscription is inserted under its
/// inner filter.
pub struct SubscriptionIndex<K, V> {
    root: Node<K, V>,
    len: usize,
    filters: usize,
}

struct Node<K, V> {
    children: HashMap<Box<str>, Node<K, V>>,
    plus: Option<Box<Node<K, V>>>,
    hash: Option<Box<Node<K, V>>>,
    /// Boxed so that the many nodes without subscriptions stay small.
    subs: Option<Box<Subscriptions<K, V>>>,
}

struct Subscriptions<K, V> {
    /// The whole filter, handed to the visitor.
    filter: Box<str>,
    /// Never empty: the box is dropped with the last entry.
    entries: HashMap<K, V>,
}

impl<K, V> SubscriptionIndex<K, V> {
    /// An empty index.
    pub fn new() -> Self {
        Self {
            root: Node::new(),
            len: 0,
            filters: 0,
        }
    }

    /// The number of (filter, key) entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The number of distinct filters with at least one entry.
    pub fn filter_count(&self) -> usize {
        self.filters
    }

    /// The number of trie nodes below the root, to check that removal prunes.
    #[doc(hidden)]
    pub fn node_count(&self) -> usize {
        trie::count_nodes(&self.root)
    }

    /// Calls `f(filter, key, value)` for every entry whose filter matches
    /// `topic`, each once, in no particular order. A topic starting with `$`
    /// is not matched by filters whose first level is `+` or `#`.
    ///
    /// Allocates only when the walk must come back to a `+` branch.
    pub fn for_each_match(&self, topic: &str, mut f: impl FnMut(&str, &K, &V)) {
        let wildcards_at_root = !topic.starts_with('$');
        // `+` branches still to walk, each with the topic levels after the one
        // it matched.
        let mut pending: Vec<(&Node<K, V>, Split<'_, char>)> = Vec::new();
        let mut node = &self.root;
        let mut levels = topic.split('/');
        let mut at_root = true;
        loop {
            match levels.next() {
                Some(level) => {
                    if wildcards_at_root || !at_root {
                        if let Some(hash) = &node.hash {
                            hash.visit(&mut f);
                        }
                        if let Some(plus) = &node.plus {
                            pending.push((plus, levels.clone()));
                        }
                    }
                    if let Some(child) = node.children.get(level) {
                        node = child;
                        at_root = false;
                        continue;
                    }
                }
                None => {
                    node.visit(&mut f);
                    // `a/#` matches `a` too.
                    if let Some(hash) = &node.hash {
                        hash.visit(&mut f);
                    }
                }
            }
            let Some((next, rest)) = pending.pop() else {
                return;
            };
            node = next;
            levels = rest;
            at_root = false;
        }
    }
}

impl<K: Eq + Hash, V> SubscriptionIndex<K, V> {
    /// Adds or replaces the entry for (`filter`, `key`), returning the value it
    /// replaced.
    pub fn insert(&mut self, filter: &str, key: K, value: V) -> Option<V> {
        debug_assert!(
            crate::validate_filter(filter).is_ok(),
            "invalid filter {filter:?}"
        );
        let node = trie::find_or_create(&mut self.root, filter);
        let subs = node.subs.get_or_insert_with(|| {
            self.filters += 1;
            Box::new(Subscriptions {
                filter: filter.into(),
                entries: HashMap::new(),
            })
        });
        let old = subs.entries.insert(key, value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Removes the entry for (`filter`, `key`), returning its value, and drops
    /// the trie nodes it leaves empty.
    pub fn remove(&mut self, filter: &str, key: &K) -> Option<V> {
        let mut filter_gone = false;
        let removed = trie::remove_at(
            &mut self.root,
            filter,
            |node| {
                let subs = node.subs.as_ref()?;
                subs.entries
                    .contains_key(key)
                    .then_some(subs.entries.len() == 1)
            },
            |node| {
                let subs = node.subs.as_mut()?;
                let value = subs.entries.remove(key)?;
                if subs.entries.is_empty() {
                    node.subs = None;
                    filter_gone = true;
                }
                Some(value)
            },
        )?;
        self.len -= 1;
        if filter_gone {
            self.filters -= 1;
        }
        Some(removed)
    }

    /// The value of the entry for (`filter`, `key`).
    pub fn get(&self, filter: &str, key: &K) -> Option<&V> {
        trie::find(&self.root, filter)?
            .subs
            .as_ref()?
            .entries
            .get(key)
    }
}

impl<K, V> Default for SubscriptionIndex<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K, V> fmt::Debug for SubscriptionIndex<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionIndex")
            .field("len", &self.len)
            .field("filters", &self.filters)
            .finish_non_exhaustive()
    }
}

impl<K, V> Node<K, V> {
    fn new() -> Self {
        Self {
            children: HashMap::new(),
            plus: None,
            hash: None,
            subs: None,
        }
    }

    fn visit(&self, f: &mut impl FnMut(&str, &K, &V)) {
        if let Some(subs) = &self.subs {
            for (key, value) in &subs.entries {
                f(&subs.filter, key, value);
            }
        }
    }
}

impl<K, V> Drop for Node<K, V> {
    fn drop(&mut self) {
        trie::teardown(self);
    }
}

/// The children taken out of a node: the wildcard ones, then the exact ones.
struct Children<K, V> {
    wildcards: [Option<Box<Node<K, V>>>; 2],
    exact: IntoValues<Box<str>, Node<K, V>>,
}

impl<K, V> Iterator for Children<K, V> {
    type Item = Node<K, V>;

    fn next(&mut self) -> Option<Node<K, V>> {
        match self.wildcards.iter_mut().find_map(Option::take) {
            Some(node) => Some(*node),
            None => self.exact.next(),
        }
    }
}

impl<K, V> TrieNode for Node<K, V> {
    type Children = Children<K, V>;

    fn child(&self, level: &str) -> Option<&Self> {
        match level {
            "+" => self.plus.as_deref(),
            "#" => self.hash.as_deref(),
            _ => self.children.get(level),
        }
    }

    fn child_mut(&mut self, level: &str) -> Option<&mut Self> {
        match level {
            "+" => self.plus.as_deref_mut(),
            "#" => self.hash.as_deref_mut(),
            _ => self.children.get_mut(level),
        }
    }

    fn child_or_insert(&mut self, level: &str) -> &mut Self {
        match level {
            "+" => self.plus.get_or_insert_with(|| Box::new(Self::new())),
            "#" => self.hash.get_or_insert_with(|| Box::new(Self::new())),
            _ => {
                if !self.children.contains_key(level) {
                    self.children.insert(level.into(), Self::new());
                }
                self.children.get_mut(level).expect("child inserted above")
            }
        }
    }

    fn take_child(&mut self, level: &str) -> Option<Self> {
        match level {
            "+" => self.plus.take().map(|node| *node),
            "#" => self.hash.take().map(|node| *node),
            _ => self.children.remove(level),
        }
    }

    fn child_count(&self) -> usize {
        self.children.len() + usize::from(self.plus.is_some()) + usize::from(self.hash.is_some())
    }

    fn children(&self) -> impl Iterator<Item = &Self> {
        let wildcards = [self.plus.as_deref(), self.hash.as_deref()];
        wildcards
            .into_iter()
            .flatten()
            .chain(self.children.values())
    }

    fn take_children(&mut self) -> Children<K, V> {
        Children {
            wildcards: [self.plus.take(), self.hash.take()],
            exact: std::mem::take(&mut self.children).into_values(),
        }
    }

    fn has_payload(&self) -> bool {
        self.subs.is_some()
    }
}
