//! `Sessions`: where unigate keeps sessions, account links, module cookie
//! records and used logout tokens — in this process (`store = "memory"`),
//! or in Redis shared by every replica (`store = "redis"`), with this
//! replica's copies kept honest by pub/sub (`replica`). An enum, not a
//! trait object: the request path stays free of boxes. Every call that
//! needs Redis fails closed when it is down.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::redis::{IndexKind, Record, RedisStore, StoreError, Target, id_hash};
use super::replica::Replica;
use super::{CookieOwner, IdToken, LinkStore, MemoryStore, ModuleCookies, Revoke, Session, Tokens};
use crate::clock::unix_now;
use crate::config::settings::SessionSettings;

/// How long a used logout token (`jti`) is remembered: past any token's
/// lifetime, with leeway.
pub const JTI_TTL: Duration =
    Duration::from_secs(crate::oidc::logout_token::MAX_AGE_SECS + 2 * crate::oidc::client::LEEWAY + 600);

pub enum Sessions {
    Memory(Memory),
    Shared(Shared),
}

/// Everything in this process.
pub struct Memory {
    pub sessions: MemoryStore,
    links: LinkStore,
    jtis: moka::sync::Cache<String, ()>,
    module_cookies: ModuleCookies,
}

/// Everything in Redis, with this replica's copies.
pub struct Shared {
    pub redis: Arc<RedisStore>,
    pub replica: Replica,
    /// Module cookie records read from Redis, and recent misses.
    module_cookies: ModuleCookies,
    idle_timeout: Duration,
}

/// Takes the record's tokens into session `s` when they are newer (another
/// replica refreshed): true when it did.
pub fn take_newer_tokens(s: &Session, r: &Record) -> bool {
    let mut tokens = s.tokens.lock().unwrap_or_else(|p| p.into_inner());
    if r.generation <= tokens.generation {
        return false;
    }
    tokens.refresh_token = r.refresh_token.clone().map(Into::into);
    tokens.id_token = r.id_token.as_deref().map(IdToken::new);
    tokens.access_exp = r.access_exp;
    tokens.generation = r.generation;
    s.access_exp.store(r.access_exp, Ordering::Release);
    true
}

/// A session as the shared store keeps it.
pub fn record_of(s: &Session, tokens: &Tokens) -> Record {
    Record {
        module: s.module.to_string(),
        identity: s.identity.clone(),
        id_token: tokens.id_token.as_ref().map(IdToken::jwt),
        refresh_token: tokens.refresh_token.as_deref().map(str::to_string),
        access_exp: tokens.access_exp,
        link_pending: s.link_pending,
        expires_at: s.expires_at,
        generation: tokens.generation,
    }
}

/// The tokens a stored record holds.
pub fn tokens_of(r: &Record) -> Tokens {
    Tokens {
        id_token: r.id_token.as_deref().map(IdToken::new),
        refresh_token: r.refresh_token.clone().map(Into::into),
        access_exp: r.access_exp,
        generation: r.generation,
    }
}

impl Sessions {
    /// The store the settings name (Redis: connected in the background).
    pub fn open(s: &SessionSettings) -> Result<Sessions, String> {
        let Some(r) = &s.redis else {
            return Ok(Sessions::Memory(Memory {
                sessions: MemoryStore::new(s),
                links: LinkStore::new(1_000_000),
                jtis: moka::sync::Cache::builder()
                    .max_capacity(1_000_000)
                    .time_to_live(JTI_TTL)
                    .build(),
                module_cookies: ModuleCookies::new(1_000_000),
            }));
        };
        let target = match (&r.sentinel_master, &r.url) {
            _ if !r.cluster.is_empty() => Target::Cluster(r.cluster.iter().map(|n| n.expose()).collect()),
            (Some(master), url) if !r.sentinels.is_empty() => Target::Sentinel {
                sentinels: &r.sentinels,
                master,
                node: url.as_ref().map(|u| u.expose()),
            },
            (_, Some(url)) => Target::Url(url.expose()),
            _ => return Err("session: no Redis to connect to".into()),
        };
        Ok(Sessions::Shared(Shared {
            redis: RedisStore::new(
                target,
                r.encryption_key.expose(),
                &r.prefix,
                crate::session::redis::Options {
                    wait_replicas: r.wait_replicas,
                    tls_ca: r.tls_ca.clone(),
                },
            )?,
            replica: Replica::new(s, r.local_cache),
            module_cookies: ModuleCookies::new(1_000_000),
            idle_timeout: s.idle_timeout,
        }))
    }

