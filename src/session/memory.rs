//! The in-process store: sessions in moka with idle and absolute
//! timeouts, indexed by IdP session and user, and account links.

use super::*;

/// Which index a key belongs to.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum By {
    Sid,
    Sub,
}

/// Session ids by IdP session and user: plain maps
/// kept in step with the sessions (an expiry or removal takes its id out),
/// sharing the ids' allocations with the session cache. Keyed by a keyed
/// hash of the value, so no session pays for a copy of its sid, sub and
/// email here; two values with one hash only put one more session in front
/// of `MemoryStore::revoke`, which checks each.
#[derive(Default)]
pub(super) struct Indexes {
    map: Mutex<IndexMap>,
    hasher: std::collections::hash_map::RandomState,
}

/// An index key (which index, and the value's hash) → the ids of its
/// sessions (nearly always one: kept inline).
pub(super) type IndexMap = HashMap<(By, u64), smallvec::SmallVec<[Arc<str>; 1]>>;

impl Indexes {
    pub(super) fn key(&self, by: By, value: &str) -> (By, u64) {
        use std::hash::BuildHasher;
        (by, self.hasher.hash_one(value))
    }

    /// By email there is no index: only an administrator revokes by
    /// email, and a pass over the sessions (about 5 ms per 100,000) costs
    /// less than an index entry in every session.
    fn keys(&self, s: &Session) -> impl Iterator<Item = (By, u64)> {
        let id = &s.identity;
        let sid = id
            .sid
            .as_deref()
            .filter(|v| !v.is_empty())
            .map(|v| self.key(By::Sid, v));
        let sub = Some(&id.sub).filter(|v| !v.is_empty()).map(|v| self.key(By::Sub, v));
        [sid, sub].into_iter().flatten()
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, IndexMap> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(&self, id: &Arc<str>, s: &Session) {
        let keys: smallvec::SmallVec<[_; 2]> = self.keys(s).collect();
        let mut map = self.lock();
        for k in keys {
            Self::put(&mut map, k, id);
        }
    }

    pub(super) fn put(map: &mut IndexMap, k: (By, u64), id: &Arc<str>) {
        let ids = map.entry(k).or_default();
        if !ids.iter().any(|i| **i == **id) {
            ids.push(id.clone());
        }
    }

    fn forget(&self, id: &str, s: &Session) {
        let keys: smallvec::SmallVec<[_; 2]> = self.keys(s).collect();
        let mut map = self.lock();
        for k in keys {
            if let Some(ids) = map.get_mut(&k) {
                ids.retain(|i| **i != *id);
                if ids.is_empty() {
                    map.remove(&k);
                }
            }
        }
    }

    /// The ids under `value`'s key, taken out; `keep` says which are
    /// really `value`'s (the others share its hash and are put back).
    /// `keep` runs without the index lock: it may look in the session
    /// cache, whose eviction listener takes that lock.
    fn take(&self, by: By, value: &str, keep: impl Fn(&Arc<str>) -> bool) -> Vec<Arc<str>> {
        let k = self.key(by, value);
        let Some(ids) = self.lock().remove(&k) else {
            return Vec::new();
        };
        let (taken, others): (Vec<_>, Vec<_>) = ids.into_iter().partition(|id| keep(id));
        if !others.is_empty() {
            let mut map = self.lock();
            for id in &others {
                Self::put(&mut map, k, id);
            }
        }
        taken
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Sessions in memory: gone after `idle_timeout` unused or
/// `absolute_timeout` after login, whichever comes first (the cache tracks
/// idleness; the absolute deadline is each session's `expires_at`, checked
/// on every lookup, which spares the cache a second queue entry per
/// session); indexed by IdP
/// session and user so that logouts can find them (an administrator's
/// revocation by email looks through them all).
#[derive(Clone)]
pub struct MemoryStore {
    sessions: Cache<Arc<str>, Arc<Session>>,
    pub(super) index: Arc<Indexes>,
}

impl MemoryStore {
    pub fn new(s: &SessionSettings) -> Self {
        let index = Arc::new(Indexes::default());
        let on_evict = index.clone();
        MemoryStore {
            sessions: Cache::builder()
                .max_capacity(s.max_sessions)
                .time_to_idle(s.idle_timeout)
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                // Expired, evicted or removed: whatever still holds it
                // stops too, and the indexes forget it. (A replaced session
                // is `replace`'s to revoke, and keeps its id's entries: its
                // successor uses them.)
                .eviction_listener(move |id: Arc<Arc<str>>, s: Arc<Session>, cause| {
                    if cause != moka::notification::RemovalCause::Replaced {
                        s.revoke();
                        on_evict.forget(&id, &s);
                    }
                })
                .build(),
            index,
        }
    }

    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.get_at(id, crate::clock::unix_now())
    }

    /// The session, if live at `now` (Unix seconds).
    pub fn get_at(&self, id: &str, now: u64) -> Option<Arc<Session>> {
        let s = self.sessions.get(id)?;
        if s.expires_at != 0 && s.expires_at <= now {
            // Past its absolute timeout: ended now.
            self.remove(id);
            return None;
        }
        Some(s)
    }

    pub fn insert(&self, id: String, s: Arc<Session>) {
        let id: Arc<str> = id.into();
        self.index.add(&id, &s);
        self.sessions.insert(id, s);
    }

    /// Puts `new` in the place of `old` under the same id (a link), unless
    /// `old` has ended meanwhile: false then, and nothing is stored. The
    /// old object is revoked (replaced), so whatever held it stops.
    pub fn replace(&self, id: &str, old: &Arc<Session>, new: Arc<Session>) -> bool {
        use moka::ops::compute::{CompResult, Op};
        let id: Arc<str> = id.into();
        let done = self.sessions.entry(id.clone()).and_compute_with(|e| match e {
            Some(e) if Arc::ptr_eq(e.value(), old) && !old.is_revoked() => Op::Put(new.clone()),
            _ => Op::Nop,
        });
        if !matches!(done, CompResult::ReplacedWith(_)) {
            return false;
        }
        // A logout may have taken `old` out between the look and the put
        // (moka locks the key for each, not across both); its listener has
        // revoked `old` by the time the put could go in.
        if old.is_revoked() {
            self.remove(&id);
            return false;
        }
        old.revoke();
        self.index.add(&id, &new);
        true
    }

    /// Takes a session out (logout); it is revoked.
    pub fn remove(&self, id: &str) -> Option<Arc<Session>> {
        let s = self.sessions.remove(id)?;
        s.revoke();
        Some(s)
    }

    /// Ends every session `what` names; returns how many were live.
    pub fn revoke(&self, what: &Revoke) -> usize {
        let (by, value) = match what {
            Revoke::Sid(k) => (By::Sid, k),
            Revoke::Sub(k) => (By::Sub, k),
            Revoke::Email(k) => {
                let lower = |v: &str| v.chars().flat_map(char::to_lowercase).collect::<String>();
                let want = lower(k);
                let ids: Vec<Arc<str>> = self
                    .sessions
                    .iter()
                    .filter(|(_, s)| !s.identity.email.is_empty() && lower(&s.identity.email) == want)
                    .map(|(id, _)| (*id).clone())
                    .collect();
                return ids.iter().filter(|id| self.remove(id).is_some()).count();
            }
        };
        let named = |s: &Session| match by {
            By::Sid => s.identity.sid.as_deref() == Some(value.as_str()),
            _ => *s.identity.sub == **value,
        };
        // A session already gone is dropped from the index too.
        let ids = self
            .index
            .take(by, value, |id| self.sessions.get(id).is_none_or(|s| named(&s)));
        ids.iter().filter(|id| self.remove(id).is_some()).count()
    }

    /// The IdP session ids (`sid`) with live sessions here.
    pub fn sids(&self) -> Vec<String> {
        self.listed(|s| s.identity.sid.as_deref().map(str::to_string))
    }

    /// The users (`sub`) with sessions here.
    pub fn subs(&self) -> Vec<String> {
        self.listed(|s| Some(s.identity.sub.to_string()))
    }

    fn listed(&self, f: impl Fn(&Session) -> Option<String>) -> Vec<String> {
        let mut out: Vec<String> = self.sessions.iter().filter_map(|(_, s)| f(&s)).collect();
        out.sort();
        out.dedup();
        out
    }

    /// Expiries are noticed on access; this notices them now (and so
    /// closes what the expired sessions still hold open).
    pub fn housekeeping(&self) {
        self.sessions.run_pending_tasks();
    }

    pub fn len(&self) -> u64 {
        self.sessions.run_pending_tasks();
        self.sessions.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Account links: a KaseyaOne user (sub) to their account on one module
/// instance, made once on the link page. Only the module username is kept,
/// never the credentials that proved it.
#[derive(Clone)]
pub struct LinkStore {
    links: Cache<(String, String), Arc<str>>,
}

impl LinkStore {
    pub fn new(capacity: u64) -> Self {
        LinkStore {
            links: Cache::builder().max_capacity(capacity).build(),
        }
    }

    pub fn get(&self, sub: &str, route: &str) -> Option<Arc<str>> {
        self.links.get(&(sub.to_string(), route.to_string()))
    }

    pub fn insert(&self, sub: &str, route: &str, module_user: &str) {
        self.links
            .insert((sub.to_string(), route.to_string()), Arc::from(module_user));
    }
}
