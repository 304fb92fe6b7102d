//! Connection admission: the checks every accepted socket passes before the agent
//! spends anything on it.
//!
//! [`Admission::try_admit`] enforces, in this order:
//! 1. the global concurrent-connection cap ([`Refusal::OverCapacity`]);
//! 2. the per-client concurrent-connection cap ([`Refusal::QuotaExceeded`]);
//! 3. the per-client connect-rate token bucket ([`Refusal::RateLimited`]);
//! 4. the global connect-rate token bucket ([`Refusal::RateLimited`]).
//!
//! A refused attempt consumes nothing: no token from either bucket, no slot. An
//! admitted one returns an [`AdmitGuard`] that holds its global and per-client
//! slots until dropped.
//!
//! Clients: an IPv4 address (or IPv4-mapped IPv6 address) is one client. An IPv6
//! address is grouped by its /64 prefix, since one host or home usually owns a whole
//! /64 and can pick any address in it: per-client caps and buckets apply to the
//! /64. Clients behind one NAT share an IPv4 address; size the per-IP cap for that.
//!
//! Token buckets are kept as GCRA (one "theoretical arrival time" per bucket): a
//! bucket of `burst` tokens refilled at `rate` per second admits `burst` connects
//! at once and then one every `1/rate` seconds. The global bucket is one atomic; the
//! per-client state (connection count + bucket, 32 bytes with its key) lives in
//! one of 64 mutex-guarded hash-map shards (`clients.rs`), so every check is O(1).
//!
//! Memory: a client's entry is removed once it has no connections and its bucket is
//! full again: at once on the last guard's drop if the bucket is already full,
//! otherwise by a sweep (amortized inside `try_admit` as a shard grows, or
//! [`Admission::sweep`]). The number of tracked clients is capped
//! ([`DEFAULT_MAX_TRACKED_IPS`], or [`Admission::with_max_tracked_ips`]). When the
//! table is full, a client not already in it is refused with
//! [`Refusal::OverCapacity`] (after one sweep of the whole table, at most every
//! 100 ms): memory stays bounded under a scan from many addresses, at the price of
//! refusing new clients while the table is full of live ones. Clients already
//! tracked are unaffected. Only admitted connects add entries, so with a global
//! rate bucket the table can only fill at that rate.
//!
//! Times are the caller's `Instant`s; one earlier than the `Admission`'s creation
//! counts as its creation time.

mod bucket;
mod clients;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use bucket::Gcra;
use clients::{ClientKey, ClientState, ClientTable, reserve};

/// Default cap on the number of clients (IPv4 addresses, IPv6 /64s) tracked at
/// once: about 64 MiB of table at worst.
pub const DEFAULT_MAX_TRACKED_IPS: usize = 1 << 20;

/// Admission limits.
#[derive(Debug, Clone, PartialEq)]
pub struct AdmissionConfig {
    /// Concurrent connections admitted in total.
    pub max_connections: usize,
    /// Concurrent connections admitted per client (IPv4 address or IPv6 /64).
    pub max_connections_per_ip: usize,
    /// Per-client connect rate: (connects per second, burst).
    pub per_ip_rate: Option<(f64, u32)>,
    /// Total connect rate: (connects per second, burst).
    pub global_rate: Option<(f64, u32)>,
}

