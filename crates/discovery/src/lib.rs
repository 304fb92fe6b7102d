//! Who the handlers are: membership as a stream of [`Update`]s, the shape linkerd's
//! resolve API uses. A source (a static `--handlers` list, or a Kubernetes
//! EndpointSlice watch on the handler Service) yields a `Reset` with the whole set,
//! then `Add`/`Remove` diffs; a source that restarts yields a new `Reset`.
//! [`Membership`] folds any such stream into the [`throng_ring::Ring`] snapshot
//! that agents, distributors and trbrokers route by.

mod error;
mod kubernetes;
mod membership;
mod slices;
mod static_list;

use std::sync::Arc;

pub use error::DiscoveryError;
pub use kubernetes::endpoint_slices;
pub use membership::Membership;
pub use static_list::{parse_static, static_updates};
pub use throng_ring::Member;

/// One change to the set of handler members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// The whole membership: replaces whatever was known before.
    Reset(Vec<Member>),
    /// Members that joined, or whose address changed (keyed by id).
    Add(Vec<Member>),
    /// Ids of members that left.
    Remove(Vec<Arc<str>>),
}
