//! Logouts the identity provider starts: Back-Channel Logout 1.0 (it posts
//! a logout token, server to server: answered in JSON) and Front-Channel
//! Logout 1.0 (its logout page frames unigate with `iss` and `sid`).

use std::time::SystemTime;

use pingora::prelude::*;
use pingora::proxy::Session as PSession;

use super::internal::{field, read_form};
use super::reject::{Reject, Reply, render};
use super::request::query_param;
use super::{Gateway, down};
use crate::oidc::logout_token::LogoutTokenRejected;
use crate::pages;
use crate::policy::ClientKind;
use crate::session::Revoke;

/// Back-Channel Logout: every session of the token's `sid` (or, without
/// one, of its `sub`) ends on the spot. 200 when done (also when nothing
/// was live), 400 with a JSON error otherwise, 503 when it cannot be done
/// now (the IdP retries).
pub async fn backchannel(g: &Gateway, session: &mut PSession) -> Result<bool> {
    let reply = match backchannel_reply(g, session).await? {
        Ok(reply) => reply,
        // A server asks: JSON, whatever it accepts.
        Err(r) => render(&r, ClientKind::Api, None, None, &super::reject::Exits::default()),
    };
    reply.write(session).await
}

async fn backchannel_reply(g: &Gateway, session: &mut PSession) -> Result<std::result::Result<Reply, Reject>> {
    let bad = |why: &str| Reject::BadRequest(why.to_string());
    if session.req_header().method != http::Method::POST {
        let body = serde_json::json!({"error": "invalid_request", "error_description": "POST a logout_token"});
        return Ok(Ok(Reply::json(405, body).with("allow", "POST")));
    }
    let Some(form) = read_form(session, 64 * 1024).await? else {
        return Ok(Err(bad("body too large")));
    };
    Ok(end_sessions(g, field(&form, "logout_token")).await)
}

async fn end_sessions(g: &Gateway, token: &str) -> std::result::Result<Reply, Reject> {
    if token.is_empty() {
        return Err(Reject::BadRequest("logout_token is missing".into()));
    }
    let claims = match g.state.oidc.validate_logout_token(token, SystemTime::now()).await {
        Ok(c) => c,
        Err(e @ LogoutTokenRejected::KeysUnavailable) => {
            tracing::warn!(reason = %e, "back-channel logout postponed");
            return Err(Reject::Unavailable(e.to_string()));
        }
        Err(e) => {
            tracing::warn!(reason = %e, "back-channel logout token refused");
            return Err(Reject::BadRequest(e.to_string()));
        }
    };
    let store_down = |e| {
        tracing::error!(error = %e, "back-channel logout: session store unavailable");
        Reject::Unavailable("session store unavailable".into())
    };
    // A jti works once (kept past any token's lifetime with leeway); a
    // claim whose logout failed may be tried again.
    if !g.state.sessions.claim_jti(&claims.jti).await.map_err(store_down)? {
        tracing::warn!("back-channel logout token replayed");
        return Err(Reject::BadRequest(LogoutTokenRejected::Replay.to_string()));
    }
    let what = match (&claims.sid, &claims.sub) {
        (Some(sid), _) => Revoke::Sid(sid.clone()),
        (None, Some(sub)) => Revoke::Sub(sub.clone()),
        (None, None) => return Err(Reject::BadRequest(LogoutTokenRejected::NoSubject.to_string())),
    };
    // Bearer tokens of that user that name no IdP session cannot be told
    // apart from this session's: they end with it.
    if let (Some(_), Some(sub)) = (&claims.sid, &claims.sub) {
        g.mark_bearer_revoked(&super::bearer::sidless_mark(sub))
            .await
            .map_err(store_down)?;
    }
    // Not done, and the jti not marked done: the IdP's retry works.
    let ended = g.revoke(&what).await.map_err(store_down)?;
    g.state.sessions.finish_jti(&claims.jti).await;
    tracing::info!(kind = "backchannel", ended, sid = ?claims.sid, user.sub = ?claims.sub, "logout");
    g.state
        .metrics
        .logouts
        .with_label_values(&["backchannel"])
        .inc_by(ended as u64);
    Ok(Reply::json(200, serde_json::json!({})))
}

/// Front-Channel Logout: the frame sends no SameSite cookies, so the
/// sessions are found by `sid`, server-side. Only the IdP's origin may
/// frame it.
pub async fn frontchannel(g: &Gateway, session: &mut PSession) -> Result<bool> {
    let req = session.req_header();
    let (iss, sid) = (query_param(req, "iss"), query_param(req, "sid"));
    let frame = format!("frame-ancestors {}", g.state.idp_origin);
    let ok_iss = iss.as_deref() == Some(g.state.oidc.issuer().as_str());
    let Some(sid) = sid.filter(|s| ok_iss && !s.is_empty() && s.len() <= 255) else {
        tracing::warn!("front-channel logout without this issuer and a sid");
        let page = pages::page(
            "Logout failed",
            maud::html! { h1 { "This logout request is not valid" } },
        );
        return Reply::page(400, page)
            .with("content-security-policy", frame)
            .write(session)
            .await;
    };
    let ended = match g.revoke(&Revoke::Sid(sid)).await {
        Ok(n) => n,
        Err(e) => return g.reject(session, None, down(e)).await,
    };
    tracing::info!(kind = "frontchannel", ended, "logout");
    g.state
        .metrics
        .logouts
        .with_label_values(&["frontchannel"])
        .inc_by(ended as u64);
    let page = pages::page("Logged out", maud::html! { h1 { "Logged out" } });
    Reply::page(200, page)
        .with("content-security-policy", frame)
        .write(session)
        .await
}
