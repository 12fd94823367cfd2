//! The proxy: a Pingora `ProxyHttp` that routes each request by Host to its
//! module, answers `/_unigate/*` itself, lets public paths through, and lets
//! the rest through only with a valid session (or bearer token) of a user in
//! the module's access groups, carrying the user's identity.
//!
//! The decisions are the pure functions of `policy` (what to do with a
//! request, why it is refused), `oidc` and `session`; this module gathers
//! their inputs (`request`), does the look-ups (`sessions`), and carries
//! out their results (`phases`, the endpoints, `reject`). See
//! `docs/architecture.md`.

pub mod admin;
pub mod bearer;
mod callback;
mod channel_logout;
pub mod check;
pub mod config;
pub mod cookies;
mod exception_login;
pub mod forwarded;
pub mod handles;
pub mod identity;
mod initiate;
pub mod inject;
mod instances;
mod internal;
mod link;
mod link_check;
pub mod logins;
mod logout;
mod logout_confirm;
pub mod module_calls;
mod module_cookies;
pub mod passthrough;
#[cfg(test)]
mod phase_tests;
mod phases;
mod refresh;
pub mod reject;
pub mod request;
pub mod respond;
pub mod routes;
pub mod server;
mod sessions;
pub mod state;
#[doc(hidden)]
pub mod testing;
pub mod tls;
mod watch;

use std::sync::Arc;

use pingora::prelude::*;
use pingora::proxy::Session as PSession;

pub use crate::clock::unix_now;
pub use crate::policy::request::PREFIX;
use config::{GatewayConfig, Route, RouteId};
use identity::AssertionSigner;
pub use module_calls::Account;
use reject::{Reject, Reply};
pub use request::client_kind;
pub use respond::{REQUEST_ID, new_request_id, respond};
use routes::Routes;
use state::State;

/// The proxy as configured now: the routes of the current configuration,
/// and the state every configuration shares. A reload builds new routes
/// around the same state.
pub struct Gateway {
    pub routes: Arc<Routes>,
    pub state: Arc<State>,
}

/// Where the process is in its life: serving, or draining before a stop.
#[derive(Default)]
pub struct Lifecycle {
    /// `readyz` answers 503 from the moment a stop begins.
    pub draining: std::sync::atomic::AtomicBool,
    /// Requests (and websockets) being served now.
    pub in_flight: std::sync::atomic::AtomicUsize,
}

/// Per-request state.
#[derive(Default)]
pub struct Ctx {
    route: Option<RouteId>,
    /// A bearer-token identity (no session).
    identity: Option<Arc<crate::session::Identity>>,
    /// The session that let this request through.
    session: Option<Arc<crate::session::Session>>,
    /// Passed without a KaseyaOne session to a module that allows its own login.
    local: bool,
    /// …and to one of its login pages.
    login_page: bool,
    /// The upstream chosen for this request; the one being tried; those
    /// that failed to connect (allocated only on a failure).
    peer: Option<std::net::SocketAddr>,
    current: Option<std::net::SocketAddr>,
    tried: Vec<std::net::SocketAddr>,
    /// The path and query to ask the upstream for instead of the request's.
    rewrite: Option<String>,
    /// `X-Forwarded-Host` for the module: the routed host, public port.
    forwarded_host: Option<http::HeaderValue>,
    /// Module cookies (bits: indexes into `session_cookies`) issued to
    /// another user: kept from the module (user switch).
    strip_cookies: u64,
    /// The upstream socket, for closing a long-lived response when its
    /// session ends.
    upstream_fd: Option<std::os::unix::io::RawFd>,
    /// Closes that socket on revocation; dropped (aborted) with the request.
    watcher: Option<watch::Watcher>,
    /// The App Launcher or KaseyaOne icon going into this response's HTML
    /// (boxed: Pingora moves the context with its futures, and most
    /// responses inject nothing).
    inject: Option<Box<std::sync::Mutex<inject::Injector>>>,
}

/// The shared session store failed: logged, and the request fails closed.
pub fn down(e: crate::session::redis::StoreError) -> Reject {
    tracing::error!(error = %e, "session store unavailable; failing closed");
    Reject::StoreDown
}

impl Gateway {
    pub fn new(
        cfg: GatewayConfig,
        oidc: Arc<crate::oidc::client::OidcClient>,
        signer: AssertionSigner,
    ) -> Result<Gateway, String> {
        let state = State::build(&cfg, oidc, Arc::new(signer))?;
        let routes = Routes::build(cfg, &state.metrics)?;
        Ok(Gateway {
            routes: Arc::new(routes),
            state: Arc::new(state),
        })
    }

    /// The gateway for a reloaded configuration: new routes, upstreams and
    /// policies, the same state (sessions, transactions, caches, the
    /// connections to the IdP and Redis) as `self`. Settings the state
    /// depends on need a restart (see `server::restart_needed`).
    pub fn reloaded(&self, cfg: GatewayConfig) -> Result<Gateway, String> {
        Ok(Gateway {
            routes: Arc::new(Routes::build(cfg, &self.state.metrics)?),
            state: self.state.clone(),
        })
    }

