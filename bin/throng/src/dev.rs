//! `throng dev`: every service in one process on loopback, no Redis needed: a real
//! agent on the MQTT port routing by client id to `--dev-handlers` handlers over
//! their hand-off listeners, a distributor the handlers attach to over the gRPC
//! port (which also serves the ingest API and health), and one admin port
//! (metrics of all, `/v1/owner`). With `--redis-url` the distributor also
//! consumes the downlink stream and handlers append `--uplink-filter` matches to
//! the uplink stream.

use std::sync::Arc;

use prometheus_client::registry::Registry;
use throng_agent::{Agent, AgentConfig};
use throng_distributor::downlink;
use throng_distributor::{Distributor, HubConfig};
use throng_handler::{Handler, HandlerMetrics, ListenerKind};
use throng_ring::Member;
use tokio_util::sync::CancellationToken;

use crate::cli::{DevArgs, bind};

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    if args.dev_handlers == 0 {
        anyhow::bail!("--dev-handlers must be at least 1");
    }
    let grace = args.engine.shutdown_grace;
    // A bad setting fails before anything binds.
    args.engine
        .to_config("dev-handler-0".to_owned())
        .validate()
        .map_err(anyhow::Error::msg)?;
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
    let ring = throng_discovery::Membership::spawn(throng_discovery::static_updates(members));
    let distributor = Distributor::start(
        "dev-distributor",
        HubConfig::default(),
        ring.clone(),
        &mut registry,
    );
    let mut grpc_addr = grpc_listener.local_addr()?;
    if grpc_addr.ip().is_unspecified() {
        grpc_addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let distributors =
        throng_discovery::Membership::spawn(throng_discovery::static_updates(vec![Member::new(
            distributor.id().to_owned(),
            grpc_addr.to_string(),
        )]));
    for handler in &handlers {
        handler.join_cluster(distributors.clone());
    }
    let agent_config = AgentConfig {
        connect_timeout: args.engine.connect_timeout,
        shutdown_grace: grace,
        ..AgentConfig::default()
    };
    let agent = Agent::start(agent_config, ring, &mut registry)?;
    tracing::info!(addr = %mqtt.local_addr()?, handlers = handlers.len(), "mqtt listening (agent)");
    agent.serve(mqtt);

    let stop = CancellationToken::new();
    let downlink = args.engine.redis_url.as_deref().map(|url| {
        let config = args.queue.downlink_config(url, distributor.id());
        tracing::info!(stream = %config.consumer.stream, "consuming the downlink stream");
        tokio::spawn(downlink::run(
            distributor.hub().clone(),
            config,
            stop.clone(),
        ))
    });
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
        Some(crate::grpc::Services::of(&distributor)),
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
    if let Some(downlink) = downlink {
        let _ = downlink.await;
    }
    // gRPC clients that keep their connection open would hold shutdown forever.
    match tokio::time::timeout(grace, grpc).await {
        Ok(served) => served??,
        Err(_) => tracing::warn!("grpc connections still open after the grace period"),
    }
    Ok(())
}
