//! Whether one topic filter matches one topic name (MQTT 5.0 section 4.7): the
//! reference semantics that both tries reproduce.

/// Whether `filter` matches `topic`. Both are taken as valid (see
/// [`crate::validate_filter`] and [`crate::validate_topic_name`]); on invalid
/// input the answer is unspecified but there is no panic.
///
/// - levels are split on `/` and compared exactly (case-sensitive); empty levels
///   are levels, so `a//b` has three;
/// - `+` matches exactly one level, which may be empty;
/// - `#` matches any number of levels, including none: `sport/#` matches
///   `sport`;
/// - a topic starting with `$` is not matched by a filter whose first level is
///   `+` or `#` (MQTT-4.7.2-1).
pub fn matches(filter: &str, topic: &str) -> bool {
    let mut filter_levels = filter.split('/');
    let mut topic_levels = topic.split('/');
    if topic.starts_with('$') && matches!(filter_levels.clone().next(), Some("+" | "#")) {
        return false;
    }
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(t)) if f == t => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[track_caller]
    fn yes(filter: &str, topic: &str) {
        assert!(matches(filter, topic), "{filter:?} should match {topic:?}");
    }

    #[track_caller]
    fn no(filter: &str, topic: &str) {
        assert!(
            !matches(filter, topic),
            "{filter:?} should not match {topic:?}"
        );
    }

    #[test]
    fn multi_level_wildcard() {
        // 4.7.1.2
        yes("sport/tennis/player1/#", "sport/tennis/player1");
        yes("sport/tennis/player1/#", "sport/tennis/player1/ranking");
        yes(
            "sport/tennis/player1/#",
            "sport/tennis/player1/score/wimbledon",
        );
        yes("sport/#", "sport");
        yes("#", "sport/tennis");
        yes("#", "/");
        yes("#", "a");
        no("sport/tennis/player1/#", "sport/tennis/player2");
        no("sport/tennis/player1/#", "sport/tennis");
    }

    #[test]
    fn single_level_wildcard() {
        // 4.7.1.3
        yes("sport/tennis/+", "sport/tennis/player1");
        yes("sport/tennis/+", "sport/tennis/player2");
        no("sport/tennis/+", "sport/tennis/player1/ranking");
        no("sport/+", "sport");
        yes("sport/+", "sport/");
        yes("+/+", "/finance");
        yes("/+", "/finance");
        no("+", "/finance");
        yes("+", "finance");
        yes("sport/+/player1", "sport/tennis/player1");
        yes("+/tennis/#", "sport/tennis/player1/ranking");
        yes("+/tennis/#", "sport/tennis");
        no("+/tennis/#", "sport/football");
    }

    #[test]
    fn dollar_topics() {
        // 4.7.2
        no("#", "$SYS/monitor/Clients");
        no("+/monitor/Clients", "$SYS/monitor/Clients");
        yes("$SYS/#", "$SYS/monitor/Clients");
        yes("$SYS/monitor/+", "$SYS/monitor/Clients");
        yes("$SYS/#", "$SYS");
        no("+", "$SYS");
        no("#", "$");
        // Only the first level counts.
        yes("a/+", "a/$b");
        yes("a/#", "a/$b/c");
        yes("#", "a$");
    }

    #[test]
    fn levels_are_exact_and_case_sensitive() {
        // 4.7.3
        no("ACCOUNTS", "Accounts");
        yes("Accounts payable", "Accounts payable");
        no("/finance", "finance");
        no("finance", "/finance");
        yes("a//b", "a//b");
        no("a/b", "a//b");
        yes("a/+/b", "a//b");
        yes("/", "/");
        yes("+/+", "/");
        no("+", "/");
        no("a/b", "a/b/c");
        no("a/b/c", "a/b");
    }
}