    /// The configuration the routes came from.
    pub fn cfg(&self) -> &GatewayConfig {
        &self.routes.cfg
    }

    pub fn route(&self, id: RouteId) -> &Route {
        self.routes.get(id)
    }

    /// Runs every route's health checks in the background.
    pub fn spawn_health_checks(&self) {
        self.routes.spawn_health_checks();
    }

    /// Counts a login that failed at the callback, and why.
    pub fn login_failed(&self, id: RouteId, reason: &str) {
        self.state
            .metrics
            .logins
            .with_label_values(&[self.route(id).label(), "failed", reason])
            .inc();
    }

    /// The App Launcher's tiles for this user (`policy::routes`).
    pub fn launcher_tiles(&self, id: &crate::session::Identity) -> Vec<crate::pages::LauncherTile> {
        let cfg = self.cfg();
        crate::policy::routes::launcher_tiles(&cfg.modules, &id.groups, |h| cfg.origin_for(h))
    }

    /// Goes on to the upstream: refused at once when every upstream of the
    /// route fails its health checks (or it has none).
    async fn proceed(&self, session: &mut PSession, ctx: &mut Ctx, id: RouteId) -> Result<bool> {
        if !self.routes.has_upstreams(id) {
            // A module's Choose an Instance host has nothing behind it.
            return self.reject(session, Some(id), Reject::NoInstanceChosen).await;
        }
        match self.routes.pick(id, &[]) {
            Some(addr) => {
                ctx.peer = Some(addr);
                Ok(false)
            }
            None => {
                tracing::warn!(module.name = %self.route(id).label(), "no healthy upstream");
                self.reject(session, Some(id), Reject::NoUpstream).await
            }
        }
    }

    /// Writes a refusal for a request to route `id` (if routed), as a page
    /// or JSON for this client, and logs why.
    pub async fn reject(&self, session: &mut PSession, id: Option<RouteId>, r: Reject) -> Result<bool> {
        self.reject_user(session, id, None, r).await
    }

    /// `reject`, for a request of a known user (`sub`), which the log names.
    pub async fn reject_user(
        &self,
        session: &mut PSession,
        id: Option<RouteId>,
        user: Option<&str>,
        r: Reject,
    ) -> Result<bool> {
        let route = id.map(|id| self.route(id));
        let client = client_kind(session.req_header());
        let module = route.map_or("-", |m| m.label());
        let (reason, user) = (r.metric_reason(), user.unwrap_or(""));
        match r {
            // Logged with its error where it failed (`down`).
            Reject::StoreDown => {}
            // What scanners ask for: not worth an info line each.
            Reject::NotFound | Reject::UnknownHost(_) | Reject::NoHost => {
                tracing::debug!(module.name = module, reason, decision = "deny", "request refused")
            }
            _ => tracing::info!(
                module.name = module,
                user.sub = user,
                reason,
                decision = "deny",
                "request refused"
            ),
        }
        let my_modules = format!("{}/", self.state.idp_origin);
        let my_modules = Some(my_modules.as_str()).filter(|m| *m != "/");
        if client != crate::policy::ClientKind::Navigation || !reject::has_ways_out(&r) {
            let exits = reject::Exits {
                my_modules,
                logout_token: None,
            };
            return reject::write(session, &r, client, route, &exits).await;
        }
        // "Log out of KaseyaOne / use another account" posts this
        // browser's logout token: one click, no confirmation page of
        // unigate's (KaseyaOne may still ask, without an ID token).
        let tls = self.cfg().tls;
        let req = session.req_header();
        let nonce = request::cookie(req, cookies::Own::Logout.name(tls))
            .filter(|v| crate::session::is_session_id(v))
            .map_or_else(crate::crypto::random_token, str::to_string);
        let token = self.state.signer.deployment.logout_token(&nonce);
        let origin = req
            .headers
            .get("origin")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let exits = reject::Exits {
            my_modules,
            logout_token: Some(&token),
        };
        reject::render(&r, client, route, origin.as_deref(), &exits)
            .with_cookies([cookies::Own::Logout.set_cookie(tls, &nonce, Some(logout_confirm::CONFIRM_SECS))])
            // The button cannot be clicked through someone else's frame.
            .with("content-security-policy", "frame-ancestors 'none'")
            .with("x-frame-options", "DENY")
            .write(session)
            .await
    }

    /// Writes an endpoint's answer, or its refusal.
    async fn answer(
        &self,
        session: &mut PSession,
        id: Option<RouteId>,
        r: std::result::Result<Reply, Reject>,
    ) -> Result<bool> {
        match r {
            Ok(reply) => reply.write(session).await,
            Err(r) => self.reject(session, id, r).await,
        }
    }

    /// The session cookie's attributes: `__Host-` with TLS (Secure, Path=/,
    /// no Domain), always HttpOnly and SameSite=Lax.
    fn session_cookie_header(&self, value: &str, max_age: Option<u64>) -> String {
        cookies::Own::Session.set_cookie(self.cfg().tls, value, max_age)
    }
}
