//! throng-load: load generator for throng and any other MQTT broker.
//!
//! Scenarios are subcommands; each runs its load in worker processes that the
//! parent starts by re-executing this binary (`throng-load worker <scenario>`).

mod connect;
mod downlink;
mod handshake;
mod hist;
mod mqtt;
mod net;
mod output;
mod procfs;
mod progress;
mod pubsub;
mod report;
mod tiers;
mod workers;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "throng-load",
    version,
    about = "Load generator for MQTT brokers (throng, Mosquitto, …)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Connection storm: open N connections at a rate or with K handshakes in
    /// flight; connects/s over time, CONNACK latency, failures by cause.
    Connect(Box<connect::ConnectArgs>),
    /// Connection storm, then hold every connection open for a duration,
    /// answering keepalives; how many stayed up, closes by cause, memory per
    /// connection (broker tiers, load tool, kernel).
    Hold(Box<connect::HoldArgs>),
    /// Downlink throughput: connect N devices, push M messages for them through
    /// Redis or the ingest API, measure what arrives.
    Downlink(Box<downlink::DownlinkArgs>),
    /// Publish/subscribe: P publishers and S subscribers (fan-out, fan-in or
    /// one-to-one) at QoS 0/1/2; messages/s, end-to-end latency, losses.
    Pubsub(Box<pubsub::PubsubArgs>),
    /// Internal: a worker process of a scenario (reads its config from stdin).
    #[command(hide = true)]
    Worker {
        #[arg(value_enum)]
        scenario: WorkerScenario,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum WorkerScenario {
    Connect,
    Downlink,
    Pubsub,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Connect(args) => connect::run_connect(*args),
        Command::Hold(args) => connect::run_hold(*args),
        Command::Downlink(args) => downlink::run(*args),
        Command::Pubsub(args) => pubsub::run(*args),
        Command::Worker { scenario } => match scenario {
            WorkerScenario::Connect => connect::worker::run(),
            WorkerScenario::Downlink => downlink::worker::run(),
            WorkerScenario::Pubsub => pubsub::worker::run(),
        },
    }
}
