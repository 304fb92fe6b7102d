//! The `throng` binary: parse the command line, set up logging, run the service.

mod agent;
mod cli;
mod dev;
mod distributor;
mod grpc;
mod publish;
mod signal;

use clap::Parser;

// jemalloc keeps the small, long-lived, 128-byte-aligned objects of an idle connection
// (task, socket registration) in exact size classes: ~820 B per idle connection
// against ~990 B with glibc's malloc; its background threads hand memory freed after a
// connection storm back to the system (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    // One TLS crypto provider for every rustls user in the process (the Kubernetes
    // client among them), whatever other crates' features compiled in.
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("THRONG_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("throng: cannot start the runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("throng: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
