//! My Modules: the home page of a logged-in user, a tile for each module.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum_extra::extract::CookieJar;

use super::{P, current_session, found, page};
use crate::idp::pages::{self, Tile};
use crate::idp::store::random_token;

pub(super) async fn home(State(p): P, jar: CookieJar, Query(q): Query<HashMap<String, String>>) -> Response {
    let Some((key, session)) = current_session(&p, &jar) else {
        return found("/login");
    };
    let user = p.dir.user(session.user);
    let modules = p.dir.modules_for(session.user);
    let tiles: Vec<Tile<'_>> = modules
        .iter()
        .map(|m| {
            if !m.unified_login {
                Tile::Lock(m)
            } else if m.instances.len() > 1 {
                Tile::File(m)
            } else {
                Tile::Arrow(m)
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
    let csrf = random_token();
    p.stores.logout_csrf.insert(csrf.clone(), key);
    page(StatusCode::OK, pages::home(&user.display_name, &csrf, &tiles, choose))
}
