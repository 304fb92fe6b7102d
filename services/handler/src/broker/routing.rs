//! Routing a published message: retained store update, then one delivery per matching
//! session (one copy at the highest matching QoS with every matching subscription
//! identifier), and one member per shared-subscription group.

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

impl Broker {
    /// Routes a message published by a client (or a will). Returns how many sessions
    /// it was queued to.
    pub fn publish(&self, message: Arc<Message>) -> usize {
        if message.retain {
            self.store_retained(&message);
        }
        let mut direct: Vec<SubEntry> = Vec::new();
        let mut shared: Vec<(Arc<str>, Arc<str>, SubEntry)> = Vec::new();
        self.index
            .read()
            .for_each_match(&message.topic, |filter, key, entry| match &key.group {
                Some(group) => shared.push((group.clone(), Arc::from(filter), entry.clone())),
                None if entry.options.no_local
                    && message.origin.as_deref() == Some(&*key.client_id) => {}
                None => direct.push(entry.clone()),
            });
        let mut targets = merge_by_session(direct);
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
        queued
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
