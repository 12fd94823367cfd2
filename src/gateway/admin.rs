//! The admin listener (`[admin] address`): an API for operators, separate
//! from the proxy's port. Every call needs `Authorization: Bearer` with the
//! token from `[admin] token` (a secret reference), and every call —
//! refused ones too — is written to the audit log (tracing target
//! `unigate::audit`).
//!
//! - `POST /admin/revoke` with `{"sub": "…"}` or `{"email": "…"}`: ends all
//!   sessions of that user on this unigate; answers `{"revoked": N}`.
//! - `GET /metrics`: Prometheus metrics, without a token (keep the admin
//!   listener on a private address: a pod IP, loopback, a private network).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use super::Gateway;
use crate::secret::Secret;
use crate::session::Revoke;

struct Admin {
    gateway: Arc<Gateway>,
    token: Secret,
}

type S = State<Arc<Admin>>;

fn error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

fn authorized(a: &Admin, headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .is_some_and(|(_, t)| a.token.matches(t.trim().as_bytes()))
}

/// One line of the audit log for an admin call: who called (address and
/// user agent), what they asked, and how it ended.
fn audit(peer: SocketAddr, headers: &HeaderMap, outcome: &'static str, what: Option<&Revoke>, revoked: usize) {
    let agent = user_agent(headers);
    let what = what.map(|w| format!("{w:?}"));
    macro_rules! line {
        ($level:ident, $msg:literal) => {
            tracing::$level!(
                target: "unigate::audit",
                caller = %peer,
                user_agent = agent.as_deref(),
                action = "revoke",
                target_user = what.as_deref(),
                revoked,
                outcome,
                $msg
            )
        };
    }
    match outcome {
        "ok" => line!(info, "admin revoked sessions"),
        "store_down" => line!(error, "admin revoke failed"),
        _ => line!(warn, "admin call refused"),
    }
}

/// The caller's `User-Agent`, for the audit log.
fn user_agent(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::USER_AGENT)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// Marks a response whose call has its own audit line.
#[derive(Clone, Copy)]
struct Audited;

/// Every call on the admin listener is audited: those without a line of
/// their own (metrics, unknown paths, wrong methods, bodies refused before
/// the handler) get one here, with the path and the status.
async fn audit_every_call(
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let agent = user_agent(req.headers());
    let res = next.run(req).await;
    if res.extensions().get::<Audited>().is_none() {
        let status = res.status().as_u16().to_string();
        tracing::info!(
            target: "unigate::audit",
            caller = %peer,
            user_agent = agent.as_deref(),
            action = %format!("{method} {path}"),
            outcome = %status,
            "admin listener call"
        );
    }
    res
}

async fn revoke(state: S, peer: ConnectInfo<SocketAddr>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let mut r = revoke_call(state, peer, headers, body).await;
    r.extensions_mut().insert(Audited);
    r
}

/// `POST /admin/revoke`, with its own audit line for every outcome.
async fn revoke_call(
    State(a): S,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !authorized(&a, &headers) {
        audit(peer, &headers, "unauthorized", None, 0);
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid admin bearer token is required",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"unigate-admin\""),
        );
        return r;
    }
    let v: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => {
            audit(peer, &headers, "bad_request", None, 0);
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "send JSON: {\"sub\": \"…\"} or {\"email\": \"…\"}",
            );
        }
    };
    let what = match (v["sub"].as_str(), v["email"].as_str()) {
        (Some(sub), None) if !sub.is_empty() => Revoke::Sub(sub.to_string()),
        (None, Some(email)) if !email.is_empty() => Revoke::Email(email.to_string()),
        _ => {
            audit(peer, &headers, "bad_request", None, 0);
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "name exactly one of `sub` and `email`",
            );
        }
    };
    let revoked = match a.gateway.revoke(&what).await {
        Ok(n) => n,
        Err(e) => {
            audit(peer, &headers, "store_down", Some(&what), 0);
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                &e.to_string(),
            );
        }
    };
    audit(peer, &headers, "ok", Some(&what), revoked);
    a.gateway
        .state
        .metrics
        .logouts
        .with_label_values(&["admin"])
        .inc_by(revoked as u64);
    (
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(json!({"revoked": revoked})),
    )
        .into_response()
}

/// Every metric, in the Prometheus text format.
async fn metrics(State(a): S) -> Response {
    let m = &a.gateway.state.metrics;
    m.sessions.set(a.gateway.local_sessions() as i64);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        m.render(),
    )
        .into_response()
}

/// Serves the admin API on `listener` until the task is aborted.
pub fn serve(listener: tokio::net::TcpListener, gateway: Arc<Gateway>, token: Secret) -> tokio::task::JoinHandle<()> {
    let app = Router::new()
        .route("/admin/revoke", post(revoke))
        .route("/metrics", get(metrics))
        .with_state(Arc::new(Admin { gateway, token }))
        .layer(axum::middleware::from_fn(audit_every_call));
    tokio::spawn(async move {
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "admin listener stopped");
        }
    })
}
