//! My Modules: the home page of a logged-in user, a tile for each module.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum_extra::extract::CookieJar;

use super::{P, current_session, found, page};
use crate::idp::Provider;
use crate::idp::pages::{self, Tile};
use crate::idp::store::random_token;
use url::Url;

pub(super) async fn home(State(p): P, jar: CookieJar, Query(q): Query<HashMap<String, String>>) -> Response {
    let Some((key, session)) = current_session(&p, &jar) else {
        return found("/login");
    };
    let user = p.dir.user(session.user);
    let modules = p.dir.modules_for(session.user);
    // The email: unique across companies, where a username is not.
    let hint = user.email.as_str();
    let tiles: Vec<Tile<'_>> = modules
        .iter()
        .map(|m| {
            if !m.unified_login {
                Tile::Lock(m)
            } else if m.instances.len() > 1 {
                Tile::File(m)
            } else {
                let url = m.instances.first().map_or(&m.url, |i| &i.url);
                Tile::Arrow(m, launch_url(&p, url, hint))
            }
        })
        .collect();
    let choose = q
        .get("choose")
        .and_then(|name| {
            modules
                .iter()
                .find(|m| &m.name == name && m.unified_login && m.instances.len() > 1)
        })
        .copied();
    let hrefs: Vec<String> = choose
        .map(|m| m.instances.iter().map(|i| launch_url(&p, &i.url, hint)).collect())
        .unwrap_or_default();
    let csrf = random_token();
    p.stores.logout_csrf.insert(csrf.clone(), key);
    page(
        StatusCode::OK,
        pages::home(&user.display_name, &csrf, &tiles, choose.map(|m| (m, hrefs.as_slice()))),
    )
}

/// Where a tile opens `url`: through the login initiation of the client
/// serving that origin (OpenID Connect third-party-initiated login, so the
/// person lands logged in rather than on the module's login page), else
/// the URL itself.
fn launch_url(p: &Provider, url: &Url, login_hint: &str) -> String {
    let origin = url.origin();
    p.dir
        .clients()
        .find_map(|c| {
            let initiate = c.initiate_login_uri.as_ref()?;
            c.redirect_uris
                .iter()
                .any(|r| Url::parse(r).is_ok_and(|r| r.origin() == origin))
                .then(|| {
                    let mut u = initiate.clone();
                    u.query_pairs_mut()
                        .append_pair("iss", &p.issuer)
                        .append_pair("target_link_uri", url.as_str())
                        .append_pair("login_hint", login_hint);
                    u.to_string()
                })
        })
        .unwrap_or_else(|| url.to_string())
}
