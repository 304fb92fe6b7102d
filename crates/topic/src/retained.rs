//! `RetainedIndex`: the level trie of retained messages by topic name that the
//! broker walks for every new subscription to find what to send it.

use std::collections::HashMap;
use std::collections::hash_map::{self, IntoValues};
use std::fmt;
use std::str::Split;

use crate::trie::{self, TrieNode};

/// At most one `V` per topic name, found by topic filter.
///
/// A node per topic level, children in a hash map. A lookup follows the
/// filter's levels: an exact level visits one child, `+` every child, `#` the
/// whole subtree including the node it hangs from. Topic names must be valid
/// ([`crate::validate_topic_name`]).
pub struct RetainedIndex<V> {
    root: Node<V>,
    len: usize,
}

struct Node<V> {
    children: HashMap<Box<str>, Node<V>>,
    /// Boxed so that the many nodes without a message stay small.
    retained: Option<Box<Retained<V>>>,
}

struct Retained<V> {
    /// The whole topic name, handed to the visitor.
    topic: Box<str>,
    value: V,
}

/// A wildcard whose matches are still to be visited, with where it stands.
enum Frame<'a, V> {
    /// Children matched by `+`, each to be walked with the filter's levels
    /// after the `+`.
    Plus {
        children: hash_map::Iter<'a, Box<str>, Node<V>>,
        rest: Split<'a, char>,
        skip_dollar: bool,
    },
    /// Children below a `#`: each is visited with its whole subtree.
    Subtree {
        children: hash_map::Iter<'a, Box<str>, Node<V>>,
        skip_dollar: bool,
    },
}

impl<V> RetainedIndex<V> {
    /// An empty index.
    pub fn new() -> Self {
        Self {
            root: Node::new(),
            len: 0,
        }
    }

    /// The number of topics holding a value.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no topic holds a value.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The number of trie nodes below the root, to check that removal prunes.
    #[doc(hidden)]
    pub fn node_count(&self) -> usize {
        trie::count_nodes(&self.root)
    }

    /// Stores `value` for `topic`, returning the value it replaced.
    pub fn set(&mut self, topic: &str, value: V) -> Option<V> {
        debug_assert!(
            crate::validate_topic_name(topic).is_ok(),
            "invalid topic name {topic:?}"
        );
        let node = trie::find_or_create(&mut self.root, topic);
        match &mut node.retained {
            Some(retained) => Some(std::mem::replace(&mut retained.value, value)),
            None => {
                node.retained = Some(Box::new(Retained {
                    topic: topic.into(),
                    value,
                }));
                self.len += 1;
                None
            }
        }
    }

    /// Removes the value for `topic`, returning it, and drops the trie nodes it
    /// leaves empty.
    pub fn remove(&mut self, topic: &str) -> Option<V> {
        let removed = trie::remove_at(
            &mut self.root,
            topic,
            |node| node.retained.is_some().then_some(true),
            |node| node.retained.take().map(|retained| retained.value),
        )?;
        self.len -= 1;
        Some(removed)
    }

    /// The value stored for `topic`.
    pub fn get(&self, topic: &str) -> Option<&V> {
        let retained = trie::find(&self.root, topic)?.retained.as_ref()?;
        Some(&retained.value)
    }

    /// Calls `f(topic, value)` for every stored topic that `filter` matches,
    /// each once, in no particular order. A filter whose first level is `+` or
    /// `#` does not match topics starting with `$`.
    ///
    /// Memory grows with the depth of the walk, not with the number of matches.
    pub fn for_each_match(&self, filter: &str, mut f: impl FnMut(&str, &V)) {
        let mut stack = Vec::new();
        walk(&self.root, filter.split('/'), true, &mut stack, &mut f);
        while let Some(frame) = stack.last_mut() {
            match frame {
                Frame::Plus {
                    children,
                    rest,
                    skip_dollar,
                } => match next_child(children, *skip_dollar) {
                    Some(child) => {
                        let rest = rest.clone();
                        walk(child, rest, false, &mut stack, &mut f);
                    }
                    None => {
                        stack.pop();
                    }
                },
                Frame::Subtree {
                    children,
                    skip_dollar,
                } => match next_child(children, *skip_dollar) {
                    Some(child) => {
                        child.visit(&mut f);
                        if !child.children.is_empty() {
                            stack.push(Frame::Subtree {
                                children: child.children.iter(),
                                skip_dollar: false,
                            });
                        }
                    }
                    None => {
                        stack.pop();
                    }
                },
            }
        }
    }
}

/// Follows `levels` down from `node` while they are exact, visiting the node
/// they end at; at a wildcard, leaves a frame for the caller to go on with.
fn walk<'a, V>(
    mut node: &'a Node<V>,
    mut levels: Split<'a, char>,
    mut at_root: bool,
    stack: &mut Vec<Frame<'a, V>>,
    f: &mut impl FnMut(&str, &V),
) {
    loop {
        match levels.next() {
            None => {
                node.visit(f);
                return;
            }
            Some("#") => {
                // `a/#` matches `a` too; the root is no topic.
                node.visit(f);
                if !node.children.is_empty() {
                    stack.push(Frame::Subtree {
                        children: node.children.iter(),
                        skip_dollar: at_root,
                    });
                }
                return;
            }
            Some("+") => {
                if !node.children.is_empty() {
                    stack.push(Frame::Plus {
                        children: node.children.iter(),
                        rest: levels,
                        skip_dollar: at_root,
                    });
                }
                return;
            }
            Some(level) => match node.children.get(level) {
                Some(child) => {
                    node = child;
                    at_root = false;
                }
                None => return,
            },
        }
    }
}

/// The next child, passing over `$` levels when a wildcard stands first.
fn next_child<'a, V>(
    children: &mut hash_map::Iter<'a, Box<str>, Node<V>>,
    skip_dollar: bool,
) -> Option<&'a Node<V>> {
    children
        .find(|(level, _)| !(skip_dollar && level.starts_with('$')))
        .map(|(_, child)| child)
}

impl<V> Default for RetainedIndex<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> fmt::Debug for RetainedIndex<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetainedIndex")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl<V> Node<V> {
    fn new() -> Self {
        Self {
            children: HashMap::new(),
            retained: None,
        }
    }

    fn visit(&self, f: &mut impl FnMut(&str, &V)) {
        if let Some(retained) = &self.retained {
            f(&retained.topic, &retained.value);
        }
    }
}

impl<V> Drop for Node<V> {
    fn drop(&mut self) {
        trie::teardown(self);
    }
}

impl<V> TrieNode for Node<V> {
    type Children = IntoValues<Box<str>, Node<V>>;

    fn child(&self, level: &str) -> Option<&Self> {
        self.children.get(level)
    }

    fn child_mut(&mut self, level: &str) -> Option<&mut Self> {
        self.children.get_mut(level)
    }

    fn child_or_insert(&mut self, level: &str) -> &mut Self {
        if !self.children.contains_key(level) {
            self.children.insert(level.into(), Self::new());
        }
        self.children.get_mut(level).expect("child inserted above")
    }

    fn take_child(&mut self, level: &str) -> Option<Self> {
        self.children.remove(level)
    }

    fn child_count(&self) -> usize {
        self.children.len()
    }

    fn children(&self) -> impl Iterator<Item = &Self> {
        self.children.values()
    }

    fn take_children(&mut self) -> Self::Children {
        std::mem::take(&mut self.children).into_values()
    }

    fn has_payload(&self) -> bool {
        self.retained.is_some()
    }
}
