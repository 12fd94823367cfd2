//! The provider's HTTP surface (axum): each handler reads the request, calls
//! the provider's logic and writes a page, a redirect or JSON. Every page is
//! `no-store` and may not be framed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum_extra::extract::CookieJar;
use axum_extra::extract::cookie::{Cookie, SameSite};
use maud::Markup;
use serde::Deserialize;

use super::Provider;
use super::directory::{UserId, norm, totp_match};
use super::oauth::{
    AuthRequest, AuthorizeError, ClientAuth, TokenError, check_authorize, params_map, unix, with_params,
};
use super::pages::{self, Recover, Tile};
use super::store::{IdpSession, LoginFlow, Stage, client_key, random_token, token_key};

const SESSION_COOKIE: &str = "k1_session";
const FLOW_COOKIE: &str = "k1_flow";
/// Longest username, company name or email accepted in a form.
const MAX_FIELD: usize = 256;
const GENERIC_FAILURE: &str =
    "Invalid username/password. Check your username, company name, password and verification code, and try again.";

type P = State<Arc<Provider>>;

pub fn router(p: Arc<Provider>) -> Router {
    let limit = p.cfg.max_body_bytes;
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/authorize", get(authorize).post(authorize))
        .route("/login", get(login_get).post(login_post))
        .route("/token", post(token))
        .route("/userinfo", get(userinfo).post(userinfo))
        .route("/introspect", post(introspect))
        .route("/logout", get(end_session).post(end_session))
        .route("/logout/confirm", post(logout_confirm))
        .route("/", get(home))
        .route(
            "/recover",
            get(|| async { page(StatusCode::OK, pages::recover_menu()) }),
        )
        .route("/recover/reset", get(reset_get).post(reset_post))
        .route("/recover/{kind}", get(recover_get).post(recover_post))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async {
            page(
                StatusCode::NOT_FOUND,
                pages::error_page(
                    "Page not found",
                    "There is no page at this address.",
                    Some(("/", "Go to KaseyaOne")),
                ),
            )
        })
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(p)
}

async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    h.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-src http: https:; frame-ancestors 'none'; base-uri 'none'"),
    );
    r
}

fn page(status: StatusCode, m: Markup) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        m.into_string(),
    )
        .into_response()
}

fn found(url: &str) -> Response {
    match HeaderValue::from_str(url) {
        Ok(v) => (StatusCode::FOUND, [(header::LOCATION, v)]).into_response(),
        Err(_) => bad_request("The address to send you to is not valid."),
    }
}

fn bad_request(text: &str) -> Response {
    page(
        StatusCode::BAD_REQUEST,
        pages::error_page(
            "Something is wrong with this request",
            text,
            Some(("/", "Go to KaseyaOne")),
        ),
    )
}

fn pairs(bytes: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(bytes).into_owned().collect()
}

/// Why a page request was refused; becomes a page in `into_response`.
enum PageError {
    BadRequest(String),
    TooLarge,
    /// Too many login starts from one address; seconds to wait.
    TooManyStarts(u64),
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            PageError::BadRequest(text) => bad_request(&text),
            PageError::TooManyStarts(secs) => page(
                StatusCode::TOO_MANY_REQUESTS,
                pages::error_page(
                    "Too many logins from your network",
                    &format!("Logins from your network are paused for a moment; try again in {secs} seconds."),
                    None,
                ),
            ),
            PageError::TooLarge => page(
                StatusCode::PAYLOAD_TOO_LARGE,
                pages::error_page(
                    "Too much data",
                    "The form sent more data than this page accepts.",
                    Some(("/", "Go to KaseyaOne")),
                ),
            ),
        }
    }
}

/// Form fields for a page handler, or what was wrong with them.
fn page_form(body: Result<Bytes, BytesRejection>) -> Result<HashMap<String, String>, PageError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            PageError::TooLarge
        } else {
            PageError::BadRequest("The form could not be read.".into())
        }
    })?;
    params_map(pairs(&body)).map_err(PageError::BadRequest)
}

fn field<'a>(f: &'a HashMap<String, String>, name: &str) -> &'a str {
    f.get(name).map(String::as_str).unwrap_or("")
}

