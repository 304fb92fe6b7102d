//! `RetainedIndex` on the examples of MQTT 5.0 section 4.7 and on its
//! bookkeeping: replacement, removal, counts and pruning.

use throng_topic::RetainedIndex;

fn index_of(topics: &[&str]) -> RetainedIndex<usize> {
    let mut index = RetainedIndex::new();
    for (n, topic) in topics.iter().enumerate() {
        index.set(topic, n);
    }
    index
}

/// The sorted topics `filter` matches.
fn topics(index: &RetainedIndex<usize>, filter: &str) -> Vec<String> {
    let mut found = Vec::new();
    index.for_each_match(filter, |topic, _| found.push(topic.to_owned()));
    found.sort();
    found
}

#[test]
fn spec_examples() {
    let index = index_of(&[
        "sport",
        "sport/",
        "sport/tennis",
        "sport/tennis/player1",
        "sport/tennis/player1/ranking",
        "sport/tennis/player1/score/wimbledon",
        "sport/tennis/player2",
        "/finance",
        "finance",
        "$SYS/monitor/Clients",
        "Accounts",
    ]);
    assert_eq!(
        topics(&index, "sport/tennis/player1/#"),
        [
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "sport/tennis/player1/score/wimbledon"
        ]
    );
    assert_eq!(topics(&index, "sport/#").len(), 7);
    assert_eq!(
        topics(&index, "sport/tennis/+"),
        ["sport/tennis/player1", "sport/tennis/player2"]
    );
    assert_eq!(topics(&index, "sport/+"), ["sport/", "sport/tennis"]);
    assert_eq!(
        topics(&index, "+/+"),
        ["/finance", "sport/", "sport/tennis"]
    );
    assert_eq!(topics(&index, "/+"), ["/finance"]);
    assert_eq!(topics(&index, "+"), ["Accounts", "finance", "sport"]);
    assert_eq!(topics(&index, "#").len(), 10);
    assert!(topics(&index, "+/monitor/Clients").is_empty());
    assert_eq!(topics(&index, "$SYS/#"), ["$SYS/monitor/Clients"]);
    assert_eq!(topics(&index, "$SYS/monitor/+"), ["$SYS/monitor/Clients"]);
    assert!(topics(&index, "ACCOUNTS").is_empty());
    assert_eq!(topics(&index, "Accounts"), ["Accounts"]);
    assert!(topics(&index, "sport/tennis/player3").is_empty());
}

#[test]
fn dollar_rule_only_applies_to_the_first_level() {
    let index = index_of(&["a/$b", "$c", "$c/d", "e"]);
    assert_eq!(topics(&index, "a/+"), ["a/$b"]);
    assert_eq!(topics(&index, "a/#"), ["a/$b"]);
    assert_eq!(topics(&index, "#"), ["a/$b", "e"]);
    assert_eq!(topics(&index, "+/d"), Vec::<String>::new());
    assert_eq!(topics(&index, "$c/#"), ["$c", "$c/d"]);
    assert_eq!(topics(&index, "$c/+"), ["$c/d"]);
}

#[test]
fn empty_levels_are_levels() {
    let index = index_of(&["/", "//", "a//b", "a/b"]);
    assert_eq!(topics(&index, "+/+"), ["/", "a/b"]);
    assert_eq!(topics(&index, "+/+/+"), ["//", "a//b"]);
    assert_eq!(topics(&index, "/#"), ["/", "//"]);
    assert_eq!(topics(&index, "a/+/b"), ["a//b"]);
}

#[test]
fn set_get_replace_remove() {
    let mut index = RetainedIndex::new();
    assert_eq!(index.set("a/b", 1), None);
    assert_eq!(index.set("a/b", 2), Some(1));
    assert_eq!(index.set("a", 3), None);
    assert_eq!(index.len(), 2);
    assert_eq!(index.get("a/b"), Some(&2));
    assert_eq!(index.get("a/c"), None);
    assert_eq!(index.get("a/b/c"), None);
    assert_eq!(index.remove("a/c"), None);
    assert_eq!(index.remove("a"), Some(3));
    assert_eq!(index.remove("a"), None);
    assert_eq!(index.node_count(), 2);
    assert_eq!(index.remove("a/b"), Some(2));
    assert_eq!(index.node_count(), 0);
    assert!(index.is_empty());
}

#[test]
fn remove_prunes_only_what_is_left_empty() {
    let mut index = index_of(&["a/b/c/d", "a/x"]);
    assert_eq!(index.node_count(), 5);
    index.remove("a/b/c/d");
    assert_eq!(index.node_count(), 2);
    assert_eq!(topics(&index, "#"), ["a/x"]);
}
