//! Keepalive enforcement for every connection of a handler in one place: a coarse
//! wheel of deadlines checked four times a second. A connection costs one weak
//! pointer here instead of a timer of its own; reads only store a timestamp.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::Broker;
use crate::session::ConnSignal;

/// Wheel resolution: a silent client is closed at most this late.
const TICK: Duration = Duration::from_millis(250);

pub struct KeepaliveWheel {
    start: Instant,
    /// Tick number → connections whose deadline falls in that tick (at the latest).
    slots: Mutex<BTreeMap<u64, Vec<Weak<ConnSignal>>>>,
}

impl Default for KeepaliveWheel {
    fn default() -> Self {
        KeepaliveWheel {
            start: Instant::now(),
            slots: Mutex::new(BTreeMap::new()),
        }
    }
}

impl KeepaliveWheel {
    /// Milliseconds since the wheel started: the clock of `ConnSignal::touch`.
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Starts watching a connection with a non-zero keepalive.
    pub fn track(&self, signal: &Arc<ConnSignal>) {
        if let Some(deadline) = signal.keepalive_deadline_ms() {
            self.insert(deadline, Arc::downgrade(signal));
        }
    }

    fn insert(&self, deadline_ms: u64, signal: Weak<ConnSignal>) {
        let tick = deadline_ms.div_ceil(TICK.as_millis() as u64);
        self.slots.lock().entry(tick).or_default().push(signal);
    }

    /// Closes connections past their deadline; re-files the ones that were heard from.
    fn sweep(&self) {
        let now = self.now_ms();
        let now_tick = now / TICK.as_millis() as u64;
        let due: Vec<Vec<Weak<ConnSignal>>> = {
            let mut slots = self.slots.lock();
            let later = slots.split_off(&(now_tick + 1));
            std::mem::replace(&mut *slots, later)
                .into_values()
                .collect()
        };
        for signal in due.into_iter().flatten() {
            let Some(live) = signal.upgrade() else {
                continue;
            };
            match live.keepalive_deadline_ms() {
                Some(deadline) if deadline <= now => live.expire(),
                Some(deadline) => self.insert(deadline, signal),
                None => {}
            }
        }
    }
}

/// Runs until the broker is dropped.
pub fn spawn(broker: Weak<Broker>) {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(TICK);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let Some(broker) = broker.upgrade() else {
                return;
            };
            broker.keepalive.sweep();
        }
    });
}