fn cookie(p: &Provider, name: &'static str, value: String, max_age: Duration) -> Cookie<'static> {
    Cookie::build((name, value))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(p.secure_cookies)
        .max_age(time_duration(max_age))
        .build()
}

fn time_duration(d: Duration) -> cookie::time::Duration {
    cookie::time::Duration::seconds(d.as_secs() as i64)
}

/// A `Set-Cookie` that deletes the cookie (empty, `Max-Age=0`, expired).
fn removal(name: &'static str) -> Cookie<'static> {
    let mut c = Cookie::build((name, "")).path("/").build();
    c.make_removal();
    c
}

fn current_session(p: &Provider, jar: &CookieJar) -> Option<(String, Arc<IdpSession>)> {
    let key = token_key(jar.get(SESSION_COOKIE)?.value());
    let s = p.stores.sessions.get(&key)?;
    Some((key, s))
}

// ------------------------------------------------------------ discovery, jwks

async fn discovery(State(p): P) -> Response {
    let doc = serde_json::json!({
        "issuer": p.issuer,
        "authorization_endpoint": p.url("/authorize"),
        "token_endpoint": p.url("/token"),
        "userinfo_endpoint": p.url("/userinfo"),
        "introspection_endpoint": p.url("/introspect"),
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "jwks_uri": p.url("/.well-known/jwks.json"),
        "end_session_endpoint": p.url("/logout"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256", "RS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": ["openid", "profile", "email", "groups", "offline_access"],
        "claims_supported": ["iss", "sub", "aud", "azp", "exp", "iat", "auth_time", "nonce", "sid", "email", "email_verified", "preferred_username", "name", "company", "groups", "amr", "at_hash"],
        "prompt_values_supported": ["none", "login"],
        "authorization_response_iss_parameter_supported": true,
        "backchannel_logout_supported": true,
        "backchannel_logout_session_supported": true,
        "frontchannel_logout_supported": true,
        "frontchannel_logout_session_supported": true,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
    });
    ([(header::CACHE_CONTROL, "public, max-age=300")], axum::Json(doc)).into_response()
}

async fn jwks(State(p): P) -> Response {
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        axum::Json(p.keys.jwks(SystemTime::now())),
    )
        .into_response()
}

// ------------------------------------------------------------------ authorize

/// OIDC Core §3.1.2.1: the authorization endpoint takes GET and form POST.
async fn authorize(
    State(p): P,
    jar: CookieJar,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: axum::http::Method,
    RawQuery(q): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let raw = if method == axum::http::Method::POST {
        match body {
            Ok(b) => pairs(&b),
            Err(_) => return PageError::TooLarge.into_response(),
        }
    } else {
        pairs(q.unwrap_or_default().as_bytes())
    };
    let request = match check_authorize(&p.dir, raw) {
        Ok(r) => Arc::new(r),
        Err(AuthorizeError::Page(text)) => {
            tracing::info!(reason = %text, "authorization request refused on a page");
            return page(
                StatusCode::BAD_REQUEST,
                pages::error_page("This sign-in link cannot be used", &text, None),
            );
        }
        Err(AuthorizeError::Redirect {
            redirect_uri,
            error,
            description,
            state,
        }) => {
            return error_redirect(&p, &redirect_uri, error, &description, state.as_deref());
        }
    };
    let now = unix(SystemTime::now());
    let session = current_session(&p, &jar);
    let fresh_enough = |s: &IdpSession| match request.max_age {
        Some(max) => now.saturating_sub(s.auth_time.load(Ordering::Acquire)) <= max,
        None => true,
    };
    match session {
        Some((_, s)) if !request.prompt_login && fresh_enough(&s) => {
            let code = p.issue_code(request.clone(), &s);
            tracing::info!(client.id = %request.client_id, user.sub = %p.dir.sub(s.user), "silent authorization from IdP session");
            success_redirect(&p, &request, &code)
        }
        _ if request.prompt_none => error_redirect(
            &p,
            &request.redirect_uri,
            "login_required",
            "the user must log in",
            request.state.as_deref(),
        ),
        _ => {
            let hint = request.login_hint.clone().unwrap_or_default();
            match new_flow(
                &p,
                jar,
                peer.ip(),
                Some(request),
                hint.chars().take(MAX_FIELD).collect(),
            ) {
                Ok((jar, flow)) => (jar, found(&format!("/login?flow={flow}"))).into_response(),
                Err(r) => r.into_response(),
            }
        }
    }
}

fn success_redirect(p: &Provider, r: &AuthRequest, code: &str) -> Response {
    let mut params = vec![("code", code)];
    if let Some(s) = &r.state {
        params.push(("state", s));
    }
    params.push(("iss", &p.issuer));
    found(&with_params(&r.redirect_uri, &params))
}

fn error_redirect(p: &Provider, redirect_uri: &str, error: &str, description: &str, state: Option<&str>) -> Response {
    let mut params = vec![("error", error), ("error_description", description)];
    if let Some(s) = state {
        params.push(("state", s));
    }
    params.push(("iss", &p.issuer));
    found(&with_params(redirect_uri, &params))
}

/// Starts a login flow, unless this address starts too many.
fn new_flow(
    p: &Provider,
    jar: CookieJar,
    ip: std::net::IpAddr,
    request: Option<Arc<AuthRequest>>,
    username: String,
) -> Result<(CookieJar, String), PageError> {
    if let Some(wait) = p.throttle.starts.hit(client_key(ip), Instant::now()) {
        return Err(PageError::TooManyStarts(wait.as_secs().max(1)));
    }
    let (jar, binding) = match jar.get(FLOW_COOKIE).map(|c| c.value().to_string()) {
        Some(v) if v.len() == 43 => (jar, v),
        _ => {
            let v = random_token();
            (jar.add(cookie(p, FLOW_COOKIE, v.clone(), Duration::from_secs(3600))), v)
        }
    };
    let id = random_token();
    p.stores.flows.insert(
        id.clone(),
        LoginFlow {
            binding: token_key(&binding),
            request,
            username,
            company: String::new(),
            password_ok: false,
            stage: Stage::Identify,
        },
    );
    Ok((jar, id))
}

/// The flow named in a request, if it belongs to this browser.
fn bound_flow(p: &Provider, jar: &CookieJar, id: &str) -> Option<LoginFlow> {
    let binding = token_key(jar.get(FLOW_COOKIE)?.value());
    p.stores.flows.get(id).filter(|f| f.binding == binding)
}

fn flow_expired() -> Response {
    page(
        StatusCode::BAD_REQUEST,
        pages::error_page(
            "Your login page has expired",
            "This login took too long or was opened in another browser. Go back to the application and start again, or log in to KaseyaOne directly.",
            Some(("/login", "Log in to KaseyaOne")),
        ),
    )
}

// ---------------------------------------------------------------------- login

#[derive(Deserialize)]
struct FlowQuery {
    flow: Option<String>,
}

async fn login_get(
    State(p): P,
    jar: CookieJar,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let q = FlowQuery {
        flow: q.get("flow").cloned(),
    };
    let Some(id) = q.flow else {
        if current_session(&p, &jar).is_some() {
            return found("/");
        }
        return match new_flow(&p, jar, peer.ip(), None, String::new()) {
            Ok((jar, id)) => (jar, found(&format!("/login?flow={id}"))).into_response(),
            Err(r) => r.into_response(),
        };
    };
    let Some(flow) = bound_flow(&p, &jar, &id) else {
        return flow_expired();
    };
    render_stage(&id, &flow, None)
}

fn render_stage(id: &str, flow: &LoginFlow, error: Option<&str>) -> Response {
    let m = match flow.stage {
        Stage::Identify => pages::login_identify(id, &flow.username, &flow.company, error, None),
        Stage::Password => pages::login_password(id, &flow.username, &flow.company, error),
        Stage::Code => pages::login_code(id, error),
    };
    page(
        if error.is_some() {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::OK
        },
        m,
    )
}

fn throttled_message(wait: Duration) -> String {
    let minutes = wait.as_secs().div_ceil(60).max(1);
    format!(
        "Too many failed login attempts. For your security, logging in is paused; try again in {minutes} minute{}.",
        if minutes == 1 { "" } else { "s" }
    )
}

async fn login_post(
    State(p): P,
    jar: CookieJar,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let f = match page_form(body) {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    let id = field(&f, "flow").to_string();
    let Some(mut flow) = bound_flow(&p, &jar, &id) else {
        return flow_expired();
    };
    let user_key = format!("{}/{}", norm(&flow.company), norm(&flow.username));
    let ip = peer.ip();
    let next = format!("/login?flow={id}");
    match (field(&f, "step"), flow.stage) {
        ("identify", Stage::Identify) => {
            let (username, company) = (field(&f, "username").trim(), field(&f, "company").trim());
            if username.is_empty() || company.is_empty() || username.len() > MAX_FIELD || company.len() > MAX_FIELD {
                flow.username = username.chars().take(MAX_FIELD).collect();
                flow.company = company.chars().take(MAX_FIELD).collect();
                return render_stage(&id, &flow, Some("Enter your username and company name."));
            }
            flow.username = username.to_string();
            flow.company = company.to_string();
            flow.stage = Stage::Password;
            p.stores.flows.insert(id, flow);
            found(&next)
        }
        ("password", Stage::Password) => {
            let now = Instant::now();
            let wait = p
                .throttle
                .blocked_for(&user_key, ip, now)
                .or_else(|| p.throttle.password_checks.hit(client_key(ip), now));
            if let Some(wait) = wait {
                return render_stage(&id, &flow, Some(&throttled_message(wait)));
            }
            let password = field(&f, "password");
            let user = p.dir.find(&flow.company, &flow.username);
            // Argon2 is CPU- and memory-bound: off the async workers, and no
            // more at once than there are cores.
            let Ok(_permit) = p.hash_permits.acquire().await else {
                return render_stage(&id, &flow, Some("The service is shutting down; try again shortly."));
            };
            let p2 = p.clone();
            let password = password.to_string();
            let ok = tokio::task::spawn_blocking(move || p2.dir.check_password(user, &password))
                .await
                .unwrap_or(false);
            flow.password_ok = ok && password_len_ok(field(&f, "password"));
            flow.stage = Stage::Code;
            p.stores.flows.insert(id, flow);
            found(&next)
        }
        ("code", Stage::Code) => {
            let now = Instant::now();
            if let Some(wait) = p.throttle.blocked_for(&user_key, ip, now) {
                flow.stage = Stage::Identify;
                flow.password_ok = false;
                p.stores.flows.insert(id.clone(), flow.clone());
                return render_stage(&id, &flow, Some(&throttled_message(wait)));
            }
            let user = p.dir.find(&flow.company, &flow.username);
            // The same HMAC work for an unknown user as for a known one.
            let secret = user.map_or(p.dir.dummy_totp_secret(), |u| &p.dir.user(u).totp_secret[..]);
            let step = totp_match(secret, field(&f, "code"), unix(SystemTime::now()));
            let fresh = match (user, step) {
                // Only a right password uses the code up: a typo in the
                // password must not burn the user's current code.
                (Some(u), Some(step)) if p.cfg.login.totp_replay_protection && flow.password_ok => {
                    let mut fresh = false;
                    p.stores.totp_steps.entry(u).and_upsert_with(|last| {
                        let last = last.map(|e| *e.value());
                        fresh = last.is_none_or(|l| step > l);
                        if fresh { step } else { last.unwrap_or(step) }
                    });
                    fresh
                }
                (Some(_), Some(_)) => true,
                _ => false,
            };
            match user {
                Some(u) if flow.password_ok && fresh => {
                    p.throttle.record_success(&user_key);
                    p.stores.flows.invalidate(&id);
                    complete_login(&p, jar, u, flow.request.clone())
                }
                _ => {
                    p.throttle.record_failure(&user_key, ip, now);
                    tracing::info!(client.ip = %ip, "login failed");
                    flow.stage = Stage::Identify;
                    flow.password_ok = false;
                    p.stores.flows.insert(id.clone(), flow.clone());
                    let msg = match p.throttle.blocked_for(&user_key, ip, now) {
                        Some(wait) => throttled_message(wait),
                        None => GENERIC_FAILURE.to_string(),
                    };
                    render_stage(&id, &flow, Some(&msg))
                }
            }
        }
        // A form from an earlier step (back button, double submit): show where the flow is.
        _ => found(&next),
    }
}

fn password_len_ok(pw: &str) -> bool {
    !pw.is_empty() && pw.len() <= 1024
}

/// Starts (or refreshes) the IdP session and finishes the authorization
/// request, if there was one.
fn complete_login(p: &Arc<Provider>, jar: CookieJar, user: UserId, request: Option<Arc<AuthRequest>>) -> Response {
    let now = SystemTime::now();
    let existing = current_session(p, &jar);
    let (jar, session) = match existing {
        Some((_, s)) if s.user == user => {
            s.auth_time.store(unix(now), Ordering::Release);
            (jar, s)
        }
        other => {
            if let Some((key, _)) = other {
                // Another user was logged in in this browser: end that session properly.
                p.logout(&key, now);
            }
            let cookie_value = random_token();
            let key = token_key(&cookie_value);
            let s = Arc::new(IdpSession::new(random_token(), user, unix(now)));
            p.stores.sid_index.insert(s.sid.clone(), key.clone());
            p.stores.sessions.insert(key, s.clone());
            (
                jar.add(cookie(p, SESSION_COOKIE, cookie_value, p.cfg.tokens.session_ttl)),
                s,
            )
        }
    };
    tracing::info!(user.sub = %p.dir.sub(user), "login succeeded");
    match request {
        Some(r) => {
            let code = p.issue_code(r.clone(), &session);
            (jar, success_redirect(p, &r, &code)).into_response()
        }
        None => (jar, found("/")).into_response(),
    }
}

// ---------------------------------------------------------------------- token

fn token_error(e: TokenError) -> Response {
    let mut r = (
        StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
        [(header::CACHE_CONTROL, "no-store"), (header::PRAGMA, "no-cache")],
        axum::Json(serde_json::json!({ "error": e.error, "error_description": e.description })),
    )
        .into_response();
    if e.basic_challenge {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"unigate-idp\""),
        );
    }
    r
}

/// The form and the client's credentials (Basic or in the form) of a
/// request to the token or introspection endpoint.
fn client_form(headers: &HeaderMap, body: &[u8]) -> Result<(ClientAuth, HashMap<String, String>), TokenError> {
    let form = params_map(pairs(body)).map_err(|e| TokenError {
        status: 400,
        error: "invalid_request",
        description: e,
        basic_challenge: false,
    })?;
    let auth = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("invalid"));
    Ok((ClientAuth::from_request(auth, &form)?, form))
}

