//! Linking a module account: a session whose route requires a linked
//! account goes to the link page first; the page asks once for the module
//! credentials, checks them at the module's own login page (`link_check`
//! judges the answer), and keeps only the link (KaseyaOne user → module
//! username).

use std::sync::Arc;

use pingora::prelude::*;
use pingora::proxy::Session as PSession;

use super::config::RouteId;
use super::internal::{field, read_form};
use super::reject::{Reject, Reply};
use super::request::query_param;
use super::{Gateway, PREFIX, down, unix_now};
use crate::oidc::return_url::safe_return_path;
use crate::pages;
use crate::policy::ClientKind;
use crate::session::Session;

/// A session whose module account is not linked yet: the link page first
/// (a script is told where it is).
pub async fn link_first(g: &Gateway, session: &mut PSession, id: RouteId) -> Result<bool> {
    if super::client_kind(session.req_header()) == ClientKind::Api {
        return g.reject(session, Some(id), Reject::LinkRequired).await;
    }
    let wanted = session.req_header().uri.path_and_query().map_or("/", |p| p.as_str());
    let back: String = form_urlencoded::byte_serialize(safe_return_path(wanted).unwrap_or("/").as_bytes()).collect();
    Reply::redirect(format!("{PREFIX}link?return_to={back}"))
        .write(session)
        .await
}

/// The link page: asks once for the module credentials, checks them at
/// the module's login page, and keeps only the link (sub → username).
pub async fn link(g: &Gateway, session: &mut PSession, id: RouteId, host: &str) -> Result<bool> {
    let module = g.route(id);
    let req = session.req_header();
    let Some(sid) = g.session_id(req).map(str::to_string) else {
        return super::logins::start_login(g, session, id, host, "/", None, Vec::new()).await;
    };
    let found = match g.session_for(req, module, unix_now()).await {
        Ok(s) => s.filter(|s| s.usable()),
        Err(e) => return g.reject(session, Some(id), down(e)).await,
    };
    let Some(s) = found else {
        return super::logins::start_login(g, session, id, host, "/", None, Vec::new()).await;
    };
    let req = session.req_header();
    let return_to = query_param(req, "return_to").unwrap_or_else(|| "/".into());
    if !s.link_pending {
        let path = safe_return_path(&return_to).unwrap_or("/");
        return Reply::redirect(path).write(session).await;
    }
    let csrf = link_csrf_token(&sid);
    if req.method != http::Method::POST {
        let path = safe_return_path(&return_to).unwrap_or("/");
        let page = link_page(g, id, &s, "", None, path, &csrf);
        return Reply::page(200, page).write(session).await;
    }
    let Some(form) = read_form(session, 16 * 1024).await? else {
        let page = link_page(g, id, &s, "", Some("That was too long."), "/", &csrf);
        return Reply::page(413, page).write(session).await;
    };
    let r = check_link(g, id, host, &sid, &s, &form, &csrf).await;
    g.answer(session, Some(id), r).await
}

/// A posted link form: this session's own, with credentials the module
/// accepts; then the link is kept and the session carries the account.
async fn check_link(
    g: &Gateway,
    id: RouteId,
    host: &str,
    sid: &str,
    s: &Arc<Session>,
    form: &[(String, String)],
    csrf: &str,
) -> std::result::Result<Reply, Reject> {
    let module = g.route(id);
    // Only this session's own link page may post: nothing is checked at
    // the module for a forged or another session's form.
    let sent: Vec<&[u8]> = form
        .iter()
        .filter(|(k, _)| k == "csrf_token")
        .map(|(_, v)| v.as_bytes())
        .collect();
    let genuine = sent.len() == 1 && bool::from(subtle::ConstantTimeEq::ct_eq(sent[0], csrf.as_bytes()));
    if !genuine {
        tracing::warn!(module.name = %module.label(), user.sub = %s.identity.sub, decision = "deny", "link form without this session's token");
        return Err(Reject::LinkForged {
            account: s.identity.account(),
        });
    }
    let path = safe_return_path(field(form, "return_to")).unwrap_or("/").to_string();
    let (user, password) = (field(form, "module_username").trim(), field(form, "module_password"));
    // Shown again with the username kept (not one too long to be one).
    let typed = if user.len() <= 256 { user } else { "" };
    let form_again =
        |status: u16, error: &str| Reply::page(status, link_page(g, id, s, typed, Some(error), &path, csrf));
    if user.is_empty() || password.is_empty() || user.len() > 256 || password.len() > 1024 {
        return Ok(form_again(400, "Enter your module username and password."));
    }
    if let Some(wait) = g
        .state
        .link_attempts
        .hit(s.identity.sub.to_string(), std::time::Instant::now())
    {
        let msg = format!(
            "Too many attempts. Try again in {} minutes.",
            wait.as_secs().div_ceil(60)
        );
        return Ok(form_again(429, &msg).with("retry-after", wait.as_secs().max(1).to_string()));
    }
    match module_login(g, id, host, user, password).await {
        Ok(true) => {
            g.state
                .sessions
                .put_link(&s.identity.sub, module.label(), user)
                .await
                .map_err(down)?;
            let mut identity = s.identity.clone();
            identity.module_user = Some(user.into());
            let tokens = s.tokens.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let linked = g.build_session(id, identity, tokens, s.expires_at);
            if !g.replace_session(sid, s, Arc::new(linked)).await.map_err(down)? {
                // Ended while the module checked the password (a logout
                // elsewhere): not brought back; the next request logs in.
                tracing::info!(module.name = %module.label(), user.sub = %s.identity.sub, "link dropped: the session ended meanwhile");
                return Ok(Reply::redirect(path));
            }
            tracing::info!(module.name = %module.label(), user.sub = %s.identity.sub, module.user = %user, "module account linked");
            Ok(Reply::redirect(path))
        }
        Ok(false) => {
            tracing::info!(module.name = %module.label(), user.sub = %s.identity.sub, "link refused: module did not accept the credentials");
            Ok(form_again(
                200,
                "Invalid username/password. The module did not accept these credentials.",
            ))
        }
        Err(e) => {
            tracing::warn!(module.name = %module.label(), error = %e, "module login endpoint unreachable");
            Err(Reject::AccountsUnavailable)
        }
    }
}

