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
mod procfs;
mod report;
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
    /// Connection storm: open N connections as fast as allowed, optionally hold them idle.
    Connect(Box<connect::ConnectArgs>),
    /// Downlink throughput: connect N devices, push M messages for them through
    /// Redis or the ingest API, measure what arrives.
    Downlink(Box<downlink::DownlinkArgs>),
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
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Connect(args) => connect::run(*args),
        Command::Downlink(args) => downlink::run(*args),
        Command::Worker { scenario } => match scenario {
            WorkerScenario::Connect => connect::worker::run(),
            WorkerScenario::Downlink => downlink::worker::run(),
        },
    }
}
