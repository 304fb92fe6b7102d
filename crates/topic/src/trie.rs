//! Machinery the two level tries share: finding or creating the node for a
//! path, removing from a node while pruning the nodes left empty, counting
//! nodes, and tearing a trie down.
//!
//! Every walk here is a loop, never recursion: a path may have 32768 levels
//! (`/` repeated within 65535 bytes), and recursing that deep, including in a
//! derived `Drop`, would overflow a thread's stack.

/// A node of a level trie: children keyed by level, and a payload.
pub(crate) trait TrieNode: Sized {
    /// The children taken out of a node, to tear it down.
    type Children: Iterator<Item = Self>;

    fn child(&self, level: &str) -> Option<&Self>;
    fn child_mut(&mut self, level: &str) -> Option<&mut Self>;
    fn child_or_insert(&mut self, level: &str) -> &mut Self;
    fn take_child(&mut self, level: &str) -> Option<Self>;
    fn child_count(&self) -> usize;
    fn children(&self) -> impl Iterator<Item = &Self>;
    /// Takes every child out, leaving the node without children.
    fn take_children(&mut self) -> Self::Children;
    fn has_payload(&self) -> bool;
}

/// The node at `path`, created with its missing ancestors.
pub(crate) fn find_or_create<'n, N: TrieNode>(root: &'n mut N, path: &str) -> &'n mut N {
    let mut node = root;
    for level in path.split('/') {
        node = node.child_or_insert(level);
    }
    node
}

/// The node at `path`, if there is one.
pub(crate) fn find<'n, N: TrieNode>(root: &'n N, path: &str) -> Option<&'n N> {
    let mut node = root;
    for level in path.split('/') {
        node = node.child(level)?;
    }
    Some(node)
}

/// Removes something from the payload of the node at `path`, then drops every
/// node that is left with neither payload nor children.
///
/// `empties(node)` is `None` when `remove(node)` would find nothing to remove,
/// else whether the payload will be empty afterwards; `remove` must agree.
pub(crate) fn remove_at<N: TrieNode, R>(
    root: &mut N,
    path: &str,
    empties: impl FnOnce(&N) -> Option<bool>,
    remove: impl FnOnce(&mut N) -> Option<R>,
) -> Option<R> {
    // Read-only pass: find the target and the deepest node on the path that
    // outlives the removal (the root, or one with a payload or another child).
    let mut keep_depth = 0;
    let mut node: &N = root;
    for (depth, level) in path.split('/').enumerate() {
        if depth > 0 && (node.has_payload() || node.child_count() > 1) {
            keep_depth = depth;
        }
        node = node.child(level)?;
    }
    let prune = empties(node)? && node.child_count() == 0;

    let mut levels = path.split('/');
    let mut node = root;
    if !prune {
        for level in levels {
            node = node.child_mut(level)?;
        }
        return remove(node);
    }
    // Cut the chain of nodes that will hold nothing off the node that stays,
    // take the payload out of its end, and drop the chain.
    for level in levels.by_ref().take(keep_depth) {
        node = node.child_mut(level)?;
    }
    let mut chain = node.take_child(levels.next()?)?;
    let mut target = &mut chain;
    for level in levels {
        target = target.child_mut(level)?;
    }
    remove(target)
}

/// How many nodes hang below `root`.
pub(crate) fn count_nodes<N: TrieNode>(root: &N) -> usize {
    let mut count = 0;
    let mut pending: Vec<&N> = root.children().collect();
    while let Some(node) = pending.pop() {
        count += 1;
        pending.extend(node.children());
    }
    count
}

/// Drops everything below `node` depth-first, holding one iterator of children
/// per level, so a node's `Drop` can call this instead of recursing.
pub(crate) fn teardown<N: TrieNode>(node: &mut N) {
    if node.child_count() == 0 {
        return;
    }
    let mut stack = vec![node.take_children()];
    while let Some(children) = stack.last_mut() {
        match children.next() {
            Some(mut child) => {
                if child.child_count() > 0 {
                    stack.push(child.take_children());
                }
            }
            None => {
                stack.pop();
            }
        }
    }
}
