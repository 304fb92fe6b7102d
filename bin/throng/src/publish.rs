//! `throng pub`: the command-line client of the ingest API. Publishes one message
//! to a client id or a topic and prints the outcome; the exit status is 0 only
//! when the message was accepted or queued.

use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use throng_proto::v1::ingest_client::IngestClient;
use throng_proto::v1::{PublishOutcome, PublishRequest, UserProperty};

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["client", "topic"])))]
pub struct PubArgs {
    /// Ingest API address (a distributor, or `throng dev`'s --grpc-listen).
    #[arg(long, env = "THRONG_GRPC", default_value = "127.0.0.1:50051")]
    pub grpc: String,
    /// Deliver to this client id only (routed to the handler that owns it).
    #[arg(long)]
    pub client: Option<String>,
    /// Topic of the message: every matching subscription gets it, or with
    /// --client the topic the device sees (default `$throng/downlink/<client id>`).
    #[arg(long)]
    pub topic: Option<String>,
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=2))]
    pub qos: u32,
    /// Store as the topic's retained message (topic publishes only).
    #[arg(long)]
    pub retain: bool,
    #[arg(long, default_value = "")]
    pub payload: String,
    /// Message expiry interval in seconds.
    #[arg(long)]
    pub expiry: Option<u32>,
    /// MQTT 5 user property `key=value`; repeatable.
    #[arg(long = "property", value_parser = parse_property)]
    pub properties: Vec<(String, String)>,
    #[arg(long)]
    pub content_type: Option<String>,
    #[arg(long)]
    pub response_topic: Option<String>,
    /// Idempotency key: a retry with the same id is not delivered twice.
    #[arg(long, default_value = "")]
    pub message_id: String,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

fn parse_property(raw: &str) -> Result<(String, String), String> {
    raw.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{raw:?} is not key=value"))
}

pub async fn run(args: PubArgs) -> anyhow::Result<std::process::ExitCode> {
    let uri = if args.grpc.contains("://") {
        args.grpc.clone()
    } else {
        format!("http://{}", args.grpc)
    };
    let channel = tonic::transport::Endpoint::from_shared(uri)?
        .connect_timeout(args.timeout)
        .timeout(args.timeout)
        .connect()
        .await?;
    let mut client = IngestClient::new(channel);
    let topic = match (&args.topic, &args.client) {
        (Some(topic), _) => topic.clone(),
        (None, Some(client)) => throng_distributor::downlink::client_topic(client),
        (None, None) => unreachable!("clap requires --client or --topic"),
    };
    let request = PublishRequest {
        client_id: args.client.clone().unwrap_or_default(),
        topic,
        payload: Bytes::from(args.payload.into_bytes()),
        qos: args.qos,
        retain: args.retain,
        expiry_seconds: args.expiry,
        user_properties: args
            .properties
            .into_iter()
            .map(|(key, value)| UserProperty { key, value })
            .collect(),
        content_type: args.content_type,
        response_topic: args.response_topic,
        correlation_data: None,
        payload_format_indicator: None,
        message_id: args.message_id,
    };
    let result = client
        .publish(request)
        .await?
        .into_inner()
        .result
        .ok_or_else(|| anyhow::anyhow!("empty response"))?;
    let outcome = result.outcome();
    let name = outcome
        .as_str_name()
        .trim_start_matches("PUBLISH_OUTCOME_")
        .to_lowercase();
    if result.reason.is_empty() {
        println!("{name} {}", result.message_id);
    } else {
        println!("{name} {}: {}", result.message_id, result.reason);
    }
    Ok(match outcome {
        PublishOutcome::Accepted | PublishOutcome::Queued => std::process::ExitCode::SUCCESS,
        _ => std::process::ExitCode::FAILURE,
    })
}
