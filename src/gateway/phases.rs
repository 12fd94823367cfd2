//! The proxy hooks, called by `server::Shared` (the `ProxyHttp` Pingora
//! runs) on the gateway current when the request arrived. Plain methods,
//! not a second `ProxyHttp`: each trait hook boxes its future, and one box
//! per hook is enough. Each hook is thin: the request decision is
//! `Gateway::decide` (look-ups, then `policy::request`), and
//! `request_filter` carries it out.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, Session as PSession};

use super::config::{Route, RouteId};
use super::identity::{ASSERTION_HEADER, headers, strip_identity_headers};
use super::reject::Reject;
use super::request::{self, canonical_target, without_case};
use super::respond::{REQUEST_ID, ensure_request_id};
use super::watch::{Watcher, socket_ends, streamed, watch};
use super::{Ctx, Gateway, PREFIX, cookies, down, inject, internal, unix_now};
use crate::policy::module_cookies::{Cookies, strip_bit};
use crate::policy::request::{Decision, Found, decide, logout as policy_logout, unguarded};
use crate::session::Session;

/// A request routed, and what to do with it.
pub struct Routed {
    pub id: RouteId,
    /// `X-Forwarded-Host` for the module: the routed host, public port.
    pub forwarded_host: http::HeaderValue,
    pub decision: Decision,
    /// The request's usable session, if it has one (the one a `Forward`
    /// lets through; a refusal names its user in the log).
    pub session: Option<Arc<Session>>,
}

impl Gateway {
    pub fn new_ctx(&self) -> Ctx {
        Ctx::default()
    }

    /// What to do with a request (its path already canonical): routed by
    /// its host, looked up (the session, whom its module cookies were
    /// issued to), and decided by `policy::request`. `Err`: no route.
    pub async fn decide(&self, req: &RequestHeader, now: u64) -> std::result::Result<Routed, Reject> {
        let host = request::host_of(req).ok_or(Reject::NoHost)?;
        let Some((id, forwarded_host)) = self.routes.by_host(host.as_ref()) else {
            return Err(Reject::UnknownHost(host.into_owned()));
        };
        let (id, route) = (*id, self.route(*id));
        let facts = request::facts(req);
        let routed = |decision, session| Routed {
            id,
            forwarded_host: forwarded_host.clone(),
            decision,
            session,
        };
        // A logout path looks up the session and module cookies too: a
        // login with module credentials only is logged out by the module.
        let quick = unguarded(&facts, route);
        let at_logout = quick == Some(Decision::Logout) && !route.session_cookies.is_empty();
        if let Some(d) = quick.filter(|_| !at_logout) {
            return Ok(routed(d, None));
        }
        let found = match self.session_for(req, route, now).await {
            Ok(s) => s.filter(|s| s.usable()),
            Err(e) => return Ok(routed(Decision::Reject(down(e)), None)),
        };
        let cookies = if route.session_cookies.is_empty() {
            Cookies::None
        } else {
            match self.module_cookies_of(req, route).await {
                Ok(c) => c,
                Err(e) => return Ok(routed(Decision::Reject(down(e)), None)),
            }
        };
        if at_logout {
            return Ok(routed(policy_logout(route, found.is_some(), &cookies), None));
        }
        let decision = decide(
            &facts,
            route,
            &Found {
                session: found.as_deref(),
                cookies: &cookies,
                now,
            },
        );
        Ok(routed(decision, found))
    }

    /// The session's identity on the request to the module: its identity
    /// headers (built at login) and a signed assertion. Appended: the
    /// request has been stripped of every identity header first.
    pub fn send_identity(&self, up: &mut RequestHeader, s: &Session) -> Result<()> {
        for (name, value) in s.headers.iter() {
            up.append_header(name, value)?;
        }
        match self.state.signer.for_session(s, SystemTime::now()) {
            Ok(v) => {
                up.append_header(ASSERTION_HEADER, v)?;
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot sign the identity assertion");
                Err(Error::new(ErrorType::InternalError))
            }
        }
    }