    /// The shared store, with `store = "redis"`.
    pub fn redis(&self) -> Option<&Arc<RedisStore>> {
        match self {
            Sessions::Memory(_) => None,
            Sessions::Shared(s) => Some(&s.redis),
        }
    }

    /// The in-process store, with `store = "memory"`.
    pub fn memory(&self) -> Option<&MemoryStore> {
        match self {
            Sessions::Memory(m) => Some(&m.sessions),
            Sessions::Shared(_) => None,
        }
    }

    /// Whether the store can be used now (memory: always).
    pub fn healthy(&self) -> bool {
        self.redis().is_none_or(|r| r.healthy())
    }

    /// The session with this id, live at `now` (Unix seconds). A record
    /// read from Redis becomes a session through `build` (`None`: its
    /// route is gone).
    pub async fn get(
        &self,
        id: &str,
        now: u64,
        build: impl FnOnce(Record) -> Option<Session>,
    ) -> Result<Option<Arc<Session>>, StoreError> {
        match self {
            Sessions::Memory(m) => Ok(m.sessions.get_at(id, now)),
            Sessions::Shared(s) => s.get(id, now, build).await,
        }
    }

    /// Keeps a new session.
    pub async fn put(&self, id: &str, s: Arc<Session>) -> Result<(), StoreError> {
        match self {
            Sessions::Memory(m) => {
                m.sessions.insert(id.to_string(), s);
                Ok(())
            }
            Sessions::Shared(sh) => sh.put(id, s).await,
        }
    }

