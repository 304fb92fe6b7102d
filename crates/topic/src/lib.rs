//! MQTT topic semantics for the broker (MQTT 5.0 section 4.7 and 4.8.2).
//!
//! - [`validate_topic_name`] and [`validate_filter`] check what a client sends;
//! - [`matches()`] decides whether one filter matches one topic name;
//! - [`parse_shared`] splits `$share/{group}/{filter}` into its parts;
//! - [`SubscriptionIndex`] finds every subscription whose filter matches a
//!   published topic by walking a level trie;
//! - [`RetainedIndex`] finds every retained message whose topic matches a new
//!   subscription's filter by walking a level trie.
//!
//! Both tries take their input as already validated. Every walk over a trie is a
//! loop, never recursion: a 65535-byte filter may have 32768 levels, and neither
//! matching, removing nor dropping such a trie may overflow a thread's stack.

mod error;
mod matching;
mod retained;
mod shared;
mod subscription;
mod trie;
mod validate;

pub use error::TopicError;
pub use matching::matches;
pub use retained::RetainedIndex;
pub use shared::{SHARE_PREFIX, SharedFilter, parse_shared};
pub use subscription::SubscriptionIndex;
pub use validate::{MAX_TOPIC_LEN, validate_filter, validate_topic_name};
