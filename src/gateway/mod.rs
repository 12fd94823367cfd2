//! The proxy: a Pingora `ProxyHttp` that routes each request by Host to its
//! module, answers `/_unigate/*` itself, lets public paths through, and lets
//! the rest through only with a valid session (or bearer token) of a user in
//! the module's access groups, carrying the user's identity. Decisions are
//! made by the pure functions in `policy`, `oidc` and `session`; this module
//! gathers their inputs from the request and writes their results.

pub mod admin;
pub mod bearer;
pub mod check;
pub mod config;
pub mod cookies;
pub mod forwarded;
pub mod handles;
pub mod identity;
pub mod inject;
mod internal;
mod link_check;
mod local_credentials;
pub mod logins;
mod logout_confirm;
pub mod module_calls;
mod module_cookies;
pub mod passthrough;
mod refresh;
pub mod server;
pub mod store;
pub mod tls;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, Session as PSession};

use crate::oidc::client::OidcClient;
use crate::pages;
use crate::policy::path::{PathRefusal, canonicalize};
use crate::policy::{ClientKind, classify, may_access};
use crate::rate::RateCounter;
use crate::session::{
    CookieOwner, Identity, LinkStore, MemoryStore, ModuleCookies, Session, cookie_value, is_session_id,
};
use config::{GatewayConfig, ModuleConfig};
use identity::{ASSERTION_HEADER, AssertionSigner, headers, strip_identity_headers};
use pingora::lb::LoadBalancer;
use pingora::lb::health_check::TcpHealthCheck;
use pingora::lb::selection::RoundRobin;
use std::borrow::Cow;

pub const PREFIX: &str = "/_unigate/";

/// Everything the proxy needs, shared by all requests.
pub struct Gateway {
    pub cfg: Arc<GatewayConfig>,
    /// Route by host, and the `X-Forwarded-Host` for that host.
    hosts: HashMap<String, (usize, http::HeaderValue)>,
    pub oidc: Arc<OidcClient>,
    pub sessions: MemoryStore,
    /// Login transactions: their sealing key and the used `state`s.
    logins: Arc<logins::LoginTxns>,
    /// Checked bearer tokens and bearer revocation markers.
    bearer: bearer::BearerCache,
    pub signer: Arc<AssertionSigner>,
    login_starts: RateCounter<std::net::IpAddr>,
    /// Link attempts per KaseyaOne user: the link page checks passwords.
    link_attempts: RateCounter<String>,
    /// Per route: its upstreams, round robin, health-checked.
    lbs: Vec<Option<Arc<LoadBalancer<RoundRobin>>>>,
    /// Per route with a single upstream: its health as of the last check,
    /// read without touching the balancer (no allocation per request).
    healthy: Vec<Arc<std::sync::atomic::AtomicBool>>,
    /// Per route: module account lookups, when configured.
    accounts: Vec<Option<crate::accounts::Accounts>>,
    /// KaseyaOne user → linked module account, per instance.
    pub links: LinkStore,
    /// The shared session store (`store = "redis"`), when configured.
    pub shared: Option<Arc<crate::session::redis::RedisStore>>,
    /// With the shared store: this replica's copies of the sessions it
    /// serves, and their ids by hash (pub/sub names sessions by hash).
    local: moka::sync::Cache<String, Arc<Session>>,
    hash_ids: moka::sync::Cache<[u8; 32], String>,
    /// Every shared session object handed out here, by id hash, while
    /// anything holds it: revocations reach long-lived holders too.
    held: moka::sync::Cache<[u8; 32], std::sync::Weak<Session>>,
    /// Sessions revoked in the last minute, for a cache fill that raced
    /// the revocation.
    recently_revoked: moka::sync::Cache<[u8; 32], ()>,
    /// Sessions another replica changed in the last minute, each with the
    /// `changes` count when it was told: a cache fill that raced the
    /// change reads the record again.
    recently_changed: moka::sync::Cache<[u8; 32], u64>,
    changes: Arc<std::sync::atomic::AtomicU64>,
    /// Module session cookies unigate saw issued, and to whom.
    pub module_cookies: ModuleCookies,
    /// Back-channel logout tokens already used (`jti`).
    jtis: moka::sync::Cache<String, ()>,
    /// The IdP's origin: the only one that may frame front-channel logout.
    idp_origin: String,
    /// The KaseyaOne icon, for users logged in with module credentials.
    kaseyaone_snippet: Arc<str>,
    /// The "Log In with KaseyaOne" button for module login pages.
    login_button_snippet: Arc<str>,
    /// For calls to plain-HTTP modules (and SCIM at a configured URL).
    http: reqwest::Client,
    /// Per route: the clients for calls to its upstreams (logout, link
    /// check, exception login, SCIM), over TLS when its upstream is.
    calls: Vec<module_calls::RouteClients>,
    session_cookie: &'static str,
    /// Draining (SIGTERM) and requests in flight: one for the process,
    /// kept across reloads.
    pub lifecycle: Arc<Lifecycle>,
    /// Distinct App Launcher snippets, shared by the sessions that show them.
    launchers: moka::sync::Cache<u64, Arc<str>>,
    launchers_hasher: std::hash::RandomState,
    /// Prometheus metrics (those of the IdP client: one set per process).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Request counters per route (the last: requests for no route), by
    /// `Outcome`.
    counters: Vec<[prometheus::IntCounter; 8]>,
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
    module: Option<usize>,
    /// A bearer-token identity (no session).
    identity: Option<Arc<Identity>>,
    /// The session that let this request through.
    session: Option<Arc<Session>>,
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
    watcher: Option<Watcher>,
    /// The App Launcher or KaseyaOne icon going into this response's HTML
    /// (boxed: Pingora moves the context with its futures, and most
    /// responses inject nothing).
    inject: Option<Box<std::sync::Mutex<inject::Injector>>>,
}

