//! A client session: what survives a connection (subscriptions, queued and in-flight
//! messages, QoS 2 receive state, will, expiry) and the link to its live connection.
//!
//! Lock order: the broker's index locks are never held while a session lock is taken
//! by routing, and no code holds two session locks at once.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use atomic_waker::AtomicWaker;

use parking_lot::Mutex;
use throng_codec::{QoS, Will};

use crate::message::Delivery;
use crate::metrics::{DropReason, HandlerMetrics};

/// Shared between a connection task and whoever needs to wake or stop it. Kept
/// small on purpose: one per connection, and no intrusive waiter in the task.
#[derive(Debug, Default)]
pub struct ConnSignal {
    waker: AtomicWaker,
    /// Set by `wake`, cleared by the connection when it drains its session.
    woken: AtomicBool,
    /// 0 while the connection may run; otherwise the reason code it must close with.
    kick: AtomicU8,
    /// Set by the keepalive wheel when the client went silent too long.
    expired: AtomicBool,
    /// 1.5 × the keepalive, in milliseconds; 0 disables the check.
    keepalive_grace_ms: u32,
    /// When the client was last heard from, on the keepalive wheel's clock.
    last_read_ms: AtomicU64,
    pub conn_id: u64,
}

impl ConnSignal {
    pub fn new(conn_id: u64, keep_alive_secs: u16, now_ms: u64) -> ConnSignal {
        ConnSignal {
            conn_id,
            keepalive_grace_ms: u32::from(keep_alive_secs) * 1500,
            last_read_ms: AtomicU64::new(now_ms),
            ..ConnSignal::default()
        }
    }

    /// Records that the client was heard from.
    pub fn touch(&self, now_ms: u64) {
        self.last_read_ms.store(now_ms, Ordering::Relaxed);
    }

    /// When the connection must have been heard from again; `None` without keepalive.
    pub fn keepalive_deadline_ms(&self) -> Option<u64> {
        (self.keepalive_grace_ms > 0)
            .then(|| self.last_read_ms.load(Ordering::Relaxed) + u64::from(self.keepalive_grace_ms))
    }

    pub fn expire(&self) {
        self.expired.store(true, Ordering::Release);
        self.waker.wake();
    }

    pub fn expired(&self) -> bool {
        self.expired.load(Ordering::Acquire)
    }

    /// Withdraws an expiry: the client was heard from after all, or was not read
    /// by the handler's choice. The caller files the connection with the wheel again.
    pub fn revive(&self, now_ms: u64) {
        self.touch(now_ms);
        self.expired.store(false, Ordering::Release);
    }

    /// Tells the connection its session has something to send.
    pub fn wake(&self) {
        self.woken.store(true, Ordering::Release);
        self.waker.wake();
    }

    pub fn kick(&self, reason: u8) {
        self.kick.store(reason, Ordering::Release);
        self.waker.wake();
    }

    pub fn kicked(&self) -> Option<u8> {
        match self.kick.load(Ordering::Acquire) {
            0 => None,
            reason => Some(reason),
        }
    }

    /// Registers the connection task's waker; call before checking `take_woken`.
    pub fn register(&self, waker: &std::task::Waker) {
        self.waker.register(waker);
    }

    pub fn take_woken(&self) -> bool {
        self.woken.swap(false, Ordering::AcqRel)
    }
}

/// The session's handle on its current connection.
#[derive(Debug, Clone)]
pub struct ConnLink {
    pub conn_id: u64,
    pub signal: Arc<ConnSignal>,
}

/// Where an outgoing QoS 1/2 message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)] // named after the packet each stage awaits
pub enum InflightStage {
    /// QoS 1 sent, waiting for PUBACK.
    AwaitingPubAck,
    /// QoS 2 sent, waiting for PUBREC.
    AwaitingPubRec,
    /// PUBREL sent, waiting for PUBCOMP.
    AwaitingPubComp,
}

#[derive(Debug, Clone)]
pub struct Inflight {
    pub packet_id: u16,
    pub stage: InflightStage,
    pub delivery: Delivery,
    /// The PUBLISH must be sent again (with DUP) on the current connection once the
    /// client's Receive Maximum leaves room; set when a session is resumed.
    pub resend: bool,
}

/// A will waiting for its connection to end badly, or for its delay to pass.
#[derive(Debug, Clone)]
pub struct PendingWill {
    pub will: Will,
    pub username: Option<Arc<str>>,
}

