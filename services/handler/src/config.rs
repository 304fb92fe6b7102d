//! Handler settings: protocol limits, session policy and security, validated once.

use std::path::PathBuf;
use std::time::Duration;

/// Everything the handler engine needs to know; built by the CLI or by tests.
#[derive(Debug, Clone)]
pub struct HandlerConfig {
    /// Member id of this handler (the StatefulSet pod name in a cluster).
    pub id: String,
    /// Largest packet accepted from a client, announced as Maximum Packet Size (v5).
    pub max_packet_size: u32,
    /// Deadline for the first packet (CONNECT) after accept.
    pub connect_timeout: Duration,
    /// Keepalive values above this are lowered (v5: Server Keep Alive) or refused (v3).
    pub max_keepalive: u16,
    /// QoS 1/2 messages in flight towards the client, and QoS 2 accepted from it.
    pub receive_maximum: u16,
    /// Topic aliases a v5 client may use towards us.
    pub topic_alias_maximum: u16,
    /// Messages held for one session while they cannot be sent; beyond it new ones are dropped and counted.
    pub max_queued_messages: usize,
    /// Subscriptions one session may hold; beyond it SUBACK says quota exceeded.
    pub max_subscriptions_per_session: usize,
    /// Upper bound on session expiry; also the expiry of 3.1.1 persistent sessions.
    pub max_session_expiry: Duration,
    /// Longest client identifier accepted.
    pub max_client_id_len: usize,
    /// Connections this handler holds at most; accept waits beyond it.
    pub max_connections: usize,
    pub allow_anonymous: bool,
    pub password_file: Option<PathBuf>,
    pub acl_file: Option<PathBuf>,
    /// How long shutdown waits for connections to close after telling them to go.
    pub shutdown_grace: Duration,
    /// Device publishes whose topic matches one of these filters are appended to the
    /// uplink stream (`throng:uplink`) for backends; needs `redis_url`.
    pub uplink_filters: Vec<String>,
    /// Redis holding the uplink stream, e.g. `redis://127.0.0.1:6379/`.
    pub redis_url: Option<String>,
    /// Device publishes queued towards one distributor beyond which QoS 0 ones
    /// are dropped (counted) and publishing connections stop reading until the
    /// queue drains to half of it. QoS 1/2 ones are never dropped for it.
    pub forward_queue_limit: usize,
}

impl Default for HandlerConfig {
    fn default() -> Self {
        HandlerConfig {
            id: "handler-0".to_string(),
            max_packet_size: 1024 * 1024,
            connect_timeout: Duration::from_secs(10),
            max_keepalive: 65535,
            receive_maximum: 1024,
            topic_alias_maximum: 64,
            max_queued_messages: 1000,
            max_subscriptions_per_session: 1000,
            max_session_expiry: Duration::from_secs(2 * 60 * 60),
            max_client_id_len: 1024,
            max_connections: 1_000_000,
            allow_anonymous: true,
            password_file: None,
            acl_file: None,
            shutdown_grace: Duration::from_secs(10),
            uplink_filters: Vec::new(),
            redis_url: None,
            forward_queue_limit: 16 * 1024,
        }
    }
}

impl HandlerConfig {
    /// Rejects settings the engine cannot honour.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_packet_size < 64 {
            return Err("max packet size must be at least 64 bytes".into());
        }
        if self.receive_maximum == 0 {
            return Err("receive maximum must be at least 1".into());
        }
        if self.max_queued_messages == 0 {
            return Err("max queued messages must be at least 1".into());
        }
        if self.max_connections == 0 {
            return Err("max connections must be at least 1".into());
        }
        if self.forward_queue_limit < 2 {
            return Err("forward queue limit must be at least 2".into());
        }
        if self.connect_timeout.is_zero() {
            return Err("connect timeout must be positive".into());
        }
        for filter in &self.uplink_filters {
            throng_topic::validate_filter(filter)
                .map_err(|err| format!("uplink filter {filter:?}: {err}"))?;
        }
        if !self.uplink_filters.is_empty() && self.redis_url.is_none() {
            return Err("uplink filters need a redis url".into());
        }
        Ok(())
    }
}
