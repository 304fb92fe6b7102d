//! Producing through the ingest API: `PublishBatch` to a client id, one batch in
//! flight per producer, each producer on its own HTTP/2 connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use throng_proto::v1::ingest_client::IngestClient;
use throng_proto::v1::{PublishBatchRequest, PublishOutcome, PublishRequest};
use tonic::transport::{Channel, Endpoint};

use super::msg::client_topic;
use super::produce::{Cursor, Plan, PushReport, Tally};

/// Largest gRPC message sent or received (the distributor accepts 16 MiB).
const MAX_GRPC_MESSAGE: usize = 16 * 1024 * 1024;
/// Deadline of one PublishBatch (the distributor answers once every message of
/// it was acked by a handler or timed out).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Pushes every message of `plan` to the ingest API at `addr`.
pub async fn produce(addr: String, plan: Plan) -> anyhow::Result<PushReport> {
    let uri = if addr.contains("://") {
        addr
    } else {
        format!("http://{addr}")
    };
    let plan = Arc::new(plan);
    let cursor = Arc::new(Cursor::new());
    let topics: Arc<Vec<String>> =
        Arc::new(plan.client_ids.iter().map(|id| client_topic(id)).collect());
    let mut clients = Vec::with_capacity(plan.producers);
    for _ in 0..plan.producers {
        let channel = Endpoint::from_shared(uri.clone())?
            .connect_timeout(Duration::from_secs(5))
            .timeout(CALL_TIMEOUT)
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("connecting to the ingest API at {uri}"))?;
        clients.push(
            IngestClient::new(channel)
                .max_decoding_message_size(MAX_GRPC_MESSAGE)
                .max_encoding_message_size(MAX_GRPC_MESSAGE),
        );
    }
    let first_send = super::msg::unix_us();
    let mut tasks = Vec::new();
    for client in clients {
        let (plan, cursor, topics) = (plan.clone(), cursor.clone(), topics.clone());
        tasks.push(tokio::spawn(async move {
            producer(client, &plan, &cursor, &topics).await
        }));
    }
    let mut tally = Tally::default();
    for task in tasks {
        tally.merge(task.await.context("producer task")?);
    }
    Ok(PushReport::new("ingest", &plan, tally, first_send))
}

async fn producer(
    mut client: IngestClient<Channel>,
    plan: &Plan,
    cursor: &Cursor,
    topics: &[String],
) -> Tally {
    let mut tally = Tally::default();
    let mut payload = Vec::with_capacity(plan.payload_size.max(32));
    while let Some(seqs) = cursor.claim(plan).await {
        let n = seqs.end - seqs.start;
        let messages = seqs
            .map(|seq| {
                let (device, client_id) = plan.target(seq);
                payload.clear();
                plan.payload(&mut payload, seq, device);
                PublishRequest {
                    client_id: client_id.to_owned(),
                    topic: topics[device as usize].clone(),
                    payload: Bytes::copy_from_slice(&payload),
                    qos: u32::from(plan.qos),
                    ..PublishRequest::default()
                }
            })
            .collect();
        let t0 = Instant::now();
        match client.publish_batch(PublishBatchRequest { messages }).await {
            Ok(response) => {
                tally
                    .batch_latency
                    .record_us(t0.elapsed().as_micros() as u64);
                let results = response.into_inner().results;
                if results.len() as u64 != n {
                    tally.error("ingest: result count differs from batch size", n);
                    continue;
                }
                for r in results {
                    match r.outcome() {
                        PublishOutcome::Accepted | PublishOutcome::Queued => tally.accepted += 1,
                        other => tally.error(format!("ingest: {}", other.as_str_name()), 1),
                    }
                }
            }
            Err(status) => tally.error(format!("ingest call: {:?}", status.code()), n),
        }
    }
    tally
}