    /// Puts `new` in the place of session `old` under the same id (a link),
    /// unless `old` has ended meanwhile — here or on another replica: false
    /// then, and nothing is stored.
    pub async fn replace(&self, id: &str, old: &Arc<Session>, new: Arc<Session>) -> Result<bool, StoreError> {
        if old.is_revoked() {
            return Ok(false);
        }
        // A refresh of `old` under way would write its rotated tokens to
        // `old` alone: wait for it (a second or two at most), then carry
        // the current tokens over.
        for _ in 0..40 {
            if !old.refreshing.load(Ordering::Acquire) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.replace_now(id, old, new).await
    }

    /// `replace` by the refresh of `old` itself (which holds
    /// `old.refreshing`, so no other refresh can write in between). Other
    /// replicas are told, so their copies of `old` go too.
    pub async fn replace_now(&self, id: &str, old: &Arc<Session>, new: Arc<Session>) -> Result<bool, StoreError> {
        if old.is_revoked() {
            return Ok(false);
        }
        {
            let current = old.tokens.lock().unwrap_or_else(|p| p.into_inner()).clone();
            new.access_exp.store(current.access_exp, Ordering::Release);
            *new.tokens.lock().unwrap_or_else(|p| p.into_inner()) = current;
        }
        match self {
            Sessions::Memory(m) => Ok(m.sessions.replace(id, old, new)),
            Sessions::Shared(s) => s.replace_now(id, old, new).await,
        }
    }

    /// Ends one session (logout); every replica forgets it. An error means
    /// the shared store could not delete it: the logout did not happen.
    pub async fn end(
        &self,
        id: &str,
        build: impl FnOnce(Record) -> Option<Session>,
    ) -> Result<Option<Arc<Session>>, StoreError> {
        match self {
            Sessions::Memory(m) => Ok(m.sessions.remove(id)),
            Sessions::Shared(sh) => {
                let s = match sh.replica.remove(id) {
                    Some(s) => Some(s),
                    None => sh.get(id, unix_now(), build).await?,
                };
                sh.replica.invalidate(id);
                sh.redis.delete(&[id_hash(id)]).await?;
                if let Some(s) = &s {
                    s.revoke();
                }
                Ok(s)
            }
        }
    }

    /// Ends every session `what` names, on every replica; how many.
    pub async fn revoke(&self, what: &Revoke) -> Result<usize, StoreError> {
        let sh = match self {
            Sessions::Memory(m) => return Ok(m.sessions.revoke(what)),
            Sessions::Shared(sh) => sh,
        };
        let (kind, value) = match what {
            Revoke::Sid(v) => (IndexKind::Sid, v.clone()),
            Revoke::Sub(v) => (IndexKind::Sub, v.clone()),
            Revoke::Email(v) => (IndexKind::Email, v.to_lowercase()),
        };
        let hashes = sh.redis.take_index(kind, &value).await?;
        let ended = sh.redis.delete_indexed(kind, &value, &hashes).await?;
        for h in &hashes {
            sh.replica.forget(*h);
        }
        Ok(ended)
    }

    /// Claims a logout token's `jti`: false for a replay (a logout with it
    /// is done). In memory a claim is final; in Redis one whose logout
    /// failed stays claimable, so that the IdP's retry works.
    pub async fn claim_jti(&self, jti: &str) -> Result<bool, StoreError> {
        match self {
            Sessions::Memory(m) => Ok(m.jtis.entry(jti.to_string()).or_insert(()).is_fresh()),
            Sessions::Shared(s) => s.redis.claim_jti(jti, JTI_TTL).await,
        }
    }

    /// Marks a logout token's `jti` done once its logout happened: from
    /// now on it is a replay. (In memory the claim already did.)
    pub async fn finish_jti(&self, jti: &str) {
        if let Some(redis) = self.redis()
            && let Err(e) = redis.finish_jti(jti).await
        {
            // Left claimable: a replay would end the same sessions again.
            tracing::warn!(error = %e, "cannot mark a logout token's jti done");
        }
    }

    pub async fn link_of(&self, sub: &str, route: &str) -> Result<Option<String>, StoreError> {
        match self {
            Sessions::Memory(m) => Ok(m.links.get(sub, route).map(|u| u.to_string())),
            Sessions::Shared(s) => s.redis.get_link(sub, route).await,
        }
    }

    pub async fn put_link(&self, sub: &str, route: &str, user: &str) -> Result<(), StoreError> {
        match self {
            Sessions::Memory(m) => {
                m.links.insert(sub, route, user);
                Ok(())
            }
            Sessions::Shared(s) => s.redis.put_link(sub, route, user).await,
        }
    }

    fn module_cookies(&self) -> &ModuleCookies {
        match self {
            Sessions::Memory(m) => &m.module_cookies,
            Sessions::Shared(s) => &s.module_cookies,
        }
    }

    /// Records who a module session cookie was issued to (every replica
    /// learns it before the browser can come back). An error means the
    /// other replicas would not know it: the caller must not let the
    /// cookie out.
    ///
    /// Recorded in every form a framework could decode it to (see
    /// `cookie_forms`), so that a request carrying it in another spelling
    /// that decodes the same is still recognised.
    pub async fn record_module_cookie(&self, value: &str, owner: CookieOwner) -> Result<(), StoreError> {
        for form in super::cookie_forms::value_forms(value.as_bytes()) {
            let key = ModuleCookies::key(&form);
            if let Some(redis) = self.redis() {
                redis.put_module_cookie(&key, &owner).await?;
            }
            self.module_cookies().insert(key, owner.clone());
        }
        Ok(())
    }

    /// Who a module session cookie was issued to, if unigate saw it issued
    /// (here or, with the shared store, on any replica). With Redis down
    /// an unknown cookie is an error, not "unknown": the caller fails closed.
    pub async fn module_cookie_owner(&self, value: impl AsRef<[u8]>) -> Result<Option<Arc<CookieOwner>>, StoreError> {
        let key = ModuleCookies::key(value);
        let cache = self.module_cookies();
        if let Some(o) = cache.get(&key) {
            return Ok(Some(o));
        }
        let Some(redis) = self.redis() else {
            return Ok(None);
        };
        if cache.recently_missed(&key) {
            return Ok(None);
        }
        match redis.get_module_cookie(&key).await? {
            Some(owner) => {
                cache.insert(key, owner);
                Ok(cache.get(&key))
            }
            None => {
                cache.missed(key);
                Ok(None)
            }
        }
    }

    /// A local exception's module cookie record ends with its logout.
    pub async fn forget_module_cookie(&self, key: &[u8; 32]) {
        self.module_cookies().remove(key);
        if let Some(redis) = self.redis() {
            let _ = redis.delete_module_cookie(key).await;
        }
    }

    /// The shared store's revocations, changes and connection state, as
    /// pub/sub tells them (see `RedisStore::run`): what this replica does.
    pub fn forget(&self, h: [u8; 32]) {
        if let Sessions::Shared(s) = self {
            s.replica.forget(h);
        }
    }

    pub fn changed_elsewhere(&self, h: [u8; 32]) {
        if let Sessions::Shared(s) = self {
            s.replica.changed_elsewhere(h);
        }
    }

    /// The shared store is unreachable: revocations elsewhere would go
    /// unheard, so nothing goes on under a session that cannot be checked.
    /// Long-lived responses (websockets, streams) close; the sessions
    /// themselves stay in Redis and serve again once it is back.
    pub fn end_held_sessions(&self) {
        if let Sessions::Shared(s) = self {
            let ended = s.replica.end_held();
            if ended > 0 {
                tracing::warn!(
                    ended,
                    "session store unreachable: long-lived responses under its sessions closed"
                );
            }
        }
    }

    /// After a lost connection revocations may have been missed: local
    /// copies are dropped and reloaded from Redis, and every session still
    /// held open here is checked and revoked if it is gone there.
    pub fn drop_local_copies(&self) {
        let Sessions::Shared(s) = self else { return };
        let held = s.replica.drop_copies();
        let (redis, replica) = (s.redis.clone(), s.replica.clone());
        tokio::spawn(async move {
            // The store answers once it is healthy again (its own heartbeat
            // heard), a moment after the connection is back. Until then it
            // refuses every request; if it never gets there, its loss
            // closes what is held.
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
            while !redis.healthy() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            for h in held {
                if let Ok(false) = redis.exists(&h).await {
                    replica.forget(h);
                }
            }
        });
    }

    /// Expiries are noticed on access; this notices them now (and so
    /// closes what the expired sessions still hold open).
    pub fn housekeeping(&self) {
        if let Sessions::Memory(m) = self {
            m.sessions.housekeeping();
        }
    }

    /// The sessions this replica holds a copy of (shared store), by id.
    pub fn cached(&self) -> Vec<(String, Arc<Session>)> {
        match self {
            Sessions::Memory(_) => Vec::new(),
            Sessions::Shared(s) => s.replica.copies(),
        }
    }

    /// Live sessions in this process (memory store) or cached here (Redis).
    pub fn local_count(&self) -> u64 {
        match self {
            Sessions::Memory(m) => m.sessions.len(),
            Sessions::Shared(s) => s.replica.copy_count(),
        }
    }
}

impl Shared {
    async fn get(
        &self,
        id: &str,
        now: u64,
        build: impl FnOnce(Record) -> Option<Session>,
    ) -> Result<Option<Arc<Session>>, StoreError> {
        if !self.redis.healthy() {
            return Err(StoreError::Down("not connected".into()));
        }
        if let Some(s) = self.replica.get(id) {
            if s.expires_at > now && !s.is_revoked() {
                self.touch(id, &s, now);
                return Ok(Some(s));
            }
            self.replica.invalidate(id);
            return Ok(None);
        }
        let h = id_hash(id);
        let seen = self.replica.changes_seen();
        let mut r = self.redis.load(&h).await?;
        // Another replica changed the session while it was being read: the
        // record read may be the one from before (the new one is stored
        // before the others are told).
        if self.replica.changed_since(&h, seen) {
            r = self.redis.load(&h).await?;
        }
        let Some(r) = r else { return Ok(None) };
        if r.expires_at <= now {
            return Ok(None);
        }
        // The same session object for as long as anything (a websocket)
        // holds it, so a revocation reaches that holder too; as long as it
        // is the same user with the same attributes (else a change from
        // another replica went unheard, and the holder stops).
        if let Some(s) = self.replica.held(&h) {
            if s.identity == r.identity && s.link_pending == r.link_pending {
                // Tokens another replica refreshed since (never older
                // ones, nor under a refresh of its own here).
                if !s.refreshing.load(Ordering::Acquire) {
                    take_newer_tokens(&s, &r);
                }
                self.replica.keep_copy(id, h, s.clone());
                return Ok(Some(s));
            }
            s.revoke();
        }
        let Some(s) = build(r) else { return Ok(None) };
        let s = Arc::new(s);
        s.touched.store(now, Ordering::Relaxed);
        self.replica.keep(id, h, s.clone());
        // A revocation may have arrived while Redis was being read.
        if self.replica.recently_revoked(&h) {
            self.replica.forget(h);
            return Ok(None);
        }
        // So may a change: the next request reads the record again (and
        // lets this copy go if its attributes are not the record's).
        if self.replica.changed_since(&h, seen) {
            self.replica.invalidate(id);
        }
        Ok(Some(s))
    }

