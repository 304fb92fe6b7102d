//! The `Distributor.Attach` gRPC service: one bidirectional stream per handler.
//! The first message must be a Hello; after it the handler's messages are applied
//! in order (subscription deltas, forwarded publishes, acks) while the hub's
//! messages for that handler stream back.

use std::pin::Pin;
use std::sync::Arc;

use throng_proto::v1::distributor_server::Distributor;
use throng_proto::v1::{DistributorMessage, HandlerMessage, handler_message};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::hub::Hub;

pub struct AttachService {
    hub: Arc<Hub>,
}

impl AttachService {
    pub fn new(hub: Arc<Hub>) -> AttachService {
        AttachService { hub }
    }
}

type DistributorStream = Pin<Box<dyn Stream<Item = Result<DistributorMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Distributor for AttachService {
    type AttachStream = DistributorStream;

    async fn attach(
        &self,
        request: Request<Streaming<HandlerMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let mut inbound = request.into_inner();
        let hello = match inbound.message().await? {
            Some(HandlerMessage {
                kind: Some(handler_message::Kind::Hello(hello)),
            }) if !hello.handler_id.is_empty() => hello,
            Some(_) => {
                return Err(Status::invalid_argument(
                    "the first message on an attach stream must be a Hello with a handler_id",
                ));
            }
            None => return Err(Status::cancelled("stream closed before Hello")),
        };
        let (attachment, outbound) = self.hub.attach(&hello.handler_id);
        tracing::debug!(handler = %hello.handler_id, generation = hello.generation, "attach stream open");
        tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(message)) => match message.kind {
                        Some(handler_message::Kind::SubscriptionDelta(delta)) => {
                            attachment.apply_delta(delta);
                        }
                        // May wait for room towards a slow handler (QoS 1/2):
                        // this stream then backs up to the publishing handler.
                        Some(handler_message::Kind::Forward(forward)) => {
                            attachment.forward(forward).await
                        }
                        Some(handler_message::Kind::Ack(ack)) => attachment.ack(ack),
                        Some(handler_message::Kind::Hello(_)) | None => {
                            tracing::warn!(handler = %attachment.handler(), "unexpected message on attach stream, ignored");
                        }
                    },
                    Ok(None) => break,
                    Err(status) => {
                        tracing::info!(handler = %attachment.handler(), error = %status, "attach stream failed");
                        break;
                    }
                }
            }
            // Dropping the attachment detaches the handler.
        });
        let stream = tokio_stream::StreamExt::map(outbound.into_stream(), Ok);
        Ok(Response::new(Box::pin(stream)))
    }
}
