//! The proxy: a Pingora `ProxyHttp` that routes each request by Host to its
//! module, answers `/_unigate/*` itself, lets public paths through, and lets
//! the rest through only with a valid session (or bearer token) of a user in
//! the module's access groups, carrying the user's identity. Decisions are
//! made by the pure functions in `policy`, `oidc` and `session`; this module
//! gathers their inputs from the request and writes their results.

pub mod config;
pub mod identity;
pub mod inject;
mod internal;
pub mod passthrough;
pub mod server;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session as PSession};
use sha2::{Digest, Sha256};

use crate::idp::store::RateCounter;
use crate::oidc::client::OidcClient;
use crate::pages;
use crate::policy::{ClientKind, classify, may_access};
use crate::session::{Identity, MemoryStore, Session, TxnStore, cookie_value, is_session_id};
use config::{GatewayConfig, ModuleConfig};
use identity::{ASSERTION_HEADER, AssertionSigner, headers, is_identity_header};

pub const PREFIX: &str = "/_unigate/";

/// Everything the proxy needs, shared by all requests.
pub struct Gateway {
    pub cfg: Arc<GatewayConfig>,
    hosts: HashMap<String, usize>,
    pub oidc: Arc<OidcClient>,
    pub sessions: MemoryStore,
    txns: TxnStore,
    bearer: moka::sync::Cache<[u8; 32], Arc<(Identity, u64)>>,
    pub signer: AssertionSigner,
    login_starts: RateCounter<std::net::IpAddr>,
    /// The App Launcher's HTML, appended to KaseyaOne users' module pages.
    launcher_snippet: Arc<str>,
    /// The KaseyaOne icon, for users logged in with module credentials.
    kaseyaone_snippet: Arc<str>,
    /// The "Log In with KaseyaOne" button for module login pages.
    login_button_snippet: Arc<str>,
    /// For telling a module about a logout.
    http: reqwest::Client,
    session_cookie: &'static str,
}

/// Per-request state.
#[derive(Default)]
pub struct Ctx {
    module: Option<usize>,
    /// A bearer-token identity (no session).
    identity: Option<Arc<Identity>>,
    /// The session that let this request through.
    session: Option<Arc<Session>>,
    /// Passed without a KaseyaOne session to a module that allows its own login.
    local: bool,
    /// …and to one of its login pages.
    login_page: bool,
    /// The App Launcher or KaseyaOne icon going into this response's HTML.
    inject: Option<std::sync::Mutex<inject::Injector>>,
}

