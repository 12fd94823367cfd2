//! The embedded KaseyaOne-compatible development identity provider: a real
//! OpenID Provider (authorization code flow with PKCE S256, ES256/RS256
//! signed tokens, refresh rotation, RP-initiated, back-channel and
//! front-channel logout) with KaseyaOne's login experience (username and
//! company, password, verification code; "Can't Log In?"; My Modules;
//! the Welcome to KaseyaOne mail of a user added at run time).
//! It serves the demo, the tests and load tests of the auth path.

mod account_pages;
pub mod config;
pub mod directory;
pub mod keys;
pub mod logout;
pub mod mail;
pub mod oauth;
mod pages;
pub mod store;
pub mod users_file;
mod web;
pub mod welcome;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use jsonwebtoken::Algorithm;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use config::IdpConfig;
use directory::Directory;
use keys::{KeyStore, SigningKey};
use mail::Outbox;
use store::{Stores, Throttle};

/// How often a running provider looks at the users file for users taken
/// out of it (it also looks whenever a session or token is used).
const USERS_FILE_CHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// Everything the provider knows; shared by its HTTP handlers.
pub struct Provider {
    /// The issuer identifier, with no trailing slash.
    pub issuer: String,
    pub cfg: IdpConfig,
    pub dir: Directory,
    pub keys: KeyStore,
    pub stores: Stores,
    pub throttle: Throttle,
    pub outbox: Outbox,
    http: reqwest::Client,
    /// Argon2 hashes running at once: at most one per core.
    hash_permits: tokio::sync::Semaphore,
    /// Cookies get `Secure` when the issuer is https.
    secure_cookies: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Key(#[from] keys::KeyError),
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

impl Provider {
    /// Builds the provider for `issuer`; keys come from the config or are
    /// generated.
    pub fn new(cfg: IdpConfig, issuer: &str) -> Result<Provider, StartError> {
        let es = match &cfg.signing.es256_key {
            Some(pem) => SigningKey::from_pem(pem, Algorithm::ES256)?,
            None => SigningKey::generate(Algorithm::ES256)?,
        };
        let rs = match &cfg.signing.rs256_key {
            Some(pem) => SigningKey::from_pem(pem, Algorithm::RS256)?,
            None => SigningKey::generate(Algorithm::RS256)?,
        };
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Provider {
            issuer: issuer.trim_end_matches('/').to_string(),
            dir: Directory::new(&cfg),
            keys: KeyStore::new(es, rs, cfg.signing.rotation_grace, cfg.tokens.session_ttl),
            stores: Stores::new(&cfg),
            throttle: Throttle::new(&cfg.login),
            outbox: Outbox::new(cfg.outbox_dir.clone(), cfg.outbox_from.clone()),
            secure_cookies: issuer.starts_with("https://"),
            hash_permits: tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get())),
            http,
            cfg,
        })
    }

    /// Replaces both signing keys; the old public keys stay in the JWKS for
    /// the configured grace period.
    pub fn rotate_keys(&self, now: SystemTime) -> Result<(), keys::KeyError> {
        self.keys.rotate(
            SigningKey::generate(Algorithm::ES256)?,
            SigningKey::generate(Algorithm::RS256)?,
            now,
        );
        tracing::info!("signing keys rotated");
        Ok(())
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.issuer, path)
    }
}

/// A running identity provider.
pub struct IdpServer {
    pub addr: SocketAddr,
    pub provider: Arc<Provider>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl IdpServer {
    /// Binds `cfg.listen` (port 0 picks a free port) and serves. The issuer
    /// is `server.issuer`, or `http://` + the bound address.
    pub async fn start(cfg: IdpConfig) -> Result<IdpServer, StartError> {
        let listener = TcpListener::bind(cfg.listen).await.map_err(|source| StartError::Bind {
            addr: cfg.listen,
            source,
        })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: cfg.listen,
            source,
        })?;
        let issuer = cfg
            .issuer
            .as_ref()
            .map(|u| u.to_string())
            .unwrap_or_else(|| format!("http://{addr}"));
        let rotation = cfg.signing.rotation_interval;
        let provider = Arc::new(Provider::new(cfg, &issuer)?);
        let app = web::router(provider.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let rotator = rotation.map(|every| {
            let p = provider.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    if let Err(e) = p.rotate_keys(SystemTime::now()) {
                        tracing::error!(error = %e, "key rotation failed; the current keys stay");
                    }
                }
            })
        });
        // A user taken out of the users file loses their sessions and
        // tokens within seconds, even if nobody uses them meanwhile.
        let watcher = provider.dir.users_file().is_some().then(|| {
            let p = provider.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(USERS_FILE_CHECK);
                loop {
                    tick.tick().await;
                    p.sync_directory(SystemTime::now());
                }
            })
        });
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
            for t in [rotator, watcher].into_iter().flatten() {
                t.abort();
            }
            if let Err(e) = served {
                tracing::error!(error = %e, "identity provider stopped with an error");
            }
        });
        tracing::info!(issuer = %provider.issuer, listen = %addr, "identity provider listening");
        Ok(IdpServer {
            addr,
            provider,
            shutdown: Some(tx),
            task,
        })
    }

    pub fn issuer(&self) -> &str {
        &self.provider.issuer
    }

    /// Stops accepting connections and waits for open ones to finish.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }

    /// Waits until the server stops.
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}
