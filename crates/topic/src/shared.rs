//! Shared subscriptions (MQTT 5.0 section 4.8.2): recognising
//! `$share/{group}/{filter}` and checking its group name and inner filter.

use crate::TopicError;
use crate::validate::{check_string, validate_filter};

/// The prefix that makes a filter a shared subscription.
pub const SHARE_PREFIX: &str = "$share/";

/// The parts of `$share/{group}/{filter}`, borrowed from the subscribed string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SharedFilter<'a> {
    /// The share name: non-empty, without `/`, `+` or `#`.
    pub group: &'a str,
    /// The filter that published topics are matched against, valid per
    /// [`validate_filter`].
    pub filter: &'a str,
}

/// Parses and validates a subscription filter.
///
/// Returns `Ok(Some(_))` for a well-formed `$share/{group}/{filter}`,
/// `Ok(None)` for a valid ordinary filter (including `$share` and `$sharefoo/x`,
/// which do not start with `$share/`), and an error for anything malformed.
/// Either way the whole string is validated, so a caller needs no separate
/// [`validate_filter`] call.
pub fn parse_shared(filter: &str) -> Result<Option<SharedFilter<'_>>, TopicError> {
    let Some(rest) = filter.strip_prefix(SHARE_PREFIX) else {
        validate_filter(filter)?;
        return Ok(None);
    };
    check_string(filter)?;
    let (group, inner) = rest.split_once('/').ok_or(TopicError::MissingShareFilter)?;
    if group.is_empty() {
        return Err(TopicError::EmptyShareGroup);
    }
    if group.contains(['+', '#']) {
        return Err(TopicError::InvalidShareGroup);
    }
    if inner.is_empty() {
        return Err(TopicError::MissingShareFilter);
    }
    validate_filter(inner)?;
    Ok(Some(SharedFilter {
        group,
        filter: inner,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared<'a>(group: &'a str, filter: &'a str) -> Option<SharedFilter<'a>> {
        Some(SharedFilter { group, filter })
    }

    #[test]
    fn examples_from_the_spec() {
        // 4.8.2
        assert_eq!(
            parse_shared("$share/consumer1/sport/tennis/+"),
            Ok(shared("consumer1", "sport/tennis/+"))
        );
        assert_eq!(
            parse_shared("$share/consumer2/sport/tennis/+"),
            Ok(shared("consumer2", "sport/tennis/+"))
        );
        assert_eq!(
            parse_shared("$share/consumer1//finance"),
            Ok(shared("consumer1", "/finance"))
        );
        assert_eq!(
            parse_shared("$share/consumer1/+/finance"),
            Ok(shared("consumer1", "+/finance"))
        );
    }

    #[test]
    fn inner_filter_may_be_anything_valid() {
        assert_eq!(parse_shared("$share/g/#"), Ok(shared("g", "#")));
        assert_eq!(parse_shared("$share/g/$SYS/#"), Ok(shared("g", "$SYS/#")));
        assert_eq!(parse_shared("$share/g/a//"), Ok(shared("g", "a//")));
        assert_eq!(parse_shared("$share/g$/x"), Ok(shared("g$", "x")));
    }

    #[test]
    fn ordinary_filters_are_not_shared() {
        for filter in [
            "a/b",
            "#",
            "$share",
            "$sharefoo/g/x",
            "$SHARE/g/x",
            "$SYS/#",
            "x/$share/g/y",
        ] {
            assert_eq!(parse_shared(filter), Ok(None), "{filter:?}");
        }
    }

    #[test]
    fn malformed() {
        use TopicError::*;
        assert_eq!(parse_shared("$share/"), Err(MissingShareFilter));
        assert_eq!(parse_shared("$share//a"), Err(EmptyShareGroup));
        assert_eq!(parse_shared("$share/g"), Err(MissingShareFilter));
        assert_eq!(parse_shared("$share/g/"), Err(MissingShareFilter));
        assert_eq!(parse_shared("$share/g+/a"), Err(InvalidShareGroup));
        assert_eq!(parse_shared("$share/+/a"), Err(InvalidShareGroup));
        assert_eq!(parse_shared("$share/#/a"), Err(InvalidShareGroup));
        assert_eq!(
            parse_shared("$share/g/a/#/b"),
            Err(MisplacedMultiLevelWildcard)
        );
        assert_eq!(
            parse_shared("$share/g/a+"),
            Err(MisplacedSingleLevelWildcard)
        );
        assert_eq!(parse_shared("$share/g\0/a"), Err(NullCharacter));
        assert_eq!(parse_shared("a/#/b"), Err(MisplacedMultiLevelWildcard));
        assert_eq!(parse_shared(""), Err(Empty));
        let long = format!("$share/g/{}", "a".repeat(crate::MAX_TOPIC_LEN));
        assert_eq!(parse_shared(&long), Err(TooLong(long.len())));
    }
}
