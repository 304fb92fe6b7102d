//! Message ids of recently accepted server-to-device messages. The downlink path
//! is at least once: a distributor that dies after a handler accepted a message
//! but before XACK leaves the entry pending, and another distributor delivers it
//! again. The same message id seen again within the window is acknowledged
//! without a second delivery.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

pub struct RecentIds {
    capacity: usize,
    ids: HashSet<Arc<str>>,
    order: VecDeque<Arc<str>>,
}

impl RecentIds {
    pub fn new(capacity: usize) -> RecentIds {
        RecentIds {
            capacity: capacity.max(1),
            ids: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    /// Remembers `id`, forgetting the oldest beyond the capacity.
    pub fn insert(&mut self, id: &str) {
        let id: Arc<str> = Arc::from(id);
        if !self.ids.insert(id.clone()) {
            return;
        }
        self.order.push_back(id);
        if self.order.len() > self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.ids.remove(&old);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_up_to_capacity_then_forgets_the_oldest() {
        let mut recent = RecentIds::new(2);
        recent.insert("a");
        recent.insert("b");
        recent.insert("a");
        assert!(recent.contains("a") && recent.contains("b"));
        recent.insert("c");
        assert!(!recent.contains("a"));
        assert!(recent.contains("b") && recent.contains("c"));
    }
}
