//! Session lifecycle: attach a connection (new, resumed or taken over), detach it
//! (will, expiry), and end a session (its subscriptions leave the index).

use std::sync::Arc;
use std::time::Duration;

use throng_codec::reason;
use tokio::time::Instant;

use super::Broker;
use super::timers::TimerEvent;
use crate::message::Message;
use crate::session::{ConnLink, PendingWill, Session, SessionState};

/// Result of attaching a connection to a session.
pub struct Attached {
    pub session: Arc<Session>,
    pub session_present: bool,
}

/// How a connection ended, as far as its session is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Departure {
    /// DISCONNECT with reason 0x00: the will is discarded.
    Clean,
    /// DISCONNECT 0x04, protocol error, keepalive timeout, network loss: the will goes out.
    WithWill,
}

impl Broker {
    /// Attaches a new connection to the session for `client_id`, taking the session
    /// over from any connection that holds it.
    pub fn attach(
        &self,
        client_id: Arc<str>,
        clean_start: bool,
        expiry_interval: u32,
        will: Option<Box<PendingWill>>,
        username: Option<Arc<str>>,
        link: ConnLink,
    ) -> Attached {
        let fresh = |link: ConnLink, will, username| {
            Session::new(
                client_id.clone(),
                SessionState {
                    link: Some(link),
                    epoch: 1,
                    expiry_interval,
                    will,
                    username,
                    ..SessionState::default()
                },
            )
        };
        let mut wills_to_send: Vec<Box<PendingWill>> = Vec::new();
        let mut ended: Option<Arc<Session>> = None;
        let mut shard = self.sessions.shard(&client_id);
        // A session that ended but is not yet forgotten counts as absent.
        let existing = shard
            .get(&client_id)
            .filter(|session| !session.state.lock().ended);
        let attached = match existing {
            None => {
                let session = fresh(link, will, username);
                shard.insert(session.clone());
                self.online.inc();
                Attached {
                    session,
                    session_present: false,
                }
            }
            Some(existing) => {
                let mut state = existing.state.lock();
                let was_online = match state.link.take() {
                    Some(old) => {
                        old.signal.kick(reason::SESSION_TAKEN_OVER);
                        true
                    }
                    None => false,
                };
                let old_will = state.will.take();
                if clean_start {
                    wills_to_send.extend(old_will);
                    state.ended = true;
                    drop(state);
                    ended = Some(existing);
                    let session = fresh(link, will, username);
                    shard.insert(session.clone());
                    if !was_online {
                        self.offline.dec();
                        self.online.inc();
                    }
                    Attached {
                        session,
                        session_present: false,
                    }
                } else {
                    // The session goes on: a will with a delay is cancelled by the new
                    // connection; one without a delay was due when the old one was cut.
                    if let Some(old) = old_will
                        && was_online
                        && old.will.delay_interval.unwrap_or(0) == 0
                    {
                        wills_to_send.push(old);
                    }
                    state.epoch += 1;
                    state.link = Some(link);
                    state.expiry_interval = expiry_interval;
                    state.will = will;
                    state.username = username;
                    drop(state);
                    if !was_online {
                        self.offline.dec();
                        self.online.inc();
                    }
                    Attached {
                        session: existing,
                        session_present: true,
                    }
                }
            }
        };
        drop(shard);
        if let Some(old) = ended {
            self.drop_subscriptions(&old);
        }
        for will in wills_to_send {
            self.publish_will(&client_id, will);
        }
        attached
    }

    /// Detaches connection `conn_id` from its session. Does nothing when the session
    /// has already been taken over by another connection.
    pub fn detach(&self, session: &Arc<Session>, conn_id: u64, departure: Departure) {
        let mut state = session.state.lock();
        if state.link.as_ref().is_none_or(|l| l.conn_id != conn_id) {
            return;
        }
        state.link = None;
        let epoch = state.epoch;
        let expiry = state.expiry_interval;
        let mut will_now = None;
        match departure {
            Departure::Clean => state.will = None,
            Departure::WithWill => {
                if let Some(pending) = state.will.take() {
                    let delay = pending.will.delay_interval.unwrap_or(0).min(expiry);
                    if delay == 0 {
                        will_now = Some(pending);
                    } else {
                        state.will = Some(pending);
                        self.timers.schedule(
                            Instant::now() + Duration::from_secs(u64::from(delay)),
                            TimerEvent::Will {
                                session: Arc::downgrade(session),
                                epoch,
                            },
                        );
                    }
                }
            }
        }
        drop(state);
        self.online.dec();
        self.offline.inc();
        if let Some(will) = will_now {
            self.publish_will(&session.client_id, will);
        }
        if expiry == 0 {
            self.end_session(session, epoch);
        } else if expiry != u32::MAX {
            self.timers.schedule(
                Instant::now() + Duration::from_secs(u64::from(expiry)),
                TimerEvent::Expire {
                    session: Arc::downgrade(session),
                    epoch,
                },
            );
        }
    }

    /// Ends an offline session whose epoch is still `epoch`: the pending will goes
    /// out, subscriptions leave the index, the registry forgets it.
    pub(super) fn end_session(&self, session: &Arc<Session>, epoch: u64) {
        let will = {
            let mut state = session.state.lock();
            if state.epoch != epoch || state.link.is_some() || state.ended {
                return;
            }
            state.ended = true;
            state.traffic = None;
            state.will.take()
        };
        self.sessions.remove_if_same(session);
        self.offline.dec();
        self.drop_subscriptions(session);
        if let Some(will) = will {
            self.publish_will(&session.client_id, will);
        }
    }

    /// Publishes the will of an offline session whose epoch is still `epoch`.
    pub(super) fn fire_delayed_will(&self, session: &Arc<Session>, epoch: u64) {
        let will = {
            let mut state = session.state.lock();
            if state.epoch != epoch || state.link.is_some() {
                return;
            }
            state.will.take()
        };
        if let Some(will) = will {
            self.publish_will(&session.client_id, will);
        }
    }

    fn publish_will(&self, client_id: &Arc<str>, pending: Box<PendingWill>) {
        let PendingWill { will, username } = *pending;
        if !self
            .security
            .can_publish(client_id, username.as_ref(), &will.topic)
        {
            self.metrics
                .dropped(crate::metrics::DropReason::NotAuthorized);
            return;
        }
        let expires_at = will
            .properties
            .message_expiry_interval
            .map(|secs| Instant::now() + Duration::from_secs(u64::from(secs)));
        self.metrics.messages_received.inc();
        self.publish_everywhere(Arc::new(Message {
            topic: Arc::from(will.topic),
            payload: will.payload,
            qos: will.qos,
            retain: will.retain,
            properties: will.properties,
            expires_at,
            origin: Some(client_id.clone()),
            published_at_ms: throng_downlink::unix_ms(),
        }));
    }
}
