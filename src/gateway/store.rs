//! Where the gateway keeps its sessions, login transactions, replay cache
//! and account links: in this process (`store = "memory"`), or in Redis
//! shared by every replica (`store = "redis"`), with a short-lived local
//! cache kept honest by pub/sub revocations. Every call that needs Redis
//! fails closed when it is down.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Gateway, unix_now};
use crate::session::redis::{IndexKind, Record, StoreError, id_hash};
use crate::session::{CookieOwner, IdToken, Identity, ModuleCookies, Revoke, Session, Tokens};

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

impl Gateway {
    /// A session for route `mi`: identity headers and App Launcher built once.
    pub fn build_session(&self, mi: usize, identity: Identity, tokens: Tokens, expires_at: u64) -> Session {
        let module = self.module(mi);
        let launcher = self.shared_launcher(crate::pages::launcher_snippet(&self.launcher_tiles(&identity)));
        let handle = self.signer.session_handle(module.label(), &identity);
        let headers =
            super::identity::header_set(&identity, module.headers, self.cfg.identity.max_header_value, &handle);
        Session::new(module.label.clone(), identity, headers, tokens)
            .with_launcher(launcher)
            .with_expiry(expires_at)
    }

    /// One copy of each distinct App Launcher: users with the same groups
    /// see the same one, and a session holds only a pointer to it.
    fn shared_launcher(&self, html: String) -> Arc<str> {
        use std::hash::BuildHasher;
        let key = self.launchers_hasher.hash_one(&html);
        if let Some(l) = self.launchers.get(&key)
            && *l == *html
        {
            return l;
        }
        let l: Arc<str> = html.into();
        self.launchers.insert(key, l.clone());
        l
    }

    /// The session with this id, from the local cache or the shared store.
    pub async fn session_by_id(&self, id: &str) -> Result<Option<Arc<Session>>, StoreError> {
        self.session_at(id, unix_now()).await
    }

    /// The same, at `now` (Unix seconds) as the caller read the clock.
    pub async fn session_at(&self, id: &str, now: u64) -> Result<Option<Arc<Session>>, StoreError> {
        let Some(shared) = &self.shared else {
            return Ok(self.sessions.get_at(id, now));
        };
        if !shared.healthy() {
            return Err(StoreError::Down("not connected".into()));
        }
        if let Some(s) = self.local.get(id) {
            if s.expires_at > now && !s.is_revoked() {
                self.touch(id, &s, now);
                return Ok(Some(s));
            }
            self.local.invalidate(id);
            return Ok(None);
        }
        let h = id_hash(id);
        let seen = self.changes.load(Ordering::Acquire);
        let mut r = shared.load(&h).await?;
        // Another replica changed the session while it was being read: the
        // record read may be the one from before (the new one is stored
        // before the others are told).
        if self.changed_since(&h, seen) {
            r = shared.load(&h).await?;
        }
        let Some(r) = r else { return Ok(None) };
        if r.expires_at <= now {
            return Ok(None);
        }
        // The same session object for as long as anything (a websocket)
        // holds it, so a revocation reaches that holder too; as long as it
        // is the same user with the same attributes (else a change from
        // another replica went unheard, and the holder stops).
        if let Some(s) = self.held.get(&h).and_then(|w| w.upgrade())
            && !s.is_revoked()
        {
            if s.identity == r.identity && s.link_pending == r.link_pending {
                // Tokens another replica refreshed since (never older
                // ones, nor under a refresh of its own here).
                if !s.refreshing.load(Ordering::Acquire) {
                    take_newer_tokens(&s, &r);
                }
                self.local.insert(id.to_string(), s.clone());
                self.hash_ids.insert(h, id.to_string());
                return Ok(Some(s));
            }
            s.revoke();
        }
        let Some(mi) = self.cfg.modules.iter().position(|m| m.label() == r.module) else {
            return Ok(None);
        };
        let tokens = Tokens {
            id_token: r.id_token.as_deref().map(IdToken::new),
            refresh_token: r.refresh_token.map(Into::into),
            access_exp: r.access_exp,
            generation: r.generation,
        };
        let s = Arc::new(
            self.build_session(mi, r.identity, tokens, r.expires_at)
                .with_link_pending(r.link_pending),
        );
        s.touched.store(now, Ordering::Relaxed);
        self.held.insert(h, Arc::downgrade(&s));
        self.local.insert(id.to_string(), s.clone());
        self.hash_ids.insert(h, id.to_string());
        // A revocation may have arrived while Redis was being read.
        if self.recently_revoked.contains_key(&h) {
            self.forget(h);
            return Ok(None);
        }
        // So may a change: the next request reads the record again (and
        // lets this copy go if its attributes are not the record's).
        if self.changed_since(&h, seen) {
            self.local.invalidate(id);
        }
        Ok(Some(s))
    }

