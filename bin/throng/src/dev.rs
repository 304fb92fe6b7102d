//! `throng dev`: every service in one process on loopback, no Redis needed: a real
//! agent on the MQTT port routing by client id to `--dev-handlers` handlers over
//! their hand-off listeners, one admin port (metrics of all, `/v1/owner`), and the
//! gRPC port with the health service.

use std::sync::Arc;

use prometheus_client::registry::Registry;
use throng_agent::{Agent, AgentConfig};
use throng_handler::{Handler, HandlerMetrics, ListenerKind};
use throng_ring::Member;
use tokio_util::sync::CancellationToken;

use crate::cli::{DevArgs, bind};

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    if args.dev_handlers == 0 {
        anyhow::bail!("--dev-handlers must be at least 1");
    }
    let grace = args.engine.shutdown_grace;
    let mqtt = bind(Some(args.mqtt_listen))?.expect("address given");
    let admin = bind(Some(args.admin_listen))?.expect("address given");
    let grpc_listener = bind(Some(args.grpc_listen))?.expect("address given");

    let mut registry = Registry::default();
    let handler_metrics = HandlerMetrics::default();
    handler_metrics.register(&mut registry);
    let mut handlers = Vec::new();
    let mut members = Vec::new();
    for i in 0..args.dev_handlers {
        let id = format!("dev-handler-{i}");
        let handler =
            Handler::with_metrics(args.engine.to_config(id.clone()), handler_metrics.clone())?;
        let handoff = throng_handler::bind_listener("127.0.0.1:0".parse()?)?;
        members.push(Member::new(id, handoff.local_addr()?.to_string()));
        handler.serve(handoff, ListenerKind::Handoff);
        handlers.push(handler);
    }
    Handler::link_in_process(&handlers.iter().collect::<Vec<_>>());
    let ring = throng_discovery::Membership::spawn(throng_discovery::static_updates(members));
    let agent_config = AgentConfig {
        connect_timeout: args.engine.connect_timeout,
        shutdown_grace: grace,
        ..AgentConfig::default()
    };
    let agent = Agent::start(agent_config, ring, &mut registry)?;
    tracing::info!(addr = %mqtt.local_addr()?, handlers = handlers.len(), "mqtt listening (agent)");
    agent.serve(mqtt);

    let stop = CancellationToken::new();
    let router = throng_admin::router(
        Arc::new(registry),
        Arc::new(agent.ready_check()),
        agent.admin_routes(),
    );
    tracing::info!(addr = %admin.local_addr()?, "admin listening");
    let admin_task = throng_admin::spawn(admin, router, stop.clone().cancelled_owned());
    tracing::info!(addr = %grpc_listener.local_addr()?, "grpc listening");
    let grpc = tokio::spawn(crate::grpc::serve(
        grpc_listener,
        stop.clone().cancelled_owned(),
    ));

    crate::signal::shutdown().await;
    tracing::info!("shutting down");
    // Handlers tell their clients first (MQTT 5: DISCONNECT 0x8B); the agent stops
    // accepting and its relayed connections end with them.
    tokio::join!(agent.shutdown(), async {
        for handler in &handlers {
            handler.shutdown().await;
        }
    });
    stop.cancel();
    let _ = admin_task.await;
    // gRPC clients that keep their connection open would hold shutdown forever.
    match tokio::time::timeout(grace, grpc).await {
        Ok(served) => served??,
        Err(_) => tracing::warn!("grpc connections still open after the grace period"),
    }
    Ok(())
}
