//! What unigate answers itself under `/_unigate/`: health, readiness, its
//! keys and the IdP's logout calls on any host; and, on a module's host,
//! the login start, the callback, logout, the App Launcher, Choose an
//! Instance and the link page (each in its own file).

use pingora::prelude::*;
use pingora::proxy::Session as PSession;

use super::config::RouteId;
use super::reject::{Reject, Reply};
use super::{Gateway, PREFIX};

/// The answers on every host; `None`: not one of them.
pub async fn host_independent(g: &Gateway, session: &mut PSession) -> Result<Option<bool>> {
    let path = session.req_header().uri.path();
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return Ok(None);
    };
    let reply = match rest {
        "healthz" => Reply::text(200, "ok"),
        "readyz" if g.state.lifecycle.draining.load(std::sync::atomic::Ordering::Acquire) => {
            Reply::text(503, "shutting down")
        }
        "readyz" if g.state.oidc.ready() => Reply::text(200, "ready"),
        "readyz" => Reply::text(503, "identity provider discovery or JWKS not loaded"),
        "backchannel-logout" => return super::channel_logout::backchannel(g, session).await.map(Some),
        "frontchannel-logout" => return super::channel_logout::frontchannel(g, session).await.map(Some),
        "jwks.json" => {
            let set = jsonwebtoken::jwk::JwkSet {
                keys: vec![g.state.signer.key.jwk.clone()],
            };
            Reply::json(200, serde_json::to_value(&set).unwrap_or_default())
        }
        _ => return Ok(None),
    };
    reply.write(session).await.map(Some)
}

/// The answers on a module's host.
pub async fn handle(g: &Gateway, session: &mut PSession, id: RouteId, host: &str) -> Result<bool> {
    let path = session.req_header().uri.path().to_string();
    match &path[PREFIX.len()..] {
        "callback" => super::callback::callback(g, session, id, host).await,
        "logout" => super::logout::logout(g, session, id, host, false).await,
        "launcher" => super::instances::launcher(g, session, id, host).await,
        "instances" => super::instances::instances(g, session, id, host).await,
        "link" => super::link::link(g, session, id, host).await,
        "error" => super::callback::error_page(g, session, id).await,
        "login" => super::initiate::login(g, session, id, host).await,
        _ => g.reject(session, Some(id), Reject::NotFound).await,
    }
}

/// Reads a small request body (a form), at most `max` bytes.
pub async fn read_form(session: &mut PSession, max: usize) -> Result<Option<Vec<(String, String)>>> {
    let mut body = Vec::new();
    while let Some(chunk) = session.read_request_body().await? {
        body.extend_from_slice(&chunk);
        if body.len() > max {
            return Ok(None);
        }
    }
    Ok(Some(form_urlencoded::parse(&body).into_owned().collect()))
}

/// A form field's value ("" when absent).
pub fn field<'a>(form: &'a [(String, String)], name: &str) -> &'a str {
    form.iter().find(|(k, _)| k == name).map_or("", |(_, v)| v.as_str())
}