    pub async fn request_filter(self: &Arc<Self>, session: &mut PSession, ctx: &mut Ctx) -> Result<bool> {
        // A dozen headers go in on the way to the module: without room made
        // first, and with Pingora's second map of each header name's case,
        // that was half of unigate's cost per request.
        without_case(session.req_header_mut(), 16);
        ensure_request_id(session, self.peer_trusted(session));
        // Every decision below, and the module, see one canonical path.
        if let Err(why) = canonical_target(session.req_header_mut()) {
            return self.reject(session, None, Reject::BadPath(why)).await;
        }
        // Health and keys answer on every host.
        if session.req_header().uri.path().starts_with(PREFIX)
            && let Some(done) = internal::host_independent(self, session).await?
        {
            return Ok(done);
        }
        let now = unix_now();
        let Routed {
            id,
            forwarded_host,
            decision,
            session: found,
        } = match self.decide(session.req_header(), now).await {
            Ok(r) => r,
            Err(r) => return self.reject(session, None, r).await,
        };
        ctx.route = Some(id);
        ctx.forwarded_host = Some(forwarded_host);
        let host = || {
            request::host_of(session.req_header())
                .map(|h| h.into_owned())
                .unwrap_or_default()
        };
        match decision {
            Decision::Pass => self.proceed(session, ctx, id).await,
            Decision::Forward { strip_cookies } => {
                let Some(s) = found else {
                    return Err(Error::new(ErrorType::InternalError));
                };
                if strip_cookies != 0 {
                    tracing::info!(module.name = %self.route(id).label(), user.sub = %s.identity.sub, "module cookie of another user kept from the module");
                }
                ctx.strip_cookies = strip_cookies;
                self.maybe_refresh(session.req_header(), &s, id, now);
                ctx.session = Some(s);
                self.proceed(session, ctx, id).await
            }
            Decision::ForwardLocal { login_page, rewrite } => {
                ctx.local = true;
                ctx.login_page = login_page;
                ctx.rewrite = rewrite;
                self.proceed(session, ctx, id).await
            }
            Decision::Internal => {
                let host = host();
                internal::handle(self, session, id, &host).await
            }
            Decision::Logout => {
                let host = host();
                super::logout::logout(self, session, id, &host, true).await
            }
            Decision::Bearer => super::bearer::handle(self, session, ctx, id).await,
            Decision::Login {
                return_path,
                max_age: None,
            } => {
                let host = host();
                super::logins::start_login(self, session, id, &host, &return_path, None, Vec::new()).await
            }
            Decision::Login {
                return_path,
                max_age: Some(max_age),
            } => {
                let host = host();
                let recent = super::logins::Recent::Ask(max_age);
                super::logins::start_recent_login(self, session, id, &host, &return_path, None, recent).await
            }
            Decision::StepUp { return_path, max_age } => {
                let host = host();
                let recent = super::logins::Recent::Require(max_age);
                super::logins::start_recent_login(self, session, id, &host, &return_path, None, recent).await
            }
            Decision::LinkFirst => super::link::link_first(self, session, id).await,
            Decision::Chooser => {
                let Some(s) = found else {
                    return Err(Error::new(ErrorType::InternalError));
                };
                super::instances::chooser(self, session, id, &s).await
            }
            Decision::ExpireCookies(set) => super::module_cookies::expire(self, session, id, set).await,
            Decision::ExceptionLogin { at_exception } => {
                let host = host();
                super::exception_login::exception_login(self, session, id, &host, at_exception).await
            }
            Decision::Reject(r) => {
                let user = found.as_ref().map(|s| &*s.identity.sub);
                self.reject_user(session, Some(id), user, r).await
            }
        }
    }

    pub async fn upstream_peer(&self, _session: &mut PSession, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let mi = ctx.route.ok_or_else(|| Error::new(ErrorType::InternalError))?;
        // The first try uses the upstream checked in `proceed`; a retry
        // after a failed connect takes the next healthy one.
        let addr = match ctx.peer.take() {
            Some(a) => a,
            None => self
                .routes
                .pick(mi, &ctx.tried)
                .ok_or_else(|| Error::explain(ErrorType::ConnectNoRoute, "no healthy upstream left"))?,
        };
        ctx.current = Some(addr);
        let mut peer = match &self.route(mi).upstream_tls {
            None => HttpPeer::new(addr, false, String::new()),
            Some(t) => {
                let mut p = HttpPeer::new(addr, true, t.sni.clone());
                p.options.verify_cert = t.verify;
                p.options.verify_hostname = t.verify;
                if let Some(ca) = &t.ca {
                    p.options.ca = Some(ca.certs.clone());
                    p.group_key = ca.group_key;
                }
                p
            }
        };
        peer.options.connection_timeout = Some(Duration::from_secs(2));
        Ok(Box::new(peer))
    }

