//! `throng dev`: every service in one process on loopback, no Redis needed.
//! Today that is one handler serving MQTT directly, the admin port, and the gRPC
//! port with the health service.

use throng_handler::HandlerListeners;
use tokio_util::sync::CancellationToken;

use crate::cli::{DevArgs, bind};

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let config = args.engine.to_config("dev-handler-0".to_string());
    let grace = config.shutdown_grace;
    config.validate().map_err(anyhow::Error::msg)?;
    let listeners = HandlerListeners {
        mqtt: bind(Some(args.mqtt_listen))?,
        handoff: None,
        fd_handoff: None,
        admin: bind(Some(args.admin_listen))?,
    };
    let grpc_listener = bind(Some(args.grpc_listen))?.expect("address given");
    tracing::info!(addr = %grpc_listener.local_addr()?, "grpc listening");
    let stop = CancellationToken::new();
    let grpc = tokio::spawn(crate::grpc::serve(
        grpc_listener,
        stop.clone().cancelled_owned(),
    ));
    let handler = throng_handler::run(config, listeners, async {
        crate::signal::shutdown().await;
        stop.cancel();
    })
    .await;
    stop.cancel();
    // gRPC clients that keep their connection open would hold shutdown forever.
    match tokio::time::timeout(grace, grpc).await {
        Ok(served) => served??,
        Err(_) => tracing::warn!("grpc connections still open after the grace period"),
    }
    handler
}