impl Gateway {
    pub fn new(cfg: GatewayConfig, oidc: Arc<OidcClient>, signer: AssertionSigner) -> Result<Gateway, reqwest::Error> {
        let mut hosts = HashMap::new();
        for (i, m) in cfg.modules.iter().enumerate() {
            for h in &m.hosts {
                hosts.insert(h.clone(), i);
            }
        }
        Ok(Gateway {
            sessions: MemoryStore::new(&cfg.session),
            txns: TxnStore::new(100_000, Duration::from_secs(600)),
            bearer: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(600))
                .build(),
            login_starts: RateCounter::new(cfg.session.login_starts_per_minute, Duration::from_secs(60)),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(3))
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            session_cookie: if cfg.tls { "__Host-unigate" } else { "unigate" },
            launcher_snippet: pages::launcher_snippet().into(),
            kaseyaone_snippet: pages::kaseyaone_icon_snippet().into(),
            login_button_snippet: pages::login_button_snippet().into(),
            hosts,
            oidc,
            signer,
            cfg: Arc::new(cfg),
        })
    }

    pub fn module(&self, i: usize) -> &ModuleConfig {
        &self.cfg.modules[i]
    }

    /// The request's host, lowercase, without port.
    fn host_of(req: &RequestHeader) -> Option<std::borrow::Cow<'_, str>> {
        let raw = req
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri.authority().map(|a| a.as_str()))?;
        let host = match raw.rfind(':') {
            Some(i) if !raw.ends_with(']') => &raw[..i],
            _ => raw,
        };
        // Allocate only for the rare host written with capitals.
        Some(if host.bytes().any(|b| b.is_ascii_uppercase()) {
            std::borrow::Cow::Owned(host.to_ascii_lowercase())
        } else {
            std::borrow::Cow::Borrowed(host)
        })
    }

    fn cookie<'a>(&self, req: &'a RequestHeader, name: &str) -> Option<&'a str> {
        cookie_value(
            req.headers.get_all(http::header::COOKIE).iter().map(|v| v.as_bytes()),
            name,
        )
    }

    /// The session named by the request's cookie, if it is for `module`.
    pub fn session_for(&self, req: &RequestHeader, module: &ModuleConfig) -> Option<Arc<Session>> {
        let id = self.cookie(req, self.session_cookie).filter(|v| is_session_id(v))?;
        let s = self.sessions.get(id)?;
        (s.module == module.name).then_some(s)
    }

    /// The session cookie's attributes: `__Host-` with TLS (Secure, Path=/,
    /// no Domain), always HttpOnly and SameSite=Lax.
    fn session_cookie_header(&self, value: &str, max_age: Option<u64>) -> String {
        let secure = if self.cfg.tls { "; Secure" } else { "" };
        match max_age {
            Some(a) => format!(
                "{}={value}; Path=/; HttpOnly; SameSite=Lax{secure}; Max-Age={a}",
                self.session_cookie
            ),
            None => format!(
                "{}={value}; Path=/; HttpOnly; SameSite=Lax{secure}",
                self.session_cookie
            ),
        }
    }

    /// Starts a background refresh when the access token is about to
    /// expire: one per session at a time; a failure makes the next
    /// navigation log in again.
    fn maybe_refresh(&self, s: &Arc<Session>, now: u64) {
        let exp = s.access_exp.load(Ordering::Relaxed);
        if exp > now + self.cfg.session.refresh_before.as_secs() {
            return;
        }
        if s.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let refresh_token = s.tokens.lock().unwrap_or_else(|p| p.into_inner()).refresh_token.clone();
        let Some(rt) = refresh_token else {
            s.refreshing.store(false, Ordering::Release);
            if exp <= now {
                s.needs_login.store(true, Ordering::Release);
            }
            return;
        };
        let s = s.clone();
        let oidc = self.oidc.clone();
        tokio::spawn(async move {
            match oidc.refresh(&rt).await {
                Ok(t) => {
                    let now = unix_now();
                    let exp = now + t.expires_in.unwrap_or(300);
                    let mut tokens = s.tokens.lock().unwrap_or_else(|p| p.into_inner());
                    if t.refresh_token.is_some() {
                        tokens.refresh_token = t.refresh_token;
                    }
                    if t.id_token.is_some() {
                        tokens.id_token = t.id_token;
                    }
                    tokens.access_exp = exp;
                    s.access_exp.store(exp, Ordering::Release);
                    tracing::debug!(user.sub = %s.identity.sub, "session refreshed");
                }
                Err(e) => {
                    tracing::info!(user.sub = %s.identity.sub, error = %e, "refresh failed; the next navigation logs in again");
                    s.needs_login.store(true, Ordering::Release);
                }
            }
            s.refreshing.store(false, Ordering::Release);
        });
    }

    async fn bearer_identity(&self, token: &str) -> Option<Identity> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = unix_now();
        if let Some(hit) = self.bearer.get(&key) {
            return (hit.1 > now).then(|| hit.0.clone());
        }
        match self.oidc.validate_access_token(token, SystemTime::now()).await {
            Ok(c) => {
                let id = Identity {
                    sub: c.sub,
                    sid: c.sid,
                    email: c.email.unwrap_or_default(),
                    name: c.name.unwrap_or_default(),
                    username: c.preferred_username.unwrap_or_default(),
                    company: c.company.unwrap_or_default(),
                    groups: c.groups,
                };
                self.bearer.insert(key, Arc::new((id.clone(), c.exp)));
                Some(id)
            }
            Err(e) => {
                tracing::info!(error = %e, "bearer token refused");
                None
            }
        }
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Writes a whole response. `headers` may repeat names (`set-cookie`).
pub async fn respond(
    session: &mut PSession,
    status: u16,
    content_type: &str,
    headers: &[(&str, String)],
    body: impl Into<Bytes>,
) -> Result<bool> {
    let body: Bytes = body.into();
    let mut h = ResponseHeader::build(status, Some(headers.len() + 4))?;
    h.insert_header("content-type", content_type)?;
    h.insert_header("content-length", body.len().to_string())?;
    h.insert_header("cache-control", "no-store")?;
    for (k, v) in headers {
        h.append_header(k.to_string(), v.as_str())?;
    }
    session.write_response_header(Box::new(h), body.is_empty()).await?;
    if !body.is_empty() {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(true)
}

pub async fn respond_page(session: &mut PSession, status: u16, html: String) -> Result<bool> {
    respond(session, status, "text/html; charset=utf-8", &[], html).await
}

pub async fn redirect(session: &mut PSession, location: &str, cookies: Vec<String>) -> Result<bool> {
    let mut headers: Vec<(&str, String)> = vec![("location", location.to_string())];
    headers.extend(cookies.into_iter().map(|c| ("set-cookie", c)));
    respond(session, 302, "text/plain; charset=utf-8", &headers, Bytes::new()).await
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::default()
    }

    async fn request_filter(&self, session: &mut PSession, ctx: &mut Ctx) -> Result<bool> {
        // Health and keys answer on every host.
        if session.req_header().uri.path().starts_with(PREFIX)
            && let Some(done) = internal::host_independent(self, session).await?
        {
            return Ok(done);
        }
        let req = session.req_header();
        let path = req.uri.path();
        let Some(host) = Self::host_of(req) else {
            return respond_page(session, 400, pages::unknown_host("(none)")).await;
        };
        let Some(&mi) = self.hosts.get(host.as_ref()) else {
            return respond_page(session, 404, pages::unknown_host(&host)).await;
        };
        ctx.module = Some(mi);
        let module = self.module(mi);
        if path.starts_with(PREFIX) {
            let host = host.into_owned();
            return internal::handle(self, session, mi, &host).await;
        }
        if module.logout_paths.iter().any(|p| p == path) {
            let host = host.into_owned();
            return internal::logout(self, session, mi, &host, true).await;
        }
        if module.public_paths.iter().any(|p| path.starts_with(p.as_str())) {
            return Ok(false);
        }
        let now = unix_now();
        if let Some(s) = self.session_for(req, module)
            && s.usable()
        {
            if !may_access(&s.identity.groups, &module.access_groups) {
                tracing::info!(module.name = %module.name, user.sub = %s.identity.sub, decision = "deny", "access group check");
                return respond_page(session, 403, pages::forbidden(&module.name, &module.access_groups)).await;
            }
            self.maybe_refresh(&s, now);
            ctx.session = Some(s);
            return Ok(false);
        }
        let bearer = req
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim().to_string());
        if let Some(token) = bearer {
            return match self.bearer_identity(&token).await {
                Some(id) if may_access(&id.groups, &module.access_groups) => {
                    ctx.identity = Some(Arc::new(id));
                    Ok(false)
                }
                Some(_) => {
                    respond(
                        session,
                        403,
                        "application/json",
                        &[],
                        r#"{"error":"forbidden","error_description":"not in the module's access groups"}"#,
                    )
                    .await
                }
                None => {
                    let headers = [(
                        "www-authenticate",
                        "Bearer realm=\"unigate\", error=\"invalid_token\"".to_string(),
                    )];
                    respond(
                        session,
                        401,
                        "application/json",
                        &headers,
                        r#"{"error":"invalid_token"}"#,
                    )
                    .await
                }
            };
        }
        if module.local_login {
            // Module credentials keep working: the module's own login and
            // session decide; no identity headers go with the request.
            ctx.local = true;
            ctx.login_page = module.login_paths.iter().any(|p| p == path);
            return Ok(false);
        }
        let h = |n: http::header::HeaderName| req.headers.get(n).and_then(|v| v.to_str().ok());
        let kind = classify(
            h(http::header::ACCEPT),
            req.headers.contains_key("x-requested-with"),
            req.headers.get("sec-fetch-mode").and_then(|v| v.to_str().ok()),
        );
        match kind {
            ClientKind::Api => internal::unauthenticated_api(self, session, mi).await,
            ClientKind::Navigation => {
                // The request target itself can be `//evil.example/…`: it
                // goes through the same check as any return URL.
                let wanted = req.uri.path_and_query().map_or("/", |p| p.as_str());
                let return_path = crate::oidc::return_url::safe_return_path(wanted)
                    .unwrap_or("/")
                    .to_string();
                let host = host.into_owned();
                internal::start_login(self, session, mi, &host, &return_path).await
            }
        }
    }

    async fn upstream_peer(&self, _session: &mut PSession, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let mi = ctx.module.ok_or_else(|| Error::new(ErrorType::InternalError))?;
        Ok(Box::new(HttpPeer::new(self.module(mi).upstream, false, String::new())))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut PSession,
        up: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // Nothing a client sends may pose as identity.
        let spoofed: Vec<http::header::HeaderName> = up
            .headers
            .keys()
            .filter(|n| is_identity_header(n.as_str()))
            .cloned()
            .collect();
        for n in spoofed {
            up.remove_header(&n);
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
            // Appended: every identity header was removed above.
            for (name, value) in &s.headers {
                up.append_header(*name, value.clone())?;
            }
            match self.signer.for_session(s, SystemTime::now()) {
                Ok(v) => {
                    up.append_header(ASSERTION_HEADER, v)?;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot sign the identity assertion");
                    return Err(Error::new(ErrorType::InternalError));
                }
            }
        } else if let (Some(id), Some(mi)) = (&ctx.identity, ctx.module) {
            let module = self.module(mi);
            for (name, value) in headers(id, module.headers, self.cfg.identity.max_header_value) {
                up.insert_header(name, value)?;
            }
            match self.signer.sign(id, &module.name, SystemTime::now()) {
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

    async fn response_filter(&self, _session: &mut PSession, resp: &mut ResponseHeader, ctx: &mut Ctx) -> Result<()> {
        let snippet = match (&ctx.session, ctx.local) {
            (Some(_), _) => &self.launcher_snippet,
            (None, true) => &self.kaseyaone_snippet,
            (None, false) => return Ok(()),
        };
        let content_type = resp
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let encoded = resp.headers.contains_key(http::header::CONTENT_ENCODING);
        if inject::is_html_page(resp.status.as_u16(), content_type) && !encoded {
            // The length changes: let the body go out chunked.
            resp.remove_header(&http::header::CONTENT_LENGTH);
            let mut rules = vec![("body", inject::Place::Append, snippet.clone())];
            if ctx.login_page {
                rules.push(("form", inject::Place::After, self.login_button_snippet.clone()));
            }
            ctx.inject = Some(std::sync::Mutex::new(inject::Injector::with(rules)));
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut PSession,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<std::time::Duration>> {
        if let Some(inj) = &ctx.inject {
            inj.lock()
                .unwrap_or_else(|p| p.into_inner())
                .filter(body, end_of_stream);
        }
        Ok(None)
    }

    async fn fail_to_proxy(&self, session: &mut PSession, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let code = match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => 0,
            _ => 500,
        };
        if code > 0 {
            let name = ctx.module.map_or("The module", |m| self.module(m).name.as_str());
            let _ = respond_page(session, code, pages::upstream_down(name)).await;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }
}