    pub fn fail_to_connect(
        &self,
        _session: &mut PSession,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if *e.etype() == ErrorType::TLSHandshakeFailure {
            let module = ctx.route.map_or("-", |m| self.route(m).label());
            tracing::error!(module.name = %module, upstream = ?ctx.current, error = %e, "TLS to the module failed (certificate not trusted, wrong name, or not TLS)");
        }
        // Another upstream of the route may answer: try each once.
        if let Some(failed) = ctx.current.take() {
            ctx.tried.push(failed);
        }
        if let Some(mi) = ctx.route
            && ctx.tried.len() < self.route(mi).upstreams.len()
        {
            e.set_retry(true);
        }
        e
    }

    pub async fn upstream_request_filter(
        &self,
        _session: &mut PSession,
        up: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(target) = ctx.rewrite.take()
            && let Ok(uri) = target.parse::<http::Uri>()
        {
            up.set_uri(uri);
        }
        // unigate's own cookies never reach the module, nor module cookies
        // issued to another user (a user switch).
        let ours = up
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .any(|v| cookies::may_hold_unigate_cookie(v.as_bytes()));
        if (ctx.strip_cookies != 0 || ours)
            && let Some(mi) = ctx.route
        {
            let module = self.route(mi);
            let kept = cookies::without_unigate_cookies(
                up.headers
                    .get_all(http::header::COOKIE)
                    .iter()
                    .filter_map(|v| v.to_str().ok()),
                |pair| {
                    module.session_cookies.iter().enumerate().any(|(i, c)| {
                        ctx.strip_cookies & strip_bit(i) != 0
                            && crate::session::cookie_forms::chunk_has_name(pair.as_bytes(), c)
                    })
                },
            );
            up.remove_header(&http::header::COOKIE);
            if let Some(kept) = kept {
                up.insert_header(http::header::COOKIE, kept)?;
            }
        }
        // Nothing a client sends may pose as identity, or as a proxy.
        strip_identity_headers(up);
        self.forwarding_headers(_session, up, ctx.forwarded_host.as_ref());
        // With a KaseyaOne identity (a session or a bearer token), or where
        // KaseyaOne is required, no other credential goes along for the
        // module to read instead: not the bearer token (it would let the
        // module act as the user elsewhere), not another account's Basic
        // credentials (a user switch, or a way around the requirement).
        if (ctx.session.is_some()
            || ctx.identity.is_some()
            || ctx.route.is_some_and(|mi| self.route(mi).requires_kaseyaone()))
            && up.headers.contains_key(http::header::AUTHORIZATION)
        {
            up.remove_header(&http::header::AUTHORIZATION);
        }
        if let Some(s) = &ctx.session {
            // A page that may get the App Launcher: ask the module for it
            // uncompressed, and undo compression it applies anyway.
            let wants_html = up
                .headers
                .get(http::header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|a| a.contains("text/html"));
            if wants_html {
                up.remove_header(&http::header::ACCEPT_ENCODING);
                _session.upstream_compression.adjust_decompression(true);
            }
            self.send_identity(up, s)?;
        } else if let (Some(id), Some(mi)) = (&ctx.identity, ctx.route) {
            let module = self.route(mi);
            let handle = self.state.signer.session_handle(module.label(), id);
            for (name, value) in headers(id, module.headers, self.cfg().identity.max_header_value, &handle) {
                up.insert_header(name, value)?;
            }
            match self.state.signer.sign(id, module.label(), SystemTime::now()) {
                Ok(jwt) => {
                    up.insert_header(ASSERTION_HEADER, jwt)?;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot sign the identity assertion");
                    return Err(Error::new(ErrorType::InternalError));
                }
            }
        }
        Ok(())
    }

    pub fn connected_to_upstream(
        &self,
        _session: &mut PSession,
        _reused: bool,
        _peer: &HttpPeer,
        fd: std::os::unix::io::RawFd,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.upstream_fd = Some(fd);
        Ok(())
    }

    /// Module session cookies the module set for a login with module
    /// credentials (no KaseyaOne session): recorded as such, so that its
    /// logout goes to the module (`policy::request::logout`). A cookie
    /// that cannot be recorded stays unknown, which is refused beside a
    /// KaseyaOne session all the same.
    async fn record_local_cookies(&self, session: &PSession, resp: &ResponseHeader, mi: RouteId) {
        let module = self.route(mi);
        if module.session_cookies.is_empty() || !(module.module_credentials() || module.requires_kaseyaone()) {
            return;
        }
        for v in resp.headers.get_all(http::header::SET_COOKIE) {
            let Some(c) = module_session_cookie(module, v) else {
                continue;
            };
            let owner = self.cookie_owner(&c, "", false).set_at(session.req_header().uri.path());
            if let Err(e) = self.state.sessions.record_module_cookie(c.value_trimmed(), owner).await {
                tracing::warn!(error = %e, module.name = %module.label(), cookie = c.name(), "cannot record a module session cookie of a login with module credentials");
            }
        }
    }

