//! Server-to-device delivery: a message from the ingest API or the downlink
//! stream goes to a client's ring owner (then the other candidates) or to every
//! matching handler, with a delivery id; the handlers' acks make the `Outcome`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use throng_proto::v1::{Ack, AckOutcome, Delivery, Message, delivery};
use throng_ring::{Member, Ring};
use tokio::sync::oneshot;

use super::{AckWaiters, Hub, Link, unix_ms, wrap};
use crate::metrics::{OutcomeLabel, RouteKind};

/// Who a server-to-device message is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One device by client id: the ring owner, or whichever handler holds its session.
    Client(String),
    /// Every subscription matching the message's topic, cluster-wide.
    Topic,
}

/// What became of a server-to-device message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered to the online client(s) or stored in their sessions.
    Accepted,
    /// The client is offline with a persistent session; queued there.
    Queued,
    /// No handler has a session for the client: final, not retried.
    Undeliverable(String),
    /// A handler refused it: final.
    Rejected(String),
    /// Not delivered now (a handler is not attached or did not answer); try again later.
    Retry(String),
}

impl Outcome {
    pub fn is_delivered(&self) -> bool {
        matches!(self, Outcome::Accepted | Outcome::Queued)
    }

    fn label(&self) -> OutcomeLabel {
        match self {
            Outcome::Accepted => OutcomeLabel::Accepted,
            Outcome::Queued => OutcomeLabel::Queued,
            Outcome::Undeliverable(_) => OutcomeLabel::Undeliverable,
            Outcome::Rejected(_) => OutcomeLabel::Rejected,
            Outcome::Retry(_) => OutcomeLabel::Retry,
        }
    }
}

impl Hub {
    /// Delivers a server-to-device message and reports what became of it.
    pub async fn deliver(&self, target: Target, message: Message) -> Outcome {
        let entered_ms = message.published_at_unix_ms;
        let outcome = match target {
            Target::Client(client_id) => {
                self.metrics.routed(RouteKind::Client);
                self.deliver_to_client(&client_id, message).await
            }
            Target::Topic => {
                self.metrics.routed(RouteKind::Topic);
                self.deliver_to_topic(message).await
            }
        };
        self.metrics.outcome(outcome.label());
        if outcome.is_delivered() {
            let elapsed_ms = unix_ms().saturating_sub(entered_ms).max(0);
            self.metrics
                .delivery_latency
                .observe(elapsed_ms as f64 / 1000.0);
        }
        outcome
    }

    /// The ring owner first, then the other members in ring order: after an
    /// owner failure the agent connects a device to the next candidate, so its
    /// session may live there.
    async fn deliver_to_client(&self, client_id: &str, message: Message) -> Outcome {
        let candidates: Vec<Arc<str>> = {
            let ring = self.ring.borrow().clone();
            let ring = if ring.is_empty() {
                Arc::new(Ring::new(
                    self.attached().into_iter().map(|id| Member::new(id, "")),
                ))
            } else {
                ring
            };
            ring.candidates(client_id)
                .into_iter()
                .map(|member| member.id.clone())
                .collect()
        };
        let mut unreachable: Vec<Arc<str>> = Vec::new();
        let asked_any = !candidates.is_empty();
        for candidate in candidates {
            let link = self.state.read().handlers.get(&candidate).cloned();
            let Some(link) = link else {
                unreachable.push(candidate);
                continue;
            };
            let delivery = Delivery {
                target: Some(delivery::Target::ClientId(client_id.to_owned())),
                message: Some(message.clone()),
                ..Delivery::default()
            };
            match self.submit(&link, delivery).await {
                Ok(waiter) => match self.wait(waiter).await {
                    Ok(ack) => match ack.outcome() {
                        AckOutcome::Accepted => return Outcome::Accepted,
                        AckOutcome::Queued => return Outcome::Queued,
                        AckOutcome::UnknownClient => continue,
                        AckOutcome::Rejected | AckOutcome::Unspecified => {
                            return Outcome::Rejected(ack.reason);
                        }
                    },
                    Err(err) => {
                        tracing::debug!(handler = %candidate, error = err, "delivery not acknowledged");
                        unreachable.push(candidate);
                    }
                },
                Err(err) => {
                    tracing::debug!(handler = %candidate, error = err, "delivery not sent");
                    unreachable.push(candidate);
                }
            }
        }
        match unreachable.first() {
            Some(handler) => Outcome::Retry(format!(
                "handler {handler} (a candidate owner of {client_id:?}) is not attached or did not answer"
            )),
            None if !asked_any => Outcome::Retry("no handler is attached".into()),
            None => Outcome::Undeliverable(format!(
                "client {client_id:?} has no session on any handler"
            )),
        }
    }

    /// Every handler with a matching subscription (one per shared subscription),
    /// and every handler for a retained message so that each stores it.
    async fn deliver_to_topic(&self, message: Message) -> Outcome {
        if message.retain {
            self.store_retained(&message);
        }
        let mut waiters = Vec::new();
        for (handler, link, shares) in self.plan(&message.topic, None, message.retain) {
            let delivery = Delivery {
                target: Some(delivery::Target::Topic(message.topic.clone())),
                message: Some(message.clone()),
                share_groups: shares,
                ..Delivery::default()
            };
            match self.submit(&link, delivery).await {
                Ok(waiter) => waiters.push((handler, waiter)),
                Err(err) => return Outcome::Retry(format!("handler {handler}: {err}")),
            }
        }
        let mut outcome = Outcome::Accepted;
        for (handler, waiter) in waiters {
            match self.wait(waiter).await {
                Ok(ack) if matches!(ack.outcome(), AckOutcome::Accepted | AckOutcome::Queued) => {}
                Ok(ack) => {
                    outcome = Outcome::Rejected(format!("handler {handler}: {}", ack.reason));
                }
                Err(err) => outcome = Outcome::Retry(format!("handler {handler}: {err}")),
            }
        }
        outcome
    }

    /// Queues a delivery towards a handler, registering for its ack.
    async fn submit(&self, link: &Link, mut delivery: Delivery) -> Result<AckWaiter, &'static str> {
        let id = self.next_delivery.fetch_add(1, Ordering::Relaxed);
        delivery.delivery_id = id;
        let (tx, rx) = oneshot::channel();
        link.acks.lock().insert(id, tx);
        let sent =
            tokio::time::timeout(self.config.ack_timeout, link.tx.send(wrap(delivery))).await;
        match sent {
            Ok(Ok(())) => Ok(AckWaiter {
                id,
                rx,
                acks: link.acks.clone(),
            }),
            Ok(Err(_)) => {
                link.acks.lock().remove(&id);
                Err("handler detached")
            }
            Err(_) => {
                link.acks.lock().remove(&id);
                Err("handler channel stayed full")
            }
        }
    }

    async fn wait(&self, waiter: AckWaiter) -> Result<Ack, &'static str> {
        let AckWaiter { id, rx, acks } = waiter;
        match tokio::time::timeout(self.config.ack_timeout, rx).await {
            Ok(Ok(ack)) => Ok(ack),
            Ok(Err(_)) => Err("handler detached before acknowledging"),
            Err(_) => {
                acks.lock().remove(&id);
                Err("no ack in time")
            }
        }
    }
}

struct AckWaiter {
    id: u64,
    rx: oneshot::Receiver<Ack>,
    acks: AckWaiters,
}
