//! The provider's HTTP surface (axum): the router, and what every handler
//! shares (pages, redirects, forms, cookies, the browser's IdP session).
//! Each handler reads the request, calls the provider's logic and writes a
//! page, a redirect or JSON. Every page is `no-store` and may not be framed.
//! The handlers live by concern: the endpoints relying parties call
//! directly (`client_endpoints`), authorization (`authorize`), the login
//! steps (`login`), logout (`end_session`), My Modules (`my_modules`),
//! "Can't Log In?" (`recovery`) and a new user's first login (`welcome`).

mod authorize;
mod client_endpoints;
mod end_session;
mod login;
mod my_modules;
mod recovery;
mod welcome;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum_extra::extract::CookieJar;
use axum_extra::extract::cookie::{Cookie, SameSite};
use maud::Markup;

use super::Provider;
use super::oauth::params_map;
use super::pages;
use super::store::{IdpSession, token_key};
use authorize::{authorize, choose_post};
use client_endpoints::{discovery, introspect, jwks, token, userinfo};
use end_session::{end_session, logout_confirm};
use login::{login_get, login_post};
use my_modules::home;
use recovery::{recover_get, recover_post, reset_get, reset_post};
use welcome::{welcome_get, welcome_post};

const SESSION_COOKIE: &str = "k1_session";
/// Longest username, company name or email accepted in a form.
const MAX_FIELD: usize = 256;

type P = State<Arc<Provider>>;

pub fn router(p: Arc<Provider>) -> Router {
    let limit = p.cfg.max_body_bytes;
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/authorize", get(authorize).post(authorize))
        .route("/authorize/choose", post(choose_post))
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
        .route("/welcome", get(welcome_get).post(welcome_post))
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

/// The browser's IdP session, if it has one whose user is still in the
/// directory. A session of a user taken out of it is ended here (their
/// clients are told), should the directory's own sweep not have got to it.
fn current_session(p: &Provider, jar: &CookieJar) -> Option<(String, Arc<IdpSession>)> {
    let key = token_key(jar.get(SESSION_COOKIE)?.value());
    let s = p.stores.sessions.get(&key)?;
    let now = std::time::SystemTime::now();
    if !p.user_active(s.user, now) {
        p.logout(&key, now);
        return None;
    }
    Some((key, s))
}
