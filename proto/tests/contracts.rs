//! Contract tests: the descriptor set came from protox, messages survive an
//! encode/decode round trip, and the generated tonic clients and servers talk
//! to each other over a real socket.

use std::pin::Pin;

use prost::Message as _;
use prost::bytes::Bytes;
use throng_proto::v1::distributor_client::DistributorClient;
use throng_proto::v1::distributor_server::{Distributor, DistributorServer};
use throng_proto::v1::ingest_client::IngestClient;
use throng_proto::v1::ingest_server::{Ingest, IngestServer};
use throng_proto::v1::{
    AckOutcome, DistributorMessage, HandlerMessage, Hello, InterestUpdate, Message,
    PublishBatchRequest, PublishBatchResponse, PublishOutcome, PublishRequest, PublishResponse,
    PublishResult, SubscriptionChange, SubscriptionDelta, SubscriptionOp, UserProperty,
    distributor_message, handler_message,
};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

#[test]
fn descriptor_set_holds_every_file() {
    let fds = prost_types::FileDescriptorSet::decode(throng_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut names: Vec<_> = fds.file.iter().map(|f| f.name()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "throng/v1/handler.proto",
            "throng/v1/ingest.proto",
            "throng/v1/message.proto"
        ]
    );
    assert!(fds.file.iter().all(|f| f.package() == "throng.v1"));
    // Comments are kept (source info), so the generated docs carry them.
    assert!(fds.file.iter().all(|f| f.source_code_info.is_some()));
}

fn sample_message() -> Message {
    Message {
        topic: "down/dev-1/cmd".into(),
        payload: Bytes::from_static(b"\x00\x01reboot"),
        qos: 1,
        retain: false,
        expiry_seconds: Some(30),
        user_properties: vec![
            UserProperty {
                key: "k".into(),
                value: "2".into(),
            },
            UserProperty {
                key: "a".into(),
                value: "1".into(),
            },
            UserProperty {
                key: "k".into(),
                value: "3".into(),
            },
        ],
        content_type: Some("application/octet-stream".into()),
        response_topic: Some("up/dev-1/reply".into()),
        correlation_data: Some(Bytes::from_static(b"corr")),
        payload_format_indicator: Some(0),
        message_id: "m-1".into(),
        origin_client_id: "dev-2".into(),
        published_at_unix_ms: 1_764_000_000_000,
    }
}

#[test]
fn handler_message_round_trip() {
    let messages = [
        HandlerMessage {
            kind: Some(handler_message::Kind::Hello(Hello {
                handler_id: "handler-0".into(),
                generation: 7,
            })),
        },
        HandlerMessage {
            kind: Some(handler_message::Kind::SubscriptionDelta(
                SubscriptionDelta {
                    changes: vec![SubscriptionChange {
                        filter: "sensors/+/temp".into(),
                        share_group: Some("g1".into()),
                        qos: 2,
                        no_local: true,
                        retain_as_published: true,
                        op: SubscriptionOp::Add.into(),
                    }],
                    full_snapshot: true,
                },
            )),
        },
        HandlerMessage {
            kind: Some(handler_message::Kind::Forward(throng_proto::v1::Forward {
                message: Some(sample_message()),
                retain_copy: false,
            })),
        },
        HandlerMessage {
            kind: Some(handler_message::Kind::Ack(throng_proto::v1::Ack {
                delivery_id: 42,
                outcome: AckOutcome::UnknownClient.into(),
                reason: "no session".into(),
            })),
        },
    ];
    for msg in messages {
        let decoded = HandlerMessage::decode(msg.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, msg);
    }
}

#[test]
fn publish_request_round_trip() {
    let req = PublishRequest {
        client_id: "dev-1".into(),
        topic: "down/dev-1/cmd".into(),
        payload: Bytes::from_static(b"hello"),
        qos: 1,
        retain: false,
        expiry_seconds: Some(60),
        user_properties: vec![UserProperty {
            key: "trace".into(),
            value: "abc".into(),
        }],
        content_type: Some("text/plain".into()),
        response_topic: None,
        correlation_data: Some(Bytes::from_static(b"\xff")),
        payload_format_indicator: Some(1),
        message_id: "idem-1".into(),
    };
    let decoded = PublishRequest::decode(req.encode_to_vec().as_slice()).unwrap();
    assert_eq!(decoded, req);
    assert_eq!(decoded.response_topic, None);
    // Unset optional fields stay distinguishable from their zero values.
    let empty = PublishRequest::decode(&[][..]).unwrap();
    assert_eq!(empty.expiry_seconds, None);
}

