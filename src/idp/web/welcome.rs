//! A new user's first login: the page the Welcome to KaseyaOne mail links
//! to. The user creates a password and sets up their authenticator app
//! (the key is shown here, once) and proves it with one verification code;
//! the link then stops working.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::{P, field, page, page_form};
use crate::idp::account_pages::{self, WelcomeView};
use crate::idp::config::User;
use crate::idp::directory::{UpdateError, UserId, totp_match};
use crate::idp::oauth::unix;
use crate::idp::pages;
use crate::idp::store::client_key;
use crate::idp::welcome::{grouped_secret, otpauth_uri};

fn link_expired() -> Response {
    page(
        StatusCode::BAD_REQUEST,
        pages::error_page(
            "This link has expired",
            "Welcome links work once and for a limited time. To get a new one, click Forgot password on the login page and enter your username and company name.",
            Some(("/recover/password", "Forgot password")),
        ),
    )
}

fn form(status: StatusCode, token: &str, user: &User, error: Option<&str>) -> Response {
    let secret = grouped_secret(user);
    let uri = otpauth_uri(user);
    let view = WelcomeView {
        token,
        username: &user.username,
        company: &user.company,
        secret: &secret,
        otpauth_uri: &uri,
    };
    page(status, account_pages::welcome_form(&view, error))
}

pub(super) async fn welcome_get(State(p): P, Query(q): Query<HashMap<String, String>>) -> Response {
    let token = q.get("token").map(String::as_str).unwrap_or("");
    match p.dir.welcome(token, unix(SystemTime::now())) {
        Some((_, user)) => form(StatusCode::OK, token, &user, None),
        None => link_expired(),
    }
}

fn password_problem(pw: &str, confirm: &str) -> Option<&'static str> {
    if pw.chars().count() < 12 {
        Some("Use at least 12 characters.")
    } else if pw.len() > 1024 {
        Some("Use at most 1024 characters.")
    } else if pw != confirm {
        Some("The two passwords do not match.")
    } else {
        None
    }
}

pub(super) async fn welcome_post(
    State(p): P,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let f = match page_form(body) {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    let token = field(&f, "token").to_string();
    let now = SystemTime::now();
    let Some((id, user)) = p.dir.welcome(&token, unix(now)) else {
        return link_expired();
    };
    if let Some(problem) = password_problem(field(&f, "password"), field(&f, "confirm")) {
        return form(StatusCode::BAD_REQUEST, &token, &user, Some(problem));
    }
    // An Argon2 hash: limited per address like password checks, off the
    // async workers.
    if let Some(wait) = p.throttle.password_checks.hit(client_key(peer.ip()), Instant::now()) {
        let msg = format!(
            "Too many attempts from your network; try again in {} seconds.",
            wait.as_secs().max(1)
        );
        return form(StatusCode::TOO_MANY_REQUESTS, &token, &user, Some(&msg));
    }
    if !code_fits(&p, id, &user, field(&f, "code"), now) {
        return form(
            StatusCode::BAD_REQUEST,
            &token,
            &user,
            Some(
                "That verification code is not the one your authenticator app shows now. Check that you added the key above, and enter the current code.",
            ),
        );
    }
    let Ok(_permit) = p.hash_permits.acquire().await else {
        return form(
            StatusCode::SERVICE_UNAVAILABLE,
            &token,
            &user,
            Some("The service is shutting down; try again shortly."),
        );
    };
    let p2 = p.clone();
    let pw = field(&f, "password").to_string();
    let done = tokio::task::spawn_blocking(move || p2.dir.complete_welcome(&token, &pw, unix(now))).await;
    match done {
        Ok(Ok(id)) => {
            tracing::info!(user.sub = %p.dir.sub(id), "first password created");
            page(
                StatusCode::OK,
                account_pages::welcome_done(&user.username, &user.company),
            )
        }
        Ok(Err(UpdateError::LinkExpired | UpdateError::Gone)) => link_expired(),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "first password not stored");
            page(
                StatusCode::INTERNAL_SERVER_ERROR,
                pages::error_page(
                    "Password not created",
                    "Something went wrong on our side. Try the link again in a moment.",
                    None,
                ),
            )
        }
        Err(_) => page(
            StatusCode::INTERNAL_SERVER_ERROR,
            pages::error_page(
                "Password not created",
                "Something went wrong. Try the link again.",
                None,
            ),
        ),
    }
}

/// Whether `code` is the user's current one; with replay protection, it is
/// used up, so the first login needs a later one.
fn code_fits(p: &crate::idp::Provider, id: UserId, user: &User, code: &str, now: SystemTime) -> bool {
    let Some(step) = totp_match(&user.totp_secret, code, unix(now)) else {
        return false;
    };
    if !p.cfg.login.totp_replay_protection {
        return true;
    }
    let mut fresh = false;
    p.stores.totp_steps.entry(id).and_upsert_with(|last| {
        let last = last.map(|e| *e.value());
        fresh = last.is_none_or(|l| step > l);
        if fresh { step } else { last.unwrap_or(step) }
    });
    fresh
}
