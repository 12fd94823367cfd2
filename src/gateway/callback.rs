//! The OpenID Connect callback: the authorization response checked before
//! anything is redeemed (`oidc::callback`), the login transaction of this
//! browser taken once, the code exchanged, the ID token and the user's
//! claims checked, the access groups and the module account checked, and
//! a new session. Every failure is counted by reason.

use std::sync::Arc;
use std::time::SystemTime;

use pingora::prelude::*;
use pingora::proxy::Session as PSession;

use super::config::RouteId;
use super::reject::{LoginFailure, Reject, Reply};
use super::{Gateway, PREFIX, down, unix_now};
use crate::crypto::random_token;
use crate::oidc::callback::{Answer, Refused, read};
use crate::policy::may_access;
use crate::session::{IdToken, Identity, Tokens};

/// Answers `/_unigate/callback` on route `id`'s `host`.
pub async fn callback(g: &Gateway, session: &mut PSession, id: RouteId, host: &str) -> Result<bool> {
    match finish(g, session, id, host).await {
        Ok(reply) => reply.write(session).await,
        Err(r) => {
            g.login_failed(id, r.metric_reason());
            g.reject(session, Some(id), r).await
        }
    }
}

async fn finish(g: &Gateway, session: &PSession, id: RouteId, host: &str) -> std::result::Result<Reply, Reject> {
    let oidc = &g.state.oidc;
    let route = g.route(id);
    let req = session.req_header();
    // Before anything is looked up or redeemed: the response must be one
    // the code flow can give, from the provider this login used.
    let iss_required = oidc
        .loaded()
        .is_some_and(|l| l.discovery.authorization_response_iss_parameter_supported);
    let response = read(req.uri.query().unwrap_or_default(), &oidc.issuer(), iss_required).map_err(|refused| {
        tracing::warn!(module.name = %route.label(), reason = %refused, "callback refused before the token request");
        Reject::Login(match refused {
            Refused::WrongIssuer | Refused::IssuerMissing => LoginFailure::WrongIssuer,
            Refused::Repeated(_) | Refused::Unexpected(_) => LoginFailure::BadCallback,
        })
    })?;
    let expired = |retry: &str| {
        Reject::Login(LoginFailure::Expired {
            retry: retry.to_string(),
        })
    };
    let (txn, spent) = g
        .finish_login(req, &response.state, unix_now())
        .await
        .map_err(down)?
        .ok_or_else(|| expired(&format!("{PREFIX}login")))?;
    let retry = format!(
        "{PREFIX}login?return_to={}",
        form_urlencoded::byte_serialize(txn.return_path.as_bytes()).collect::<String>()
    );
    if txn.route != route.label() || txn.host != host {
        tracing::warn!("callback from a browser or host that did not start this login");
        return Err(expired(&retry));
    }
    let code = match response.answer {
        Answer::Code(code) => code,
        Answer::Error { error, description } => {
            tracing::info!(module.name = %route.name, error = %error, "identity provider returned an error");
            return Err(Reject::Login(LoginFailure::Provider {
                error,
                description,
                retry,
            }));
        }
        Answer::Nothing => return Err(expired(&retry)),
    };
    let redirect_uri = format!("{}{PREFIX}callback", g.cfg().origin_for(host));
    let tokens = oidc.exchange(&code, &txn.verifier, &redirect_uri).await.map_err(|e| {
        tracing::warn!(error = %e, "code exchange failed");
        Reject::Login(LoginFailure::Exchange { retry: retry.clone() })
    })?;
    let Some(id_token) = tokens.id_token.clone() else {
        return Err(Reject::Login(LoginFailure::NoIdToken { retry }));
    };
    let issued_with = crate::oidc::client::IssuedWith {
        nonce: Some(&txn.nonce),
        access_token: Some(&tokens.access_token),
        code: Some(&code),
        max_age: route.max_age.map(|a| a.as_secs()),
    };
    let claims = oidc
        .validate_id_token(&id_token, &issued_with, SystemTime::now())
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "ID token rejected");
            Reject::Login(LoginFailure::IdToken { retry: retry.clone() })
        })?;
    let profile = oidc.profile(&claims, &tokens.access_token).await.map_err(|e| {
        tracing::warn!(module.name = %route.label(), user.sub = %claims.sub, error = %e, "the user's claims could not be read");
        Reject::Login(LoginFailure::Userinfo { retry: retry.clone() })
    })?;
    let mut identity = Identity::from_profile(&claims.sub, claims.sid.as_deref(), profile);
    if !may_access(&identity.groups, &route.access_groups) {
        tracing::info!(module.name = %route.label(), user.sub = %claims.sub, decision = "deny", "access group check at login");
        return Err(Reject::Forbidden);
    }
    // The seed's account conditions: a linked account, or a module account
    // whose email and/or username match (created when provisioning is on).
    let link_pending = g.module_account(id, &mut identity).await? == super::Account::LinkPending;
    let access_exp = unix_now() + tokens.expires_in.unwrap_or(300);
    // A new id at every login; an old session in this browser ends.
    if let Some(old) = g.session_id(session.req_header()) {
        g.end_session(old).await.map_err(down)?;
    }
    let sid = random_token();
    let tokens = Tokens {
        generation: 0,
        id_token: Some(IdToken::new(&id_token)),
        refresh_token: tokens.refresh_token.map(Into::into),
        access_exp,
    };
    let new = g.new_session(id, identity, tokens).with_link_pending(link_pending);
    g.put_session(&sid, Arc::new(new)).await.map_err(down)?;
    tracing::info!(module.name = %route.label(), user.sub = %claims.sub, "login succeeded");
    g.state
        .metrics
        .logins
        .with_label_values(&[route.label(), "succeeded", ""])
        .inc();
    let cookie = g.session_cookie_header(&sid, None);
    Ok(Reply::redirect(txn.return_path).with_cookies([cookie, spent]))
}