/// Accepts every message.
struct AcceptAll;

fn accepted(req: &PublishRequest) -> PublishResult {
    PublishResult {
        message_id: req.message_id.clone(),
        outcome: PublishOutcome::Accepted.into(),
        reason: String::new(),
    }
}

#[tonic::async_trait]
impl Ingest for AcceptAll {
    async fn publish(
        &self,
        request: Request<PublishRequest>,
    ) -> Result<Response<PublishResponse>, Status> {
        let result = accepted(request.get_ref());
        Ok(Response::new(PublishResponse {
            result: Some(result),
        }))
    }

    async fn publish_batch(
        &self,
        request: Request<PublishBatchRequest>,
    ) -> Result<Response<PublishBatchResponse>, Status> {
        let results = request.get_ref().messages.iter().map(accepted).collect();
        Ok(Response::new(PublishBatchResponse { results }))
    }
}

/// Answers each Hello with an InterestUpdate naming the handler.
struct EchoDistributor;

type AttachStream = Pin<Box<dyn Stream<Item = Result<DistributorMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Distributor for EchoDistributor {
    type AttachStream = AttachStream;

    async fn attach(
        &self,
        request: Request<Streaming<HandlerMessage>>,
    ) -> Result<Response<AttachStream>, Status> {
        let out = request.into_inner().filter_map(|msg| match msg {
            Ok(HandlerMessage {
                kind: Some(handler_message::Kind::Hello(hello)),
            }) => Some(Ok(DistributorMessage {
                kind: Some(distributor_message::Kind::InterestUpdate(InterestUpdate {
                    added: vec![format!("from/{}/#", hello.handler_id)],
                    removed: Vec::new(),
                    replace: true,
                })),
            })),
            Ok(_) => None,
            Err(status) => Some(Err(status)),
        });
        Ok(Response::new(Box::pin(out)))
    }
}

async fn serve(router: tonic::transport::server::Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
    format!("http://{addr}")
}

#[tokio::test]
async fn ingest_client_talks_to_server() {
    let url =
        serve(tonic::transport::Server::builder().add_service(IngestServer::new(AcceptAll))).await;
    let mut client = IngestClient::connect(url).await.unwrap();

    let one = PublishRequest {
        topic: "t/1".into(),
        message_id: "a".into(),
        ..Default::default()
    };
    let response = client.publish(one.clone()).await.unwrap().into_inner();
    let result = response.result.unwrap();
    assert_eq!(result.message_id, "a");
    assert_eq!(result.outcome(), PublishOutcome::Accepted);

    let batch = PublishBatchRequest {
        messages: ["b", "c", "d"]
            .map(|id| PublishRequest {
                message_id: id.into(),
                ..one.clone()
            })
            .to_vec(),
    };
    let results = client
        .publish_batch(batch)
        .await
        .unwrap()
        .into_inner()
        .results;
    let ids: Vec<_> = results.iter().map(|r| r.message_id.as_str()).collect();
    assert_eq!(ids, ["b", "c", "d"]);
    assert!(
        results
            .iter()
            .all(|r| r.outcome() == PublishOutcome::Accepted)
    );
}

#[tokio::test]
async fn distributor_attach_streams_both_ways() {
    let url = serve(
        tonic::transport::Server::builder().add_service(DistributorServer::new(EchoDistributor)),
    )
    .await;
    let mut client = DistributorClient::connect(url).await.unwrap();

    let hellos = ["h0", "h1"].map(|id| HandlerMessage {
        kind: Some(handler_message::Kind::Hello(Hello {
            handler_id: id.into(),
            generation: 1,
        })),
    });
    let mut inbound = client
        .attach(tokio_stream::iter(hellos))
        .await
        .unwrap()
        .into_inner();
    let mut filters = Vec::new();
    while let Some(msg) = inbound.message().await.unwrap() {
        match msg.kind {
            Some(distributor_message::Kind::InterestUpdate(update)) => filters.extend(update.added),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(filters, ["from/h0/#", "from/h1/#"]);
}
