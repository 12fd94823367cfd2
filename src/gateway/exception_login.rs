//! A module login form posted where Log In with KaseyaOne is required:
//! forwarded only for a listed local exception, read exactly as the module
//! will read it (`policy::credentials`); the module's answer goes back as
//! it is, and the module session it opens is recorded as that user's.

use pingora::prelude::*;
use pingora::proxy::Session as PSession;

use super::config::RouteId;
use super::cookies::without_unigate_cookies;
use super::internal::read_form;
use super::reject::{Reject, Reply};
use super::{Gateway, down};
use crate::policy::credentials::{self, BadLogin};

/// A module login form posted where KaseyaOne is required: forwarded only
/// for a listed exception; the module's answer goes back as it is, and the
/// module session it opens is remembered (by hash) as that user's.
pub async fn exception_login(
    g: &Gateway,
    session: &mut PSession,
    id: RouteId,
    host: &str,
    at_exception: bool,
) -> Result<bool> {
    let r = forward(g, session, id, host, at_exception).await?;
    g.answer(session, Some(id), r).await
}

async fn forward(
    g: &Gateway,
    session: &mut PSession,
    id: RouteId,
    host: &str,
    at_exception: bool,
) -> Result<std::result::Result<Reply, Reject>> {
    let module = g.route(id);
    let req = session.req_header();
    let target = if at_exception {
        module.login_paths.first().cloned().unwrap_or_else(|| "/".into())
    } else {
        req.uri.path_and_query().map_or("/", |p| p.as_str()).to_string()
    };
    let mut pass: Vec<(String, String)> = ["content-type", "user-agent", "accept", "accept-language"]
        .iter()
        .filter_map(|n| {
            let v = req.headers.get(*n).and_then(|v| v.to_str().ok())?;
            Some((n.to_string(), v.to_string()))
        })
        .collect();
    // Every Cookie line, without unigate's own cookies and without any
    // cookie a framework could read as the username or password (PHP's
    // `$_REQUEST` lets a cookie win over the form field unigate checked).
    let fields = [module.username_field.as_str(), module.password_field.as_str()];
    let cookies = without_unigate_cookies(
        req.headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok()),
        |pair| {
            fields
                .iter()
                .any(|f| crate::session::cookie_forms::chunk_has_name(pair.as_bytes(), f))
        },
    );
    pass.extend(cookies.map(|c| ("cookie".to_string(), c)));
    let content_type = req
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if !credentials::form_encoded(content_type) {
        return Ok(Err(Reject::BadModuleLogin(BadLogin::Encoding)));
    }
    let query = req.uri.query().map(str::to_string);
    let Some(form) = read_form(session, 64 * 1024).await? else {
        return Ok(Err(Reject::TooLarge));
    };
    // The one username the module can read: every spelling of the field
    // in the body and the query string counts.
    let user = match credentials::the_username(&form, query.as_deref(), &module.username_field) {
        Ok(u) => u.trim().to_string(),
        Err(why) => return Ok(Err(Reject::BadModuleLogin(why))),
    };
    if !module.local_exceptions.iter().any(|u| u == &user) {
        tracing::info!(module.name = %module.label(), decision = "deny", "module credentials refused: Log In with KaseyaOne is required");
        return Ok(Err(Reject::KaseyaOneRequired { username: user }));
    }
    let Some(call) = g.module_call(id) else {
        return Ok(Err(Reject::NoUpstream));
    };
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form.iter())
        .finish();
    let mut rb = call.client.post(call.url(&target)).header("host", host).body(body);
    for (n, v) in &pass {
        rb = rb.header(n.as_str(), v.as_str());
    }
    let resp = match rb.send().await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(module.name = %module.label(), error = %e.without_url(), "module login unreachable");
            return Ok(Err(Reject::UpstreamDown));
        }
    };
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("text/html; charset=utf-8")
        .to_string();
    let mut headers: Vec<(&'static str, String)> = Vec::new();
    for (n, v) in resp.headers() {
        let Ok(v) = v.to_str() else { continue };
        match n.as_str() {
            "set-cookie" if super::cookies::sets_unigate_cookie(v.as_bytes()) => {}
            "set-cookie" => {
                if let Ok(c) = cookie::Cookie::parse(v.to_string())
                    && !c.value_trimmed().is_empty()
                    && module.session_cookies.iter().any(|s| s == c.name())
                {
                    let owner = g.cookie_owner(&c, &user, false).set_at(session.req_header().uri.path());
                    if let Err(e) = g.state.sessions.record_module_cookie(c.value_trimmed(), owner).await {
                        // Unrecorded, the module session would not be let
                        // through again: no half-done login.
                        return Ok(Err(down(e)));
                    }
                }
                headers.push(("set-cookie", v.to_string()));
            }
            "location" => headers.push(("location", v.to_string())),
            _ => {}
        }
    }
    let body = resp.bytes().await.unwrap_or_default();
    tracing::info!(module.name = %module.label(), module.user = %user, status, "local exception signed in with module credentials");
    Ok(Ok(Reply {
        status,
        content_type: "text/html; charset=utf-8".into(),
        headers,
        body,
    }
    .with_content_type(content_type)))
}
