//! Starting and stopping unigate: loads the identity provider's discovery
//! (retrying in the background while it is down, so `readyz` tells), builds
//! the proxy, and runs Pingora on its own thread with a short grace period.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use tokio::sync::watch;

use super::Gateway;
use super::config::GatewayConfig;
use super::identity::AssertionSigner;
use crate::crypto::keys::SigningKey;
use crate::oidc::client::OidcClient;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("assertion key: {0}")]
    Key(#[from] crate::crypto::keys::KeyError),
    #[error("{0}")]
    Setup(String),
    #[error("unigate did not start listening on {0}")]
    NotListening(SocketAddr),
}

/// Pingora's shutdown trigger, from a watch channel.
struct Stop(watch::Receiver<bool>);

#[async_trait::async_trait]
impl ShutdownSignalWatch for Stop {
    async fn recv(&self) -> ShutdownSignal {
        let mut rx = self.0.clone();
        let _ = rx.wait_for(|v| *v).await;
        // unigate has already waited for requests in flight (`shutdown`):
        // Pingora closes its listeners and idle connections now.
        ShutdownSignal::GracefulTerminate
    }
}

/// The gateway serving new requests: replaced whole by a reload, while
/// requests already under way finish with the one they started with.
pub struct Live {
    current: arc_swap::ArcSwap<Gateway>,
}

impl Live {
    pub fn new(g: Arc<Gateway>) -> Self {
        Live {
            current: arc_swap::ArcSwap::new(g),
        }
    }

    pub fn get(&self) -> Arc<Gateway> {
        self.current.load_full()
    }

    /// Applies a new configuration without dropping sessions or
    /// connections; refused (the running one stays) when it changes a
    /// setting only a restart can apply.
    pub fn reload(&self, cfg: GatewayConfig) -> Result<(), String> {
        let cur = self.get();
        let needs = restart_needed(cur.cfg(), &cfg);
        if !needs.is_empty() {
            cur.state.metrics.reloads.with_label_values(&["refused"]).inc();
            return Err(format!("not reloaded: {} change only with a restart", needs.join(", ")));
        }
        let next = match cur.reloaded(cfg) {
            Ok(n) => n,
            Err(e) => {
                cur.state.metrics.reloads.with_label_values(&["failed"]).inc();
                return Err(e);
            }
        };
        next.spawn_health_checks();
        self.current.store(Arc::new(next));
        cur.state.metrics.reloads.with_label_values(&["succeeded"]).inc();
        Ok(())
    }
}

/// The settings a running unigate cannot change: its listeners, worker
/// threads, the identity provider client, the session store and the
/// assertion key (sessions, tokens and modules' trust depend on them).
pub fn restart_needed(old: &GatewayConfig, new: &GatewayConfig) -> Vec<&'static str> {
    let mut v = Vec::new();
    let mut check = |changed: bool, what: &'static str| {
        if changed {
            v.push(what);
        }
    };
    check(old.listen != new.listen, "listen.address");
    check(
        old.tls_files != new.tls_files || old.http2 != new.http2,
        "listen.tls_cert/tls_key/http2",
    );
    check(
        old.tls != new.tls || old.public_port != new.public_port,
        "listen.public_url",
    );
    check(
        old.threads != new.threads || old.work_stealing != new.work_stealing,
        "listen.threads/work_stealing",
    );
    check(old.idp != new.idp, "[identity_provider]");
    check(old.session != new.session, "[session]");
    check(
        old.identity.assertion_key != new.identity.assertion_key,
        "identity.assertion_key",
    );
    check(old.admin != new.admin, "[admin]");
    v
}

/// Per-request state with the gateway that serves the request; counted
/// in flight from creation to drop.
pub struct LiveCtx {
    gw: Arc<Gateway>,
    ctx: super::Ctx,
}

