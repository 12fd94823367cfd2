//! The authorization endpoint: a checked request is answered at once from
//! the browser's IdP session, or refused, or starts a login flow, or (when
//! its `login_hint` names someone other than the session's user) asks which
//! account to use; and the redirects back to the client.

use std::net::{IpAddr, SocketAddr};
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
use super::{MAX_FIELD, P, PageError, bad_request, current_session, field, found, page, page_form, pairs};
use crate::idp::Provider;
use crate::idp::account_pages;
use crate::idp::oauth::{AuthRequest, AuthorizeError, check_authorize, unix, with_params};
use crate::idp::pages;
use crate::idp::store::{AccountChoice, IdpSession, random_token, token_key};

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
        Some((key, s)) if !request.prompt_login && fresh_enough(&s) => {
            // The account the person meant: a hint naming someone else is
            // never answered silently with the session's user.
            if let Some(hint) = request.login_hint.as_deref().map(str::trim).filter(|h| !h.is_empty())
                && !p.dir.hint_names(s.user, hint)
            {
                if request.prompt_none {
                    return error_redirect(
                        &p,
                        &request.redirect_uri,
                        "login_required",
                        "the user logged in is not the one login_hint names",
                        request.state.as_deref(),
                    );
                }
                return choose_account(&p, key, &s, request.clone(), hint);
            }
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
            start_login(&p, jar, peer.ip(), request, &hint)
        }
    }
}

fn start_login(p: &Provider, jar: CookieJar, ip: IpAddr, request: Arc<AuthRequest>, hint: &str) -> Response {
    match new_flow(p, jar, ip, Some(request), hint.trim().chars().take(MAX_FIELD).collect()) {
        Ok((jar, flow)) => (jar, found(&format!("/login?flow={flow}"))).into_response(),
        Err(r) => r.into_response(),
    }
}

/// "You are logged in as carol. Continue as carol, or log in as alice."
fn choose_account(
    p: &Provider,
    session_key: String,
    s: &IdpSession,
    request: Arc<AuthRequest>,
    hint: &str,
) -> Response {
    // Shown and prefilled only when it looks like a username or an email.
    let hint = account_pages::shown_hint(hint);
    let token = random_token();
    p.stores.account_choices.insert(
        token_key(&token),
        AccountChoice {
            session_key,
            request,
            hint: hint.unwrap_or_default().to_string(),
        },
    );
    let user = p.dir.user(s.user);
    page(
        StatusCode::OK,
        account_pages::choose_account(&user.username, &user.company, hint, &token),
    )
}

/// The choice's form: continue with the session's user, or log in as the
/// one the hint names (the session is left alone until that login
/// succeeds, which then replaces it). The token works once, and only in
/// the IdP session it was offered under.
pub(super) async fn choose_post(
    State(p): P,
    jar: CookieJar,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let f = match page_form(body) {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    let choice = p.stores.account_choices.remove(&token_key(field(&f, "choice")));
    let session = current_session(&p, &jar);
    let (choice, s) = match (choice, session) {
        (Some(c), Some((key, s))) if c.session_key == key => (c, s),
        _ => {
            return bad_request(
                "This page has expired or was opened in another browser. Go back to the application and log in again.",
            );
        }
    };
    let auth_age = unix(SystemTime::now()).saturating_sub(s.auth_time.load(Ordering::Acquire));
    match field(&f, "action") {
        // The page waited: a `max_age` it has outlived asks for the login again.
        "continue" if choice.request.max_age.is_some_and(|max| auth_age > max) => {
            let username = p.dir.user(s.user).username.clone();
            start_login(&p, jar, peer.ip(), choice.request, &username)
        }
        "continue" => {
            let code = p.issue_code(choice.request.clone(), &s);
            tracing::info!(client.id = %choice.request.client_id, user.sub = %p.dir.sub(s.user), "authorization continued with the IdP session's user");
            success_redirect(&p, &choice.request, &code)
        }
        "switch" => start_login(&p, jar, peer.ip(), choice.request, &choice.hint),
        _ => bad_request("The form did not say which account to use."),
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
