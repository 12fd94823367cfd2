//! The demo module: a legacy-style portal that knows nothing of OpenID
//! Connect. It has its own login form, users and session cookie, and a
//! logout link. Behind unigate it trusts the identity headers only after
//! verifying `X-Unigate-Assertion` against unigate's published keys — the
//! pattern we recommend to module owners — and then opens its own session
//! for that user, as a legacy portal would.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use jsonwebtoken::jwk::JwkSet;
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;
use tokio::net::TcpListener;

use crate::idp::store::random_token;
use crate::oidc::id_token::{ProviderKeys, verify_signature};

pub const COOKIE: &str = "portal_session";

/// Where the module finds unigate's keys, and who it is.
#[derive(Clone, Debug)]
pub struct DemoModuleConfig {
    pub listen: SocketAddr,
    /// Its name as unigate knows it: the assertion's audience.
    pub name: String,
    /// e.g. `http://127.0.0.1:8080/_unigate/jwks.json`.
    pub jwks_url: String,
    /// Local accounts: username → password (module credentials).
    pub local_users: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Who {
    pub username: String,
    pub email: String,
    pub via_kaseyaone: bool,
}

pub struct DemoModule {
    cfg: DemoModuleConfig,
    /// Server-side sessions: cookie value → who.
    sessions: Mutex<HashMap<String, Who>>,
    keys: Mutex<Option<(ProviderKeys, std::time::Instant)>>,
    http: reqwest::Client,
}

type S = State<Arc<DemoModule>>;

impl DemoModule {
    async fn keys(&self, force: bool) -> Option<ProviderKeys> {
        {
            let k = self.keys.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((keys, at)) = k.as_ref()
                && (!force || at.elapsed() < Duration::from_secs(10))
            {
                return Some(keys.clone());
            }
        }
        let set: JwkSet = self.http.get(&self.cfg.jwks_url).send().await.ok()?.json().await.ok()?;
        let keys = ProviderKeys::from_jwks(&set);
        *self.keys.lock().unwrap_or_else(|p| p.into_inner()) = Some((keys.clone(), std::time::Instant::now()));
        Some(keys)
    }

    /// The identity unigate asserts, once its signature, audience and
    /// expiry check out. Plain identity headers alone are never trusted.
    async fn asserted(&self, headers: &HeaderMap) -> Option<serde_json::Value> {
        let jwt = headers.get("x-unigate-assertion")?.to_str().ok()?;
        let mut keys = self.keys(false).await?;
        let mut verified = verify_signature(jwt, &keys, &[jsonwebtoken::Algorithm::ES256]);
        if verified.is_err() {
            keys = self.keys(true).await?;
            verified = verify_signature(jwt, &keys, &[jsonwebtoken::Algorithm::ES256]);
        }
        let (_, claims) = verified.ok()?;
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).ok()?.as_secs();
        let fresh = claims["exp"].as_u64().is_some_and(|e| e > now);
        let ours = claims["aud"].as_str() == Some(self.cfg.name.as_str()) && claims["iss"] == "unigate";
        (fresh && ours).then_some(claims)
    }

    fn local_session(&self, headers: &HeaderMap) -> Option<(String, Who)> {
        let id = crate::session::cookie_value(headers.get_all(header::COOKIE).iter().map(|v| v.as_bytes()), COOKIE)?;
        let who = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()?;
        Some((id.to_string(), who))
    }

    fn open_session(&self, who: Who) -> String {
        let id = random_token();
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), who);
        format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Lax")
    }

    pub fn live_sessions(&self) -> usize {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

fn layout(title: &str, body: Markup) -> Html<String> {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head { meta charset="utf-8"; title { (title) " – Demo Portal" }
                    style { "body{font:15px system-ui,sans-serif;margin:0;background:#f6f3ee}nav{background:#5a3e1b;color:#fff;padding:10px 20px}nav a{color:#fff;margin-left:16px}main{padding:24px;max-width:720px}table{border-collapse:collapse}td{border:1px solid #ccc;padding:4px 8px}" } }
                body {
                    nav { strong { "Demo Portal" } a href="/" { "Home" } a href="/reports" { "Reports" } a href="/logout" { "Log out" } }
                    main { (body) }
                }
            }
        }
        .into_string(),
    )
}

/// Who is asking: a verified unigate assertion (opening the portal's own
/// session for that user if needed), or the portal's own session.
async fn whoami(m: &DemoModule, headers: &HeaderMap) -> (Option<Who>, Option<String>) {
    if let Some(c) = m.asserted(headers).await {
        let who = Who {
            username: c["preferred_username"].as_str().unwrap_or_default().to_string(),
            email: c["email"].as_str().unwrap_or_default().to_string(),
            via_kaseyaone: true,
        };
        return match m.local_session(headers) {
            Some((_, existing)) if existing == who => (Some(who), None),
            _ => {
                let cookie = m.open_session(who.clone());
                (Some(who), Some(cookie))
            }
        };
    }
    (m.local_session(headers).map(|(_, w)| w), None)
}

