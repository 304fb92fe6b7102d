//! Agent settings, validated once before anything binds.

use std::path::PathBuf;
use std::time::Duration;

/// How an admitted connection reaches its handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandoffMode {
    /// TCP to the handler's hand-off listener: PROXY v2 header, CONNECT bytes, then a relay.
    Proxy,
    /// The socket itself over a Unix socket (SCM_RIGHTS); the agent keeps nothing.
    Fd,
}

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub handoff: HandoffMode,
    /// Directory of the handlers' fd hand-off sockets, `<dir>/<member id>.sock` (fd mode).
    pub fd_handoff_dir: Option<PathBuf>,
    /// Expect a PROXY v1/v2 header from the load balancer before MQTT.
    pub proxy_protocol: bool,
    /// Deadline for the first packet (CONNECT), and for a PROXY header before it.
    pub connect_timeout: Duration,
    /// Largest CONNECT accepted.
    pub max_connect_size: usize,
    /// How long one attempt to reach a handler may take before the next is tried.
    pub handoff_timeout: Duration,
    pub max_connections: usize,
    /// Connections at once in the CONNECT phase (refused ones included); accept
    /// waits beyond it, so a flood of silent sockets cannot hold unbounded state.
    pub max_pending_connects: usize,
    pub max_connections_per_ip: usize,
    /// Connects per second and burst, per client address (IPv6: per /64).
    pub per_ip_rate: Option<(f64, u32)>,
    /// Connects per second and burst across all clients.
    pub global_rate: Option<(f64, u32)>,
    pub blocklist_file: Option<PathBuf>,
    /// Threads copying bytes of proxied connections.
    pub relay_threads: usize,
    /// How long live proxied connections are kept after SIGTERM.
    pub shutdown_grace: Duration,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            handoff: HandoffMode::Proxy,
            fd_handoff_dir: None,
            proxy_protocol: false,
            connect_timeout: Duration::from_secs(10),
            max_connect_size: 64 * 1024,
            handoff_timeout: Duration::from_secs(2),
            max_connections: 1_000_000,
            max_pending_connects: 65_536,
            max_connections_per_ip: 1_000_000,
            per_ip_rate: None,
            global_rate: None,
            blocklist_file: None,
            relay_threads: 2,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

impl AgentConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.handoff == HandoffMode::Fd && self.fd_handoff_dir.is_none() {
            return Err("--handoff fd needs --fd-handoff-dir".into());
        }
        if self.max_connect_size < 16 {
            return Err("max connect size must be at least 16 bytes".into());
        }
        if self.handoff == HandoffMode::Fd
            && self.max_connect_size > throng_handoff::MAX_ALREADY_READ
        {
            return Err(format!(
                "--handoff fd passes at most {} bytes read ahead: --max-connect-size must not exceed it",
                throng_handoff::MAX_ALREADY_READ
            ));
        }
        if self.max_connections == 0
            || self.max_connections_per_ip == 0
            || self.max_pending_connects == 0
        {
            return Err("connection caps must be at least 1".into());
        }
        if self.relay_threads == 0 {
            return Err("relay threads must be at least 1".into());
        }
        for (name, rate) in [("per-ip", self.per_ip_rate), ("global", self.global_rate)] {
            if let Some((per_second, burst)) = rate
                && (per_second.is_nan() || per_second <= 0.0 || burst == 0)
            {
                return Err(format!(
                    "{name} connect rate needs a positive rate and burst"
                ));
            }
        }
        if self.connect_timeout.is_zero() || self.handoff_timeout.is_zero() {
            return Err("timeouts must be positive".into());
        }
        Ok(())
    }
}
