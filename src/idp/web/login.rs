//! The login steps (username and company, password, verification code):
//! the login flow bound to the browser, its throttling, and the IdP session
//! a successful login starts. What the person typed is kept: a failed login
//! returns to the step that failed (see `login_post`), never to the start.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::CookieJar;
use serde::Deserialize;

use super::authorize::success_redirect;
use super::{MAX_FIELD, P, PageError, SESSION_COOKIE, cookie, current_session, field, found, page, page_form};
use crate::idp::Provider;
use crate::idp::directory::{UserId, norm, totp_match};
use crate::idp::oauth::{AuthRequest, unix};
use crate::idp::pages;
use crate::idp::store::{IdpSession, LoginFlow, Stage, client_key, random_token, token_key};

const FLOW_COOKIE: &str = "k1_flow";
const GENERIC_FAILURE: &str =
    "Invalid username/password. Check your username, company name, password and verification code, and try again.";

/// The key the login throttle counts an account's failures under.
pub(super) fn throttle_key(company: &str, username: &str) -> String {
    format!("{}/{}", norm(company), norm(username))
}

/// Starts a login flow, unless this address starts too many.
pub(super) fn new_flow(
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

#[derive(Deserialize)]
struct FlowQuery {
    flow: Option<String>,
}

pub(super) async fn login_get(
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
        Stage::Code => pages::login_code(id, &flow.username, &flow.company, error),
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

pub(super) async fn login_post(
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
    let user_key = throttle_key(&flow.company, &flow.username);
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
            let secret = user.map_or_else(
                || p.dir.dummy_totp_secret().to_vec(),
                |u| p.dir.user(u).totp_secret.clone(),
            );
            let step = totp_match(&secret, field(&f, "code"), unix(SystemTime::now()));
            let code_ok = match (user, step) {
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
                (Some(u), Some(step)) if p.cfg.login.totp_replay_protection => {
                    p.stores.totp_steps.get(&u).is_none_or(|last| step > last)
                }
                (Some(_), Some(_)) => true,
                _ => false,
            };
            match user {
                Some(u) if flow.password_ok && code_ok => {
                    p.throttle.record_success(&user_key);
                    p.stores.flows.invalidate(&id);
                    complete_login(&p, jar, u, flow.request.clone())
                }
                _ => {
                    p.throttle.record_failure(&user_key, ip, now);
                    tracing::info!(client.ip = %ip, "login failed");
                    // Back to the step that failed, with one message for every
                    // cause. A wrong code returns to the code step whatever the
                    // password was; the password is asked again only when the
                    // code was right (so only someone holding the second factor
                    // learns that the password was wrong).
                    if code_ok {
                        flow.stage = Stage::Password;
                    }
                    p.stores.flows.insert(id.clone(), flow.clone());
                    let msg = match p.throttle.blocked_for(&user_key, ip, now) {
                        Some(wait) => throttled_message(wait),
                        None => GENERIC_FAILURE.to_string(),
                    };
                    render_stage(&id, &flow, Some(&msg))
                }
            }
        }
        // "Not you?": back to the first step, what was typed kept.
        ("restart", _) => {
            flow.stage = Stage::Identify;
            flow.password_ok = false;
            p.stores.flows.insert(id, flow);
            found(&next)
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
