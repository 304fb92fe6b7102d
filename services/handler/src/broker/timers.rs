//! One task per broker fires session expiries and delayed wills at their deadline.
//! Entries carry the session's epoch: a session that reconnected in between ignores them.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::Broker;
use crate::session::Session;

#[derive(Debug)]
pub enum TimerEvent {
    Expire { session: Weak<Session>, epoch: u64 },
    Will { session: Weak<Session>, epoch: u64 },
}

struct Entry {
    at: Instant,
    seq: u64,
    event: TimerEvent,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    // Reversed: the heap pops the earliest deadline first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

#[derive(Default)]
pub struct Timers {
    heap: Mutex<(BinaryHeap<Entry>, u64)>,
    changed: Arc<Notify>,
}

impl Timers {
    pub fn schedule(&self, at: Instant, event: TimerEvent) {
        let mut guard = self.heap.lock();
        let (heap, seq) = &mut *guard;
        *seq += 1;
        let earliest = heap.peek().is_none_or(|e| at < e.at);
        heap.push(Entry {
            at,
            seq: *seq,
            event,
        });
        drop(guard);
        if earliest {
            self.changed.notify_one();
        }
    }

    fn pop_due(&self, now: Instant) -> Result<TimerEvent, Option<Instant>> {
        let mut guard = self.heap.lock();
        match guard.0.peek() {
            Some(entry) if entry.at <= now => Ok(guard.0.pop().map(|e| e.event).expect("peeked")),
            Some(entry) => Err(Some(entry.at)),
            None => Err(None),
        }
    }
}

/// Runs until the broker is dropped.
pub fn spawn(broker: Weak<Broker>) {
    tokio::spawn(async move {
        loop {
            let Some(strong) = broker.upgrade() else {
                return;
            };
            let next = loop {
                match strong.timers.pop_due(Instant::now()) {
                    Ok(event) => fire(&strong, event),
                    Err(next) => break next,
                }
            };
            let changed = strong.timers.changed.clone();
            let until = next.unwrap_or_else(|| Instant::now() + std::time::Duration::from_secs(1));
            drop(strong);
            tokio::select! {
                _ = changed.notified() => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    });
}

fn fire(broker: &Arc<Broker>, event: TimerEvent) {
    match event {
        TimerEvent::Expire { session, epoch } => {
            if let Some(session) = session.upgrade() {
                broker.end_session(&session, epoch);
            }
        }
        TimerEvent::Will { session, epoch } => {
            if let Some(session) = session.upgrade() {
                broker.fire_delayed_will(&session, epoch);
            }
        }
    }
}
