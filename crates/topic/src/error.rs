//! The one error type of this crate: why a topic name, topic filter or shared
//! subscription filter is malformed.

/// Why a topic name or topic filter is malformed.
///
/// A broker answers a malformed topic name with reason code 0x90 (Topic Name
/// invalid) and a malformed filter with 0x8F (Topic Filter invalid); shared
/// subscription errors map to 0x8F too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// The topic name or filter is the empty string.
    #[error("topic is empty")]
    Empty,
    /// The topic name or filter is longer than [`crate::MAX_TOPIC_LEN`] bytes.
    #[error("topic is {0} bytes, over the limit of 65535")]
    TooLong(usize),
    /// The topic name or filter contains U+0000.
    #[error("topic contains the null character U+0000")]
    NullCharacter,
    /// A topic name contains `+` or `#`.
    #[error("topic name contains a wildcard ('+' or '#')")]
    WildcardInTopicName,
    /// A filter has `#` somewhere other than as the whole last level.
    #[error("multi-level wildcard '#' must be the whole last level of a filter")]
    MisplacedMultiLevelWildcard,
    /// A filter has `+` somewhere other than as a whole level.
    #[error("single-level wildcard '+' must be a whole level of a filter")]
    MisplacedSingleLevelWildcard,
    /// `$share//…`: the share group name is empty.
    #[error("shared subscription has an empty group name")]
    EmptyShareGroup,
    /// The share group name contains `+` or `#`.
    #[error("shared subscription group name contains a wildcard ('+' or '#')")]
    InvalidShareGroup,
    /// `$share/{group}` or `$share/{group}/`: no filter follows the group.
    #[error("shared subscription has no topic filter after the group name")]
    MissingShareFilter,
}
