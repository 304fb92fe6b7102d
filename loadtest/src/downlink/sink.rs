//! The sink: instead of devices behind handlers, the load tool attaches to the
//! distributor as each handler of its ring (`Distributor.Attach`, Hello and an
//! empty subscription snapshot) and acknowledges every delivery ACCEPTED at
//! once, checking it on the way (client id, topic, sequence number). Redis, the
//! distributor and this stand-in are all that run: the distributor measured
//! alone, without handlers, agent or devices sharing its cores.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use throng_proto::v1::distributor_client::DistributorClient;
use throng_proto::v1::{
    Ack, AckOutcome, Delivery, DistributorMessage, HandlerMessage, Hello, SubscriptionDelta,
    delivery, distributor_message, handler_message,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Endpoint;

use super::msg::{ConnectedReport, Counts, SinkConfig, unix_us};
use super::worker::Shared;
use crate::hist::Latency;

/// Largest gRPC message (as the distributor's).
const MAX_GRPC_MESSAGE: usize = 16 * 1024 * 1024;
/// Acks queued towards the distributor on one stream.
const ACK_CHANNEL: usize = 64 * 1024;
/// Topic prefix of client-targeted messages.
const CLIENT_TOPIC_PREFIX: &str = "$throng/downlink/";

/// Attaches as every handler of `sink`; each stream is then served by its own task.
pub async fn attach_all(sink: &SinkConfig, prefix: &str, shared: &Arc<Shared>) -> ConnectedReport {
    let mut report = ConnectedReport::default();
    let mut latency = Latency::new();
    for handler in &sink.handlers {
        let t0 = Instant::now();
        match attach(&sink.distributor, handler).await {
            Ok((acks, inbound)) => {
                report.ok += 1;
                latency.record_us(t0.elapsed().as_micros() as u64);
                tokio::spawn(serve(acks, inbound, format!("{prefix}-"), shared.clone()));
            }
            Err(err) => {
                *report
                    .failures
                    .entry(format!("attach as {handler}: {err:#}"))
                    .or_default() += 1;
            }
        }
    }
    report.connack_latency = latency.to_wire();
    report
}

async fn attach(
    addr: &str,
    handler: &str,
) -> anyhow::Result<(mpsc::Sender<HandlerMessage>, Streaming<DistributorMessage>)> {
    let uri = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    let channel = Endpoint::from_shared(uri.clone())?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connecting to the distributor at {uri}"))?;
    let mut client = DistributorClient::new(channel)
        .max_decoding_message_size(MAX_GRPC_MESSAGE)
        .max_encoding_message_size(MAX_GRPC_MESSAGE);
    let (tx, rx) = mpsc::channel(ACK_CHANNEL);
    let hello = handler_message::Kind::Hello(Hello {
        handler_id: handler.to_owned(),
        generation: unix_us(),
    });
    let snapshot = handler_message::Kind::SubscriptionDelta(SubscriptionDelta {
        changes: Vec::new(),
        full_snapshot: true,
    });
    for kind in [hello, snapshot] {
        tx.send(HandlerMessage { kind: Some(kind) })
            .await
            .context("queueing hello")?;
    }
    let response = client
        .attach(ReceiverStream::new(rx))
        .await
        .context("attach")?;
    Ok((tx, response.into_inner()))
}

/// Acks and checks deliveries until the stream ends.
async fn serve(
    acks: mpsc::Sender<HandlerMessage>,
    mut inbound: Streaming<DistributorMessage>,
    id_prefix: String,
    shared: Arc<Shared>,
) {
    let mut latencies = Vec::with_capacity(1);
    let cause = loop {
        let message = match inbound.message().await {
            Ok(Some(message)) => message,
            Ok(None) => break "stream closed by the distributor".to_owned(),
            Err(status) => break format!("stream failed: {:?}", status.code()),
        };
        let Some(distributor_message::Kind::Delivery(d)) = message.kind else {
            continue; // interest updates
        };
        let now = unix_us();
        let mut counts = Counts::default();
        if let Some(sent_us) = check(&d, &id_prefix, &shared, &mut counts) {
            latencies.push(now.saturating_sub(sent_us));
        }
        shared.record(&counts, &mut latencies, now);
        if d.delivery_id != 0 {
            let ack = Ack {
                delivery_id: d.delivery_id,
                outcome: AckOutcome::Accepted.into(),
                reason: String::new(),
            };
            let ack = HandlerMessage {
                kind: Some(handler_message::Kind::Ack(ack)),
            };
            if acks.send(ack).await.is_err() {
                break "ack stream closed".to_owned();
            }
        }
    };
    shared.lost(cause);
}

/// Checks one delivery: for `<prefix>-<index>`, on its topic, a new sequence number.
fn check(d: &Delivery, id_prefix: &str, shared: &Shared, counts: &mut Counts) -> Option<u64> {
    let Some(message) = &d.message else {
        counts.malformed += 1;
        return None;
    };
    counts.received += 1;
    counts.by_qos[(message.qos as usize).min(2)] += 1;
    let Some(delivery::Target::ClientId(client_id)) = &d.target else {
        counts.misdelivered += 1;
        return None;
    };
    if message.topic.strip_prefix(CLIENT_TOPIC_PREFIX) != Some(client_id.as_str()) {
        counts.wrong_topic += 1;
    }
    let index = client_id
        .strip_prefix(id_prefix)
        .and_then(|i| i.parse::<u64>().ok())
        .unwrap_or(u64::MAX);
    shared.check(&message.payload, index, counts)
}