async fn home(State(m): S, headers: HeaderMap) -> Response {
    let (who, cookie) = whoami(&m, &headers).await;
    let Some(who) = who else {
        return Redirect::to("/login").into_response();
    };
    let page = layout(
        "Home",
        html! {
            h1 { "Welcome, " (who.username) }
            p #who data-user=(who.username) data-via=(if who.via_kaseyaone { "kaseyaone" } else { "local" }) {
                @if who.via_kaseyaone { "Logged in with KaseyaOne as " (who.email) "." }
                @else { "Logged in with module credentials." }
            }
        },
    );
    with_cookie(cookie, page)
}

async fn reports(State(m): S, headers: HeaderMap) -> Response {
    let (who, cookie) = whoami(&m, &headers).await;
    let Some(who) = who else {
        return Redirect::to("/login").into_response();
    };
    let page = layout(
        "Reports",
        html! { h1 { "Reports for " (who.username) } p { "Nothing to report." } },
    );
    with_cookie(cookie, page)
}

/// The page, with the portal's new session cookie when one was opened.
fn with_cookie(cookie: Option<String>, page: Html<String>) -> Response {
    match cookie {
        Some(c) => ([(header::SET_COOKIE, c)], page).into_response(),
        None => page.into_response(),
    }
}

/// What the portal sees of a request: its identity headers and whether the
/// assertion verified. For tests and curious operators.
async fn api_whoami(State(m): S, headers: HeaderMap) -> Response {
    let asserted = m.asserted(&headers).await;
    let identity: HashMap<String, String> = headers
        .iter()
        .filter(|(n, _)| {
            let n = n.as_str();
            n.starts_with("x-kaseyaone")
                || n.starts_with("x-forwarded-")
                || n.starts_with("x-unigate")
                || n.contains("user")
        })
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let local = m.local_session(&headers).map(|(_, w)| w.username);
    axum::Json(serde_json::json!({
        "headers": identity,
        "assertion_verified": asserted.is_some(),
        "assertion": asserted,
        "local_session_user": local,
    }))
    .into_response()
}

async fn login_form() -> Html<String> {
    layout(
        "Log in",
        html! {
            h1 { "Log in to the Demo Portal" }
            form method="post" action="/login" {
                p { label { "Username " input name="username" autocomplete="username"; } }
                p { label { "Password " input type="password" name="password" autocomplete="current-password"; } }
                button type="submit" { "Log in" }
            }
        },
    )
}

#[derive(Deserialize)]
struct LoginForm {
    username: String,
    password: String,
}

async fn login_post(State(m): S, Form(f): Form<LoginForm>) -> Response {
    let ok =
        m.cfg.local_users.iter().any(|(u, p)| {
            u == &f.username && subtle::ConstantTimeEq::ct_eq(p.as_bytes(), f.password.as_bytes()).into()
        });
    if !ok {
        return (
            StatusCode::UNAUTHORIZED,
            layout(
                "Log in",
                html! { p { "Invalid username/password." } a href="/login" { "Try again" } },
            ),
        )
            .into_response();
    }
    let cookie = m.open_session(Who {
        username: f.username,
        email: String::new(),
        via_kaseyaone: false,
    });
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

async fn logout(State(m): S, headers: HeaderMap) -> Response {
    if let Some((id, _)) = m.local_session(&headers) {
        m.sessions.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }
    (
        [(header::SET_COOKIE, format!("{COOKIE}=; Path=/; Max-Age=0"))],
        layout(
            "Logged out",
            html! { h1 { "You are logged out of the Demo Portal" } a href="/login" { "Log in" } },
        ),
    )
        .into_response()
}

pub fn router(m: Arc<DemoModule>) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/reports", get(reports))
        .route("/api/whoami", get(api_whoami))
        .route("/login", get(login_form).post(login_post))
        .route("/logout", get(logout).post(logout))
        // A cheap page for load runs: what the proxy adds is what is measured.
        .route("/ping", get(|| async { "pong" }))
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
        let addr = listener.local_addr()?;
        let module = Arc::new(DemoModule {
            cfg,
            sessions: Mutex::new(HashMap::new()),
            keys: Mutex::new(None),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(3))
                .build()
                .map_err(std::io::Error::other)?,
        });
        let app = router(module.clone());
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
