//! Validation of what a client sends: topic names (PUBLISH, will topics) and
//! topic filters (SUBSCRIBE, UNSUBSCRIBE), per MQTT 5.0 section 4.7.

use crate::TopicError;

/// The longest topic name or filter in bytes: an MQTT UTF-8 string carries a
/// two-byte length.
pub const MAX_TOPIC_LEN: usize = 65_535;

/// Checks a topic name: non-empty, at most [`MAX_TOPIC_LEN`] bytes, no `+` or
/// `#`, no U+0000. Empty levels (`a//b`, `/`) are allowed.
pub fn validate_topic_name(topic: &str) -> Result<(), TopicError> {
    check_string(topic)?;
    if topic.contains(['+', '#']) {
        return Err(TopicError::WildcardInTopicName);
    }
    Ok(())
}

/// Checks a topic filter: non-empty, at most [`MAX_TOPIC_LEN`] bytes, no U+0000,
/// `+` only as a whole level and `#` only as the whole last level.
///
/// This is syntax only: `$share/{group}/{filter}` passes as an ordinary filter;
/// use [`crate::parse_shared`] for the rules of shared subscriptions.
pub fn validate_filter(filter: &str) -> Result<(), TopicError> {
    check_string(filter)?;
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err(TopicError::MisplacedMultiLevelWildcard);
        }
        if level.contains('+') && level != "+" {
            return Err(TopicError::MisplacedSingleLevelWildcard);
        }
    }
    Ok(())
}

/// The rules topic names and filters share.
pub(crate) fn check_string(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong(s.len()));
    }
    if s.contains('\0') {
        return Err(TopicError::NullCharacter);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_from_the_spec() {
        // 4.7.3: "/" and names with spaces are valid; levels may be empty.
        for ok in [
            "/",
            "/finance",
            "finance",
            "Accounts payable",
            "a//b",
            "$SYS/x",
            "sport/",
        ] {
            assert_eq!(validate_topic_name(ok), Ok(()), "{ok:?}");
        }
    }

    #[test]
    fn topic_names_rejected() {
        assert_eq!(validate_topic_name(""), Err(TopicError::Empty));
        assert_eq!(
            validate_topic_name("a/+"),
            Err(TopicError::WildcardInTopicName)
        );
        assert_eq!(
            validate_topic_name("a/#"),
            Err(TopicError::WildcardInTopicName)
        );
        assert_eq!(
            validate_topic_name("a+b"),
            Err(TopicError::WildcardInTopicName)
        );
        assert_eq!(validate_topic_name("a\0b"), Err(TopicError::NullCharacter));
    }

    #[test]
    fn length_limit() {
        let longest = "a".repeat(MAX_TOPIC_LEN);
        assert_eq!(validate_topic_name(&longest), Ok(()));
        assert_eq!(validate_filter(&longest), Ok(()));
        let over = "a".repeat(MAX_TOPIC_LEN + 1);
        assert_eq!(validate_topic_name(&over), Err(TopicError::TooLong(65_536)));
        assert_eq!(validate_filter(&over), Err(TopicError::TooLong(65_536)));
    }

    #[test]
    fn filters_from_the_spec() {
        // 4.7.1.2 and 4.7.1.3.
        for ok in [
            "sport/tennis/player1/#",
            "sport/#",
            "#",
            "+",
            "+/tennis/#",
            "sport/+/player1",
            "sport/+",
            "/+",
            "+/+",
            "$SYS/#",
            "$SYS/monitor/+",
            "a//b",
            "/",
            "$share/group/a",
        ] {
            assert_eq!(validate_filter(ok), Ok(()), "{ok:?}");
        }
    }

    #[test]
    fn filters_rejected_by_the_spec() {
        use TopicError::*;
        assert_eq!(
            validate_filter("sport/tennis#"),
            Err(MisplacedMultiLevelWildcard)
        );
        assert_eq!(
            validate_filter("sport/tennis/#/ranking"),
            Err(MisplacedMultiLevelWildcard)
        );
        assert_eq!(validate_filter("#/"), Err(MisplacedMultiLevelWildcard));
        assert_eq!(validate_filter("##"), Err(MisplacedMultiLevelWildcard));
        assert_eq!(validate_filter("sport+"), Err(MisplacedSingleLevelWildcard));
        assert_eq!(
            validate_filter("+sport/x"),
            Err(MisplacedSingleLevelWildcard)
        );
        assert_eq!(validate_filter("a/++"), Err(MisplacedSingleLevelWildcard));
        assert_eq!(validate_filter(""), Err(Empty));
        assert_eq!(validate_filter("a/\0"), Err(NullCharacter));
    }
}