    pub async fn response_filter(
        &self,
        session: &mut PSession,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(id) = session.req_header().headers.get(REQUEST_ID) {
            resp.insert_header(REQUEST_ID, id.clone())?;
        }
        // unigate's cookies are unigate's: a module cannot set them.
        if resp.headers.contains_key(http::header::SET_COOKIE)
            && resp
                .headers
                .get_all(http::header::SET_COOKIE)
                .iter()
                .any(|v| cookies::sets_unigate_cookie(v.as_bytes()))
        {
            let kept: Vec<http::HeaderValue> = resp
                .headers
                .get_all(http::header::SET_COOKIE)
                .iter()
                .filter(|v| !cookies::sets_unigate_cookie(v.as_bytes()))
                .cloned()
                .collect();
            tracing::warn!(
                module = ctx.route.map_or("-", |m| self.route(m).label()),
                "the module set one of unigate's cookies: dropped"
            );
            resp.remove_header(&http::header::SET_COOKIE);
            for v in kept {
                resp.append_header(http::header::SET_COOKIE, v)?;
            }
        }
        if let (None, Some(mi), true) = (&ctx.session, ctx.route, ctx.local) {
            self.record_local_cookies(session, resp, mi).await;
        }
        if let (Some(s), Some(mi)) = (&ctx.session, ctx.route) {
            let module = self.route(mi);
            if !module.session_cookies.is_empty() && resp.headers.contains_key(http::header::SET_COOKIE) {
                let mut unrecorded = Vec::new();
                for v in resp.headers.get_all(http::header::SET_COOKIE) {
                    if let Some(c) = module_session_cookie(module, v) {
                        let owner = self
                            .cookie_owner(&c, &s.identity.sub, true)
                            .set_at(session.req_header().uri.path())
                            .in_login(s.identity.sid.as_deref());
                        if let Err(e) = self.state.sessions.record_module_cookie(c.value_trimmed(), owner).await {
                            tracing::error!(error = %e, module.name = %module.label(), cookie = c.name(), "cannot record a module session cookie; it is kept from the browser");
                            unrecorded.push(v.clone());
                        }
                    }
                }
                // A module session unigate could not record would escape
                // logout and user-switch checks: the browser does not get it.
                if !unrecorded.is_empty() {
                    let kept: Vec<http::HeaderValue> = resp
                        .headers
                        .get_all(http::header::SET_COOKIE)
                        .iter()
                        .filter(|v| !unrecorded.contains(v))
                        .cloned()
                        .collect();
                    resp.remove_header(&http::header::SET_COOKIE);
                    for v in kept {
                        resp.append_header(http::header::SET_COOKIE, v)?;
                    }
                }
            }
            // A websocket, an event stream or any other body of no declared
            // length (chunked or close-delimited: long polling, NDJSON
            // feeds, camera streams) may outlive its session: it is closed
            // within moments of the session ending.
            let long_lived = streamed(session.req_header().method == http::Method::HEAD, resp);
            if long_lived
                && let Some(fd) = ctx.upstream_fd
                && let Some(ends) = socket_ends(fd)
            {
                // With the shared store an idle session expires in Redis
                // (requests on other replicas push that out), not here.
                let idle = match self.state.sessions.redis() {
                    Some(shared) => self.session_id(session.req_header()).map(|id| {
                        (
                            self.cfg().session.idle_timeout.as_secs(),
                            shared.clone(),
                            crate::session::redis::id_hash(id),
                        )
                    }),
                    None => None,
                };
                let fired = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let task = tokio::spawn(watch(
                    s.clone(),
                    (fd, ends),
                    idle,
                    fired.clone(),
                    module.label().to_string(),
                ));
                ctx.watcher = Some(Watcher { task, fired });
            }
        }
        let snippet = match (&ctx.session, ctx.local) {
            (Some(s), _) => &s.launcher,
            (None, true) => &self.state.kaseyaone_snippet,
            (None, false) => return Ok(()),
        };
        let content_type = resp
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let encoded = resp.headers.contains_key(http::header::CONTENT_ENCODING);
        if inject::is_html_page(resp.status.as_u16(), content_type) && !encoded {
            // The length changes: let the body go out chunked. Said
            // explicitly: without it, an HTTP/1.1 body would be delimited by
            // closing the connection, and no connection would be reused.
            resp.remove_header(&http::header::CONTENT_LENGTH);
            if session.req_header().version == http::Version::HTTP_11 {
                resp.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
            }
            let mut rules = vec![("body", inject::Place::Prepend, snippet.clone())];
            if ctx.login_page {
                rules.push(("form", inject::Place::After, self.state.login_button_snippet.clone()));
            }
            ctx.inject = Some(Box::new(std::sync::Mutex::new(inject::Injector::with(rules))));
        }
        Ok(())
    }