async fn token(State(p): P, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    let invalid = |d: &str| TokenError {
        status: 400,
        error: "invalid_request",
        description: d.to_string(),
        basic_challenge: false,
    };
    let body = match body {
        Ok(b) => b,
        Err(e) => return token_error(invalid(&format!("the request body could not be read ({})", e.status()))),
    };
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"))
        });
    if !form_type {
        return token_error(invalid("the body must be application/x-www-form-urlencoded"));
    }
    let result = client_form(&headers, &body).and_then(|(auth, form)| p.token(&auth, &form, SystemTime::now()));
    match result {
        Ok(t) => (
            [(header::CACHE_CONTROL, "no-store"), (header::PRAGMA, "no-cache")],
            axum::Json(t),
        )
            .into_response(),
        Err(e) => {
            tracing::info!(error = e.error, "token request refused");
            token_error(e)
        }
    }
}

/// Token introspection (RFC 7662), for registered clients (Basic or
/// form credentials, as at the token endpoint).
async fn introspect(State(p): P, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    let invalid = |d: &str| TokenError {
        status: 400,
        error: "invalid_request",
        description: d.to_string(),
        basic_challenge: false,
    };
    let Ok(body) = body else {
        return token_error(invalid("the request body could not be read"));
    };
    match client_form(&headers, &body).and_then(|(auth, form)| p.introspect(&auth, &form, SystemTime::now())) {
        Ok(v) => ([(header::CACHE_CONTROL, "no-store")], axum::Json(v)).into_response(),
        Err(e) => token_error(e),
    }
}