/// Messages moving through a session. Allocated while there are any and freed
/// when all are done, so an idle session does not pay for empty queues.
#[derive(Debug, Default)]
pub struct Traffic {
    /// Messages not yet sent, oldest first.
    pub queue: VecDeque<Delivery>,
    /// Sent QoS 1/2 messages awaiting acknowledgement, in send order.
    pub inflight: VecDeque<Inflight>,
    pub next_packet_id: u16,
    /// QoS 2 packet ids received and acknowledged with PUBREC, awaiting PUBREL.
    /// Bounded by the server's Receive Maximum.
    pub incoming_qos2: Vec<u16>,
}

impl Traffic {
    /// Next free packet id for an outgoing message (1..=65535, skipping ids in flight).
    pub fn allocate_packet_id(&mut self) -> u16 {
        loop {
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            let candidate = self.next_packet_id;
            if !self.inflight.iter().any(|f| f.packet_id == candidate) {
                return candidate;
            }
        }
    }

    pub fn inflight_position(&self, packet_id: u16) -> Option<usize> {
        self.inflight.iter().position(|f| f.packet_id == packet_id)
    }

    fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.inflight.is_empty() && self.incoming_qos2.is_empty()
    }
}

#[derive(Debug, Default)]
pub struct SessionState {
    pub link: Option<ConnLink>,
    /// Bumped on every attach; timers carry it so a stale timer does nothing.
    pub epoch: u64,
    /// Set once the session is discarded; nothing is queued to it afterwards.
    pub ended: bool,
    pub username: Option<Arc<str>>,
    /// Filters exactly as subscribed (shared ones keep their `$share/` prefix); the
    /// options live in the broker's index. A vector: it is bounded by
    /// `max_subscriptions_per_session` and costs nothing while empty.
    pub subscriptions: Vec<Arc<str>>,
    /// `None` while nothing is queued, in flight or awaiting PUBREL.
    pub traffic: Option<Box<Traffic>>,
    /// Seconds the session outlives its connection.
    pub expiry_interval: u32,
    pub will: Option<Box<PendingWill>>,
}

impl SessionState {
    /// The traffic state, allocated on first use.
    pub fn traffic(&mut self) -> &mut Traffic {
        self.traffic.get_or_insert_with(Box::default)
    }

    /// Frees the traffic state when nothing is left in it.
    pub fn trim_traffic(&mut self) {
        if self.traffic.as_ref().is_some_and(|t| t.is_idle()) {
            self.traffic = None;
        }
    }

    pub fn queued(&self) -> usize {
        self.traffic.as_ref().map_or(0, |t| t.queue.len())
    }

    pub fn has_subscription(&self, filter: &str) -> bool {
        self.subscriptions.iter().any(|f| &**f == filter)
    }

    /// Returns whether the filter was there.
    pub fn remove_subscription(&mut self, filter: &str) -> bool {
        let found = self.subscriptions.iter().position(|f| &**f == filter);
        found.map(|i| self.subscriptions.swap_remove(i)).is_some()
    }

    /// Returns whether the QoS 2 packet id was awaiting PUBREL.
    pub fn release_qos2(&mut self, packet_id: u16) -> bool {
        let Some(traffic) = self.traffic.as_deref_mut() else {
            return false;
        };
        let found = traffic.incoming_qos2.iter().position(|&id| id == packet_id);
        let released = found
            .map(|i| traffic.incoming_qos2.swap_remove(i))
            .is_some();
        self.trim_traffic();
        released
    }
}

#[derive(Debug)]
pub struct Session {
    pub client_id: Arc<str>,
    pub state: Mutex<SessionState>,
}

/// What happened to a message offered to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    Queued,
    Dropped,
}

impl Session {
    pub fn new(client_id: Arc<str>, state: SessionState) -> Arc<Session> {
        Arc::new(Session {
            client_id,
            state: Mutex::new(state),
        })
    }

    /// Queues a message for this session and wakes its connection.
    /// Policy: QoS 0 for a session without a connection is dropped; when the queue
    /// holds `max_queued` messages the new one is dropped. Both are counted.
    pub fn enqueue(
        &self,
        delivery: Delivery,
        max_queued: usize,
        metrics: &HandlerMetrics,
    ) -> Enqueued {
        let mut state = self.state.lock();
        if state.ended {
            return Enqueued::Dropped;
        }
        if state.link.is_none() && delivery.qos == QoS::AtMostOnce {
            metrics.dropped(DropReason::Offline);
            return Enqueued::Dropped;
        }
        if state.queued() >= max_queued {
            metrics.dropped(DropReason::QueueFull);
            tracing::debug!(client_id = %self.client_id, qos = delivery.qos as u8, "session queue full, message dropped");
            return Enqueued::Dropped;
        }
        state.traffic().queue.push_back(delivery);
        if let Some(link) = &state.link {
            link.signal.wake();
        }
        Enqueued::Queued
    }
}