/// The link page of route `id` for session `s`: the module and instance
/// by name, the KaseyaOne account, `username` filled in.
fn link_page(
    g: &Gateway,
    id: RouteId,
    s: &Session,
    username: &str,
    error: Option<&str>,
    return_to: &str,
    csrf: &str,
) -> String {
    let module = pages::module_name(g.route(id));
    let account = s.identity.account();
    let my_modules = format!("{}/", g.state.idp_origin);
    let logout = format!("{PREFIX}logout");
    pages::link_form(&pages::LinkForm {
        module: &module,
        username,
        error,
        return_to,
        csrf,
        ways: pages::WaysOut {
            account: account.as_deref(),
            logout: &logout,
            // With this session, the logout link needs no confirmation.
            logout_token: None,
            my_modules: Some(my_modules.as_str()).filter(|m| *m != "/"),
        },
    })
}

/// The link form's CSRF token: a hash of the session id (secret, in an
/// HttpOnly cookie), so only a page served to this session carries it.
fn link_csrf_token(session_id: &str) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"unigate link form\0");
    h.update(session_id.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks module credentials at the module's own login page, as a browser
/// would: the login page first (a pre-login session comes with it), then
/// the form with its cookies. Whether they were good is `link_success`'s
/// call (see `link_check`): never "a cookie was set" or "a redirect came
/// back" alone, which is how many modules answer a wrong password too.
/// The session opened for the check is ended at once. The credentials are
/// not kept or logged.
async fn module_login(
    g: &Gateway,
    id: RouteId,
    host: &str,
    user: &str,
    password: &str,
) -> std::result::Result<bool, String> {
    use super::link_check::{Verdict, jar_after, judge};
    let module = g.route(id);
    let call = g.module_call(id).ok_or("no healthy upstream")?;
    let path = module.login_paths.first().ok_or("no login path")?;
    let cookie_header = |jar: &[(String, String)]| {
        jar.iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let page = call
        .client
        .get(call.url(path))
        .header("host", host)
        .send()
        .await
        .map_err(|e| e.without_url().to_string())?;
    let before = jar_after(&[], &login_answer(&page));
    let body: String = form_urlencoded::Serializer::new(String::new())
        .append_pair(&module.username_field, user)
        .append_pair(&module.password_field, password)
        .finish();
    let mut rb = call
        .client
        .post(call.url(path))
        .header("host", host)
        .header("content-type", "application/x-www-form-urlencoded");
    if !before.is_empty() {
        rb = rb.header("cookie", cookie_header(&before));
    }
    let resp = rb.body(body).send().await.map_err(|e| e.without_url().to_string())?;
    let answer = login_answer(&resp);
    let jar = jar_after(&before, &answer);
    let mut login_pages: Vec<&str> = module.login_paths.iter().map(String::as_str).collect();
    if module.requires_kaseyaone() {
        login_pages.push(&module.exception_path);
    }
    let ok = match judge(&module.link_success, &login_pages, &before, &answer) {
        Verdict::Refused => false,
        Verdict::Accepted => true,
        // Without a cookie from the login, a 200 proves nothing; nor does a
        // page that answers 200 with the cookies of before the login.
        Verdict::Probe(_) if !super::link_check::login_set_cookie(&before, &answer) => false,
        Verdict::Probe(probe) => {
            let status = async |jar: &[(String, String)]| {
                let mut rb = call.client.get(call.url(&probe)).header("host", host);
                if !jar.is_empty() {
                    rb = rb.header("cookie", cookie_header(jar));
                }
                rb.send()
                    .await
                    .map(|r| r.status().as_u16())
                    .map_err(|e| e.without_url().to_string())
            };
            let with_login = status(&jar).await?;
            with_login == 200 && super::link_check::probe_proves(with_login, status(&before).await?)
        }
    };
    if !jar.is_empty()
        && let Some(logout) = module.logout_paths.first()
    {
        let _ = call
            .client
            .get(call.url(logout))
            .header("host", host)
            .header("cookie", cookie_header(&jar))
            .send()
            .await;
    }
    Ok(ok)
}

/// The parts of a module's answer that tell whether a login worked.
fn login_answer(resp: &reqwest::Response) -> super::link_check::LoginAnswer {
    let set_cookies = resp
        .headers()
        .get_all(http::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|c| cookie::Cookie::parse(c.to_string()).ok())
        .map(|c| {
            let expired = c.max_age().is_some_and(|a| a.is_zero() || a.is_negative())
                || c.expires_datetime()
                    .is_some_and(|t| t <= cookie::time::OffsetDateTime::now_utc());
            (c.name().to_string(), c.value_trimmed().to_string(), expired)
        })
        .collect();
    super::link_check::LoginAnswer {
        status: resp.status().as_u16(),
        location: resp
            .headers()
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        set_cookies,
    }
}