/// Whether a response may go on indefinitely: an upgrade (websocket), or a
/// body with no declared length (chunked or close-delimited, which includes
/// every event stream). Answers to HEAD, 1xx, 204 and 304 carry no body.
fn streamed(head: bool, resp: &ResponseHeader) -> bool {
    let status = resp.status.as_u16();
    let bodiless = head || status < 200 || status == 204 || status == 304;
    status == 101 || !(bodiless || resp.headers.contains_key(http::header::CONTENT_LENGTH))
}

/// A task that ends with the request that started it; `fired` once it
/// has closed the response.
pub struct Watcher {
    task: tokio::task::JoinHandle<()>,
    fired: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A socket's two addresses: they tell it from another socket that was
/// given its file descriptor number after it was closed.
type SocketEnds = (nix::sys::socket::SockaddrStorage, nix::sys::socket::SockaddrStorage);

fn socket_ends(fd: std::os::unix::io::RawFd) -> Option<SocketEnds> {
    use nix::sys::socket::{getpeername, getsockname};
    Some((getsockname(fd).ok()?, getpeername(fd).ok()?))
}

/// Closes the upstream socket of a long-lived response once its session is
/// revoked, or past its absolute or idle timeout, whichever comes first.
/// With Redis (`idle`: the timeout, the store, the session's id hash) the
/// idle timeout is the one Redis keeps, asked before closing.
async fn watch(
    s: Arc<Session>,
    (fd, ends): (std::os::unix::io::RawFd, SocketEnds),
    idle: Option<(u64, Arc<crate::session::redis::RedisStore>, [u8; 32])>,
    fired: Arc<std::sync::atomic::AtomicBool>,
    label: String,
) {
    let absolute = if s.expires_at > 0 { s.expires_at } else { u64::MAX };
    let mut idle_until = 0u64;
    loop {
        let now = unix_now();
        let mut deadline = absolute;
        if let Some((secs, _, _)) = &idle {
            idle_until = idle_until.max(s.touched.load(Ordering::Relaxed).saturating_add(*secs));
            deadline = deadline.min(idle_until);
        }
        if now >= deadline {
            // Idle here, but perhaps busy on another replica.
            if deadline < absolute
                && let Some((_, shared, h)) = &idle
                && let Ok(Some(left)) = shared.ttl(h).await
            {
                idle_until = now + left.as_secs().max(1);
                continue;
            }
            break;
        }
        let wait = Duration::from_secs(deadline.saturating_sub(now).min(86_400));
        tokio::select! {
            _ = s.revoked() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    fired.store(true, Ordering::Release);
    // Only the socket it was started for: after an error Pingora may have
    // closed it, and its number may belong to another socket by now.
    if socket_ends(fd).is_some_and(|now| now == ends) {
        let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Both);
    }
    tracing::info!(module.name = %label, user.sub = %s.identity.sub, "long-lived response closed: its session ended");
}

/// What the module session cookies of a request say.
enum ModuleCookieCheck {
    /// Nothing to do.
    Pass,
    /// Issued to another user than the session's: these (bits) stay out.
    Strip(u64),
    /// Issued under a KaseyaOne session that has ended: these `Set-Cookie`
    /// values expire them.
    Expire(Vec<String>),
    /// More values than a browser sends: the request is refused.
    TooMany,
}

impl Gateway {
    pub fn new(cfg: GatewayConfig, oidc: Arc<OidcClient>, signer: AssertionSigner) -> Result<Gateway, String> {
        Self::build(cfg, oidc, Arc::new(signer), None)
    }

    /// The gateway for a reloaded configuration: new routes, upstreams and
    /// policies, the same sessions, transactions, caches and connections to
    /// the IdP and Redis as `self` (settings that those depend on need a
    /// restart; see `restart_needed`).
    pub fn reloaded(&self, cfg: GatewayConfig) -> Result<Gateway, String> {
        Self::build(cfg, self.oidc.clone(), self.signer.clone(), Some(self))
    }

    fn build(
        cfg: GatewayConfig,
        oidc: Arc<OidcClient>,
        signer: Arc<AssertionSigner>,
        prev: Option<&Gateway>,
    ) -> Result<Gateway, String> {
        let mut hosts = HashMap::new();
        for (i, m) in cfg.modules.iter().enumerate() {
            for h in &m.hosts {
                // `X-Forwarded-Host` for requests routed by this host: the
                // host with the port browsers use, built once.
                let origin = cfg.origin_for(h);
                let forwarded = origin.split_once("://").map_or(origin.as_str(), |(_, h)| h);
                let value = http::HeaderValue::from_str(forwarded)
                    .map_err(|_| format!("module {}: `{h}` is not a valid host", m.label()))?;
                hosts.insert(h.clone(), (i, value));
            }
        }
        let http = module_calls::plain_client()?;
        let calls = cfg
            .modules
            .iter()
            .map(|m| module_calls::RouteClients::build(m, &http))
            .collect::<Result<Vec<_>, String>>()?;
        let mut lbs = Vec::new();
        for m in &cfg.modules {
            if m.upstreams.is_empty() {
                lbs.push(None);
                continue;
            }
            let mut lb = LoadBalancer::<RoundRobin>::try_from_iter(m.upstreams.iter().copied())
                .map_err(|e| format!("module {}: {e}", m.label()))?;
            lb.set_health_check(TcpHealthCheck::new());
            lb.health_check_frequency = Some(m.health_check_interval);
            lbs.push(Some(Arc::new(lb)));
        }
        let healthy = cfg
            .modules
            .iter()
            .map(|_| Arc::new(std::sync::atomic::AtomicBool::new(true)))
            .collect();
        let accounts = cfg
            .modules
            .iter()
            .map(|m| {
                m.accounts
                    .clone()
                    .filter(|_| m.chooser.is_empty())
                    .map(|a| crate::accounts::Accounts::new(a, http.clone()))
            })
            .collect();
        let metrics = oidc.metrics.clone();
        let counters = cfg
            .modules
            .iter()
            .map(|m| metrics.request_counters(m.label()))
            .chain(std::iter::once(metrics.request_counters("-")))
            .collect();
        if let Some(p) = prev {
            return Ok(Gateway {
                metrics,
                counters,
                shared: p.shared.clone(),
                local: p.local.clone(),
                hash_ids: p.hash_ids.clone(),
                recently_revoked: p.recently_revoked.clone(),
                recently_changed: p.recently_changed.clone(),
                changes: p.changes.clone(),
                held: p.held.clone(),
                link_attempts: p.link_attempts.clone(),
                lbs,
                healthy,
                accounts,
                links: p.links.clone(),
                module_cookies: p.module_cookies.clone(),
                jtis: p.jtis.clone(),
                idp_origin: p.idp_origin.clone(),
                sessions: p.sessions.clone(),
                logins: p.logins.clone(),
                bearer: p.bearer.clone(),
                login_starts: p.login_starts.clone(),
                http,
                calls,
                session_cookie: p.session_cookie,
                lifecycle: p.lifecycle.clone(),
                launchers: p.launchers.clone(),
                launchers_hasher: p.launchers_hasher.clone(),
                kaseyaone_snippet: p.kaseyaone_snippet.clone(),
                login_button_snippet: p.login_button_snippet.clone(),
                hosts,
                oidc,
                signer,
                cfg: Arc::new(cfg),
            });
        }
        let shared = match &cfg.session.redis {
            Some(r) => {
                use crate::session::redis::{RedisStore, Target};
                let target = match (&r.sentinel_master, &r.url) {
                    (Some(master), url) if !r.sentinels.is_empty() => Target::Sentinel {
                        sentinels: &r.sentinels,
                        master,
                        node: url.as_ref().map(|u| u.expose()),
                    },
                    (_, Some(url)) => Target::Url(url.expose()),
                    _ => return Err("session: no Redis to connect to".into()),
                };
                Some(RedisStore::new(target, r.encryption_key.expose(), &r.prefix)?)
            }
            None => None,
        };
        Ok(Gateway {
            shared,
            local: moka::sync::Cache::builder()
                .max_capacity(cfg.session.max_sessions)
                .time_to_live(
                    cfg.session
                        .redis
                        .as_ref()
                        .map_or(Duration::from_secs(30), |r| r.local_cache),
                )
                .build(),
            hash_ids: moka::sync::Cache::builder()
                .max_capacity(cfg.session.max_sessions)
                .time_to_live(cfg.session.absolute_timeout)
                .build(),
            recently_revoked: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(Duration::from_secs(60))
                .build(),
            recently_changed: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(Duration::from_secs(60))
                .build(),
            changes: Arc::default(),
            held: moka::sync::Cache::builder()
                .max_capacity(cfg.session.max_sessions)
                .time_to_live(cfg.session.absolute_timeout)
                .build(),
            link_attempts: RateCounter::new(10, Duration::from_secs(300)),
            lbs,
            healthy,
            accounts,
            links: LinkStore::new(1_000_000),
            module_cookies: ModuleCookies::new(1_000_000),
            jtis: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(Duration::from_secs(
                    crate::oidc::logout_token::MAX_AGE_SECS + 2 * crate::oidc::client::LEEWAY + 600,
                ))
                .build(),
            idp_origin: url::Url::parse(&cfg.idp.issuer)
                .map(|u| u.origin().ascii_serialization())
                .unwrap_or_default(),
            sessions: MemoryStore::new(&cfg.session),
            logins: logins::login_txns(&cfg),
            bearer: bearer::BearerCache::default(),
            login_starts: RateCounter::with_capacity(
                cfg.session.login_starts_per_minute,
                Duration::from_secs(60),
                logins::LOGIN_COUNTER_CAP,
            ),
            http,
            calls,
            session_cookie: cookies::Own::Session.name(cfg.tls),
            lifecycle: Arc::default(),
            launchers: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_idle(Duration::from_secs(3600))
                .build(),
            launchers_hasher: std::hash::RandomState::new(),
            metrics,
            counters,
            kaseyaone_snippet: pages::kaseyaone_icon_snippet().into(),
            login_button_snippet: pages::login_button_snippet().into(),
            hosts,
            oidc,
            signer,
            cfg: Arc::new(cfg),
        })
    }

    /// Counts a login that failed at the callback, and why.
    pub fn login_failed(&self, mi: usize, reason: &str) {
        self.metrics
            .logins
            .with_label_values(&[self.module(mi).label(), "failed", reason])
            .inc();
    }

    pub fn module(&self, i: usize) -> &ModuleConfig {
        &self.cfg.modules[i]
    }

    /// Runs every route's health checks in the background, each at its
    /// `health_check_interval`, for as long as the gateway lives.
    pub fn spawn_health_checks(&self) {
        for ((lb, m), flag) in self.lbs.iter().zip(&self.cfg.modules).zip(&self.healthy) {
            let Some(lb) = lb else { continue };
            let weak = Arc::downgrade(lb);
            let flag = flag.clone();
            let every = m.health_check_interval;
            let label = m.label().to_string();
            tokio::spawn(async move {
                let mut down = 0;
                while let Some(lb) = weak.upgrade() {
                    lb.backends().run_health_check(true).await;
                    let backends = lb.backends().get_backend();
                    let now_down = backends.iter().filter(|b| !lb.backends().ready(b)).count();
                    flag.store(now_down < backends.len(), Ordering::Release);
                    if now_down != down {
                        tracing::warn!(module.name = %label, unhealthy = now_down, "upstream health changed");
                        down = now_down;
                    }
                    drop(lb);
                    tokio::time::sleep(every).await;
                }
            });
        }
    }

    /// A healthy upstream of route `mi`, round robin, skipping `tried`.
    pub fn pick(&self, mi: usize, tried: &[std::net::SocketAddr]) -> Option<std::net::SocketAddr> {
        let lb = self.lbs.get(mi)?.as_ref()?;
        if let [only] = self.module(mi).upstreams.as_slice() {
            return (self.healthy[mi].load(Ordering::Acquire) && !tried.contains(only)).then_some(*only);
        }
        let b = lb.select_with(b"", 256, |b, healthy| {
            healthy && b.addr.as_inet().is_none_or(|a| !tried.contains(a))
        })?;
        b.addr.as_inet().copied()
    }

    /// Module session cookies against the session (if any) of the request.
    /// Every value of each configured name counts (a browser sends one per
    /// path and domain), in every spelling a framework reads as that name
    /// and in every form it decodes the value to; more than a browser
    /// sends is refused. With Redis down an unknown one is an error.
    async fn check_module_cookies(
        &self,
        req: &RequestHeader,
        module: &ModuleConfig,
        s: Option<&Session>,
    ) -> Result<ModuleCookieCheck, crate::session::redis::StoreError> {
        let Ok(readings) = self.module_cookie_readings(req, module) else {
            return Ok(ModuleCookieCheck::TooMany);
        };
        let mut strip = 0u64;
        let mut expire = Vec::new();
        for r in &readings {
            let name = module.session_cookies[r.name].as_str();
            let owners = self.reading_owners(r).await?;
            // Beside a KaseyaOne session, a module session unigate never saw
            // issued (opened with module credentials, or before unigate)
            // could be anyone's: it stays out too.
            if owners.is_empty() && s.is_some() {
                strip |= module_cookies::strip_bit(r.name);
            }
            for owner in owners {
                match s {
                    // Beside a KaseyaOne session only that user's own
                    // module session gets through: not another user's, and
                    // not a local exception's (whose user unigate cannot
                    // tie to the identity it sends).
                    // Nor one of the same user's earlier login.
                    Some(s)
                        if !owner.kaseyaone
                            || *owner.user != *s.identity.sub
                            || !owner.same_login(s.identity.sid.as_deref()) =>
                    {
                        strip |= module_cookies::strip_bit(r.name)
                    }
                    Some(_) => {}
                    None if owner.kaseyaone => {
                        expire.extend(CookieOwner::expiry(name, Some(&owner)));
                        expire.extend(module_cookies::raw_name_expiry(r, name, Some(&owner)));
                    }
                    None => {} // a local exception's own module session
                }
            }
        }
        Ok(if !expire.is_empty() {
            ModuleCookieCheck::Expire(expire)
        } else if strip != 0 {
            ModuleCookieCheck::Strip(strip)
        } else {
            ModuleCookieCheck::Pass
        })
    }

    /// The App Launcher's tiles for this user: every module of this
    /// unigate in one of the user's access groups, with My Modules' rules.
    pub fn launcher_tiles(&self, id: &Identity) -> Vec<pages::LauncherTile> {
        let mods = &self.cfg.modules;
        let mut tiles = Vec::new();
        for m in mods.iter().filter(|m| m.instance.is_none()) {
            if !may_access(&id.groups, &m.access_groups) {
                continue;
            }
            let Some(host) = m.hosts.first() else { continue };
            let origin = self.cfg.origin_for(host);
            let (tile, url, instances) = if !m.unified_login {
                let login = m.login_paths.first().map_or("/", String::as_str);
                (pages::TileKind::Lock, format!("{origin}{login}"), 0)
            } else if m.chooser.is_empty() {
                (pages::TileKind::Arrow, format!("{origin}/"), 0)
            } else {
                let open: Vec<&ModuleConfig> = m
                    .chooser
                    .iter()
                    .map(|&r| &mods[r])
                    .filter(|i| may_access(&id.groups, &i.access_groups))
                    .collect();
                match open.as_slice() {
                    [] => continue,
                    [one] => match one.hosts.first() {
                        Some(h) => (pages::TileKind::Arrow, format!("{}/", self.cfg.origin_for(h)), 1),
                        None => continue,
                    },
                    many => (pages::TileKind::File, format!("{origin}{PREFIX}instances"), many.len()),
                }
            };
            tiles.push(pages::LauncherTile {
                name: m.name.clone(),
                display_name: m.display_name.clone(),
                url,
                tile,
                instances,
            });
        }
        tiles
    }

    /// Goes on to the upstream: a 503 page at once when every upstream of
    /// the route fails its health checks.
    async fn proceed(&self, session: &mut PSession, ctx: &mut Ctx, mi: usize) -> Result<bool> {
        let module = self.module(mi);
        if self.lbs[mi].is_none() {
            // A module's Choose an Instance host has nothing behind it.
            return respond_page(
                session,
                404,
                pages::page("Not found", maud::html! { h1 { "Choose an instance first" } p { a href={ (PREFIX) "instances" } { "Choose an Instance" } } }),
            )
            .await;
        }
        match self.pick(mi, &[]) {
            Some(addr) => {
                ctx.peer = Some(addr);
                Ok(false)
            }
            None => {
                tracing::warn!(module.name = %module.label(), "no healthy upstream");
                let headers = [("retry-after", "10".to_string())];
                respond(
                    session,
                    503,
                    "text/html; charset=utf-8",
                    &headers,
                    pages::no_healthy_upstream(&module.display_name),
                )
                .await
            }
        }
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
    pub async fn session_for(
        &self,
        req: &RequestHeader,
        module: &ModuleConfig,
        now: u64,
    ) -> Result<Option<Arc<Session>>, crate::session::redis::StoreError> {
        let Some(id) = self.cookie(req, self.session_cookie).filter(|v| is_session_id(v)) else {
            return Ok(None);
        };
        Ok(self.session_at(id, now).await?.filter(|s| *s.module == *module.label()))
    }

    /// The session cookie's attributes: `__Host-` with TLS (Secure, Path=/,
    /// no Domain), always HttpOnly and SameSite=Lax.
    fn session_cookie_header(&self, value: &str, max_age: Option<u64>) -> String {
        cookies::Own::Session.set_cookie(self.cfg.tls, value, max_age)
    }
}

pub use crate::clock::unix_now;

/// Writes a whole response. `headers` may repeat names (`set-cookie`).
pub async fn respond(
    session: &mut PSession,
    status: u16,
    content_type: &str,
    headers: &[(&str, String)],
    body: impl Into<Bytes>,
) -> Result<bool> {
    let body: Bytes = body.into();
    let mut h = ResponseHeader::build(status, Some(headers.len() + 5))?;
    if let Some(id) = session.req_header().headers.get(REQUEST_ID) {
        h.insert_header(REQUEST_ID, id.clone())?;
    }
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

/// The request id header: kept when a trusted proxy before unigate sent a
/// sane one, else generated; passed to the module and returned to the
/// client.
pub const REQUEST_ID: &str = "x-request-id";

/// Makes sure the request carries an `X-Request-Id` of unigate's own, or
/// of a `trusted` proxy.
fn ensure_request_id(session: &mut PSession, trusted: bool) {
    let sane = |v: &http::HeaderValue| {
        let b = v.as_bytes();
        !b.is_empty() && b.len() <= 200 && b.iter().all(|c| (0x21..=0x7e).contains(c))
    };
    let req = session.req_header_mut();
    match req.headers.get(REQUEST_ID) {
        Some(v) if trusted && sane(v) && req.headers.get_all(REQUEST_ID).iter().count() == 1 => {}
        // Replaced.
        Some(_) => {
            let _ = req.insert_header(REQUEST_ID, new_request_id());
        }
        None => {
            let _ = req.append_header(REQUEST_ID, new_request_id());
        }
    }
}

/// 32 hex digits: a random per-process prefix and a counter (unique
/// across replicas, no system call per request).
pub fn new_request_id() -> http::HeaderValue {
    use std::sync::OnceLock;
    use std::sync::atomic::AtomicU64;
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        use rand::RngCore;
        rand::rngs::OsRng.next_u64()
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&prefix.to_be_bytes());
    raw[8..].copy_from_slice(&n.to_be_bytes());
    let mut hex = [0u8; 32];
    hex::encode_to_slice(raw, &mut hex).expect("32 bytes hold 16 in hex");
    http::HeaderValue::from_bytes(&hex).expect("hex digits are a valid header value")
}

/// A browser navigating, or an API client (wants JSON errors)?
pub fn client_kind(req: &RequestHeader) -> ClientKind {
    let h = |n: &str| req.headers.get(n).and_then(|v| v.to_str().ok());
    classify(
        h("accept"),
        req.headers.contains_key("x-requested-with"),
        h("sec-fetch-mode"),
    )
}

/// Drops Pingora's record of the case of each header name from a request
/// (the one the module will be sent is made from it), and makes room for
/// `room` more headers: appends then cost a third. HTTP/1.1 header names
/// are case-insensitive; the module gets the standard ones title-cased and
/// the rest lower-case. The request target is kept as Pingora keeps it.
fn without_case(req: &mut RequestHeader, room: usize) {
    // A target the URI does not hold (absolute-form, not UTF-8) is left to
    // `canonical_target` with its case map: it is rewritten or refused.
    if !req.has_case()
        || req
            .uri
            .path_and_query()
            .is_none_or(|pq| pq.as_str().as_bytes() != req.raw_path())
    {
        return;
    }
    let empty = RequestHeader::from(http::Request::new(()).into_parts().0);
    let mut parts: http::request::Parts = std::mem::replace(req, empty).into();
    parts.headers.reserve(room);
    *req = RequestHeader::from(parts);
}

/// Makes the request's path canonical (`policy::path`) in place, so that
/// what unigate decides on is what the module is sent: also a target that
/// Pingora would forward verbatim (absolute-form, or not UTF-8).
fn canonical_target(req: &mut RequestHeader) -> std::result::Result<(), PathRefusal> {
    if !req.raw_path_is_utf8() {
        return Err(PathRefusal::NotUtf8);
    }
    let verbatim = req
        .uri
        .path_and_query()
        .is_none_or(|pq| pq.as_str().as_bytes() != req.raw_path());
    let path = match canonicalize(req.uri.path())? {
        Cow::Borrowed(_) if !verbatim => return Ok(()),
        Cow::Borrowed(p) => p.to_string(),
        Cow::Owned(p) => p,
    };
    let target = match req.uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let mut parts = req.uri.clone().into_parts();
    parts.path_and_query = Some(target.parse().map_err(|_| PathRefusal::BadEscape)?);
    let uri = http::Uri::from_parts(parts).map_err(|_| PathRefusal::BadEscape)?;
    req.set_uri(uri);
    Ok(())
}

/// A path unigate will not guess the meaning of: 400, and why.
async fn bad_path(session: &mut PSession, why: PathRefusal) -> Result<bool> {
    tracing::info!(reason = %why, decision = "deny", "request path refused");
    if client_kind(session.req_header()) == ClientKind::Api {
        let body = serde_json::json!({"error": "invalid_request", "error_description": why.to_string()});
        return respond(session, 400, "application/json", &[], body.to_string()).await;
    }
    respond_page(session, 400, pages::bad_path(&why.to_string())).await
}

/// The shared session store is down: fail closed, clearly.
pub async fn store_down(session: &mut PSession) -> Result<bool> {
    let headers = [("retry-after", "5".to_string())];
    if client_kind(session.req_header()) == ClientKind::Api {
        let body =
            r#"{"error":"temporarily_unavailable","error_description":"unigate's session store cannot be reached"}"#;
        return respond(session, 503, "application/json", &headers, body).await;
    }
    let html = pages::unavailable("unigate's session store cannot be reached, so no one can be let in.");
    respond(session, 503, "text/html; charset=utf-8", &headers, html).await
}

pub async fn respond_page(session: &mut PSession, status: u16, html: String) -> Result<bool> {
    respond(session, status, "text/html; charset=utf-8", &[], html).await
}

pub async fn redirect(session: &mut PSession, location: &str, cookies: Vec<String>) -> Result<bool> {
    let mut headers: Vec<(&str, String)> = vec![("location", location.to_string())];
    headers.extend(cookies.into_iter().map(|c| ("set-cookie", c)));
    respond(session, 302, "text/plain; charset=utf-8", &headers, Bytes::new()).await
}

/// The proxy hooks, called by `server::Shared` (the `ProxyHttp` Pingora
/// runs) on the gateway current when the request arrived. Plain methods,
/// not a second `ProxyHttp`: each trait hook boxes its future, and one box
/// per hook is enough.
impl Gateway {
    pub fn new_ctx(&self) -> Ctx {
        Ctx::default()
    }

    pub async fn request_filter(self: &Arc<Self>, session: &mut PSession, ctx: &mut Ctx) -> Result<bool> {
        // A dozen headers go in on the way to the module: without room made
        // first, and with Pingora's second map of each header name's case,
        // that was half of unigate's cost per request.
        without_case(session.req_header_mut(), 16);
        ensure_request_id(session, self.peer_trusted(session));
        // Every decision below, and the module, see one canonical path.
        if let Err(why) = canonical_target(session.req_header_mut()) {
            return bad_path(session, why).await;
        }
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
        let Some((mi, forwarded_host)) = self.hosts.get(host.as_ref()) else {
            return respond_page(session, 404, pages::unknown_host(&host)).await;
        };
        let mi = *mi;
        ctx.module = Some(mi);
        ctx.forwarded_host = Some(forwarded_host.clone());
        let module = self.module(mi);
        if !module.unified_login {
            // Unified Login off: the module's own login only, untouched.
            if path.starts_with(PREFIX) {
                return respond_page(session, 404, pages::unified_login_off(&module.display_name)).await;
            }
            return self.proceed(session, ctx, mi).await;
        }
        if path.starts_with(PREFIX) {
            let host = host.into_owned();
            return internal::handle(self, session, mi, &host).await;
        }
        if module.is_logout(path) {
            let host = host.into_owned();
            return internal::logout(self, session, mi, &host, true).await;
        }
        if module.is_public(path) {
            return self.proceed(session, ctx, mi).await;
        }
        let now = unix_now();
        let found = match self.session_for(req, module, now).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "session store unavailable; failing closed");
                return store_down(session).await;
            }
        };
        let req = session.req_header();
        if let Some(s) = found
            && s.usable()
        {
            if !may_access(&s.identity.groups, &module.access_groups) {
                tracing::info!(module.name = %module.label(), user.sub = %s.identity.sub, decision = "deny", "access group check");
                return respond_page(
                    session,
                    403,
                    pages::forbidden(&module.display_name, &module.access_groups),
                )
                .await;
            }
            if s.link_pending {
                return internal::link_first(self, session).await;
            }
            if !module.chooser.is_empty() {
                let host = host.into_owned();
                return internal::chooser(self, session, mi, &host, &s).await;
            }
            if local_credentials::beside_session(req, module) {
                return local_credentials::refuse_beside_session(session, module, &s.identity.email).await;
            }
            if !module.session_cookies.is_empty() {
                match self.check_module_cookies(req, module, Some(&s)).await {
                    Ok(ModuleCookieCheck::TooMany) => return module_cookies::too_many(session, module).await,
                    Ok(ModuleCookieCheck::Strip(bits)) => {
                        tracing::info!(module.name = %module.label(), user.sub = %s.identity.sub, "module cookie of another user kept from the module");
                        ctx.strip_cookies = bits;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "session store unavailable; failing closed");
                        return store_down(session).await;
                    }
                }
            }
            self.maybe_refresh(req, &s, mi, now);
            ctx.session = Some(s);
            return self.proceed(session, ctx, mi).await;
        }
        // A module session opened under a KaseyaOne session that has ended
        // (logout, back-/front-channel logout, expiry) never gets through:
        // its cookies are expired and the request starts over.
        if !module.session_cookies.is_empty() {
            match self.check_module_cookies(req, module, None).await {
                Ok(ModuleCookieCheck::Expire(set_cookies)) => {
                    return internal::expire_module_cookies(self, session, mi, set_cookies).await;
                }
                Ok(ModuleCookieCheck::TooMany) => return module_cookies::too_many(session, module).await,
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "session store unavailable; failing closed");
                    return store_down(session).await;
                }
            }
        }
        let bearer = req
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim().to_string());
        if let Some(token) = bearer {
            return bearer::handle(self, session, ctx, mi, &token).await;
        }
        if module.require_kaseyaone {
            let host = host.into_owned();
            match internal::required(self, session, ctx, mi, &host).await? {
                internal::Required::Done(done) => return Ok(done),
                internal::Required::Proceed => return self.proceed(session, ctx, mi).await,
                internal::Required::Login => {}
            }
        } else if module.local_login {
            // Module credentials keep working: the module's own login and
            // session decide; no identity headers go with the request.
            ctx.local = true;
            ctx.login_page = module.is_login_page(path);
            return self.proceed(session, ctx, mi).await;
        }
        let req = session.req_header();
        match client_kind(req) {
            ClientKind::Api => internal::unauthenticated_api(self, session, mi).await,
            ClientKind::Navigation => {
                // The request target itself can be `//evil.example/…`: it
                // goes through the same check as any return URL.
                let wanted = req.uri.path_and_query().map_or("/", |p| p.as_str());
                let return_path = crate::oidc::return_url::safe_return_path(wanted)
                    .unwrap_or("/")
                    .to_string();
                let host = Self::host_of(req).map(|h| h.into_owned()).unwrap_or_default();
                internal::start_login(self, session, mi, &host, &return_path).await
            }
        }
    }

    pub async fn upstream_peer(&self, _session: &mut PSession, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let mi = ctx.module.ok_or_else(|| Error::new(ErrorType::InternalError))?;
        // The first try uses the upstream checked in `proceed`; a retry
        // after a failed connect takes the next healthy one.
        let addr = match ctx.peer.take() {
            Some(a) => a,
            None => self
                .pick(mi, &ctx.tried)
                .ok_or_else(|| Error::explain(ErrorType::ConnectNoRoute, "no healthy upstream left"))?,
        };
        ctx.current = Some(addr);
        let mut peer = match &self.module(mi).upstream_tls {
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
            let module = ctx.module.map_or("-", |m| self.module(m).label());
            tracing::error!(module.name = %module, upstream = ?ctx.current, error = %e, "TLS to the module failed (certificate not trusted, wrong name, or not TLS)");
        }
        // Another upstream of the route may answer: try each once.
        if let Some(failed) = ctx.current.take() {
            ctx.tried.push(failed);
        }
        if let Some(mi) = ctx.module
            && ctx.tried.len() < self.module(mi).upstreams.len()
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
            && let Some(mi) = ctx.module
        {
            let module = self.module(mi);
            let kept = cookies::without_unigate_cookies(
                up.headers
                    .get_all(http::header::COOKIE)
                    .iter()
                    .filter_map(|v| v.to_str().ok()),
                |pair| {
                    module.session_cookies.iter().enumerate().any(|(i, c)| {
                        ctx.strip_cookies & module_cookies::strip_bit(i) != 0
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
            || ctx.module.is_some_and(|mi| self.module(mi).require_kaseyaone))
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
            // Appended: every identity header was removed above.
            for (name, value) in s.headers.iter() {
                up.append_header(name, value)?;
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
            let handle = self.signer.session_handle(module.label(), id);
            for (name, value) in headers(id, module.headers, self.cfg.identity.max_header_value, &handle) {
                up.insert_header(name, value)?;
            }
            match self.signer.sign(id, module.label(), SystemTime::now()) {
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
                module = ctx.module.map_or("-", |m| self.module(m).label()),
                "the module set one of unigate's cookies: dropped"
            );
            resp.remove_header(&http::header::SET_COOKIE);
            for v in kept {
                resp.append_header(http::header::SET_COOKIE, v)?;
            }
        }
        if let (Some(s), Some(mi)) = (&ctx.session, ctx.module) {
            let module = self.module(mi);
            if !module.session_cookies.is_empty() && resp.headers.contains_key(http::header::SET_COOKIE) {
                let mut unrecorded = Vec::new();
                for v in resp.headers.get_all(http::header::SET_COOKIE) {
                    let Ok(c) = cookie::Cookie::parse(String::from_utf8_lossy(v.as_bytes()).into_owned()) else {
                        continue;
                    };
                    if !c.value_trimmed().is_empty() && module.session_cookies.iter().any(|n| n == c.name()) {
                        let owner = self
                            .cookie_owner(&c, &s.identity.sub, true)
                            .set_at(session.req_header().uri.path())
                            .in_login(s.identity.sid.as_deref());
                        if let Err(e) = self.record_module_cookie(c.value_trimmed(), owner).await {
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
                let idle = match &self.shared {
                    Some(shared) => self.cookie(session.req_header(), self.session_cookie).map(|id| {
                        (
                            self.cfg.session.idle_timeout.as_secs(),
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
            (None, true) => &self.kaseyaone_snippet,
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
                rules.push(("form", inject::Place::After, self.login_button_snippet.clone()));
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
        let code = match e.esource() {
            // A response under way cannot turn into an error page: the
            // connection just ends, and the client sees it cut short.
            _ if session.response_written().is_some() => 0,
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
        let route = ctx.module.unwrap_or(self.counters.len() - 1);
        if let Some(c) = self.counters.get(route) {
            c[outcome as usize].inc();
        }
        let quiet = matches!(outcome, Outcome::Proxied | Outcome::Internal);
        if quiet && !tracing::enabled!(target: "unigate::auth", tracing::Level::DEBUG) {
            return;
        }
        let module = ctx.module.map_or("-", |m| self.module(m).label());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(status, None).unwrap();
        for (n, v) in headers {
            r.insert_header(n.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn which_responses_are_watched_as_streams() {
        let chunked = [("transfer-encoding", "chunked")];
        let sized = [("content-length", "12")];
        let sse = [("content-type", "text/event-stream")];
        for (head, r, want) in [
            (false, resp(101, &[("upgrade", "websocket")]), true),
            (false, resp(200, &sse), true),
            (false, resp(200, &chunked), true),
            (false, resp(200, &[]), true), // close-delimited
            (false, resp(500, &chunked), true),
            (false, resp(200, &sized), false),
            (false, resp(204, &[]), false),
            (false, resp(304, &[]), false),
            (false, resp(103, &[]), false),
            (true, resp(200, &chunked), false),
        ] {
            assert_eq!(streamed(head, &r), want, "HEAD {head}, {} {:?}", r.status, r.headers);
        }
    }
}