async fn userinfo(State(p): P, headers: HeaderMap) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_string());
    let challenge = |v: &'static str| {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, v)],
            axum::Json(serde_json::json!({"error": "invalid_token"})),
        )
            .into_response()
    };
    let Some(token) = token else {
        return challenge("Bearer realm=\"unigate-idp\"");
    };
    match p.userinfo(&token, SystemTime::now()) {
        Some(claims) => axum::Json(claims).into_response(),
        None => challenge("Bearer realm=\"unigate-idp\", error=\"invalid_token\""),
    }
}

// --------------------------------------------------------------------- logout

/// Where to go after logout, once the request is known to be safe.
struct LogoutTarget {
    redirect: Option<String>,
    client_id: Option<String>,
    post_logout_redirect_uri: Option<String>,
    state: Option<String>,
}

/// Checks `post_logout_redirect_uri` against the client's registration
/// (RP-Initiated Logout 1.0 §3): an unregistered one is never followed.
fn logout_target(
    p: &Provider,
    client_id: Option<String>,
    uri: Option<String>,
    state: Option<String>,
) -> Result<LogoutTarget, PageError> {
    let redirect = match &uri {
        None => None,
        Some(u) => {
            let client = client_id.as_deref().and_then(|c| p.dir.client(c)).ok_or_else(|| {
                PageError::BadRequest("The logout request names a post-logout address but no known application, so you are not sent there.".into())
            })?;
            if !client.post_logout_redirect_uris.iter().any(|r| r == u) {
                return Err(PageError::BadRequest("The post-logout address in this request is not registered for the application, so you are not sent there.".into()));
            }
            let mut params = Vec::new();
            if let Some(s) = &state {
                params.push(("state", s.as_str()));
            }
            Some(if params.is_empty() {
                u.clone()
            } else {
                with_params(u, &params)
            })
        }
    };
    Ok(LogoutTarget {
        redirect,
        client_id,
        post_logout_redirect_uri: uri,
        state,
    })
}

