//! "Can't Log In?": recovering a password, username or company name by
//! mail, and the password reset the mailed link opens. A user who never
//! created a password gets a new welcome link instead of a reset.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::login::throttle_key;
use super::{MAX_FIELD, P, field, found, page, page_form};
use crate::idp::Provider;
use crate::idp::directory::{UserId, norm};
use crate::idp::oauth::unix;
use crate::idp::pages::{self, Recover};
use crate::idp::store::{random_token, token_key};
use crate::idp::welcome::send_welcome;

fn recover_kind(kind: &str) -> Option<Recover> {
    match kind {
        "password" => Some(Recover::Password),
        "username" => Some(Recover::Username),
        "company" => Some(Recover::Company),
        _ => None,
    }
}

pub(super) async fn recover_get(axum::extract::Path(kind): axum::extract::Path<String>) -> Response {
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

pub(super) async fn recover_post(
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
    page(StatusCode::OK, pages::recover_sent(kind))
}

async fn send_recovery(p: &Arc<Provider>, kind: Recover, f: &HashMap<String, String>) {
    let email = norm(field(f, "email"));
    let company = norm(field(f, "company"));
    let result = match kind {
        Recover::Password => {
            let Some(id) = p.dir.find(field(f, "company"), field(f, "username")) else {
                return;
            };
            if p.dir.awaits_password(id) {
                // Never logged in: a new welcome link, not a reset.
                return renew_welcome(p, id).await;
            }
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
                .into_iter()
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
            let matches: Vec<_> = p
                .dir
                .users()
                .into_iter()
                .filter(|(_, u)| norm(&u.email) == email)
                .collect();
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

/// A new Welcome to KaseyaOne mail for a user who never created a password,
/// at most one per `WELCOME_RENEWAL_INTERVAL`. The links mailed before
/// keep working and the key stays (see `Directory::renew_welcome`).
async fn renew_welcome(p: &Arc<Provider>, id: UserId) {
    if p.throttle.welcome_renewals.hit(id, Instant::now()).is_some() {
        tracing::info!(user.sub = %p.dir.sub(id), "welcome mail not sent again so soon");
        return;
    }
    let ttl = p.cfg.login.welcome_link_ttl;
    let now = unix(SystemTime::now());
    let p2 = p.clone();
    let renewed = tokio::task::spawn_blocking(move || p2.dir.renew_welcome(id, now, ttl.as_secs())).await;
    let (token, user) = match renewed {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return tracing::error!(error = %e, "welcome link not renewed"),
        Err(e) => return tracing::error!(error = %e, "welcome link not renewed"),
    };
    let link = format!("{}?token={token}", p.url("/welcome"));
    if let Err(e) = send_welcome(&p.outbox, &user, &link, ttl).await {
        tracing::error!(error = %e, "welcome mail could not be written");
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

pub(super) async fn reset_get(State(p): P, Query(q): Query<HashMap<String, String>>) -> Response {
    let token = q.get("token").map(String::as_str).unwrap_or("");
    if p.stores.reset_links.get(&token_key(token)).is_none() {
        return reset_expired();
    }
    page(StatusCode::OK, pages::reset_form(token, None))
}

pub(super) async fn reset_post(State(p): P, body: Result<Bytes, BytesRejection>) -> Response {
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
    let set = tokio::task::spawn_blocking(move || p2.dir.set_password(user, &pw)).await;
    if let Ok(Err(e)) = &set {
        tracing::error!(error = %e, "password not stored");
    }
    if !matches!(set, Ok(Ok(()))) {
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
    p.throttle.record_success(&throttle_key(&u.company, &u.username));
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
