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
use crate::idp::keys::SigningKey;
use crate::oidc::client::OidcClient;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("assertion key: {0}")]
    Key(#[from] crate::idp::keys::KeyError),
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
        ShutdownSignal::FastShutdown
    }
}

/// A running unigate.
pub struct GatewayServer {
    pub addr: SocketAddr,
    /// Where the admin API listens, when configured.
    pub admin_addr: Option<SocketAddr>,
    admin: Option<tokio::task::JoinHandle<()>>,
    pub gateway: Arc<Gateway>,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Builds the gateway: assertion key, IdP client (discovery tried once now,
/// then retried every 5 s in the background until it loads).
pub async fn build(cfg: GatewayConfig) -> Result<Arc<Gateway>, StartError> {
    let key = match &cfg.identity.assertion_key {
        Some(pem) => SigningKey::from_pem(pem, jsonwebtoken::Algorithm::ES256)?,
        None => SigningKey::generate(jsonwebtoken::Algorithm::ES256)?,
    };
    let signer = AssertionSigner {
        key,
        issuer: "unigate".into(),
        ttl: cfg.identity.assertion_ttl,
    };
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
    if let Some(shared) = gw.shared.clone() {
        let (w1, w2) = (Arc::downgrade(&gw), Arc::downgrade(&gw));
        tokio::spawn(shared.clone().run(
            move |h| {
                if let Some(g) = w1.upgrade() {
                    g.forget(h);
                }
            },
            move || {
                if let Some(g) = w2.upgrade() {
                    g.drop_local_copies();
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
    let weak = Arc::downgrade(&gw);
    tokio::spawn(async move {
        while let Some(g) = weak.upgrade() {
            g.sessions.housekeeping();
            drop(g);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    Ok(gw)
}

/// A plain `Gateway` handle usable as a Pingora `ProxyHttp`.
pub struct Shared(pub Arc<Gateway>);

#[async_trait::async_trait]
impl pingora::proxy::ProxyHttp for Shared {
    type CTX = super::Ctx;
    fn new_ctx(&self) -> Self::CTX {
        self.0.new_ctx()
    }
    async fn request_filter(&self, s: &mut pingora::proxy::Session, ctx: &mut Self::CTX) -> pingora::Result<bool> {
        self.0.request_filter(s, ctx).await
    }
    async fn upstream_peer(
        &self,
        s: &mut pingora::proxy::Session,
        ctx: &mut Self::CTX,
    ) -> pingora::Result<Box<pingora::upstreams::peer::HttpPeer>> {
        self.0.upstream_peer(s, ctx).await
    }
    fn fail_to_connect(
        &self,
        s: &mut pingora::proxy::Session,
        peer: &pingora::upstreams::peer::HttpPeer,
        ctx: &mut Self::CTX,
        e: Box<pingora::Error>,
    ) -> Box<pingora::Error> {
        self.0.fail_to_connect(s, peer, ctx, e)
    }
    async fn connected_to_upstream(
        &self,
        s: &mut pingora::proxy::Session,
        reused: bool,
        peer: &pingora::upstreams::peer::HttpPeer,
        fd: std::os::unix::io::RawFd,
        digest: Option<&pingora::protocols::Digest>,
        ctx: &mut Self::CTX,
    ) -> pingora::Result<()> {
        self.0.connected_to_upstream(s, reused, peer, fd, digest, ctx).await
    }
    async fn upstream_request_filter(
        &self,
        s: &mut pingora::proxy::Session,
        up: &mut pingora::http::RequestHeader,
        ctx: &mut Self::CTX,
    ) -> pingora::Result<()> {
        self.0.upstream_request_filter(s, up, ctx).await
    }
    async fn response_filter(
        &self,
        s: &mut pingora::proxy::Session,
        resp: &mut pingora::http::ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> pingora::Result<()> {
        self.0.response_filter(s, resp, ctx).await
    }
    fn response_body_filter(
        &self,
        s: &mut pingora::proxy::Session,
        body: &mut Option<bytes::Bytes>,
        end: bool,
        ctx: &mut Self::CTX,
    ) -> pingora::Result<Option<Duration>> {
        self.0.response_body_filter(s, body, end, ctx)
    }
    async fn fail_to_proxy(
        &self,
        s: &mut pingora::proxy::Session,
        e: &pingora::Error,
        ctx: &mut Self::CTX,
    ) -> pingora::proxy::FailToProxy {
        self.0.fail_to_proxy(s, e, ctx).await
    }
}

/// Pingora settings unigate runs with: `threads` workers, no work stealing
/// (measured faster for a proxy this short), and a short grace period
/// instead of Pingora's 300 s.
pub fn server_conf(threads: usize, work_stealing: bool) -> ServerConf {
    ServerConf {
        threads,
        work_stealing,
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(2),
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
        let gateway = build(cfg).await?;
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
        let g = gateway.clone();
        let thread = std::thread::Builder::new()
            .name("unigate-pingora".into())
            .spawn(move || {
                let mut server = Server::new_with_opt_and_conf(None, server_conf(threads, work_stealing));
                server.bootstrap();
                let mut svc = pingora::proxy::http_proxy_service(&server.configuration, Shared(g));
                svc.add_tcp(&addr.to_string());
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
                    stop: tx,
                    thread: Some(thread),
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let _ = tx.send(true);
        Err(StartError::NotListening(addr))
    }

    /// Stops the server and waits for its thread.
    pub async fn shutdown(mut self) {
        if let Some(a) = self.admin.take() {
            a.abort();
        }
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

/// A free loopback port: bound, read back, released.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
