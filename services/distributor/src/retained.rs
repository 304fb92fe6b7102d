//! The cluster's retained messages as one distributor holds them: the newest
//! per topic, with clears kept for a while as tombstones.

use std::collections::HashMap;

use throng_proto::v1::Message;

/// How long a cleared retained message is remembered as cleared.
const TOMBSTONE_MS: i64 = 24 * 60 * 60 * 1000;

/// Retained messages by topic; an empty payload is a tombstone.
#[derive(Default)]
pub(crate) struct RetainedStore {
    by_topic: HashMap<String, Message>,
}

impl RetainedStore {
    /// Stores (or clears, with an empty payload) a retained message; the newest
    /// `published_at_unix_ms` wins, so a handler replaying old ones on attach
    /// never overwrites a newer one. A clear is kept as a tombstone (an empty
    /// message) for `TOMBSTONE_MS`, so a handler that missed it while cut off
    /// neither brings the old message back nor keeps serving it.
    pub(crate) fn store(&mut self, message: &Message) {
        if let Some(held) = self.by_topic.get(&message.topic)
            && held.published_at_unix_ms > message.published_at_unix_ms
        {
            return;
        }
        let mut stored = message.clone();
        if stored.payload.is_empty() {
            stored.retain = true;
        }
        self.by_topic.insert(message.topic.clone(), stored);
    }

    /// Every message and live tombstone, for a handler that just attached;
    /// tombstones older than `TOMBSTONE_MS` at `now_ms` are forgotten first.
    pub(crate) fn snapshot(&mut self, now_ms: i64) -> Vec<Message> {
        self.by_topic.retain(|_, message| {
            !message.payload.is_empty()
                || now_ms.saturating_sub(message.published_at_unix_ms) < TOMBSTONE_MS
        });
        self.by_topic.values().cloned().collect()
    }
}
