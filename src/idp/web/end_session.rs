//! RP-initiated logout (the end-session endpoint) and its confirmation
//! page: only this browser's own IdP session is ever ended, and only a
//! registered post-logout address is followed.

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::CookieJar;

use super::{
    P, PageError, SESSION_COOKIE, bad_request, current_session, field, found, page, page_form, pairs, removal,
};
use crate::idp::Provider;
use crate::idp::oauth::{params_map, with_params};
use crate::idp::pages;
use crate::idp::store::random_token;

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

pub(super) async fn end_session(
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

pub(super) async fn logout_confirm(State(p): P, jar: CookieJar, body: Result<Bytes, BytesRejection>) -> Response {
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
