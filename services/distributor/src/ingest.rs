//! The `Ingest` gRPC service: backends publish to one client id or to a topic and
//! get the outcome back (accepted, queued in an offline session, undeliverable,
//! rejected, or unavailable for now). A `message_id` makes retries idempotent: a
//! message id seen recently with a final outcome returns that outcome again
//! without delivering a second time.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use throng_proto::v1::ingest_server::Ingest;
use throng_proto::v1::{
    Message, PublishBatchRequest, PublishBatchResponse, PublishOutcome, PublishRequest,
    PublishResponse, PublishResult,
};
use tonic::{Request, Response, Status};

use crate::hub::{Hub, Outcome, Target, unix_ms};

/// Message ids remembered for idempotency.
const RECENT_IDS: usize = 100_000;
/// Messages in one PublishBatch at most.
pub const MAX_BATCH: usize = 10_000;

pub struct IngestService {
    hub: Arc<Hub>,
    recent: Mutex<RecentResults>,
    id_prefix: String,
    next_id: AtomicU64,
}

impl IngestService {
    /// `id_prefix` makes assigned message ids unique per distributor process.
    pub fn new(hub: Arc<Hub>, id_prefix: String) -> IngestService {
        IngestService {
            hub,
            recent: Mutex::new(RecentResults::default()),
            id_prefix,
            next_id: AtomicU64::new(1),
        }
    }

    async fn publish_one(&self, request: PublishRequest) -> PublishResult {
        let message_id = if request.message_id.is_empty() {
            let seq = self.next_id.fetch_add(1, Ordering::Relaxed);
            format!("{}-{seq}", self.id_prefix)
        } else {
            request.message_id.clone()
        };
        if let Some(done) = self.recent.lock().get(&message_id) {
            return done;
        }
        let result = |outcome: PublishOutcome, reason: String| PublishResult {
            message_id: message_id.clone(),
            outcome: outcome.into(),
            reason,
        };
        let (target, message) = match validate(request, &message_id) {
            Ok(valid) => valid,
            Err(reason) => return result(PublishOutcome::Rejected, reason),
        };
        let outcome = self.hub.deliver(target, message).await;
        let done = match outcome {
            Outcome::Accepted => result(PublishOutcome::Accepted, String::new()),
            Outcome::Queued => result(PublishOutcome::Queued, String::new()),
            Outcome::Undeliverable(reason) => result(PublishOutcome::Undeliverable, reason),
            Outcome::Rejected(reason) => result(PublishOutcome::Rejected, reason),
            Outcome::Retry(reason) => return result(PublishOutcome::Unavailable, reason),
        };
        self.recent.lock().insert(message_id, done.clone());
        done
    }
}

/// Checks a request and turns it into the cluster's message.
fn validate(request: PublishRequest, message_id: &str) -> Result<(Target, Message), String> {
    throng_topic::validate_topic_name(&request.topic)
        .map_err(|err| format!("topic {:?}: {err}", request.topic))?;
    if request.qos > 2 {
        return Err(format!("qos {} is not 0, 1 or 2", request.qos));
    }
    if request.payload_format_indicator.is_some_and(|pfi| pfi > 1) {
        return Err("payload_format_indicator must be 0 or 1".into());
    }
    let target = if request.client_id.is_empty() {
        Target::Topic
    } else {
        if request.retain {
            return Err("retain is only allowed for a topic publish".into());
        }
        Target::Client(request.client_id)
    };
    let message = Message {
        topic: request.topic,
        payload: request.payload,
        qos: request.qos,
        retain: request.retain,
        expiry_seconds: request.expiry_seconds,
        user_properties: request.user_properties,
        content_type: request.content_type,
        response_topic: request.response_topic,
        correlation_data: request.correlation_data,
        payload_format_indicator: request.payload_format_indicator,
        message_id: message_id.to_owned(),
        origin_client_id: String::new(),
        published_at_unix_ms: unix_ms(),
    };
    Ok((target, message))
}

#[tonic::async_trait]
impl Ingest for IngestService {
    async fn publish(
        &self,
        request: Request<PublishRequest>,
    ) -> Result<Response<PublishResponse>, Status> {
        let result = self.publish_one(request.into_inner()).await;
        Ok(Response::new(PublishResponse {
            result: Some(result),
        }))
    }

    async fn publish_batch(
        &self,
        request: Request<PublishBatchRequest>,
    ) -> Result<Response<PublishBatchResponse>, Status> {
        let messages = request.into_inner().messages;
        if messages.len() > MAX_BATCH {
            return Err(Status::invalid_argument(format!(
                "a batch holds at most {MAX_BATCH} messages, got {}",
                messages.len()
            )));
        }
        let results =
            futures_util::future::join_all(messages.into_iter().map(|m| self.publish_one(m))).await;
        Ok(Response::new(PublishBatchResponse { results }))
    }
}

/// Final results by message id, oldest evicted first.
#[derive(Default)]
struct RecentResults {
    by_id: HashMap<String, PublishResult>,
    order: VecDeque<String>,
}

impl RecentResults {
    fn get(&self, id: &str) -> Option<PublishResult> {
        self.by_id.get(id).cloned()
    }

    fn insert(&mut self, id: String, result: PublishResult) {
        if self.by_id.insert(id.clone(), result).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > RECENT_IDS {
            if let Some(old) = self.order.pop_front() {
                self.by_id.remove(&old);
            }
        }
    }
}
