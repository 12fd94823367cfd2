//! What a user may open, as pages: the App Launcher (`/_unigate/launcher`,
//! also as JSON), a module with instances at its own host (straight to an
//! instance, or Choose an Instance), and `/_unigate/instances`. Which
//! tiles and instances: `policy::routes`.

use pingora::prelude::*;
use pingora::proxy::Session as PSession;

use super::config::RouteId;
use super::cookies::Own;
use super::reject::{Reject, Reply};
use super::request::{cookie, query_param};
use super::{Gateway, PREFIX, down, unix_now};
use crate::oidc::return_url::safe_return_path;
use crate::pages;
use crate::policy::ClientKind;
use crate::policy::routes::{InstanceFor, instance_for, instance_named, open_instances, seamless_url};
use crate::session::Session;

/// The App Launcher: the modules this unigate fronts that the user's
/// groups grant, as a page or (for `Accept: application/json`) as JSON.
pub async fn launcher(g: &Gateway, session: &mut PSession, id: RouteId, host: &str) -> Result<bool> {
    let found = match g.session_for(session.req_header(), g.route(id), unix_now()).await {
        Ok(s) => s.filter(|s| s.usable()),
        Err(e) => return g.reject(session, Some(id), down(e)).await,
    };
    // A script (`Accept: application/json`, XHR, fetch) gets JSON.
    let json = super::client_kind(session.req_header()) == ClientKind::Api;
    let Some(s) = found else {
        if json {
            return g.reject(session, Some(id), Reject::Unauthenticated).await;
        }
        let back = format!("{PREFIX}launcher");
        return super::logins::start_login(g, session, id, host, &back, None, Vec::new()).await;
    };
    let tiles = g.launcher_tiles(&s.identity);
    if json {
        let body = serde_json::json!({
            "user": s.identity.username,
            "email": s.identity.email,
            "modules": tiles,
        });
        return Reply::json(200, body).write(session).await;
    }
    Reply::page(200, pages::launcher(&s.identity.email, &tiles))
        .write(session)
        .await
}

/// A module with instances, at its own host: straight to the only instance
/// the user may open, or to the remembered one, else Choose an Instance.
pub async fn chooser(g: &Gateway, session: &mut PSession, id: RouteId, s: &Session) -> Result<bool> {
    let r = choose(g, session, id, s);
    g.answer(session, Some(id), r).await
}

fn choose(g: &Gateway, session: &PSession, id: RouteId, s: &Session) -> std::result::Result<Reply, Reject> {
    let routes = &g.cfg().modules;
    let open = open_instances(routes, g.route(id), &s.identity.groups);
    let req = session.req_header();
    let wanted = req.uri.path_and_query().map_or("/", |p| p.as_str());
    let path = safe_return_path(wanted).unwrap_or("/");
    let remembered = cookie(req, Own::Instance.name(g.cfg().tls));
    let target = match instance_for(routes, &open, remembered) {
        InstanceFor::NoneOpen => {
            return Err(Reject::Forbidden {
                account: s.identity.account(),
            });
        }
        InstanceFor::Open(r) => g.route(r).hosts.first(),
        InstanceFor::Choose => None,
    };
    match target {
        Some(h) => Ok(Reply::redirect(seamless_url(&g.cfg().origin_for(h), path))),
        None => Ok(show_chooser(g, id, &open, path)),
    }
}

fn show_chooser(g: &Gateway, id: RouteId, open: &[RouteId], path: &str) -> Reply {
    let return_to: String = form_urlencoded::byte_serialize(path.as_bytes()).collect();
    let list: Vec<(String, String, String)> = open
        .iter()
        .filter_map(|&r| {
            let i = g.route(r).instance.as_ref()?;
            Some((
                i.name.clone(),
                i.display_name.clone(),
                format!("{PREFIX}instances?choose={}&return_to={return_to}", i.name),
            ))
        })
        .collect();
    Reply::page(200, pages::choose_instance(&g.route(id).display_name, &list))
}

/// `/_unigate/instances`: Choose an Instance (the launcher's file tile);
/// `?choose=NAME` remembers the choice and opens the instance.
pub async fn instances(g: &Gateway, session: &mut PSession, id: RouteId, host: &str) -> Result<bool> {
    let module = g.route(id);
    if module.chooser.is_empty() {
        return g.reject(session, Some(id), Reject::NoInstances).await;
    }
    let found = match g.session_for(session.req_header(), module, unix_now()).await {
        Ok(s) => s.filter(|s| s.usable()),
        Err(e) => return g.reject(session, Some(id), down(e)).await,
    };
    let Some(s) = found else {
        let back = session
            .req_header()
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        return super::logins::start_login(g, session, id, host, &back, None, Vec::new()).await;
    };
    let r = chosen(g, session, id, &s);
    g.answer(session, Some(id), r).await
}

fn chosen(g: &Gateway, session: &PSession, id: RouteId, s: &Session) -> std::result::Result<Reply, Reject> {
    let routes = &g.cfg().modules;
    let open = open_instances(routes, g.route(id), &s.identity.groups);
    if open.is_empty() {
        return Err(Reject::Forbidden {
            account: s.identity.account(),
        });
    }
    let req = session.req_header();
    let return_to = query_param(req, "return_to").unwrap_or_else(|| "/".into());
    let path = safe_return_path(&return_to).unwrap_or("/");
    let Some(r) = query_param(req, "choose").and_then(|name| instance_named(routes, &open, &name)) else {
        return Ok(show_chooser(g, id, &open, path));
    };
    let inst = g.route(r);
    let (Some(h), Some(i)) = (inst.hosts.first(), inst.instance.as_ref()) else {
        return Ok(show_chooser(g, id, &open, path));
    };
    let cookie = Own::Instance.set_cookie(g.cfg().tls, &i.name, Some(31_536_000));
    tracing::info!(module.name = %g.route(id).name, instance = %i.name, user.sub = %s.identity.sub, "instance chosen");
    Ok(Reply::redirect(seamless_url(&g.cfg().origin_for(h), path)).with_cookies([cookie]))
}