    /// Whether another replica said it changed session `h` after the
    /// `changes` count was `since`.
    fn changed_since(&self, h: &[u8; 32], since: u64) -> bool {
        self.recently_changed.get(h).is_some_and(|at| at > since)
    }

    /// Pushes a shared session's idle expiry out, at most every tenth of
    /// the idle timeout, in the background.
    fn touch(&self, id: &str, s: &Arc<Session>, now: u64) {
        let Some(shared) = &self.shared else { return };
        let every = (self.cfg.session.idle_timeout.as_secs() / 10).max(1);
        let last = s.touched.load(Ordering::Relaxed);
        if now < last + every
            || s.touched
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let (shared, h, ttl) = (shared.clone(), id_hash(id), self.ttl_of(s, now));
        tokio::spawn(async move {
            if let Err(e) = shared.touch(&h, ttl).await {
                tracing::warn!(error = %e, "cannot extend a session in the shared store");
            }
        });
    }

    fn ttl_of(&self, s: &Session, now: u64) -> Duration {
        let left = Duration::from_secs(s.expires_at.saturating_sub(now).max(1));
        self.cfg.session.idle_timeout.min(left)
    }

    /// Keeps a new (or changed) session.
    pub async fn put_session(&self, id: &str, s: Arc<Session>) -> Result<(), StoreError> {
        let Some(shared) = &self.shared else {
            self.sessions.insert(id.to_string(), s);
            return Ok(());
        };
        let now = unix_now();
        let tokens = s.tokens.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let r = record_of(&s, &tokens);
        let h = id_hash(id);
        if s.is_revoked() {
            return Ok(()); // never bring an ended session back
        }
        shared.save(&h, &r, self.ttl_of(&s, now), false).await?;
        self.keep_local(id, h, s, now);
        Ok(())
    }

    /// Puts `new` in the place of session `old` under the same id (a link),
    /// unless `old` has ended meanwhile — here or on another replica: false
    /// then, and nothing is stored.
    pub async fn replace_session(&self, id: &str, old: &Arc<Session>, new: Arc<Session>) -> Result<bool, StoreError> {
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
        self.replace_session_now(id, old, new).await
    }

    /// `replace_session` by the refresh of `old` itself (which holds
    /// `old.refreshing`, so no other refresh can write in between). Other
    /// replicas are told, so their copies of `old` go too.
    pub async fn replace_session_now(
        &self,
        id: &str,
        old: &Arc<Session>,
        new: Arc<Session>,
    ) -> Result<bool, StoreError> {
        if old.is_revoked() {
            return Ok(false);
        }
        {
            let current = old.tokens.lock().unwrap_or_else(|p| p.into_inner()).clone();
            new.access_exp.store(current.access_exp, Ordering::Release);
            *new.tokens.lock().unwrap_or_else(|p| p.into_inner()) = current;
        }
        let Some(shared) = &self.shared else {
            return Ok(self.sessions.replace(id, old, new));
        };
        let now = unix_now();
        let r = {
            let tokens = new.tokens.lock().unwrap_or_else(|p| p.into_inner());
            record_of(&new, &tokens)
        };
        let h = id_hash(id);
        if !shared.save(&h, &r, self.ttl_of(&new, now), true).await? {
            self.forget(h);
            return Ok(false);
        }
        self.keep_local(id, h, new, now);
        // As in memory: whatever held the old object stops.
        old.revoke();
        if self.recently_revoked.contains_key(&h) {
            // Revoked while being stored.
            self.forget(h);
            return Ok(false);
        }
        if let Err(e) = shared.publish_changed(&h).await {
            // The others keep their copy until `redis_local_cache` ends
            // (a held one until it is revoked or its holder ends).
            tracing::warn!(error = %e, "cannot tell the other replicas that a session changed");
        }
        Ok(true)
    }

