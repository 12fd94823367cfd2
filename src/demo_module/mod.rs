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
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use jsonwebtoken::jwk::JwkSet;
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;
use tokio::net::TcpListener;

use crate::crypto::random_token;
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

    /// The portal's own session, read as leniently as the frameworks
    /// legacy portals are built on: any value of the cookie (PHP and Rack
    /// read the first, Django the last), its name as PHP mangles it
    /// (`portal.session`, `portal%5fsession`), its value quoted, with
    /// Python's octal escapes, or percent-encoded. unigate's checks must
    /// hold against the most lenient reader.
    fn local_session(&self, headers: &HeaderMap) -> Option<(String, Who)> {
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let pairs = headers
            .get_all(header::COOKIE)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
            .filter_map(|pair| {
                let pair = String::from_utf8_lossy(pair).into_owned();
                let (n, v) = pair.split_once('=')?;
                Some((n.trim().to_string(), v.trim().to_string()))
            });
        for (name, value) in pairs {
            let name = lenient_decode(&name).replace(['.', ' '], "_");
            if !name.eq_ignore_ascii_case(COOKIE) {
                continue;
            }
            let unquoted = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .map(python_unescape);
            // Express: a leading quote drops the first and last characters.
            let express = value
                .strip_prefix('"')
                .and_then(|v| v.char_indices().last().map(|(i, _)| v[..i].to_string()));
            let candidates = [
                Some(value.clone()),
                unquoted.clone(),
                Some(lenient_decode(&value)),
                unquoted.as_deref().map(lenient_decode),
                express.clone(),
                express.as_deref().map(lenient_decode),
            ];
            for id in candidates.into_iter().flatten() {
                if let Some(who) = sessions.get(&id) {
                    return Some((id, who.clone()));
                }
            }
        }
        None
    }

    fn open_session(&self, who: Who) -> String {
        let id = random_token();
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), who);
        format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Lax")
    }

    pub fn accounts(&self) -> Vec<DemoAccount> {
        self.accounts.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn live_sessions(&self) -> usize {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Percent-decoding as PHP's `urldecode` (`+` is a space).
fn lenient_decode(v: &str) -> String {
    let plus = v.replace('+', " ");
    form_urlencoded::parse(format!("x={}", plus.replace('&', "%26").replace('=', "%3D")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or(plus)
}

/// Python's `http.cookies._unquote` escapes: `\ooo` octal, `\c` is `c`.
fn python_unescape(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.len() >= i + 4 && b[i] == b'\\' && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c));
        if octal {
            out.push(
                (b[i + 1] - b'0')
                    .wrapping_mul(64)
                    .wrapping_add((b[i + 2] - b'0') * 8 + (b[i + 3] - b'0')),
            );
            i += 4;
        } else if b[i] == b'\\' && i + 1 < b.len() {
            out.push(b[i + 1]);
            i += 2;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn layout(m: &DemoModule, title: &str, body: Markup) -> Html<String> {
    let brand = m.cfg.title.as_str();
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head { meta charset="utf-8"; title { (title) " – " (brand) }
                    style { "body{font:15px system-ui,sans-serif;margin:0;background:#f6f3ee}nav{background:#5a3e1b;color:#fff;padding:10px 20px}nav a{color:#fff;margin-left:16px}main{padding:24px;max-width:720px}table{border-collapse:collapse}td{border:1px solid #ccc;padding:4px 8px}" } }
                body {
                    nav { strong { (brand) } a href="/" { "Home" } a href="/reports" { "Reports" } a href="/logout" { "Log out" } }
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
        // The module account unigate matched or linked, else the KaseyaOne username.
        let username = c["module_user"].as_str().or(c["preferred_username"].as_str());
        let who = Who {
            username: username.unwrap_or_default().to_string(),
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
        &m,
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
        &m,
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
                || n == "x-request-id"
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

async fn login_form(State(m): S) -> Html<String> {
    layout(
        &m,
        "Log in",
        html! {
            h1 { "Log in to " (m.cfg.title) }
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

/// The login form, read as leniently as legacy portals do: JSON or a
/// urlencoded form; a field given several times is read last-wins (PHP),
/// a username in the query string wins over the body's, and one in a
/// cookie wins over both (PHP's `$_REQUEST` without a php.ini).
fn lenient_login(uri: &axum::http::Uri, headers: &HeaderMap, body: &[u8]) -> Option<LoginForm> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json"));
    let mut f = if json {
        serde_json::from_slice::<LoginForm>(body).ok()?
    } else {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
        let last = |k: &str| pairs.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        LoginForm {
            username: last("username").unwrap_or_default(),
            password: last("password")?,
        }
    };
    if let Some(q) = uri.query()
        && let Some((_, u)) = form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "username")
    {
        f.username = u.into_owned();
    }
    let cookies = headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok());
    if let Some(u) = crate::session::cookie_values(cookies.map(str::as_bytes), "username").next() {
        f.username = u.to_string();
    }
    Some(f)
}

async fn login_post(State(m): S, uri: axum::http::Uri, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let Some(f) = lenient_login(&uri, &headers, &body) else {
        return (StatusCode::BAD_REQUEST, "bad login form").into_response();
    };
    let ok = m.accounts().iter().any(|a| {
        a.active
            && a.username == f.username
            && a.password
                .as_ref()
                .is_some_and(|p| subtle::ConstantTimeEq::ct_eq(p.as_bytes(), f.password.as_bytes()).into())
    });
    if !ok {
        return (
            StatusCode::UNAUTHORIZED,
            layout(
                &m,
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

/// A PHP-style login page at `/php/login`: every visit starts a session
/// (its cookie is set when the browser has none), and a failed login sets
/// the session cookie again and redirects back to the form — so neither
/// "a cookie was set" nor "a redirect came back" tells a good password.
/// A good one opens a new session and redirects to `/`.
async fn php_login_form(State(m): S, headers: HeaderMap) -> Response {
    let page = layout(
        &m,
        "Log in",
        html! {
            h1 { "Log in to " (m.cfg.title) }
            form method="post" action="/php/login" {
                p { label { "Username " input name="username"; } }
                p { label { "Password " input type="password" name="password"; } }
                button type="submit" { "Log in" }
            }
        },
    );
    match php_session(&headers) {
        Some(_) => page.into_response(),
        None => with_cookie(Some(format!("{COOKIE}={}; Path=/; HttpOnly", random_token())), page),
    }
}

/// The session id the browser sent, logged in or not.
fn php_session(headers: &HeaderMap) -> Option<String> {
    crate::session::cookie_value(headers.get_all(header::COOKIE).iter().map(|v| v.as_bytes()), COOKIE)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

async fn php_login_post(State(m): S, uri: axum::http::Uri, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let f = lenient_login(&uri, &headers, &body);
    let ok = f.as_ref().is_some_and(|f| {
        m.accounts().iter().any(|a| {
            a.active
                && a.username == f.username
                && a.password
                    .as_ref()
                    .is_some_and(|p| subtle::ConstantTimeEq::ct_eq(p.as_bytes(), f.password.as_bytes()).into())
        })
    });
    match f.filter(|_| ok) {
        Some(f) => {
            let cookie = m.open_session(Who {
                username: f.username,
                email: String::new(),
                via_kaseyaone: false,
            });
            ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
        }
        None => {
            let anon = php_session(&headers).unwrap_or_else(random_token);
            let cookie = format!("{COOKIE}={anon}; Path=/; HttpOnly");
            ([(header::SET_COOKIE, cookie)], Redirect::to("/php/login?error=1")).into_response()
        }
    }
}

async fn logout(State(m): S, headers: HeaderMap) -> Response {
    if let Some((id, _)) = m.local_session(&headers) {
        m.sessions.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }
    (
        [(header::SET_COOKIE, format!("{COOKIE}=; Path=/; Max-Age=0"))],
        layout(
            &m,
            "Logged out",
            html! { h1 { "You are logged out of " (m.cfg.title) } a href="/login" { "Log in" } },
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

/// A 64 KiB page of a legacy table, built once.
fn big_page() -> &'static str {
    static PAGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PAGE.get_or_init(|| {
        let row = "<tr><td class=\"c\">cell</td><td>some legacy table data</td></tr>\n";
        let mut p = String::from("<!doctype html><html><head><title>Report</title></head><body><table>");
        while p.len() < 64 * 1024 - 40 {
            p.push_str(row);
        }
        p.push_str("</table></body></html>");
        p
    })
}

fn scim_error(status: StatusCode, detail: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/scim+json")],
        serde_json::json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
            "status": status.as_u16().to_string(),
            "detail": detail,
        })
        .to_string(),
    )
        .into_response()
}

fn scim_authorized(m: &DemoModule, headers: &HeaderMap) -> bool {
    let Some(want) = &m.cfg.scim_token else {
        return true;
    };
    let got = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    subtle::ConstantTimeEq::ct_eq(want.as_bytes(), got.as_bytes()).into()
}

fn scim_user(a: &DemoAccount) -> serde_json::Value {
    serde_json::json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "id": a.username,
        "userName": a.username,
        "emails": [{"value": a.email, "primary": true, "type": "work"}],
        "active": a.active,
        "roles": [{"value": a.role, "primary": true}],
    })
}

/// `GET /scim/v2/Users?filter=…`: the filters unigate sends
/// (`userName eq "…"`, `emails.value eq "…"`), case-insensitive as RFC 7643
/// says for both attributes.
async fn scim_list(State(m): S, headers: HeaderMap, uri: axum::http::Uri) -> Response {
    m.scim_requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if !scim_authorized(&m, &headers) {
        return scim_error(StatusCode::UNAUTHORIZED, "bearer token required");
    }
    let filter = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "filter")
        .map(|(_, v)| v.into_owned());
    let accounts = m.accounts();
    let matched: Vec<&DemoAccount> = match filter {
        None => accounts.iter().collect(),
        Some(f) => {
            let Some((attr, value)) = parse_eq_filter(&f) else {
                return scim_error(
                    StatusCode::BAD_REQUEST,
                    "only `attr eq \"value\"` filters are supported",
                );
            };
            accounts
                .iter()
                .filter(|a| match attr.as_str() {
                    "username" => a.username.eq_ignore_ascii_case(&value),
                    "emails.value" | "emails" => a.email.eq_ignore_ascii_case(&value),
                    _ => false,
                })
                .collect()
        }
    };
    (
        [(header::CONTENT_TYPE, "application/scim+json")],
        serde_json::json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
            "totalResults": matched.len(),
            "itemsPerPage": matched.len(),
            "startIndex": 1,
            "Resources": matched.iter().map(|a| scim_user(a)).collect::<Vec<_>>(),
        })
        .to_string(),
    )
        .into_response()
}

/// `attr eq "value"` → (lowercase attr, value), JSON string escapes undone.
fn parse_eq_filter(f: &str) -> Option<(String, String)> {
    let (attr, rest) = f.trim().split_once(' ')?;
    let (op, value) = rest.trim_start().split_once(' ')?;
    if !op.eq_ignore_ascii_case("eq") {
        return None;
    }
    let value: String = serde_json::from_str(value.trim()).ok()?;
    Some((attr.to_ascii_lowercase(), value))
}

/// `POST /scim/v2/Users`: Automatic User Provisioning creates an account.
async fn scim_create(State(m): S, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    m.scim_requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if !scim_authorized(&m, &headers) {
        return scim_error(StatusCode::UNAUTHORIZED, "bearer token required");
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return scim_error(StatusCode::BAD_REQUEST, "not JSON");
    };
    let Some(username) = v["userName"].as_str().filter(|u| !u.is_empty()) else {
        return scim_error(StatusCode::BAD_REQUEST, "userName is required");
    };
    let email = v["emails"][0]["value"].as_str().unwrap_or_default();
    let role = v["roles"][0]["value"].as_str().unwrap_or("technician");
    let mut accounts = m.accounts.lock().unwrap_or_else(|p| p.into_inner());
    if accounts.iter().any(|a| a.username.eq_ignore_ascii_case(username)) {
        return scim_error(StatusCode::CONFLICT, "userName already exists");
    }
    let mut a = DemoAccount::new(username, email, None);
    a.role = role.to_string();
    let out = scim_user(&a);
    accounts.push(a);
    (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/scim+json")],
        out.to_string(),
    )
        .into_response()
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
