//! Folds a stream of membership [`Update`]s into [`Ring`] snapshots published on a
//! `tokio::sync::watch` channel: readers take the current `Arc<Ring>` without
//! locking, and a new ring is built only when the member set actually changes.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use throng_ring::{Member, Ring};
use tokio::sync::watch;

use crate::Update;

/// The current members, and the channel their ring is published on.
#[derive(Debug)]
pub struct Membership {
    members: BTreeMap<Arc<str>, Member>,
    ring: watch::Sender<Arc<Ring>>,
}

impl Membership {
    /// Starts from no members; `ring` is set on the first change.
    pub fn new(ring: watch::Sender<Arc<Ring>>) -> Membership {
        Membership {
            members: BTreeMap::new(),
            ring,
        }
    }

    /// Spawns a task that applies `updates` and returns the ring it publishes,
    /// empty until the first update with members. The task ends when `updates`
    /// ends (receivers then see the sender closed) or every receiver is dropped.
    pub fn spawn<S>(updates: S) -> watch::Receiver<Arc<Ring>>
    where
        S: Stream<Item = Update> + Send + 'static,
    {
        let (tx, rx) = watch::channel(Arc::new(Ring::default()));
        tokio::spawn(Membership::new(tx).run(updates));
        rx
    }

    /// Applies `updates` until the stream ends or nobody reads the ring.
    pub async fn run<S>(mut self, updates: S)
    where
        S: Stream<Item = Update> + Send,
    {
        let mut updates = std::pin::pin!(updates);
        loop {
            tokio::select! {
                update = updates.next() => match update {
                    Some(update) => {
                        self.apply(update);
                    }
                    None => return,
                },
                () = self.ring.closed() => return,
            }
        }
    }

    /// Applies one update; publishes a new ring and returns true if the members
    /// (ids or addresses) changed.
    pub fn apply(&mut self, update: Update) -> bool {
        let changed = match update {
            Update::Reset(members) => {
                let members: BTreeMap<Arc<str>, Member> =
                    members.into_iter().map(|m| (m.id.clone(), m)).collect();
                let changed = members != self.members;
                self.members = members;
                changed
            }
            Update::Add(members) => members.into_iter().fold(false, |changed, m| {
                let old = self.members.insert(m.id.clone(), m.clone());
                changed | (old.as_ref() != Some(&m))
            }),
            Update::Remove(ids) => ids.iter().fold(false, |changed, id| {
                changed | self.members.remove(id).is_some()
            }),
        };
        if changed {
            self.ring
                .send_replace(Arc::new(Ring::new(self.members.values().cloned())));
        }
        changed
    }

    /// The members as of the last update, by id.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }
}
