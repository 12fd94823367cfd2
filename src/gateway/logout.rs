//! Logout, at unigate's own path or one of the module's: the session ends
//! on every replica, the module is told (its own logout path, with the
//! browser's cookies), the module's and unigate's cookies expire, and the
//! browser goes to the IdP's end-session endpoint (`policy::routes`).

use pingora::prelude::*;
use pingora::proxy::Session as PSession;

use super::config::RouteId;
use super::cookies::{Own, without_unigate_cookies};
use super::reject::{Reject, Reply};
use super::{Gateway, PREFIX};
use crate::pages;
use crate::policy::module_cookies::raw_name_expiry;
use crate::policy::routes::end_session_url;
use crate::session::{CookieOwner, IdToken, ModuleCookies};

/// Logs out of route `id` at `host`; `module_path`: at one of the
/// module's own logout paths (told to the module as it was asked).
pub async fn logout(g: &Gateway, session: &mut PSession, id: RouteId, host: &str, module_path: bool) -> Result<bool> {
    // A logout the browser's user may not have asked for is confirmed first.
    if let Some(done) = super::logout_confirm::guard(g, session, host).await? {
        return Ok(done);
    }
    let r = end(g, session, id, host, module_path).await;
    g.answer(session, Some(id), r).await
}

async fn end(
    g: &Gateway,
    session: &PSession,
    id: RouteId,
    host: &str,
    module_path: bool,
) -> std::result::Result<Reply, Reject> {
    let module = g.route(id);
    let req = session.req_header();
    let readings = g
        .module_cookie_readings(req, module)
        .map_err(|_| Reject::TooManyCookies)?;
    let ended = match g.session_id(req) {
        Some(sid) => g.end_session(sid).await.map_err(|e| {
            tracing::error!(error = %e, "logout not possible: session store unavailable");
            Reject::StoreDown
        })?,
        None => None,
    };
    let logout_path = if module_path {
        Some(req.uri.path_and_query().map_or("/", |p| p.as_str()).to_string())
    } else {
        module.logout_paths.first().cloned()
    };
    if let Some(path) = logout_path
        && let Some(call) = g.module_call(id)
    {
        // The module's own cookies only: never unigate's.
        let cookies = without_unigate_cookies(
            req.headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok()),
            |_| false,
        );
        let mut rb = call.client.get(call.url(&path)).header("host", host);
        if let Some(cookies) = cookies {
            rb = rb.header("cookie", cookies);
        }
        match rb.send().await {
            Ok(r) => tracing::debug!(module.name = %module.name, status = r.status().as_u16(), "module told of logout"),
            Err(e) => tracing::warn!(module.name = %module.name, error = %e, "module could not be told of logout"),
        }
    }
    // unigate's own: the session, and a failed login's reason (it may
    // name the account that was used).
    let mut cookies = vec![
        g.session_cookie_header("", Some(0)),
        Own::Error.set_cookie(g.cfg().tls, "", Some(0)),
    ];
    for (i, c) in module.session_cookies.iter().enumerate() {
        // A local exception's record ends with the logout; a KaseyaOne
        // session's stays, so the cookie is refused if it turns up again.
        // Expired wherever it was set (its recorded path and domain), and
        // under the name it was sent with.
        let mut set = CookieOwner::expiry(c, None);
        for r in readings.iter().filter(|r| r.name == i) {
            set.extend(raw_name_expiry(r, c, None));
            for o in g.reading_owners(r).await.unwrap_or_default() {
                if !o.kaseyaone {
                    for f in &r.forms {
                        g.state.sessions.forget_module_cookie(&ModuleCookies::key(f)).await;
                    }
                }
                set.extend(CookieOwner::expiry(c, Some(&o)));
                set.extend(raw_name_expiry(r, c, Some(&o)));
            }
        }
        let mut seen = std::collections::HashSet::new();
        set.retain(|v| seen.insert(v.clone()));
        cookies.extend(set);
    }
    let oidc = &g.state.oidc;
    let post_logout = oidc
        .settings
        .post_logout_redirect_uri
        .clone()
        .unwrap_or_else(|| format!("{}/", g.cfg().origin_for(host)));
    let id_token = ended.as_ref().and_then(|s| {
        s.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .id_token
            .as_ref()
            .map(IdToken::jwt)
    });
    if let Some(s) = &ended {
        tracing::info!(module.name = %module.name, user.sub = %s.identity.sub, "logout");
        g.state.metrics.logouts.with_label_values(&["rp"]).inc();
    }
    let endpoint = oidc.loaded().and_then(|l| l.discovery.end_session_endpoint.clone());
    match end_session_url(
        endpoint.as_deref(),
        id_token.as_deref(),
        &oidc.settings.client_id,
        &post_logout,
    ) {
        // The URL carries the ID token: no Referer takes it to the IdP's
        // pages' resources, and no cache keeps it (`respond` sets
        // `Cache-Control: no-store`).
        Some(url) => Ok(Reply::redirect(url)
            .with("referrer-policy", "no-referrer")
            .with_cookies(cookies)),
        None => Ok(Reply::page(200, pages::logged_out(&format!("{PREFIX}login")))
            .with_cookies(cookies)
            .with("clear-site-data", "\"cookies\"")),
    }
}
