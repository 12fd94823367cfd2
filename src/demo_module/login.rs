//! The portal's own logins with module credentials: its login form (read
//! as leniently as legacy portals do), a PHP-style login page, and logout.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::pages::{layout, with_cookie};
use super::{COOKIE, DemoModule, S, Who};
use crate::crypto::random_token;

pub(super) async fn login_form(State(m): S) -> Html<String> {
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

/// Whether the form names an active account with module credentials and
/// its password (compared in constant time).
fn credentials_ok(m: &DemoModule, f: &LoginForm) -> bool {
    m.accounts().iter().any(|a| {
        a.active
            && a.username == f.username
            && a.password
                .as_ref()
                .is_some_and(|p| subtle::ConstantTimeEq::ct_eq(p.as_bytes(), f.password.as_bytes()).into())
    })
}

/// Opens the portal's session for a login with module credentials, and
/// sends the browser home.
fn logged_in(m: &DemoModule, username: String) -> Response {
    let cookie = m.open_session(Who {
        username,
        email: String::new(),
        via_kaseyaone: false,
    });
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

pub(super) async fn login_post(
    State(m): S,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(f) = lenient_login(&uri, &headers, &body) else {
        return (StatusCode::BAD_REQUEST, "bad login form").into_response();
    };
    if !credentials_ok(&m, &f) {
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
    logged_in(&m, f.username)
}

/// A PHP-style login page at `/php/login`: every visit starts a session
/// (its cookie is set when the browser has none), and a failed login sets
/// the session cookie again and redirects back to the form — so neither
/// "a cookie was set" nor "a redirect came back" tells a good password.
/// A good one opens a new session and redirects to `/`.
pub(super) async fn php_login_form(State(m): S, headers: HeaderMap) -> Response {
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

pub(super) async fn php_login_post(
    State(m): S,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let f = lenient_login(&uri, &headers, &body);
    let ok = f.as_ref().is_some_and(|f| credentials_ok(&m, f));
    match f.filter(|_| ok) {
        Some(f) => logged_in(&m, f.username),
        None => {
            let anon = php_session(&headers).unwrap_or_else(random_token);
            let cookie = format!("{COOKIE}={anon}; Path=/; HttpOnly");
            ([(header::SET_COOKIE, cookie)], Redirect::to("/php/login?error=1")).into_response()
        }
    }
}

pub(super) async fn logout(State(m): S, headers: HeaderMap) -> Response {
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
