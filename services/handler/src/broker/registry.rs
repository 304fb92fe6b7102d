//! The session registry: client id → session, sharded so a connection storm over
//! many client ids does not queue on one lock. Each entry is only the session
//! pointer; the key is the session's own client id.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};

use crate::session::Session;

const SHARDS: usize = 64;

/// A session keyed by its client id.
#[derive(Clone)]
struct Entry(Arc<Session>);

impl Borrow<str> for Entry {
    fn borrow(&self) -> &str {
        &self.0.client_id
    }
}

impl Hash for Entry {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.client_id.hash(state);
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.0.client_id == other.0.client_id
    }
}

impl Eq for Entry {}

pub struct SessionRegistry {
    shards: Box<[Mutex<HashSet<Entry>>]>,
    hasher: RandomState,
}

impl Default for SessionRegistry {
    fn default() -> Self {
        SessionRegistry {
            shards: (0..SHARDS).map(|_| Mutex::new(HashSet::new())).collect(),
            hasher: RandomState::new(),
        }
    }
}

/// One locked shard: look up and replace sessions of the client ids it holds.
pub struct Shard<'a>(MutexGuard<'a, HashSet<Entry>>);

impl Shard<'_> {
    pub fn get(&self, client_id: &str) -> Option<Arc<Session>> {
        self.0.get(client_id).map(|entry| entry.0.clone())
    }

    /// Inserts the session, replacing any other with the same client id.
    pub fn insert(&mut self, session: Arc<Session>) {
        self.0.replace(Entry(session));
    }
}

impl SessionRegistry {
    /// Locks the shard holding `client_id`.
    pub fn shard(&self, client_id: &str) -> Shard<'_> {
        let index = (self.hasher.hash_one(client_id) as usize) % self.shards.len();
        Shard(self.shards[index].lock())
    }

    /// Forgets `session` unless another session has replaced it under its client id.
    pub fn remove_if_same(&self, session: &Arc<Session>) {
        let mut shard = self.shard(&session.client_id);
        if shard
            .0
            .get(&*session.client_id)
            .is_some_and(|entry| Arc::ptr_eq(&entry.0, session))
        {
            shard.0.remove(&*session.client_id);
        }
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| shard.lock().len()).sum()
    }

    /// Visits every session; each shard is locked while its sessions are visited.
    pub fn for_each(&self, mut f: impl FnMut(&Arc<Session>)) {
        for shard in self.shards.iter() {
            for entry in shard.lock().iter() {
                f(&entry.0);
            }
        }
    }
}