impl Drop for LiveCtx {
    fn drop(&mut self) {
        self.gw
            .state
            .lifecycle
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// A running unigate.
pub struct GatewayServer {
    pub addr: SocketAddr,
    /// Where the admin API listens, when configured.
    pub admin_addr: Option<SocketAddr>,
    admin: Option<tokio::task::JoinHandle<()>>,
    /// The gateway as started. Its sessions and caches are those of every
    /// reloaded gateway too; `live` serves new requests.
    pub gateway: Arc<Gateway>,
    pub live: Arc<Live>,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
    watcher: Option<tokio::task::JoinHandle<()>>,
}

/// Builds the gateway: assertion key, IdP client (discovery tried once now,
/// then retried every 5 s in the background until it loads).
pub async fn build(cfg: GatewayConfig) -> Result<Arc<Gateway>, StartError> {
    let key = match &cfg.identity.assertion_key {
        Some(pem) => SigningKey::from_pem(pem, jsonwebtoken::Algorithm::ES256)?,
        None => SigningKey::generate(jsonwebtoken::Algorithm::ES256)?,
    };
    let mut signer = AssertionSigner::new(key, "unigate", cfg.identity.assertion_ttl, cfg.identity.assertion_cache);
    // Session handles (and logout form tokens) must agree on every replica:
    // keyed by the assertion key they all share (its DER bytes, whatever
    // the PEM file's line endings).
    if let Some(pem) = &cfg.identity.assertion_key {
        let der = jsonwebtoken::EncodingKey::from_ec_pem(pem.expose().as_bytes())
            .map(|k| k.as_bytes().to_vec())
            .unwrap_or_else(|_| pem.expose().as_bytes().to_vec());
        signer = signer.with_deployment_key(super::handles::DeploymentKey::derived_from(&der));
    }
    let oidc = Arc::new(OidcClient::new(cfg.idp.clone()).map_err(|e| StartError::Setup(e.to_string()))?);
    if let Err(e) = oidc.load().await {
        tracing::warn!(error = %e, "identity provider not reachable yet; retrying in the background");
        let o = oidc.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                match o.load().await {
                    Ok(()) => break,
                    Err(e) => tracing::warn!(error = %e, "identity provider still not reachable"),
                }
            }
        });
    }
    let gw = Gateway::new(cfg, oidc, signer).map_err(StartError::Setup)?;
    gw.spawn_health_checks();
    let gw = Arc::new(gw);
    if let Some(shared) = gw.state.sessions.redis().cloned() {
        // What pub/sub tells reaches the state every reloaded gateway shares.
        let w = Arc::downgrade(&gw.state);
        let (w1, w2, w3, w4) = (w.clone(), w.clone(), w.clone(), w);
        tokio::spawn(shared.clone().run(
            move |h| {
                if let Some(s) = w1.upgrade() {
                    s.sessions.forget(h);
                }
            },
            move |h| {
                if let Some(s) = w4.upgrade() {
                    s.sessions.changed_elsewhere(h);
                }
            },
            move || {
                if let Some(s) = w2.upgrade() {
                    s.sessions.drop_local_copies();
                }
            },
            move || {
                if let Some(s) = w3.upgrade() {
                    s.sessions.end_held_sessions();
                }
            },
        ));
        // Give the first connection a moment, so a healthy Redis serves
        // the very first requests.
        for _ in 0..40 {
            if shared.healthy() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    // Expired sessions are noticed within a second: what they hold open
    // (websockets, event streams) closes then.
    let weak = Arc::downgrade(&gw.state);
    tokio::spawn(async move {
        while let Some(g) = weak.upgrade() {
            g.sessions.housekeeping();
            drop(g);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    Ok(gw)
}

/// The live gateway as a Pingora `ProxyHttp`: each request is served
/// start to end by the gateway that was current when it arrived.
pub struct Shared(pub Arc<Live>);

#[async_trait::async_trait]
impl pingora::proxy::ProxyHttp for Shared {
    type CTX = LiveCtx;
    fn new_ctx(&self) -> Self::CTX {
        let gw = self.0.get();
        gw.state
            .lifecycle
            .in_flight
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        LiveCtx { ctx: gw.new_ctx(), gw }
    }
    async fn request_filter(&self, s: &mut pingora::proxy::Session, c: &mut Self::CTX) -> pingora::Result<bool> {
        c.gw.request_filter(s, &mut c.ctx).await
    }
    async fn upstream_peer(
        &self,
        s: &mut pingora::proxy::Session,
        c: &mut Self::CTX,
    ) -> pingora::Result<Box<pingora::upstreams::peer::HttpPeer>> {
        c.gw.upstream_peer(s, &mut c.ctx).await
    }
    fn fail_to_connect(
        &self,
        s: &mut pingora::proxy::Session,
        peer: &pingora::upstreams::peer::HttpPeer,
        c: &mut Self::CTX,
        e: Box<pingora::Error>,
    ) -> Box<pingora::Error> {
        c.gw.fail_to_connect(s, peer, &mut c.ctx, e)
    }
    async fn connected_to_upstream(
        &self,
        s: &mut pingora::proxy::Session,
        reused: bool,
        peer: &pingora::upstreams::peer::HttpPeer,
        fd: std::os::unix::io::RawFd,
        digest: Option<&pingora::protocols::Digest>,
        c: &mut Self::CTX,
    ) -> pingora::Result<()> {
        c.gw.connected_to_upstream(s, reused, peer, fd, digest, &mut c.ctx)
    }
    async fn upstream_request_filter(
        &self,
        s: &mut pingora::proxy::Session,
        up: &mut pingora::http::RequestHeader,
        c: &mut Self::CTX,
    ) -> pingora::Result<()> {
        c.gw.upstream_request_filter(s, up, &mut c.ctx).await
    }
    async fn response_filter(
        &self,
        s: &mut pingora::proxy::Session,
        resp: &mut pingora::http::ResponseHeader,
        c: &mut Self::CTX,
    ) -> pingora::Result<()> {
        c.gw.response_filter(s, resp, &mut c.ctx).await
    }
    fn response_body_filter(
        &self,
        s: &mut pingora::proxy::Session,
        body: &mut Option<bytes::Bytes>,
        end: bool,
        c: &mut Self::CTX,
    ) -> pingora::Result<Option<Duration>> {
        c.gw.response_body_filter(s, body, end, &mut c.ctx)
    }
    async fn fail_to_proxy(
        &self,
        s: &mut pingora::proxy::Session,
        e: &pingora::Error,
        c: &mut Self::CTX,
    ) -> pingora::proxy::FailToProxy {
        c.gw.fail_to_proxy(s, e, &mut c.ctx).await
    }
    async fn logging(&self, s: &mut pingora::proxy::Session, e: Option<&pingora::Error>, c: &mut Self::CTX) {
        c.gw.logging(s, e, &mut c.ctx).await
    }
}

/// Pingora settings unigate runs with: `threads` workers, no work stealing
/// (measured faster for a proxy this short), and no grace period of
/// Pingora's own (its default is 300 s): unigate waits for requests in
/// flight itself, up to `listen.shutdown_grace`, before it stops Pingora.
pub fn server_conf(threads: usize, work_stealing: bool) -> ServerConf {
    ServerConf {
        threads,
        work_stealing,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    }
}

impl GatewayServer {
    /// Starts unigate on `cfg.listen`, which must have a port: tests pick a
    /// free one first, as Pingora does not report the port it bound.
    pub async fn start(cfg: GatewayConfig) -> Result<GatewayServer, StartError> {
        let addr = cfg.listen;
        let (threads, work_stealing) = (cfg.threads, cfg.work_stealing);
        let admin_cfg = cfg.admin.clone();
        for w in &cfg.warnings {
            tracing::warn!("config: {w}");
        }
        super::tls::install_crypto_provider();
        let tls = match &cfg.tls_files {
            Some(files) => {
                let cert = super::tls::ReloadingCert::load(files.clone()).map_err(StartError::Setup)?;
                cert.watch();
                Some((cert, cfg.http2))
            }
            None => None,
        };
        let gateway = build(cfg).await?;
        let live = Arc::new(Live::new(gateway.clone()));
        let (admin_addr, admin) = match admin_cfg {
            Some(a) => {
                let l = tokio::net::TcpListener::bind(a.address)
                    .await
                    .map_err(|e| StartError::Setup(format!("admin listener {}: {e}", a.address)))?;
                let bound = l.local_addr().map_err(|e| StartError::Setup(e.to_string()))?;
                (Some(bound), Some(super::admin::serve(l, gateway.clone(), a.token)))
            }
            None => (None, None),
        };
        let (tx, rx) = watch::channel(false);
        let g = live.clone();
        let thread = std::thread::Builder::new()
            .name("unigate-pingora".into())
            .spawn(move || {
                let mut server = Server::new_with_opt_and_conf(None, server_conf(threads, work_stealing));
                server.bootstrap();
                let mut svc = pingora::proxy::http_proxy_service(&server.configuration, Shared(g));
                match tls {
                    Some((cert, http2)) => {
                        let mut settings = match pingora::listeners::tls::TlsSettings::intermediate("", "") {
                            Ok(s) => s,
                            Err(e) => {
                                tracing::error!(error = %e, "TLS listener settings");
                                return;
                            }
                        };
                        settings.set_cert_resolver(cert);
                        if http2 {
                            settings.enable_h2();
                        }
                        svc.add_tls_with_settings(&addr.to_string(), None, settings);
                    }
                    None => svc.add_tcp(&addr.to_string()),
                }
                server.add_service(svc);
                server.run(RunArgs {
                    shutdown_signal: Box::new(Stop(rx)),
                });
            })
            .map_err(|e| StartError::Setup(e.to_string()))?;
        let started = std::time::Instant::now();
        for _ in 0..800 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                tracing::debug!(ms = started.elapsed().as_millis() as u64, "unigate listening");
                return Ok(GatewayServer {
                    addr,
                    admin_addr,
                    admin,
                    gateway,
                    live,
                    stop: tx,
                    thread: Some(thread),
                    watcher: None,
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let _ = tx.send(true);
        Err(StartError::NotListening(addr))
    }

    /// Reloads the configuration from `path` whenever the file changes
    /// (checked every second; Kubernetes swaps ConfigMap files by symlink,
    /// which event-based watching misses). A file that does not load, or
    /// that changes a restart-only setting, is logged and changes nothing.
    pub fn watch_config(&mut self, path: std::path::PathBuf) {
        let live = self.live.clone();
        self.watcher = Some(tokio::spawn(async move {
            let mut last = std::fs::read(&path).ok();
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let now = std::fs::read(&path).ok();
                if now.is_none() || now == last {
                    continue;
                }
                last = now;
                reload_from(&live, &path);
            }
        }));
    }

    /// Reloads the configuration from `path` now (SIGHUP).
    pub fn reload_from(&self, path: &std::path::Path) -> bool {
        reload_from(&self.live, path)
    }

    /// Stops gracefully: `readyz` turns 503 at once, the listener stays
    /// open for `drain_delay` (when `drain`: SIGTERM, so load balancers
    /// notice), requests in flight get up to `shutdown_grace` to finish,
    /// then Pingora closes everything.
    pub async fn stop(mut self, drain: bool) {
        let cfg = self.live.get().cfg().clone();
        let life = self.gateway.state.lifecycle.clone();
        life.draining.store(true, std::sync::atomic::Ordering::Release);
        tracing::info!(
            drain_delay = ?cfg.drain_delay,
            grace = ?cfg.shutdown_grace,
            in_flight = life.in_flight.load(std::sync::atomic::Ordering::Acquire),
            "stopping: readiness off"
        );
        if drain {
            tokio::time::sleep(cfg.drain_delay).await;
        }
        let deadline = std::time::Instant::now() + cfg.shutdown_grace;
        loop {
            let left = life.in_flight.load(std::sync::atomic::Ordering::Acquire);
            if left == 0 {
                break;
            }
            if std::time::Instant::now() >= deadline {
                tracing::warn!(in_flight = left, "shutdown grace over; closing what is still open");
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(w) = self.watcher.take() {
            w.abort();
        }
        if let Some(a) = self.admin.take() {
            a.abort();
        }
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }

    /// Stops the server (no drain delay) and waits for its thread.
    pub async fn shutdown(self) {
        self.stop(false).await
    }
}

fn reload_from(live: &Live, path: &std::path::Path) -> bool {
    let result = GatewayConfig::load(path)
        .map_err(|e| format!("{} has problems:\n{e}", path.display()))
        .and_then(|cfg| live.reload(cfg));
    match result {
        Ok(()) => {
            tracing::info!(config = %path.display(), "configuration reloaded");
            true
        }
        Err(e) => {
            tracing::error!(config = %path.display(), error = %e, "configuration not reloaded; the running one stays");
            false
        }
    }
}

/// A free loopback port for a server started a moment later (tests, the
/// demo). It is taken from just below the kernel's ephemeral range, checked
/// free by binding it, and never handed out twice by this process: a port
/// the kernel gave out for `bind(…:0)` and released could be given to the
/// next `bind(…:0)` (another server of the same test) before the server it
/// was meant for binds it. Falls back to the kernel's choice.
pub fn free_port() -> std::io::Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let span = low.saturating_sub(1024).min(12_000);
    if span > 0 {
        // A different starting point per process (test binaries run one
        // after another, but a developer may run two).
        let _ = NEXT.compare_exchange(0, std::process::id() % span + 1, Ordering::AcqRel, Ordering::Relaxed);
        for _ in 0..span {
            let n = NEXT.fetch_add(1, Ordering::AcqRel);
            let port = (low - 1 - (n % span)) as u16;
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
    }
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