    /// Pushes a shared session's idle expiry out, at most every tenth of
    /// the idle timeout, in the background.
    fn touch(&self, id: &str, s: &Arc<Session>, now: u64) {
        let every = (self.idle_timeout.as_secs() / 10).max(1);
        let last = s.touched.load(Ordering::Relaxed);
        if now < last + every
            || s.touched
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let (redis, h, ttl) = (self.redis.clone(), id_hash(id), self.ttl_of(s, now));
        tokio::spawn(async move {
            if let Err(e) = redis.touch(&h, ttl).await {
                tracing::warn!(error = %e, "cannot extend a session in the shared store");
            }
        });
    }

    /// How long Redis keeps session `s` from `now`: its idle timeout, or
    /// what is left of its absolute one.
    pub fn ttl_of(&self, s: &Session, now: u64) -> Duration {
        let left = Duration::from_secs(s.expires_at.saturating_sub(now).max(1));
        self.idle_timeout.min(left)
    }

    async fn put(&self, id: &str, s: Arc<Session>) -> Result<(), StoreError> {
        let now = unix_now();
        let tokens = s.tokens.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let r = record_of(&s, &tokens);
        let h = id_hash(id);
        if s.is_revoked() {
            return Ok(()); // never bring an ended session back
        }
        if !self.redis.save(&h, &r, self.ttl_of(&s, now), false).await? {
            // Ended while being stored (its logout's tombstone): it stays
            // ended, and its cookie finds nothing.
            s.revoke();
            return Ok(());
        }
        s.touched.store(now, Ordering::Relaxed);
        self.replica.keep(id, h, s);
        Ok(())
    }

    async fn replace_now(&self, id: &str, old: &Arc<Session>, new: Arc<Session>) -> Result<bool, StoreError> {
        let now = unix_now();
        let r = {
            let tokens = new.tokens.lock().unwrap_or_else(|p| p.into_inner());
            record_of(&new, &tokens)
        };
        let h = id_hash(id);
        if !self.redis.save(&h, &r, self.ttl_of(&new, now), true).await? {
            self.replica.forget(h);
            return Ok(false);
        }
        new.touched.store(now, Ordering::Relaxed);
        self.replica.keep(id, h, new);
        // As in memory: whatever held the old object stops.
        old.revoke();
        if self.replica.recently_revoked(&h) {
            // Revoked while being stored.
            self.replica.forget(h);
            return Ok(false);
        }
        if let Err(e) = self.redis.publish_changed(&h).await {
            // The others keep their copy until `redis_local_cache` ends
            // (a held one until it is revoked or its holder ends).
            tracing::warn!(error = %e, "cannot tell the other replicas that a session changed");
        }
        Ok(true)
    }
}
