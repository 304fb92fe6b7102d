//! Routing a published message: retained store update, then one delivery per matching
//! session (one copy at the highest matching QoS with every matching subscription
//! identifier), and one member per shared subscription: picked here, or by a
//! distributor when the handler is part of a cluster.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use throng_codec::QoS;

use super::{Broker, SubEntry};
use crate::message::{Delivery, Message};
use crate::session::{Enqueued, Session};

/// A session's combined view of every subscription that matched one message.
struct Target {
    session: Arc<Session>,
    qos: QoS,
    retain_as_published: bool,
    subscription_ids: Vec<u32>,
    username: Option<Arc<str>>,
}

impl Target {
    fn new(entry: SubEntry) -> Target {
        Target {
            session: entry.session,
            qos: entry.options.qos,
            retain_as_published: entry.options.retain_as_published,
            subscription_ids: entry.id.into_iter().collect(),
            username: entry.username,
        }
    }

    fn merge(&mut self, entry: SubEntry) {
        self.qos = self.qos.max(entry.options.qos);
        self.retain_as_published |= entry.options.retain_as_published;
        self.subscription_ids.extend(entry.id);
    }
}

/// Which shared subscriptions a routing pass serves.
#[derive(Debug, Clone, Copy)]
pub enum Shares<'a> {
    /// Every matching one, picking a member of each here (no distributor attached).
    All,
    /// None: a distributor picks one member cluster-wide.
    Skip,
    /// Only these, written `$share/<group>/<filter>` (a distributor's pick).
    Listed(&'a [String]),
}

/// What a routing pass did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Routed {
    /// Sessions the message was queued to.
    pub queued: usize,
    /// Whether a local shared subscription matched (served or not).
    pub shared_matched: bool,
}

impl Broker {
    /// Routes a message to local sessions: every ordinary subscription when `direct`,
    /// and the shared subscriptions `shares` selects. Retained storage is the
    /// caller's business.
    pub(crate) fn route(&self, message: &Arc<Message>, direct: bool, shares: Shares<'_>) -> Routed {
        let mut direct_entries: Vec<SubEntry> = Vec::new();
        let mut shared: Vec<(Arc<str>, Arc<str>, SubEntry)> = Vec::new();
        let mut shared_matched = false;
        self.index
            .read()
            .for_each_match(&message.topic, |filter, key, entry| match &key.group {
                Some(group) => {
                    shared_matched = true;
                    let wanted = match shares {
                        Shares::All => true,
                        Shares::Skip => false,
                        Shares::Listed(listed) => {
                            listed.iter().any(|name| is_share_name(name, group, filter))
                        }
                    };
                    if wanted {
                        shared.push((group.clone(), Arc::from(filter), entry.clone()));
                    }
                }
                None if !direct => {}
                None if entry.options.no_local
                    && message.origin.as_deref() == Some(&*key.client_id) => {}
                None => direct_entries.push(entry.clone()),
            });
        let mut targets = merge_by_session(direct_entries);
        shared.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        let mut members: Vec<SubEntry> = Vec::new();
        let mut iter = shared.into_iter().peekable();
        while let Some((group, filter, entry)) = iter.next() {
            members.push(entry);
            let same_group = iter
                .peek()
                .is_some_and(|(g, f, _)| *g == group && *f == filter);
            if !same_group
                && let Some(chosen) = self.pick_share_member(std::mem::take(&mut members))
            {
                targets.push(Target::new(chosen));
            }
        }
        let mut queued = 0;
        for target in targets {
            if self.security.has_acl()
                && !self.security.can_receive(
                    &target.session.client_id,
                    target.username.as_ref(),
                    &message.topic,
                )
            {
                continue;
            }
            let delivery = Delivery {
                qos: message.qos.min(target.qos),
                retain: target.retain_as_published && message.retain,
                subscription_ids: target.subscription_ids,
                message: message.clone(),
            };
            let max = self.config.max_queued_messages;
            if target.session.enqueue(delivery, max, &self.metrics) == Enqueued::Queued {
                queued += 1;
            }
        }
        Routed {
            queued,
            shared_matched,
        }
    }

    /// One member of a share group gets the message: the next connected member in
    /// rotation, or any member when none is connected (it is queued for later).
    fn pick_share_member(&self, members: Vec<SubEntry>) -> Option<SubEntry> {
        let start = self.share_cursor.fetch_add(1, Ordering::Relaxed);
        let n = members.len();
        let online = (0..n)
            .map(|i| (start + i) % n)
            .find(|&i| members[i].session.state.lock().link.is_some());
        let chosen = online.unwrap_or(start % n.max(1));
        members.into_iter().nth(chosen)
    }
}

/// One target per session: a session matched by several filters gets one copy.
fn merge_by_session(mut entries: Vec<SubEntry>) -> Vec<Target> {
    entries.sort_by_key(|e| Arc::as_ptr(&e.session));
    let mut targets: Vec<Target> = Vec::with_capacity(entries.len());
    for entry in entries {
        match targets.last_mut() {
            Some(last) if Arc::ptr_eq(&last.session, &entry.session) => last.merge(entry),
            _ => targets.push(Target::new(entry)),
        }
    }
    targets
}

/// Whether `name` (`$share/<group>/<filter>`) names the shared subscription (group, filter).
fn is_share_name(name: &str, group: &str, filter: &str) -> bool {
    name.strip_prefix("$share/")
        .and_then(|rest| rest.strip_prefix(group))
        .and_then(|rest| rest.strip_prefix('/'))
        == Some(filter)
}

#[cfg(test)]
mod tests {
    use super::is_share_name;

    #[test]
    fn share_names_match_group_and_filter_exactly() {
        assert!(is_share_name("$share/g/a/+", "g", "a/+"));
        assert!(!is_share_name("$share/g/a/+", "g", "a/#"));
        assert!(!is_share_name("$share/gg/a", "g", "a"));
        assert!(!is_share_name("$share/g/a", "gg", "a"));
        assert!(!is_share_name("share/g/a", "g", "a"));
    }
}