    pub fn response_body_filter(
        &self,
        _session: &mut PSession,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<std::time::Duration>> {
        if end_of_stream
            // Before the upstream connection can go back to the pool.
            && let Some(w) = ctx.watcher.take()
            && w.fired.load(Ordering::Acquire)
        {
            // Closed because its session ended: a body without a declared
            // length would otherwise look complete to the client.
            return Err(Error::explain(
                ErrorType::ConnectionClosed,
                "the session ended: the response was cut short",
            ));
        }
        if let Some(inj) = &ctx.inject {
            inj.lock()
                .unwrap_or_else(|p| p.into_inner())
                .filter(body, end_of_stream);
        }
        Ok(None)
    }

    pub async fn fail_to_proxy(&self, session: &mut PSession, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        // The upstream connection is gone: nothing left to watch.
        ctx.watcher = None;
        let refusal = match e.esource() {
            // A response under way cannot turn into an error page: the
            // connection just ends, and the client sees it cut short.
            _ if session.response_written().is_some() => None,
            ErrorSource::Upstream => Some(Reject::UpstreamDown),
            ErrorSource::Downstream => None,
            _ => Some(Reject::Internal),
        };
        let code = refusal.as_ref().map_or(0, Reject::status);
        if let Some(r) = refusal {
            let _ = self.reject(session, ctx.route, r).await;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// The end of every request: counted by route and outcome, and one
    /// structured event (target `unigate::auth`) with the decision taken —
    /// at `debug` for requests let through or answered by unigate itself,
    /// at `info` for every refusal and login redirect.
    pub async fn logging(&self, session: &mut PSession, e: Option<&Error>, ctx: &mut Ctx) {
        ctx.watcher = None;
        use crate::metrics::Outcome;
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let req = session.req_header();
        let path = req.uri.path();
        let outcome = if path.starts_with(PREFIX) {
            Outcome::Internal
        } else if ctx.current.is_some() || !ctx.tried.is_empty() {
            // Judged by what the client got: an error after a complete
            // answer (the client went away) is not the module's failure.
            if matches!(status, 0 | 502 | 504) && (e.is_some() || status != 0) {
                Outcome::UpstreamError
            } else {
                Outcome::Proxied
            }
        } else {
            match status {
                301..=303 | 307 | 308 => Outcome::Login,
                401 => Outcome::Unauthenticated,
                403 => Outcome::Forbidden,
                503 => Outcome::Unavailable,
                _ => Outcome::Rejected,
            }
        };
        self.routes.counters(ctx.route)[outcome as usize].inc();
        let quiet = matches!(outcome, Outcome::Proxied | Outcome::Internal);
        if quiet && !tracing::enabled!(target: "unigate::auth", tracing::Level::DEBUG) {
            return;
        }
        let module = ctx.route.map_or("-", |m| self.route(m).label());
        let user = ctx
            .session
            .as_ref()
            .map(|s| &*s.identity.sub)
            .or(ctx.identity.as_ref().map(|i| &*i.sub))
            .unwrap_or("");
        let id = req.headers.get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
        let method = req.method.as_str();
        let decision = outcome.as_str();
        let client = self.client_addr(session).map(|ip| ip.to_string()).unwrap_or_default();
        let client = client.as_str();
        if quiet {
            tracing::debug!(target: "unigate::auth", request_id = id, module, method, path, status, decision, user.sub = user, client.ip = client, "auth decision");
        } else {
            tracing::info!(target: "unigate::auth", request_id = id, module, method, path, status, decision, user.sub = user, client.ip = client, "auth decision");
        }
    }
}

/// The cookie a `Set-Cookie` value sets, when it is one of the module's
/// session cookies with a value (what unigate records the owner of).
fn module_session_cookie(module: &Route, v: &http::HeaderValue) -> Option<cookie::Cookie<'static>> {
    let c = cookie::Cookie::parse(String::from_utf8_lossy(v.as_bytes()).into_owned()).ok()?;
    (!c.value_trimmed().is_empty() && module.session_cookies.iter().any(|n| n == c.name())).then_some(c)
}
