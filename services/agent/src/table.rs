//! The connection table (the paper's ConnID table): every connection the agent
//! holds, under its conn id, with the handler it was routed to. In fd hand-off mode a
//! connection leaves the table once its socket has been passed on.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::admission::AdmitGuard;

const SHARDS: u64 = 32;

/// One live connection.
pub struct ConnEntry {
    pub client_id: Option<Arc<str>>,
    pub handler: Option<Arc<str>>,
    /// Holds the connection's place in the admission counts until it closes.
    _admission: Option<AdmitGuard>,
}

pub struct ConnTable {
    shards: Box<[Mutex<HashMap<u64, ConnEntry>>]>,
    /// Relay pair id → conn id of proxied connections; `CLOSED_EARLY` marks a pair
    /// the relay closed before its conn id was filed.
    pairs: Box<[Mutex<HashMap<u64, u64>>]>,
    next: AtomicU64,
}

const CLOSED_EARLY: u64 = u64::MAX;

impl Default for ConnTable {
    fn default() -> Self {
        // The top 16 bits tell agents apart in handler logs; the rest count up.
        let prefix = u64::from(rand::random::<u16>()) << 48;
        ConnTable {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            pairs: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            next: AtomicU64::new(prefix | 1),
        }
    }
}

impl ConnTable {
    fn shard(&self, conn_id: u64) -> &Mutex<HashMap<u64, ConnEntry>> {
        &self.shards[(conn_id % SHARDS) as usize]
    }

    /// Records a new connection and returns its conn id.
    pub fn open(&self, admission: Option<AdmitGuard>) -> u64 {
        let conn_id = self.next.fetch_add(1, Ordering::Relaxed);
        self.shard(conn_id).lock().insert(
            conn_id,
            ConnEntry {
                client_id: None,
                handler: None,
                _admission: admission,
            },
        );
        conn_id
    }

    /// Notes where a connection was routed.
    pub fn routed(&self, conn_id: u64, client_id: Arc<str>, handler: Arc<str>) {
        if let Some(entry) = self.shard(conn_id).lock().get_mut(&conn_id) {
            entry.client_id = Some(client_id);
            entry.handler = Some(handler);
        }
    }

    /// Files the relay pair now carrying a proxied connection.
    pub fn relayed(&self, conn_id: u64, pair: u64) {
        let mut pairs = self.pairs[(pair % SHARDS) as usize].lock();
        if pairs.get(&pair) == Some(&CLOSED_EARLY) {
            pairs.remove(&pair);
            drop(pairs);
            self.close(conn_id);
        } else {
            pairs.insert(pair, conn_id);
        }
    }

    /// The relay closed a pair: its connection is gone.
    pub fn pair_closed(&self, pair: u64) {
        let mut pairs = self.pairs[(pair % SHARDS) as usize].lock();
        match pairs.remove(&pair) {
            Some(conn_id) => {
                drop(pairs);
                self.close(conn_id);
            }
            None => {
                pairs.insert(pair, CLOSED_EARLY);
            }
        }
    }

    /// Forgets a connection; its admission counts are released.
    pub fn close(&self, conn_id: u64) {
        let entry = self.shard(conn_id).lock().remove(&conn_id);
        drop(entry);
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    /// Live connections per handler (connections not yet routed are left out).
    pub fn by_handler(&self) -> HashMap<Arc<str>, usize> {
        let mut counts: HashMap<Arc<str>, usize> = HashMap::new();
        for shard in self.shards.iter() {
            for entry in shard.lock().values() {
                if let Some(handler) = &entry.handler {
                    *counts.entry(handler.clone()).or_default() += 1;
                }
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::{Admission, AdmissionConfig};
    use std::net::{IpAddr, Ipv4Addr};

    fn admission() -> Admission {
        Admission::new(AdmissionConfig {
            max_connections: 10,
            max_connections_per_ip: 10,
            per_ip_rate: None,
            global_rate: None,
        })
    }

    const IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    #[test]
    fn closing_a_relayed_pair_releases_its_connection() {
        let admission = admission();
        let table = ConnTable::default();
        let guard = admission.try_admit(IP, std::time::Instant::now()).unwrap();
        let conn = table.open(Some(guard));
        table.routed(conn, Arc::from("c1"), Arc::from("h0"));
        table.relayed(conn, 7);
        assert_eq!(table.len(), 1);
        assert_eq!(table.by_handler().get("h0"), Some(&1));
        assert_eq!(admission.active(), 1);
        table.pair_closed(7);
        assert_eq!(table.len(), 0);
        assert_eq!(admission.active(), 0);
    }

    #[test]
    fn a_pair_closed_before_it_was_filed_still_releases_its_connection() {
        let admission = admission();
        let table = ConnTable::default();
        let guard = admission.try_admit(IP, std::time::Instant::now()).unwrap();
        let conn = table.open(Some(guard));
        table.pair_closed(9);
        assert_eq!(table.len(), 1, "not filed yet");
        table.relayed(conn, 9);
        assert_eq!(table.len(), 0);
        assert_eq!(admission.active(), 0);
        // The tombstone is gone: a later pair with another id files normally.
        let conn = table.open(None);
        table.relayed(conn, 10);
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn conn_ids_are_unique_and_carry_an_agent_prefix() {
        let table = ConnTable::default();
        let a = table.open(None);
        let b = table.open(None);
        assert_ne!(a, b);
        assert_eq!(a >> 48, b >> 48);
    }
}
