//! The tries handle the deepest paths MQTT allows (32768 levels in 65535
//! bytes) on a small stack: matching, removing and dropping never recurse.

use std::thread;

use throng_topic::{MAX_TOPIC_LEN, RetainedIndex, SubscriptionIndex};

const SMALL_STACK: usize = 256 * 1024;

fn on_small_stack(f: impl FnOnce() + Send + 'static) {
    thread::Builder::new()
        .stack_size(SMALL_STACK)
        .spawn(f)
        .expect("spawn")
        .join()
        .expect("no stack overflow");
}

/// `a/a/…/a`: 32768 levels, 65535 bytes.
fn deepest() -> String {
    let path = vec!["a"; MAX_TOPIC_LEN.div_ceil(2)].join("/");
    assert_eq!(path.len(), MAX_TOPIC_LEN);
    path
}

#[test]
fn subscription_index_on_deep_filters() {
    on_small_stack(|| {
        let deep = deepest();
        let wild = deep.replace('a', "+");
        let all_but_last = &deep[..deep.len() - 1];
        let mut index = SubscriptionIndex::new();
        index.insert(&deep, 1u8, ());
        index.insert(&wild, 2, ());
        index.insert(&format!("{all_but_last}#"), 3, ());
        let mut keys = Vec::new();
        index.for_each_match(&deep, |_, k, _| keys.push(*k));
        keys.sort();
        assert_eq!(keys, [1, 2, 3]);

        assert_eq!(index.remove(&deep, &1), Some(()));
        assert_eq!(index.remove(&wild, &2), Some(()));
        assert_eq!(index.node_count(), MAX_TOPIC_LEN.div_ceil(2));
        // Dropping the rest must not recurse either.
        drop(index);

        let mut index = SubscriptionIndex::new();
        index.insert(&"/".repeat(MAX_TOPIC_LEN), 1u8, ());
        let mut count = 0;
        index.for_each_match(&"/".repeat(MAX_TOPIC_LEN), |_, _, _| count += 1);
        assert_eq!(count, 1);
    });
}

#[test]
fn retained_index_on_deep_topics() {
    on_small_stack(|| {
        let deep = deepest();
        let mut index = RetainedIndex::new();
        index.set(&deep, 1u8);
        index.set("a", 2);
        let mut found = Vec::new();
        index.for_each_match("#", |_, v| found.push(*v));
        found.sort();
        assert_eq!(found, [1, 2]);
        found.clear();
        index.for_each_match(&deep.replace('a', "+"), |_, v| found.push(*v));
        assert_eq!(found, [1]);

        assert_eq!(index.remove(&deep), Some(1));
        assert_eq!(index.node_count(), 1);
        index.set(&deep, 3);
        drop(index);
    });
}