async fn end_session(
    State(p): P,
    jar: CookieJar,
    RawQuery(q): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let mut raw = pairs(q.unwrap_or_default().as_bytes());
    if let Ok(b) = &body {
        raw.extend(pairs(b));
    }
    let params = match params_map(raw) {
        Ok(m) => m,
        Err(e) => return bad_request(&e),
    };
    let now = SystemTime::now();
    let hint = match params.get("id_token_hint") {
        None => None,
        Some(t) => match p.verify_own::<serde_json::Value>(t, "JWT", true, now) {
            Some(c) => Some(c),
            None => return bad_request("The logout request carries an ID token this identity provider did not issue."),
        },
    };
    let hint_aud = hint.as_ref().and_then(|c| c["aud"].as_str().map(str::to_string));
    let client_id = match (params.get("client_id").cloned(), hint_aud) {
        (Some(a), Some(b)) if a != b => {
            return bad_request("The logout request's client_id does not match its ID token.");
        }
        (a, b) => a.or(b),
    };
    let target = match logout_target(
        &p,
        client_id,
        params.get("post_logout_redirect_uri").cloned(),
        params.get("state").cloned(),
    ) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    let cookie_session = current_session(&p, &jar);
    let hint_sid = hint.as_ref().and_then(|c| c["sid"].as_str().map(str::to_string));
    // Only this browser's own session is ever ended here.
    let to_end = match (&hint_sid, &cookie_session) {
        // A valid hint for this browser's session: log out without asking.
        (Some(sid), Some((key, s))) if &s.sid == sid => Some(key.clone()),
        // No session here (already logged out, or cookies not sent): nothing to end.
        (_, None) => None,
        // No hint, or a hint for another session: no proof the request came
        // from an application this user used, so ask.
        (_, Some((key, _))) => {
            let csrf = random_token();
            p.stores.logout_csrf.insert(csrf.clone(), key.clone());
            return page(
                StatusCode::OK,
                pages::logout_confirm(
                    &csrf,
                    target.post_logout_redirect_uri.as_deref(),
                    target.state.as_deref(),
                    target.client_id.as_deref(),
                ),
            );
        }
    };
    finish_logout(&p, jar, to_end, target, now)
}

