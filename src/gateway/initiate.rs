//! `/_unigate/login`: where a login starts. The "Log In with KaseyaOne"
//! button comes here (`return_to`, `login_hint`), and so do My Modules and
//! the App Launcher, by OpenID Connect third-party-initiated login (Core
//! §4: `iss`, `target_link_uri`, `login_hint`, by GET or a POSTed form).
//! A browser already logged in here, as the user the hint names (if any),
//! goes straight to the target; any other goes through KaseyaOne, which
//! returns at once when its own session is there. `policy::routes::
//! initiated_login` decides where the target may be.

use pingora::prelude::*;
use pingora::proxy::Session as PSession;

use super::config::RouteId;
use super::internal::read_form;
use super::reject::Reply;
use super::{Gateway, unix_now};
use crate::policy::routes::{Initiated, Initiation, initiated_login};
use crate::session::Identity;

/// The longest `login_hint` passed on (a username or an email).
const MAX_HINT: usize = 256;
/// The largest POSTed initiation form read.
const MAX_FORM: usize = 8 * 1024;

pub async fn login(g: &Gateway, session: &mut PSession, id: RouteId, host: &str) -> Result<bool> {
    let params: Vec<(String, String)> = if session.req_header().method == http::Method::POST {
        match read_form(session, MAX_FORM).await? {
            Some(f) => f,
            None => {
                return g.reject(session, Some(id), super::reject::Reject::TooLarge).await;
            }
        }
    } else {
        let q = session.req_header().uri.query().unwrap_or("");
        form_urlencoded::parse(q.as_bytes()).into_owned().collect()
    };
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let hint: Option<String> = get("login_hint")
        .filter(|h| !h.is_empty())
        .map(|h| h.chars().take(MAX_HINT).collect());
    let init = Initiation {
        iss: get("iss"),
        target_link_uri: get("target_link_uri"),
        return_to: get("return_to"),
        login_hint: hint.as_deref(),
    };
    let cfg = g.cfg();
    let origin_of = |h: &str| {
        let h = h.to_ascii_lowercase();
        g.routes.by_host(&h).map(|_| cfg.origin_for(&h))
    };
    let return_path = match initiated_login(&cfg.idp.issuer, host, &init, origin_of) {
        Err(r) => return g.reject(session, Some(id), r).await,
        Ok(Initiated::There { url }) => return see_other(url).write(session).await,
        Ok(Initiated::Here { return_path }) => return_path,
    };
    // Already logged in here, as the person meant: no round trip.
    let found = match g.session_for(session.req_header(), g.route(id), unix_now()).await {
        Ok(s) => s.filter(|s| s.usable()),
        Err(e) => return g.reject(session, Some(id), super::down(e)).await,
    };
    if let Some(s) = found
        && hint.as_deref().is_none_or(|h| names(&s.identity, h))
    {
        return see_other(return_path).write(session).await;
    }
    // A page that asks for a recent login asks KaseyaOne for one at once.
    let recent = super::logins::recent_for(g.route(id), &return_path);
    super::logins::start_recent_login(g, session, id, host, &return_path, hint.as_deref(), recent).await
}

/// A redirect that a POSTed initiation follows with a GET.
fn see_other(location: String) -> Reply {
    Reply {
        status: 303,
        ..Reply::redirect(location)
    }
}

/// Whether a `login_hint` names this identity (its username or email,
/// ignoring case).
fn names(identity: &Identity, hint: &str) -> bool {
    identity.username.eq_ignore_ascii_case(hint) || identity.email.eq_ignore_ascii_case(hint)
}