/// An [`AdmissionConfig`] that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AdmissionConfigError {
    #[error("max connections must be at least 1")]
    ZeroMaxConnections,
    #[error("max connections per IP must be at least 1")]
    ZeroMaxConnectionsPerIp,
    #[error("{which} connect rate must be a positive number per second, got {rate}")]
    BadRate { which: &'static str, rate: f64 },
    #[error("{which} connect burst must be at least 1")]
    ZeroBurst { which: &'static str },
}

impl AdmissionConfig {
    /// Checks the limits; [`Admission::new`] panics on a config that fails this.
    pub fn validate(&self) -> Result<(), AdmissionConfigError> {
        if self.max_connections == 0 {
            return Err(AdmissionConfigError::ZeroMaxConnections);
        }
        if self.max_connections_per_ip == 0 {
            return Err(AdmissionConfigError::ZeroMaxConnectionsPerIp);
        }
        for (which, limit) in [("per-IP", self.per_ip_rate), ("global", self.global_rate)] {
            if let Some((rate, burst)) = limit {
                if !(rate.is_finite() && rate > 0.0) {
                    return Err(AdmissionConfigError::BadRate { which, rate });
                }
                if burst == 0 {
                    return Err(AdmissionConfigError::ZeroBurst { which });
                }
            }
        }
        Ok(())
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Refusal {
    /// The global connection cap is reached (or the client table is full).
    #[error("server at connection capacity")]
    OverCapacity,
    /// The client's concurrent-connection cap is reached.
    #[error("too many connections from this address")]
    QuotaExceeded,
    /// The client's or the global connect-rate bucket is empty.
    #[error("connect rate exceeded")]
    RateLimited,
}

impl Refusal {
    /// The CONNACK return code (v3.1.1) or reason code (v5) to refuse with.
    pub fn connack_code(self, v5: bool) -> u8 {
        match (v5, self) {
            (false, _) => 0x03,
            (true, Refusal::OverCapacity) => 0x89,
            (true, Refusal::QuotaExceeded) => 0x97,
            (true, Refusal::RateLimited) => 0x9F,
        }
    }

    /// The `result` label of `throng_agent_accepts_total`.
    pub fn metric_label(self) -> &'static str {
        match self {
            Refusal::OverCapacity => "over_capacity",
            Refusal::QuotaExceeded => "quota_exceeded",
            Refusal::RateLimited => "rate_limited",
        }
    }
}

/// The admission state shared by all accept loops; cheap to clone.
#[derive(Clone)]
pub struct Admission {
    inner: Arc<Inner>,
}

struct Inner {
    max_connections: usize,
    max_per_ip: u32,
    per_ip_rate: Option<Gcra>,
    global_rate: Option<Gcra>,
    /// Time zero of the buckets' nanosecond clock.
    epoch: Instant,
    active: AtomicUsize,
    global_tat: AtomicU64,
    clients: ClientTable,
    config: AdmissionConfig,
}

impl Admission {
    /// Admission with these limits, tracking up to [`DEFAULT_MAX_TRACKED_IPS`] clients.
    ///
    /// # Panics
    /// If `config` fails [`AdmissionConfig::validate`].
    pub fn new(config: AdmissionConfig) -> Self {
        Self::with_max_tracked_ips(config, DEFAULT_MAX_TRACKED_IPS)
    }

    /// Admission tracking at most `max_tracked_ips` clients (at least 1).
    ///
    /// # Panics
    /// If `config` fails [`AdmissionConfig::validate`].
    pub fn with_max_tracked_ips(config: AdmissionConfig, max_tracked_ips: usize) -> Self {
        if let Err(err) = config.validate() {
            panic!("invalid admission config: {err}");
        }
        Self {
            inner: Arc::new(Inner {
                max_connections: config.max_connections,
                max_per_ip: u32::try_from(config.max_connections_per_ip).unwrap_or(u32::MAX),
                per_ip_rate: config.per_ip_rate.map(|(r, b)| Gcra::new(r, b)),
                global_rate: config.global_rate.map(|(r, b)| Gcra::new(r, b)),
                epoch: Instant::now(),
                active: AtomicUsize::new(0),
                global_tat: AtomicU64::new(0),
                clients: ClientTable::new(max_tracked_ips),
                config,
            }),
        }
    }

    /// Admits a connection from `ip` at `now`, or says why not. The returned guard
    /// holds the connection's slots until it is dropped.
    pub fn try_admit(&self, ip: IpAddr, now: Instant) -> Result<AdmitGuard, Refusal> {
        let inner = &*self.inner;
        if inner.active.load(Ordering::Relaxed) >= inner.max_connections {
            return Err(Refusal::OverCapacity);
        }
        let now = inner.nanos(now);
        let key = ClientKey::from(ip);
        let shard = inner.clients.shard_of(key);
        let mut swept_all = false;
        loop {
            let mut map = inner.clients.lock(shard);
            let (connections, tat, known) = match map.clients.get(&key) {
                Some(state) => (state.connections, state.tat, true),
                None => (0, 0, false),
            };
            if connections >= inner.max_per_ip {
                return Err(Refusal::QuotaExceeded);
            }
            let new_tat = match inner.per_ip_rate {
                Some(bucket) => bucket.admit(tat, now).ok_or(Refusal::RateLimited)?,
                None => tat,
            };
            if !known && !inner.clients.try_track(&mut map, now) {
                drop(map);
                if !swept_all && inner.clients.full_sweep_due(now) {
                    inner.clients.sweep_all(now);
                    swept_all = true;
                    continue;
                }
                return Err(Refusal::OverCapacity);
            }
            let refusal = if !reserve(&inner.active, inner.max_connections) {
                Some(Refusal::OverCapacity)
            } else if !inner.take_global_token(now) {
                inner.active.fetch_sub(1, Ordering::AcqRel);
                Some(Refusal::RateLimited)
            } else {
                None
            };
            if let Some(refusal) = refusal {
                if !known {
                    inner.clients.untrack();
                }
                return Err(refusal);
            }
            let state = map.clients.entry(key).or_insert(ClientState {
                connections: 0,
                tat: 0,
            });
            state.connections += 1;
            state.tat = new_tat;
            drop(map);
            return Ok(AdmitGuard {
                admission: Arc::clone(&self.inner),
                key,
                shard,
            });
        }
    }

    /// Removes every client with no connections and a full bucket at `now`;
    /// returns how many were removed. Optional: `try_admit` also sweeps as the
    /// table grows, but a periodic call keeps idle entries from lingering.
    pub fn sweep(&self, now: Instant) -> usize {
        self.inner.clients.sweep_all(self.inner.nanos(now))
    }

    /// Connections currently admitted (guards alive).
    pub fn active(&self) -> usize {
        self.inner.active.load(Ordering::Relaxed)
    }

    /// Clients (IPv4 addresses, IPv6 /64s) currently tracked.
    pub fn tracked_ips(&self) -> usize {
        self.inner.clients.tracked()
    }

    /// Connections currently admitted from `ip`'s client (its IPv6 /64).
    pub fn connections_from(&self, ip: IpAddr) -> usize {
        let key = ClientKey::from(ip);
        let map = self.inner.clients.lock(self.inner.clients.shard_of(key));
        map.clients.get(&key).map_or(0, |s| s.connections as usize)
    }

    pub fn config(&self) -> &AdmissionConfig {
        &self.inner.config
    }
}

impl Inner {
    fn nanos(&self, t: Instant) -> u64 {
        let elapsed = t.saturating_duration_since(self.epoch).as_nanos();
        u64::try_from(elapsed).unwrap_or(u64::MAX)
    }

    fn take_global_token(&self, now: u64) -> bool {
        let Some(bucket) = self.global_rate else {
            return true;
        };
        self.global_tat
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |tat| {
                bucket.admit(tat, now)
            })
            .is_ok()
    }
}

impl fmt::Debug for Admission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admission")
            .field("config", &self.inner.config)
            .field("active", &self.active())
            .field("tracked_ips", &self.tracked_ips())
            .finish()
    }
}

/// One admitted connection's slots; released on drop.
#[must_use = "dropping the guard releases the connection's slots at once"]
pub struct AdmitGuard {
    admission: Arc<Inner>,
    key: ClientKey,
    shard: usize,
}

impl Drop for AdmitGuard {
    fn drop(&mut self) {
        let inner = &*self.admission;
        inner.active.fetch_sub(1, Ordering::AcqRel);
        let now = inner.nanos(Instant::now());
        inner.clients.release(self.shard, self.key, now);
    }
}

impl fmt::Debug for AdmitGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdmitGuard")
            .field("client", &self.key)
            .finish()
    }
}
