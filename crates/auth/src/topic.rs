//! MQTT topic validation, wildcard matching and filter coverage for ACL checks.
//!
//! Deliberately local and simple (level by level over `/`): `+` matches one
//! level, `#` matches the rest including the parent level, and a topic whose
//! first level starts with `$` is not matched by a leading wildcard.

/// Validates a topic filter (an ACL pattern or a SUBSCRIBE filter).
pub(crate) fn validate_filter(filter: &str) -> Result<(), &'static str> {
    if filter.is_empty() {
        return Err("empty");
    }
    if filter.contains('\0') {
        return Err("contains NUL");
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err("`#` must be the whole last level");
        }
        if level.contains('+') && level != "+" {
            return Err("`+` must be a whole level");
        }
    }
    Ok(())
}

/// Whether `topic` is a valid topic name for PUBLISH (no wildcards).
pub(crate) fn is_valid_topic_name(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(['+', '#', '\0'])
}

/// Whether the valid filter `pattern` matches every topic that the valid filter
/// `filter` can match. With a wildcard-free `filter` this is plain matching.
pub(crate) fn covers(pattern: &str, filter: &str) -> bool {
    let mut pattern_levels = pattern.split('/');
    let mut filter_levels = filter.split('/');
    let mut first = true;
    loop {
        match (pattern_levels.next(), filter_levels.next()) {
            (Some("#"), Some(level)) => return !(first && level.starts_with('$')),
            (Some("#"), None) | (None, None) => return true,
            (Some(_), None) | (None, Some(_)) => return false,
            (Some("+"), Some(level)) => {
                if level == "#" || (first && level.starts_with('$')) {
                    return false;
                }
            }
            (Some(p), Some(level)) => {
                if p != level {
                    return false;
                }
            }
        }
        first = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_concrete_topics() {
        let cases = [
            ("a/b", "a/b", true),
            ("a/b", "a/c", false),
            ("a/+", "a/b", true),
            ("a/+", "a", false),
            ("a/+", "a/b/c", false),
            ("a/+/c", "a//c", true),
            ("a/#", "a", true),
            ("a/#", "a/b/c", true),
            ("a/#", "ab", false),
            ("#", "a/b", true),
            ("#", "/", true),
            ("#", "$SYS/x", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "$SYS/x", true),
            ("a/$x", "a/$x", true),
            ("a/+", "a/$x", true),
        ];
        for (pattern, topic, expected) in cases {
            assert_eq!(covers(pattern, topic), expected, "{pattern} vs {topic}");
        }
    }

    #[test]
    fn coverage_of_filters() {
        let cases = [
            ("sensors/#", "sensors/+/temp", true),
            ("sensors/#", "sensors/#", true),
            ("sensors/#", "sensors", true),
            ("sensors/+", "sensors/#", false),
            ("sensors/+", "sensors/+", true),
            ("sensors/+/temp", "sensors/+/temp", true),
            ("sensors/+/temp", "sensors/x/temp", true),
            ("sensors/x/temp", "sensors/+/temp", false),
            ("sensors/+/#", "sensors/#", false),
            ("sensors/+/#", "sensors/a/#", true),
            ("#", "#", true),
            ("#", "+/x", true),
            ("+", "+", true),
            ("+", "#", false),
            ("#", "$SYS/#", false),
        ];
        for (pattern, filter, expected) in cases {
            assert_eq!(covers(pattern, filter), expected, "{pattern} vs {filter}");
        }
    }

    #[test]
    fn filter_validation() {
        for ok in ["#", "+", "a/+/b", "a/#", "/", "+/+", "$SYS/#", "a b/c"] {
            assert_eq!(validate_filter(ok), Ok(()), "{ok}");
        }
        for bad in ["", "a/#/b", "a#", "a/b+", "#/a", "a\0b"] {
            assert!(validate_filter(bad).is_err(), "{bad}");
        }
        assert!(is_valid_topic_name("a/b"));
        assert!(!is_valid_topic_name("a/+"));
        assert!(!is_valid_topic_name(""));
    }
}