    /// The local copy of a session just stored in the shared store.
    fn keep_local(&self, id: &str, h: [u8; 32], s: Arc<Session>, now: u64) {
        self.held.insert(h, Arc::downgrade(&s));
        s.touched.store(now, Ordering::Relaxed);
        self.local.insert(id.to_string(), s);
        self.hash_ids.insert(h, id.to_string());
    }

    /// Ends one session (logout); every replica forgets it. An error means
    /// the shared store could not delete it: the logout did not happen.
    pub async fn end_session(&self, id: &str) -> Result<Option<Arc<Session>>, StoreError> {
        let Some(shared) = &self.shared else {
            return Ok(self.sessions.remove(id));
        };
        let s = match self.local.remove(id) {
            Some(s) => Some(s),
            None => self.session_by_id(id).await?,
        };
        self.local.invalidate(id);
        shared.delete(&[id_hash(id)]).await?;
        if let Some(s) = &s {
            s.revoke();
        }
        Ok(s)
    }

    /// Ends every session `what` names, on every replica, and refuses the
    /// bearer tokens it names from now on.
    pub async fn revoke(&self, what: &Revoke) -> Result<usize, StoreError> {
        self.mark_bearer_revoked(&super::bearer::mark_of(what)).await?;
        let Some(shared) = &self.shared else {
            return Ok(self.sessions.revoke(what));
        };
        let (kind, value) = match what {
            Revoke::Sid(v) => (IndexKind::Sid, v.clone()),
            Revoke::Sub(v) => (IndexKind::Sub, v.clone()),
            Revoke::Email(v) => (IndexKind::Email, v.to_lowercase()),
        };
        let hashes = shared.take_index(kind, &value).await?;
        shared.delete_indexed(kind, &value, &hashes).await?;
        for h in &hashes {
            self.forget(*h);
        }
        Ok(hashes.len())
    }