fn finish_logout(
    p: &Arc<Provider>,
    jar: CookieJar,
    to_end: Option<String>,
    target: LogoutTarget,
    now: SystemTime,
) -> Response {
    let ended = to_end.and_then(|k| p.logout(&k, now));
    // The cookie is deleted only when it named the session just ended: a
    // cross-site request without the cookie changes nothing.
    let jar = if ended.is_some() {
        jar.add(removal(SESSION_COOKIE))
    } else {
        jar
    };
    let frontchannel = ended.map(|o| o.frontchannel).unwrap_or_default();
    if frontchannel.is_empty()
        && let Some(r) = &target.redirect
    {
        return (jar, found(r)).into_response();
    }
    let mut resp = page(
        StatusCode::OK,
        pages::logged_out(&frontchannel, target.redirect.as_deref()),
    );
    if let Some(r) = &target.redirect
        && let Ok(v) = HeaderValue::from_str(&format!("2;url={r}"))
    {
        resp.headers_mut().insert("refresh", v);
    }
    (jar, resp).into_response()
}

async fn logout_confirm(State(p): P, jar: CookieJar, body: Result<Bytes, BytesRejection>) -> Response {
    let f = match page_form(body) {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    let opt = |k: &str| f.get(k).filter(|v| !v.is_empty()).cloned();
    let target = match logout_target(&p, opt("client_id"), opt("post_logout_redirect_uri"), opt("state")) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    let session_key = current_session(&p, &jar).map(|(k, _)| k);
    let bound = p.stores.logout_csrf.remove(field(&f, "csrf"));
    match (bound, session_key) {
        (Some(expected), Some(key)) if expected == key => finish_logout(&p, jar, Some(key), target, SystemTime::now()),
        (_, None) => finish_logout(&p, jar, None, target, SystemTime::now()),
        _ => bad_request("This logout form has expired. Reload the page and try again."),
    }
}

// ----------------------------------------------------------------------- home

async fn home(State(p): P, jar: CookieJar, Query(q): Query<HashMap<String, String>>) -> Response {
    let Some((key, session)) = current_session(&p, &jar) else {
        return found("/login");
    };
    let user = p.dir.user(session.user);
    let modules = p.dir.modules_for(session.user);
    let tiles: Vec<Tile<'_>> = modules
        .iter()
        .map(|m| {
            if !m.unified_login {
                Tile::Lock(m)
            } else if m.instances.len() > 1 {
                Tile::File(m)
            } else {
                Tile::Arrow(m)
            }
        })
        .collect();
    let choose = q
        .get("choose")
        .and_then(|name| {
            modules
                .iter()
                .find(|m| &m.name == name && m.unified_login && m.instances.len() > 1)
        })
        .copied();
    let csrf = random_token();
    p.stores.logout_csrf.insert(csrf.clone(), key);
    page(StatusCode::OK, pages::home(&user.display_name, &csrf, &tiles, choose))
}

// ------------------------------------------------------------------- recovery

fn recover_kind(kind: &str) -> Option<Recover> {
    match kind {
        "password" => Some(Recover::Password),
        "username" => Some(Recover::Username),
        "company" => Some(Recover::Company),
        _ => None,
    }
}

async fn recover_get(axum::extract::Path(kind): axum::extract::Path<String>) -> Response {
    match recover_kind(&kind) {
        Some(k) => page(StatusCode::OK, pages::recover_form(k, None)),
        None => page(
            StatusCode::NOT_FOUND,
            pages::error_page(
                "Page not found",
                "There is no page at this address.",
                Some(("/recover", "Can't Log In?")),
            ),
        ),
    }
}

async fn recover_post(
    State(p): P,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    axum::extract::Path(kind): axum::extract::Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some(kind) = recover_kind(&kind) else {
        return found("/recover");
    };
    let f = match page_form(body) {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    let too_long = f.values().any(|v| v.len() > MAX_FIELD);
    let required: &[&str] = match kind {
        Recover::Password => &["username", "company"],
        Recover::Username => &["email", "company"],
        Recover::Company => &["email"],
    };
    if too_long || required.iter().any(|k| field(&f, k).trim().is_empty()) {
        return page(
            StatusCode::BAD_REQUEST,
            pages::recover_form(kind, Some("Fill in every field.")),
        );
    }
    if let Some(wait) = p.throttle.recovery_request(peer.ip(), Instant::now()) {
        let minutes = wait.as_secs().div_ceil(60).max(1);
        let msg = format!("Too many requests from your network. Try again in {minutes} minutes.");
        return page(StatusCode::TOO_MANY_REQUESTS, pages::recover_form(kind, Some(&msg)));
    }
    // Look up and send in the background: the answer, and its timing, are the
    // same whether or not an account matched.
    let p2 = p.clone();
    tokio::spawn(async move { send_recovery(&p2, kind, &f).await });
    page(StatusCode::OK, pages::recover_sent())
}

async fn send_recovery(p: &Provider, kind: Recover, f: &HashMap<String, String>) {
    let email = norm(field(f, "email"));
    let company = norm(field(f, "company"));
    let result = match kind {
        Recover::Password => {
            let Some(id) = p.dir.find(field(f, "company"), field(f, "username")) else {
                return;
            };
            let user = p.dir.user(id);
            let token = random_token();
            p.stores.reset_links.insert(token_key(&token), id);
            let link = format!("{}?token={token}", p.url("/recover/reset"));
            let minutes = p.cfg.login.reset_link_ttl.as_secs() / 60;
            let body = format!(
                "Hello {},\n\nSomeone asked to reset the KaseyaOne password of user {} at {}.\n\nTo choose a new password, open this link within {minutes} minutes. It works once:\n\n{link}\n\nIf you did not ask for this, ignore this email; your password stays as it is.\n",
                user.display_name, user.username, user.company
            );
            p.outbox.send(&user.email, "Reset your KaseyaOne password", body).await
        }
        Recover::Username => {
            let matches: Vec<_> = p
                .dir
                .users()
                .filter(|(_, u)| norm(&u.email) == email && norm(&u.company) == company)
                .collect();
            let Some((_, first)) = matches.first() else { return };
            let names: Vec<String> = matches.iter().map(|(_, u)| format!("  {}", u.username)).collect();
            let body = format!(
                "Hello,\n\nThe KaseyaOne usernames for this email address at {} are:\n\n{}\n",
                first.company,
                names.join("\n")
            );
            p.outbox.send(&first.email, "Your KaseyaOne username", body).await
        }
        Recover::Company => {
            let matches: Vec<_> = p.dir.users().filter(|(_, u)| norm(&u.email) == email).collect();
            let Some((_, first)) = matches.first() else { return };
            let mut companies: Vec<String> = matches.iter().map(|(_, u)| format!("  {}", u.company)).collect();
            companies.dedup();
            let body = format!(
                "Hello,\n\nThis email address belongs to KaseyaOne users of these companies:\n\n{}\n",
                companies.join("\n")
            );
            p.outbox.send(&first.email, "Your KaseyaOne company name", body).await
        }
    };
    if let Err(e) = result {
        tracing::error!(error = %e, "recovery mail could not be written");
    }
}

fn reset_expired() -> Response {
    page(
        StatusCode::BAD_REQUEST,
        pages::error_page(
            "This link has expired",
            "Password reset links work once and for a limited time. Ask for a new one.",
            Some(("/recover/password", "Forgot password")),
        ),
    )
}

async fn reset_get(State(p): P, Query(q): Query<HashMap<String, String>>) -> Response {
    let token = q.get("token").map(String::as_str).unwrap_or("");
    if p.stores.reset_links.get(&token_key(token)).is_none() {
        return reset_expired();
    }
    page(StatusCode::OK, pages::reset_form(token, None))
}

async fn reset_post(State(p): P, body: Result<Bytes, BytesRejection>) -> Response {
    let f = match page_form(body) {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    let token = field(&f, "token");
    let (pw, confirm) = (field(&f, "password"), field(&f, "confirm"));
    let problem = if pw.chars().count() < 12 {
        Some("Use at least 12 characters.")
    } else if pw.len() > 1024 {
        Some("Use at most 1024 characters.")
    } else if pw != confirm {
        Some("The two passwords do not match.")
    } else {
        None
    };
    if let Some(problem) = problem {
        if p.stores.reset_links.get(&token_key(token)).is_none() {
            return reset_expired();
        }
        return page(StatusCode::BAD_REQUEST, pages::reset_form(token, Some(problem)));
    }
    let Some(user) = p.stores.reset_links.remove(&token_key(token)) else {
        return reset_expired();
    };
    let p2 = p.clone();
    let pw = pw.to_string();
    if tokio::task::spawn_blocking(move || p2.dir.set_password(user, &pw))
        .await
        .is_err()
    {
        return page(
            StatusCode::INTERNAL_SERVER_ERROR,
            pages::error_page(
                "Password not changed",
                "Something went wrong. Ask for a new link.",
                None,
            ),
        );
    }
    // A reset is often made because the account was compromised: end every
    // session of the user (telling their clients), and void other links.
    let ended = p.end_user_sessions(user, SystemTime::now());
    let u = p.dir.user(user);
    p.throttle
        .record_success(&format!("{}/{}", norm(&u.company), norm(&u.username)));
    tracing::info!(user.sub = %p.dir.sub(user), sessions.ended = ended, "password reset");
    page(
        StatusCode::OK,
        pages::error_page(
            "Password changed",
            "Your new password is set. Log in with it now.",
            Some(("/login", "Log in")),
        ),
    )
}
