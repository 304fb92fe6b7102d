//! Interest-set changes: which filters each attached handler must hear about
//! (the ones some *other* handler holds), collected per handler while the hub
//! applies subscription changes under its state lock.

use std::collections::BTreeMap;
use std::sync::Arc;

use throng_proto::v1::{DistributorMessage, InterestUpdate, distributor_message};

use crate::index::ClusterIndex;

/// Interest-set changes per handler, collected while applying changes under
/// the state lock and sent before it is released (so they keep their order).
#[derive(Default)]
pub(crate) struct InterestUpdates {
    by_handler: BTreeMap<Arc<str>, InterestUpdate>,
}

impl InterestUpdates {
    /// Records how `filter` moving from holders `before` to its current holders
    /// in `index` changes the interest of each of `handlers` (the attached ones):
    /// a handler is interested in a filter some *other* handler holds.
    pub(crate) fn diff<'a>(
        &mut self,
        index: &ClusterIndex,
        handlers: impl Iterator<Item = &'a Arc<str>>,
        filter: &Arc<str>,
        before: &[Arc<str>],
    ) {
        let after = index.holders(filter);
        if after == before {
            return;
        }
        for handler in handlers {
            let was = before.iter().any(|h| h != handler);
            let is = after.iter().any(|h| h != handler);
            if was == is {
                continue;
            }
            let update = self.by_handler.entry(handler.clone()).or_default();
            if is {
                update.added.push(filter.to_string());
            } else {
                update.removed.push(filter.to_string());
            }
        }
    }

    /// The update for each handler whose interest changed, by handler id.
    pub(crate) fn into_updates(self) -> impl Iterator<Item = (Arc<str>, InterestUpdate)> {
        self.by_handler.into_iter()
    }
}

pub(crate) fn interest_message(update: InterestUpdate) -> DistributorMessage {
    DistributorMessage {
        kind: Some(distributor_message::Kind::InterestUpdate(update)),
    }
}
