//! Module session cookies of a KaseyaOne session that has ended: expired,
//! and the request sent round again. Which cookies, and why, is
//! `policy::module_cookies`; their look-ups are in `sessions`.

use pingora::prelude::*;
use pingora::proxy::Session as PSession;

use super::config::RouteId;
use super::reject::{Reject, Reply, render};
use super::{Gateway, client_kind, request};
use crate::oidc::return_url::safe_return_path;
use crate::policy::ClientKind;

/// Expires module session cookies issued under a KaseyaOne session that has
/// ended, and sends the request round again (a navigation then logs in; an
/// API client gets 401).
pub async fn expire(g: &Gateway, session: &mut PSession, id: RouteId, mut set_cookies: Vec<String>) -> Result<bool> {
    let module = g.route(id);
    // The records stay: the module may still honour those cookies, and
    // they must keep being refused wherever they turn up.
    set_cookies.dedup();
    tracing::info!(module.name = %module.label(), "module session of an ended KaseyaOne session refused; its cookies expired");
    let req = session.req_header();
    if client_kind(req) == ClientKind::Api {
        return render(
            &Reject::SessionEnded,
            ClientKind::Api,
            Some(module),
            None,
            &super::reject::Exits::default(),
        )
        .with_cookies(set_cookies)
        .write(session)
        .await;
    }
    let wanted = req.uri.path_and_query().map_or("/", |p| p.as_str());
    let again = safe_return_path(wanted).unwrap_or("/").to_string();
    if module.module_credentials() || module.requires_kaseyaone() {
        // The module's own login (or its exceptions) decides next: the
        // same page again, without the dead cookies.
        return Reply::redirect(again).with_cookies(set_cookies).write(session).await;
    }
    let host = request::host_of(req).map(|h| h.into_owned()).unwrap_or_default();
    super::logins::start_login(g, session, id, &host, &again, None, set_cookies).await
}
