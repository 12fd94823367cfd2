//! This replica's view of the shared store: copies of the sessions it
//! serves (for `redis_local_cache`), the session objects handed out while
//! anything holds them (so a revocation reaches a websocket), and what
//! other replicas said lately (revoked, changed), for a cache fill that
//! raced their message. Kept honest by pub/sub (`redis::RedisStore::run`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use moka::sync::Cache;

use super::Session;
use crate::config::settings::SessionSettings;

/// The caches, each a cheap handle (clones share them).
#[derive(Clone)]
pub struct Replica {
    /// Copies of the sessions this replica serves, by id.
    local: Cache<String, Arc<Session>>,
    /// Their ids by hash (pub/sub names sessions by hash).
    hash_ids: Cache<[u8; 32], String>,
    /// Every session object handed out here, by id hash, while anything
    /// holds it: revocations reach long-lived holders too.
    held: Cache<[u8; 32], Weak<Session>>,
    /// Sessions revoked in the last minute.
    recently_revoked: Cache<[u8; 32], ()>,
    /// Sessions another replica changed in the last minute, each with the
    /// `changes` count when it was told.
    recently_changed: Cache<[u8; 32], u64>,
    changes: Arc<AtomicU64>,
}

impl Replica {
    pub fn new(s: &SessionSettings, local_cache: Duration) -> Replica {
        fn minute<V: Clone + Send + Sync + 'static>() -> Cache<[u8; 32], V> {
            Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(Duration::from_secs(60))
                .build()
        }
        Replica {
            local: Cache::builder()
                .max_capacity(s.max_sessions)
                .time_to_live(local_cache)
                .build(),
            hash_ids: Cache::builder()
                .max_capacity(s.max_sessions)
                .time_to_live(s.absolute_timeout)
                .build(),
            held: Cache::builder()
                .max_capacity(s.max_sessions)
                .time_to_live(s.absolute_timeout)
                .build(),
            recently_revoked: minute(),
            recently_changed: minute(),
            changes: Arc::default(),
        }
    }

    /// The local copy of session `id`.
    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.local.get(id)
    }

    pub fn invalidate(&self, id: &str) {
        self.local.invalidate(id);
    }

    pub fn remove(&self, id: &str) -> Option<Arc<Session>> {
        self.local.remove(id)
    }

    /// The number of changes heard so far (see `changed_since`).
    pub fn changes_seen(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    /// Whether another replica said it changed session `h` after the
    /// `changes` count was `since`.
    pub fn changed_since(&self, h: &[u8; 32], since: u64) -> bool {
        self.recently_changed.get(h).is_some_and(|at| at > since)
    }

    pub fn recently_revoked(&self, h: &[u8; 32]) -> bool {
        self.recently_revoked.contains_key(h)
    }

    /// The session object some holder still has for `h`, if not revoked.
    pub fn held(&self, h: &[u8; 32]) -> Option<Arc<Session>> {
        self.held.get(h).and_then(|w| w.upgrade()).filter(|s| !s.is_revoked())
    }

    /// Keeps `s` as the copy of session `id` (hash `h`).
    pub fn keep(&self, id: &str, h: [u8; 32], s: Arc<Session>) {
        self.held.insert(h, Arc::downgrade(&s));
        self.local.insert(id.to_string(), s);
        self.hash_ids.insert(h, id.to_string());
    }

    /// Keeps `s` as the copy, the held object being the same already.
    pub fn keep_copy(&self, id: &str, h: [u8; 32], s: Arc<Session>) {
        self.local.insert(id.to_string(), s);
        self.hash_ids.insert(h, id.to_string());
    }

    /// A revocation from any replica: the local copy goes, and whatever
    /// holds it stops.
    pub fn forget(&self, h: [u8; 32]) {
        self.recently_revoked.insert(h, ());
        self.let_go(h, self.hash_ids.remove(&h));
    }

    /// Another replica stored session `h` anew with other attributes (a
    /// refresh): the local copy goes, and whatever holds it stops; the next
    /// request reads the new record.
    pub fn changed_elsewhere(&self, h: [u8; 32]) {
        let n = self.changes.fetch_add(1, Ordering::AcqRel) + 1;
        self.recently_changed.insert(h, n);
        self.let_go(h, self.hash_ids.get(&h));
    }

    /// This replica's copies of session `h` (`id`'s local copy, the held
    /// one) go, and whatever holds them stops.
    fn let_go(&self, h: [u8; 32], id: Option<String>) {
        if let Some(s) = id.and_then(|id| self.local.remove(&id)) {
            s.revoke();
        }
        if let Some(s) = self.held.remove(&h).and_then(|w| w.upgrade()) {
            s.revoke();
        }
    }

    /// Every held session stops (the store is unreachable: revocations
    /// would go unheard); the local copies go.
    pub fn end_held(&self) -> usize {
        self.local.invalidate_all();
        // Entry by entry: one held from now on is checked on reconnection.
        let mut held = Vec::new();
        for (h, w) in self.held.iter() {
            self.held.invalidate(&*h);
            held.extend(w.upgrade());
        }
        Session::revoke_all(held.iter().map(|s| &**s))
    }

    /// The local copies go (they are read again from the store); the
    /// hashes of the sessions still held, to check.
    pub fn drop_copies(&self) -> Vec<[u8; 32]> {
        self.local.invalidate_all();
        self.held.iter().map(|(h, _)| *h).collect()
    }

    /// The local copies, by id.
    pub fn copies(&self) -> Vec<(String, Arc<Session>)> {
        self.local.run_pending_tasks();
        self.local.iter().map(|(k, v)| ((*k).clone(), v)).collect()
    }

    pub fn copy_count(&self) -> u64 {
        self.local.run_pending_tasks();
        self.local.entry_count()
    }
}