    /// A revocation from any replica: the local copy goes, and whatever
    /// holds it stops.
    pub fn forget(&self, h: [u8; 32]) {
        self.recently_revoked.insert(h, ());
        self.let_go(h, self.hash_ids.remove(&h));
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

    /// Another replica stored session `h` anew with other attributes (a
    /// refresh): the local copy goes, and whatever holds it stops; the next
    /// request reads the new record.
    pub fn changed_elsewhere(&self, h: [u8; 32]) {
        let n = self.changes.fetch_add(1, Ordering::AcqRel) + 1;
        self.recently_changed.insert(h, n);
        self.let_go(h, self.hash_ids.get(&h));
    }

    /// The shared store is unreachable: revocations elsewhere would go
    /// unheard, so nothing goes on under a session that cannot be checked.
    /// Long-lived responses (websockets, streams) close; the sessions
    /// themselves stay in Redis and serve again once it is back.
    pub fn end_held_sessions(&self) {
        self.local.invalidate_all();
        // Entry by entry: one held from now on is checked on reconnection.
        let mut held = Vec::new();
        for (h, w) in self.held.iter() {
            self.held.invalidate(&*h);
            held.extend(w.upgrade());
        }
        let ended = Session::revoke_all(held.iter().map(|s| &**s));
        if ended > 0 {
            tracing::warn!(
                ended,
                "session store unreachable: long-lived responses under its sessions closed"
            );
        }
    }

    /// After a lost connection revocations may have been missed: local
    /// copies are dropped and reloaded from Redis, and every session still
    /// held open here is checked and revoked if it is gone there.
    pub fn drop_local_copies(self: &Arc<Self>) {
        self.local.invalidate_all();
        let g = self.clone();
        tokio::spawn(async move {
            let Some(shared) = g.shared.clone() else { return };
            let held: Vec<[u8; 32]> = g.held.iter().map(|(h, _)| *h).collect();
            for h in held {
                if let Ok(false) = shared.exists(&h).await {
                    g.forget(h);
                }
            }
        });
    }

    /// Marks a logout token's `jti` done once its logout happened: from
    /// now on it is a replay. (In memory the claim already did.)
    pub async fn finish_jti(&self, jti: &str) {
        if let Some(shared) = &self.shared
            && let Err(e) = shared.finish_jti(jti).await
        {
            // Left claimable: a replay would end the same sessions again.
            tracing::warn!(error = %e, "cannot mark a logout token's jti done");
        }
    }

    /// A local exception's module cookie record ends with its logout.
    pub async fn forget_module_cookie(&self, key: &[u8; 32]) {
        self.module_cookies.remove(key);
        if let Some(shared) = &self.shared {
            let _ = shared.delete_module_cookie(key).await;
        }
    }

    /// Claims a logout token's `jti`: false for a replay (a logout with it
    /// is done). In memory a claim is final; in Redis one whose logout
    /// failed stays claimable, so that the IdP's retry works.
    pub async fn claim_jti(&self, jti: &str) -> Result<bool, StoreError> {
        let ttl = Duration::from_secs(crate::oidc::logout_token::MAX_AGE_SECS + 2 * crate::oidc::client::LEEWAY + 600);
        match &self.shared {
            None => Ok(self.jtis.entry(jti.to_string()).or_insert(()).is_fresh()),
            Some(shared) => shared.claim_jti(jti, ttl).await,
        }
    }

    pub async fn link_of(&self, sub: &str, route: &str) -> Result<Option<String>, StoreError> {
        match &self.shared {
            None => Ok(self.links.get(sub, route).map(|u| u.to_string())),
            Some(shared) => shared.get_link(sub, route).await,
        }
    }

    pub async fn put_link(&self, sub: &str, route: &str, user: &str) -> Result<(), StoreError> {
        match &self.shared {
            None => {
                self.links.insert(sub, route, user);
                Ok(())
            }
            Some(shared) => shared.put_link(sub, route, user).await,
        }
    }

    /// The record of a module session cookie the module just set for
    /// `user`: it lasts as long as the cookie (`Max-Age`, else `Expires`;
    /// at most 400 days), or `session.module_cookie_ttl` for a cookie that
    /// names no lifetime.
    pub fn cookie_owner(&self, c: &cookie::Cookie<'_>, user: &str, kaseyaone: bool) -> CookieOwner {
        CookieOwner::of(c, user, kaseyaone, self.cfg.session.module_cookie_ttl, unix_now())
    }

    /// Records who a module session cookie was issued to (every replica
    /// learns it before the browser can come back). An error means the
    /// other replicas would not know it: the caller must not let the
    /// cookie out.
    ///
    /// Recorded in every form a framework could decode it to (see
    /// `session::cookie_forms`), so that a request carrying it in another
    /// spelling that decodes the same is still recognised.
    pub async fn record_module_cookie(&self, value: &str, owner: CookieOwner) -> Result<(), StoreError> {
        for form in crate::session::cookie_forms::value_forms(value.as_bytes()) {
            let key = ModuleCookies::key(&form);
            if let Some(shared) = &self.shared {
                shared.put_module_cookie(&key, &owner).await?;
            }
            self.module_cookies.insert(key, owner.clone());
        }
        Ok(())
    }

    /// Who a module session cookie was issued to, if unigate saw it issued
    /// (here or, with the shared store, on any replica). With Redis down
    /// an unknown cookie is an error, not "unknown": the caller fails closed.
    pub async fn module_cookie_owner(&self, value: impl AsRef<[u8]>) -> Result<Option<Arc<CookieOwner>>, StoreError> {
        let key = ModuleCookies::key(value);
        if let Some(o) = self.module_cookies.get(&key) {
            return Ok(Some(o));
        }
        let Some(shared) = self.shared.as_ref() else {
            return Ok(None);
        };
        if self.module_cookies.recently_missed(&key) {
            return Ok(None);
        }
        match shared.get_module_cookie(&key).await? {
            Some(owner) => {
                self.module_cookies.insert(key, owner);
                Ok(self.module_cookies.get(&key))
            }
            None => {
                self.module_cookies.missed(key);
                Ok(None)
            }
        }
    }

    /// The sessions this replica holds a copy of (shared store), by id.
    pub fn cached_sessions(&self) -> Vec<(String, Arc<Session>)> {
        self.local.run_pending_tasks();
        self.local.iter().map(|(k, v)| ((*k).clone(), v)).collect()
    }

    /// Live sessions in this process (memory store) or cached here (Redis).
    pub fn local_sessions(&self) -> u64 {
        match &self.shared {
            None => self.sessions.len(),
            Some(_) => {
                self.local.run_pending_tasks();
                self.local.entry_count()
            }
        }
    }
}
