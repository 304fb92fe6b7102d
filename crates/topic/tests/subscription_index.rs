//! `SubscriptionIndex` on the examples of MQTT 5.0 section 4.7 and on its
//! bookkeeping: replacement, removal, counts and pruning.

use throng_topic::SubscriptionIndex;

/// The sorted (filter, key) pairs matching `topic`.
fn matching(index: &SubscriptionIndex<u32, &'static str>, topic: &str) -> Vec<(String, u32)> {
    let mut found = Vec::new();
    index.for_each_match(topic, |filter, key, _| {
        found.push((filter.to_owned(), *key))
    });
    found.sort();
    found
}

fn filters(index: &SubscriptionIndex<u32, &'static str>, topic: &str) -> Vec<String> {
    matching(index, topic).into_iter().map(|(f, _)| f).collect()
}

fn index_of(filters: &[&str]) -> SubscriptionIndex<u32, &'static str> {
    let mut index = SubscriptionIndex::new();
    for filter in filters {
        index.insert(filter, 1, "v");
    }
    index
}

#[test]
fn spec_examples() {
    let index = index_of(&[
        "sport/tennis/player1/#",
        "sport/#",
        "sport/tennis/+",
        "sport/+",
        "+/+",
        "/+",
        "+",
        "#",
        "+/monitor/Clients",
        "$SYS/#",
        "$SYS/monitor/+",
        "ACCOUNTS",
        "/finance",
    ]);
    assert_eq!(
        filters(&index, "sport/tennis/player1"),
        ["#", "sport/#", "sport/tennis/+", "sport/tennis/player1/#"]
    );
    assert_eq!(
        filters(&index, "sport/tennis/player1/score/wimbledon"),
        ["#", "sport/#", "sport/tennis/player1/#"]
    );
    assert_eq!(filters(&index, "sport"), ["#", "+", "sport/#"]);
    assert_eq!(
        filters(&index, "sport/"),
        ["#", "+/+", "sport/#", "sport/+"]
    );
    assert_eq!(filters(&index, "/finance"), ["#", "+/+", "/+", "/finance"]);
    assert_eq!(
        filters(&index, "$SYS/monitor/Clients"),
        ["$SYS/#", "$SYS/monitor/+"]
    );
    assert_eq!(filters(&index, "$SYS"), ["$SYS/#"]);
    assert_eq!(filters(&index, "Accounts"), ["#", "+"]);
    assert_eq!(
        filters(&index, "x/monitor/Clients"),
        ["#", "+/monitor/Clients"]
    );
}

#[test]
fn dollar_rule_only_applies_to_the_first_level() {
    let index = index_of(&["a/+", "a/#", "+/$x", "#"]);
    assert_eq!(filters(&index, "a/$b"), ["#", "a/#", "a/+"]);
    assert_eq!(filters(&index, "b/$x"), ["#", "+/$x"]);
    assert!(filters(&index, "$x").is_empty());
}

#[test]
fn empty_levels_are_levels() {
    let index = index_of(&["a//b", "a/+/b", "a/b", "+/+/+", "/", "+/+"]);
    assert_eq!(filters(&index, "a//b"), ["+/+/+", "a/+/b", "a//b"]);
    assert_eq!(filters(&index, "a/b"), ["+/+", "a/b"]);
    assert_eq!(filters(&index, "/"), ["+/+", "/"]);
    assert_eq!(filters(&index, "//"), ["+/+/+"]);
}

#[test]
fn insert_replaces_the_value_for_the_same_filter_and_key() {
    let mut index = SubscriptionIndex::new();
    assert_eq!(index.insert("a/+", 1, "first"), None);
    assert_eq!(index.insert("a/+", 2, "other"), None);
    assert_eq!(index.insert("a/+", 1, "second"), Some("first"));
    assert_eq!(index.insert("a/#", 1, "hash"), None);
    assert_eq!(index.len(), 3);
    assert_eq!(index.filter_count(), 2);
    assert_eq!(index.get("a/+", &1), Some(&"second"));
    assert_eq!(index.get("a/+", &3), None);
    assert_eq!(index.get("a", &1), None);
    let mut seen = Vec::new();
    index.for_each_match("a/b", |filter, key, value| {
        seen.push((filter.to_owned(), *key, *value));
    });
    seen.sort();
    assert_eq!(
        seen,
        [
            ("a/#".to_owned(), 1, "hash"),
            ("a/+".to_owned(), 1, "second"),
            ("a/+".to_owned(), 2, "other"),
        ]
    );
}

#[test]
fn remove_returns_the_value_and_prunes() {
    let mut index = SubscriptionIndex::new();
    index.insert("a/b/c", 1, "abc");
    index.insert("a/b", 1, "ab");
    index.insert("a/+/c/#", 2, "wild");
    assert_eq!(index.node_count(), 6); // a, a/b, a/b/c, a/+, a/+/c, a/+/c/#

    assert_eq!(index.remove("a/b/c", &2), None);
    assert_eq!(index.remove("a/b/c/d", &1), None);
    assert_eq!(index.remove("x", &1), None);
    assert_eq!(index.len(), 3);

    assert_eq!(index.remove("a/b/c", &1), Some("abc"));
    assert_eq!(index.node_count(), 5);
    assert_eq!(index.remove("a/b/c", &1), None);
    // `a/b` keeps its node because it still has an entry.
    assert_eq!(matching(&index, "a/b"), [("a/b".to_owned(), 1)]);

    assert_eq!(index.remove("a/+/c/#", &2), Some("wild"));
    assert_eq!(index.node_count(), 2);
    assert_eq!(index.remove("a/b", &1), Some("ab"));
    assert_eq!(index.node_count(), 0);
    assert!(index.is_empty());
    assert_eq!(index.filter_count(), 0);
    assert!(matching(&index, "a/b/c").is_empty());
}

#[test]
fn removing_a_parent_keeps_its_children() {
    let mut index = SubscriptionIndex::new();
    index.insert("a", 1, "a");
    index.insert("a/b", 1, "ab");
    assert_eq!(index.remove("a", &1), Some("a"));
    assert_eq!(index.node_count(), 2);
    assert_eq!(matching(&index, "a/b"), [("a/b".to_owned(), 1)]);
    assert_eq!(index.filter_count(), 1);
}

#[test]
fn many_children_at_one_level() {
    let mut index = SubscriptionIndex::new();
    for id in 0..10_000u32 {
        index.insert(&format!("devices/{id}/cmd"), id, "v");
    }
    index.insert("devices/+/cmd", 0, "all");
    assert_eq!(
        matching(&index, "devices/4242/cmd"),
        [
            ("devices/+/cmd".to_owned(), 0),
            ("devices/4242/cmd".to_owned(), 4242)
        ]
    );
    assert!(matching(&index, "devices/10000/cmd").len() == 1);
    for id in 0..10_000u32 {
        assert_eq!(index.remove(&format!("devices/{id}/cmd"), &id), Some("v"));
    }
    assert_eq!(index.node_count(), 3);
    assert_eq!(index.len(), 1);
}
