//! The demo module: a legacy-style portal that knows nothing of OpenID
//! Connect. It has its own login form, users and session cookie, and a
//! logout link. Behind unigate it trusts the identity headers only after
//! verifying `X-Unigate-Assertion` against unigate's published keys — the
//! pattern we recommend to module owners — and then opens its own session
//! for that user, as a legacy portal would.
//!
//! By concern: who is asking (`identity`: the assertion check and the
//! portal's own leniently read session cookie), its pages (`pages`), its
//! login forms and logout (`login`), and its SCIM directory (`scim`).

mod identity;
mod login;
mod pages;
mod scim;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::Response;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::oidc::id_token::ProviderKeys;
use login::{login_form, login_post, logout, php_login_form, php_login_post};
use pages::{api_whoami, big_page, home, reports};
use scim::{scim_create, scim_list};

pub const COOKIE: &str = "portal_session";

/// Where the module finds unigate's keys, and who it is.
#[derive(Clone, Debug)]
pub struct DemoModuleConfig {
    pub listen: SocketAddr,
    /// Its name as unigate knows it: the assertion's audience.
    pub name: String,
    /// e.g. `http://127.0.0.1:8080/_unigate/jwks.json`.
    pub jwks_url: String,
    /// The name on its pages, e.g. `Demo Portal`.
    pub title: String,
    /// Its user accounts (module credentials, and the SCIM directory).
    pub accounts: Vec<DemoAccount>,
    /// Bearer token its SCIM API wants; none: open.
    pub scim_token: Option<String>,
}

/// A user account of the demo module.
#[derive(Clone, Debug)]
pub struct DemoAccount {
    pub username: String,
    pub email: String,
    /// Module credentials; none: the account can only be used through KaseyaOne.
    pub password: Option<String>,
    /// False until the invitation is accepted.
    pub active: bool,
    pub role: String,
}

impl DemoAccount {
    pub fn new(username: &str, email: &str, password: Option<&str>) -> Self {
        DemoAccount {
            username: username.into(),
            email: email.into(),
            password: password.map(str::to_string),
            active: true,
            role: "technician".into(),
        }
    }

    pub fn inactive(mut self) -> Self {
        self.active = false;
        self
    }
}

/// The accounts each module of the demo has (by its label in
/// `config/unigate.demo.toml`), chosen to show each of the seed's cases.
pub fn demo_accounts(label: &str) -> Vec<DemoAccount> {
    let local = DemoAccount::new("localuser", "localuser@module.example", Some("local-demo-pass"));
    match label {
        // alice matches; bob has none (Automatic User Provisioning creates it).
        "portal" => vec![
            local,
            DemoAccount::new("alice", "alice@acme-msp.example", Some("alice-module-pass")),
            DemoAccount::new("admin", "admin@module.example", Some("admin-demo-pass")),
        ],
        // alice matches; carol's email differs (a mismatch page).
        "bms/east" => vec![
            local,
            DemoAccount::new("alice", "alice@acme-msp.example", Some("alice-module-pass")),
            DemoAccount::new("carol", "carol@old-address.example", Some("carol-module-pass")),
        ],
        // Linking: module usernames differ from KaseyaOne's.
        "bms/west" => vec![
            local,
            DemoAccount::new("a.admin", "alice@acme-msp.example", Some("west-demo-pass")),
            DemoAccount::new("c.globex", "carol@globex.example", Some("west-demo-pass")),
        ],
        _ => vec![local],
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Who {
    pub username: String,
    pub email: String,
    pub via_kaseyaone: bool,
}

pub struct DemoModule {
    cfg: DemoModuleConfig,
    /// The account directory (SCIM can add to it).
    accounts: Mutex<Vec<DemoAccount>>,
    /// SCIM `/Users` requests served (tests check unigate's cache with it).
    pub scim_requests: std::sync::atomic::AtomicUsize,
    /// Server-side sessions: cookie value → who.
    sessions: Mutex<HashMap<String, Who>>,
    keys: Mutex<Option<(ProviderKeys, std::time::Instant)>>,
    http: reqwest::Client,
}

type S = State<Arc<DemoModule>>;

impl DemoModule {
    pub fn accounts(&self) -> Vec<DemoAccount> {
        self.accounts.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn live_sessions(&self) -> usize {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

pub fn router(m: Arc<DemoModule>) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/reports", get(reports))
        .route("/admin/", get(pages::admin))
        .route("/billing/", get(pages::billing))
        .route("/api/whoami", get(api_whoami))
        .route("/login", get(login_form).post(login_post))
        .route("/php/login", get(php_login_form).post(php_login_post))
        .route("/logout", get(logout).post(logout))
        // A cheap page for load runs: what the proxy adds is what is measured.
        .route("/ping", get(|| async { "pong" }))
        // The same, streamed (chunked, no Content-Length): what unigate
        // watches as a long-lived response.
        .route(
            "/ping/chunked",
            get(|| async {
                let chunk = Ok::<_, std::convert::Infallible>(bytes::Bytes::from_static(b"pong"));
                axum::body::Body::from_stream(futures_util::stream::iter([chunk]))
            }),
        )
        .route("/scim/v2/Users", get(scim_list).post(scim_create))
        // A 64 KiB legacy page, as HTML and (the same bytes) as text: the
        // load run's injection comparison.
        .route(
            "/page.html",
            get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], big_page()) }),
        )
        .route(
            "/page.txt",
            get(|| async { ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], big_page()) }),
        )
        .route(
            "/static/app.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css")], "body{}") }),
        )
        .with_state(m)
}

/// A running demo module.
pub struct DemoModuleServer {
    pub addr: SocketAddr,
    pub module: Arc<DemoModule>,
    task: tokio::task::JoinHandle<()>,
}

impl DemoModuleServer {
    pub async fn start(cfg: DemoModuleConfig) -> std::io::Result<DemoModuleServer> {
        let listener = TcpListener::bind(cfg.listen).await?;
        let module = Arc::new(DemoModule {
            accounts: Mutex::new(cfg.accounts.clone()),
            scim_requests: std::sync::atomic::AtomicUsize::new(0),
            cfg,
            sessions: Mutex::new(HashMap::new()),
            keys: Mutex::new(None),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(3))
                .build()
                .map_err(std::io::Error::other)?,
        });
        Self::serve(listener, module)
    }

    /// Another server of the same module on `listen`: its sessions and
    /// accounts are shared, as replicas of a real module share a database.
    pub async fn replica(&self, listen: SocketAddr) -> std::io::Result<DemoModuleServer> {
        Self::serve(TcpListener::bind(listen).await?, self.module.clone())
    }

    fn serve(listener: TcpListener, module: Arc<DemoModule>) -> std::io::Result<DemoModuleServer> {
        let addr = listener.local_addr()?;
        let served_by = axum::http::HeaderValue::from_str(&addr.to_string()).map_err(std::io::Error::other)?;
        // Which server answered: load-balancing tests read it.
        let app = router(module.clone()).layer(axum::middleware::map_response(move |mut r: Response| {
            let v = served_by.clone();
            async move {
                r.headers_mut().insert("x-served-by", v);
                r
            }
        }));
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "demo module stopped");
            }
        });
        Ok(DemoModuleServer { addr, module, task })
    }

    pub fn stop(self) {
        self.task.abort();
    }
}
