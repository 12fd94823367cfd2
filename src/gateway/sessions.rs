//! The gateway's side of `session::Sessions`: sessions built for a route
//! (identity headers and App Launcher made once), the session a request
//! names, module cookie look-ups, and revocations that reach bearer tokens
//! too.

use std::sync::Arc;

use pingora::http::RequestHeader;

use super::config::{Route, RouteId};
use super::{Gateway, request, unix_now};
use crate::policy::module_cookies::Cookies;
use crate::session::cookie_forms::{self, MAX_READINGS, Reading};
use crate::session::redis::{Record, StoreError};
use crate::session::store::tokens_of;
use crate::session::{CookieOwner, Identity, Revoke, Session, Tokens, is_session_id};

impl Gateway {
    /// A session for route `id`: identity headers and App Launcher built once.
    pub fn build_session(&self, id: RouteId, identity: Identity, tokens: Tokens, expires_at: u64) -> Session {
        let module = self.route(id);
        let launcher = self.shared_launcher(crate::pages::launcher_snippet(&self.launcher_tiles(&identity)));
        let handle = self.state.signer.session_handle(module.label(), &identity);
        let headers =
            super::identity::header_set(&identity, module.headers, self.cfg().identity.max_header_value, &handle);
        Session::new(module.label.clone(), identity, headers, tokens)
            .with_launcher(launcher)
            .with_expiry(expires_at)
    }

    /// A new session for route `id`, from now.
    pub fn new_session(&self, id: RouteId, identity: Identity, tokens: Tokens) -> Session {
        let expires_at = unix_now() + self.cfg().session.absolute_timeout.as_secs();
        self.build_session(id, identity, tokens, expires_at)
    }

    /// A session read from the shared store (`None`: its route is gone).
    fn session_of_record(&self, r: Record) -> Option<Session> {
        let id = self.cfg().modules.iter().position(|m| m.label() == r.module)?;
        let tokens = tokens_of(&r);
        Some(
            self.build_session(RouteId(id), r.identity, tokens, r.expires_at)
                .with_link_pending(r.link_pending),
        )
    }

    /// One copy of each distinct App Launcher: users with the same groups
    /// see the same one, and a session holds only a pointer to it.
    fn shared_launcher(&self, html: String) -> Arc<str> {
        use std::hash::BuildHasher;
        let key = self.state.launchers_hasher.hash_one(&html);
        if let Some(l) = self.state.launchers.get(&key)
            && *l == *html
        {
            return l;
        }
        let l: Arc<str> = html.into();
        self.state.launchers.insert(key, l.clone());
        l
    }

    /// The session with this id, from the local cache or the shared store.
    pub async fn session_by_id(&self, id: &str) -> Result<Option<Arc<Session>>, StoreError> {
        self.session_at(id, unix_now()).await
    }

    /// The same, at `now` (Unix seconds) as the caller read the clock.
    pub async fn session_at(&self, id: &str, now: u64) -> Result<Option<Arc<Session>>, StoreError> {
        self.state.sessions.get(id, now, |r| self.session_of_record(r)).await
    }

    /// The session named by the request's cookie, if it is for `route`.
    pub async fn session_for(
        &self,
        req: &RequestHeader,
        route: &Route,
        now: u64,
    ) -> Result<Option<Arc<Session>>, StoreError> {
        let Some(id) = request::cookie(req, self.state.session_cookie).filter(|v| is_session_id(v)) else {
            return Ok(None);
        };
        Ok(self.session_at(id, now).await?.filter(|s| *s.module == *route.label()))
    }

    /// The request's session id cookie, if any.
    pub fn session_id<'a>(&self, req: &'a RequestHeader) -> Option<&'a str> {
        request::cookie(req, self.state.session_cookie)
    }

    /// Keeps a new (or changed) session.
    pub async fn put_session(&self, id: &str, s: Arc<Session>) -> Result<(), StoreError> {
        self.state.sessions.put(id, s).await
    }

    /// See `Sessions::replace`.
    pub async fn replace_session(&self, id: &str, old: &Arc<Session>, new: Arc<Session>) -> Result<bool, StoreError> {
        self.state.sessions.replace(id, old, new).await
    }

    /// See `Sessions::replace_now`.
    pub async fn replace_session_now(
        &self,
        id: &str,
        old: &Arc<Session>,
        new: Arc<Session>,
    ) -> Result<bool, StoreError> {
        self.state.sessions.replace_now(id, old, new).await
    }

    /// Ends one session (logout); every replica forgets it.
    pub async fn end_session(&self, id: &str) -> Result<Option<Arc<Session>>, StoreError> {
        self.state.sessions.end(id, |r| self.session_of_record(r)).await
    }

    /// Ends every session `what` names, on every replica, and refuses the
    /// bearer tokens it names from now on.
    pub async fn revoke(&self, what: &Revoke) -> Result<usize, StoreError> {
        self.mark_bearer_revoked(&super::bearer::mark_of(what)).await?;
        self.state.sessions.revoke(what).await
    }

    pub async fn link_of(&self, sub: &str, route: &str) -> Result<Option<String>, StoreError> {
        self.state.sessions.link_of(sub, route).await
    }

    /// The record of a module session cookie the module just set for
    /// `user`: it lasts as long as the cookie (`Max-Age`, else `Expires`;
    /// at most 400 days), or `session.module_cookie_ttl` for a cookie that
    /// names no lifetime.
    pub fn cookie_owner(&self, c: &cookie::Cookie<'_>, user: &str, kaseyaone: bool) -> CookieOwner {
        CookieOwner::of(c, user, kaseyaone, self.cfg().session.module_cookie_ttl, unix_now())
    }

    /// Every reading of `route`'s session cookies in the request.
    pub fn module_cookie_readings(
        &self,
        req: &RequestHeader,
        route: &Route,
    ) -> Result<Vec<Reading>, cookie_forms::TooMany> {
        if route.session_cookies.is_empty() {
            return Ok(Vec::new());
        }
        cookie_forms::readings(
            req.headers.get_all(http::header::COOKIE).iter().map(|v| v.as_bytes()),
            &route.session_cookies,
            MAX_READINGS,
        )
    }

    /// Whom the module issued a reading to, in any of its forms (one owner
    /// per form found).
    pub async fn reading_owners(&self, r: &Reading) -> Result<Vec<Arc<CookieOwner>>, StoreError> {
        let mut owners = Vec::new();
        for f in &r.forms {
            if let Some(o) = self.state.sessions.module_cookie_owner(f).await? {
                owners.push(o);
            }
        }
        Ok(owners)
    }

    /// The request's module session cookies, each with whom it was issued
    /// to. With Redis down an unknown one is an error.
    pub async fn module_cookies_of(&self, req: &RequestHeader, route: &Route) -> Result<Cookies, StoreError> {
        let Ok(readings) = self.module_cookie_readings(req, route) else {
            return Ok(Cookies::TooMany);
        };
        if readings.is_empty() {
            return Ok(Cookies::None);
        }
        let mut read = Vec::with_capacity(readings.len());
        for r in readings {
            let owners = self.reading_owners(&r).await?;
            read.push((r, owners));
        }
        Ok(Cookies::Read(read))
    }

    /// The sessions this replica holds a copy of (shared store), by id.
    pub fn cached_sessions(&self) -> Vec<(String, Arc<Session>)> {
        self.state.sessions.cached()
    }

    /// Live sessions in this process (memory store) or cached here (Redis).
    pub fn local_sessions(&self) -> u64 {
        self.state.sessions.local_count()
    }
}
