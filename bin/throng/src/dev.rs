//! `throng dev`: every service in one process on loopback, no Redis needed.
//! Today that is one handler serving MQTT directly, with the admin port.

use throng_handler::HandlerListeners;

use crate::cli::{DevArgs, bind};

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let config = args.engine.to_config("dev-handler-0".to_string());
    config.validate().map_err(anyhow::Error::msg)?;
    let listeners = HandlerListeners {
        mqtt: bind(Some(args.mqtt_listen)).await?,
        handoff: None,
        admin: bind(Some(args.admin_listen)).await?,
    };
    throng_handler::run(config, listeners, crate::signal::shutdown()).await
}
