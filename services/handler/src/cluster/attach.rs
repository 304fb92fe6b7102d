//! The attach client: one task per distributor in the membership, each keeping an
//! `Attach` stream open (re-attaching with backoff after any failure). On every
//! attach the handler sends Hello, its full subscription set, and its retained
//! messages; then it serves the distributor's deliveries and interest updates.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use throng_proto::v1::distributor_client::DistributorClient;
use throng_proto::v1::{
    DistributorMessage, Forward, HandlerMessage, Hello, distributor_message, handler_message,
};
use throng_ring::Ring;
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;

use super::{DistributorLink, ForwardQueue, to_wire};
use crate::broker::Broker;

/// Largest gRPC message sent or received.
const MAX_GRPC_MESSAGE: usize = 16 * 1024 * 1024;
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Keeps one attach stream per member of `distributors` until `stop`.
pub fn spawn_supervisor(
    broker: Weak<Broker>,
    mut distributors: watch::Receiver<Arc<Ring>>,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        let mut running: HashMap<Arc<str>, (Arc<str>, CancellationToken)> = HashMap::new();
        loop {
            let ring = distributors.borrow_and_update().clone();
            running.retain(|id, (addr, token)| {
                let keep = ring.get(id).is_some_and(|member| member.addr == *addr);
                if !keep {
                    token.cancel();
                }
                keep
            });
            for member in ring.members() {
                if running.contains_key(&member.id) {
                    continue;
                }
                let token = stop.child_token();
                running.insert(member.id.clone(), (member.addr.clone(), token.clone()));
                tokio::spawn(keep_attached(
                    broker.clone(),
                    member.id.clone(),
                    member.addr.clone(),
                    token,
                ));
            }
            tokio::select! {
                () = stop.cancelled() => return,
                changed = distributors.changed() => if changed.is_err() {
                    stop.cancelled().await;
                    return;
                },
            }
        }
    });
}

async fn keep_attached(
    broker: Weak<Broker>,
    id: Arc<str>,
    addr: Arc<str>,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    while !stop.is_cancelled() {
        match attach_once(&broker, &id, &addr, &stop).await {
            Ok(served) => {
                if served {
                    backoff = Duration::from_millis(100);
                }
                tracing::info!(distributor = %id, "attach stream ended");
            }
            Err(err) => {
                tracing::warn!(distributor = %id, addr = %addr, error = %err, "attach failed");
            }
        }
        if broker.strong_count() == 0 {
            return;
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One attach stream, from connect to its end. Ok(true) once it served traffic.
async fn attach_once(
    broker: &Weak<Broker>,
    id: &Arc<str>,
    addr: &str,
    stop: &CancellationToken,
) -> anyhow::Result<bool> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    let channel = tokio::select! {
        () = stop.cancelled() => return Ok(false),
        channel = endpoint.connect() => channel?,
    };
    let mut client = DistributorClient::new(channel)
        .max_decoding_message_size(MAX_GRPC_MESSAGE)
        .max_encoding_message_size(MAX_GRPC_MESSAGE);

    let Some(forward_limit) = broker.upgrade().map(|b| b.cluster.forward_limit) else {
        return Ok(false);
    };
    let (outbound_tx, outbound_rx) = mpsc::unbounded_channel();
    let forwards = Arc::new(ForwardQueue::new(forward_limit));
    let link = Arc::new(DistributorLink {
        id: id.clone(),
        outbound: outbound_tx,
        forwards: forwards.clone(),
        interest: Default::default(),
    });
    {
        let Some(broker) = broker.upgrade() else {
            return Ok(false);
        };
        let cluster = &broker.cluster;
        link.send_control(handler_message::Kind::Hello(Hello {
            handler_id: cluster.handler_id.to_string(),
            generation: cluster.generation,
        }));
        cluster.register(&link);
        for message in broker.retained_messages() {
            let wire = to_wire(&message, String::new());
            link.send_control(handler_message::Kind::Forward(Forward {
                message: Some(wire),
                retain_copy: true,
            }));
        }
    }
    let outbound = UnboundedReceiverStream::new(outbound_rx).map(move |message| {
        if let Some(handler_message::Kind::Forward(Forward {
            retain_copy: false, ..
        })) = &message.kind
        {
            forwards.taken();
        }
        message
    });
    let result = serve(broker, &link, &mut client, outbound, stop).await;
    // Nothing drains this queue any more: publishers paused on it go on (their
    // next publishes go to the remaining distributors, or fail on this link).
    link.forwards.close();
    if let Some(broker) = broker.upgrade() {
        broker.cluster.remove_link(&link);
        broker
            .metrics
            .distributors
            .set(broker.cluster.attached() as i64);
    }
    result
}

async fn serve(
    broker: &Weak<Broker>,
    link: &Arc<DistributorLink>,
    client: &mut DistributorClient<tonic::transport::Channel>,
    outbound: impl tokio_stream::Stream<Item = HandlerMessage> + Send + 'static,
    stop: &CancellationToken,
) -> anyhow::Result<bool> {
    let response = tokio::select! {
        () = stop.cancelled() => return Ok(false),
        response = client.attach(outbound) => response?,
    };
    let mut inbound = response.into_inner();
    if let Some(broker) = broker.upgrade() {
        broker.cluster.add_link(link);
        broker
            .metrics
            .distributors
            .set(broker.cluster.attached() as i64);
        tracing::info!(distributor = %link.id, "attached to distributor");
    }
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => return Ok(true),
            message = inbound.message() => message?,
        };
        let Some(DistributorMessage { kind: Some(kind) }) = message else {
            if message.is_none() {
                return Ok(true);
            }
            continue;
        };
        let Some(broker) = broker.upgrade() else {
            return Ok(true);
        };
        match kind {
            distributor_message::Kind::Delivery(delivery) => {
                if let Some(ack) = broker.accept_delivery(delivery) {
                    link.send_control(handler_message::Kind::Ack(ack));
                }
            }
            distributor_message::Kind::InterestUpdate(update) => link.update_interest(update),
        }
    }
}
