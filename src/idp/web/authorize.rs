//! The authorization endpoint: a checked request is answered at once from
//! the browser's IdP session, or refused, or starts a login flow; and the
//! redirects back to the client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum_extra::extract::CookieJar;

use super::login::new_flow;
use super::{MAX_FIELD, P, PageError, current_session, found, page, pairs};
use crate::idp::Provider;
use crate::idp::oauth::{AuthRequest, AuthorizeError, check_authorize, unix, with_params};
use crate::idp::pages;
use crate::idp::store::IdpSession;

/// OIDC Core §3.1.2.1: the authorization endpoint takes GET and form POST.
pub(super) async fn authorize(
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

pub(super) fn success_redirect(p: &Provider, r: &AuthRequest, code: &str) -> Response {
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
