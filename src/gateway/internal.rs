//! What unigate answers itself: `/_unigate/healthz|readyz|jwks.json` on any
//! host; and, on a module's host, the login start, the OIDC callback, and
//! logout (unigate's own path and the module's logout paths).

use std::sync::Arc;
use std::time::SystemTime;

use pingora::prelude::*;
use pingora::proxy::Session as PSession;

use super::cookies::{Own, without_unigate_cookies};
use super::{Gateway, PREFIX, redirect, respond, respond_page, unix_now};
use crate::crypto::pkce_s256;
use crate::crypto::random_token;
use crate::oidc::return_url::safe_return_path;
use crate::oidc::with_params;
use crate::pages;
use crate::session::{IdToken, Identity, Session, Tokens};

fn query_param(req: &pingora::http::RequestHeader, name: &str) -> Option<String> {
    let q = req.uri.query()?;
    form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

pub async fn host_independent(g: &Gateway, session: &mut PSession) -> Result<Option<bool>> {
    let path = session.req_header().uri.path();
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return Ok(None);
    };
    match rest {
        "healthz" => respond(session, 200, "text/plain", &[], "ok").await.map(Some),
        "readyz" => {
            if g.lifecycle.draining.load(std::sync::atomic::Ordering::Acquire) {
                respond(session, 503, "text/plain", &[], "shutting down")
                    .await
                    .map(Some)
            } else if g.oidc.ready() {
                respond(session, 200, "text/plain", &[], "ready").await.map(Some)
            } else {
                respond(
                    session,
                    503,
                    "text/plain",
                    &[],
                    "identity provider discovery or JWKS not loaded",
                )
                .await
                .map(Some)
            }
        }
        "backchannel-logout" => backchannel_logout(g, session).await.map(Some),
        "frontchannel-logout" => frontchannel_logout(g, session).await.map(Some),
        "jwks.json" => {
            let set = jsonwebtoken::jwk::JwkSet {
                keys: vec![g.signer.key.jwk.clone()],
            };
            let body = serde_json::to_vec(&set).unwrap_or_default();
            respond(session, 200, "application/json", &[], body).await.map(Some)
        }
        _ => Ok(None),
    }
}

pub async fn handle(g: &Gateway, session: &mut PSession, mi: usize, host: &str) -> Result<bool> {
    let path = session.req_header().uri.path().to_string();
    match &path[PREFIX.len()..] {
        "callback" => callback(g, session, mi, host).await,
        "logout" => logout(g, session, mi, host, false).await,
        "launcher" => launcher(g, session, mi, host).await,
        "instances" => instances(g, session, mi, host).await,
        "link" => link(g, session, mi, host).await,
        "login" => {
            let wanted = query_param(session.req_header(), "return_to").unwrap_or_else(|| "/".into());
            // Anything that could leave this origin becomes the module's root.
            let return_path = safe_return_path(&wanted).unwrap_or("/").to_string();
            let hint = query_param(session.req_header(), "login_hint").map(|h| h.chars().take(256).collect::<String>());
            start_login_with(g, session, mi, host, &return_path, hint.as_deref()).await
        }
        _ => {
            respond_page(
                session,
                404,
                pages::page("Not found", maud::html! { h1 { "Not found" } }),
            )
            .await
        }
    }
}

/// The App Launcher: the modules this unigate fronts that the user's
/// groups grant, as a page or (for `Accept: application/json`) as JSON.
async fn launcher(g: &Gateway, session: &mut PSession, mi: usize, host: &str) -> Result<bool> {
    let found = match g.session_for(session.req_header(), g.module(mi), unix_now()).await {
        Ok(s) => s,
        Err(_) => return super::store_down(session).await,
    };
    let Some(s) = found.filter(|s| s.usable()) else {
        let wants_json = session
            .req_header()
            .headers
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("application/json"));
        if wants_json {
            return unauthenticated_api(g, session, mi).await;
        }
        return start_login(g, session, mi, host, &format!("{PREFIX}launcher")).await;
    };
    let tiles = g.launcher_tiles(&s.identity);
    let json = session
        .req_header()
        .headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"));
    if json {
        let body = serde_json::json!({
            "user": s.identity.username,
            "email": s.identity.email,
            "modules": tiles,
        });
        return respond(session, 200, "application/json", &[], body.to_string()).await;
    }
    respond_page(session, 200, pages::launcher(&s.identity.email, &tiles)).await
}

pub async fn unauthenticated_api(g: &Gateway, session: &mut PSession, mi: usize) -> Result<bool> {
    let module = g.module(mi);
    let mut headers = vec![
        ("www-authenticate", "Bearer realm=\"unigate\"".to_string()),
        ("vary", "Origin".to_string()),
    ];
    let origin = session
        .req_header()
        .headers
        .get("origin")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Some(o) = origin.filter(|o| module.cors_origins.iter().any(|c| c == o)) {
        headers.push(("access-control-allow-origin", o));
        headers.push(("access-control-allow-credentials", "true".into()));
        headers.push(("access-control-expose-headers", "WWW-Authenticate".into()));
    }
    let body = serde_json::json!({
        "error": "unauthenticated",
        "error_description": "log in with KaseyaOne first",
        "login_url": "/_unigate/login",
    });
    respond(session, 401, "application/json", &headers, body.to_string()).await
}

/// Sends the browser to the IdP: state, nonce and PKCE S256, the return
/// path sealed into this browser's login transaction cookie (`logins`).
pub async fn start_login(
    g: &Gateway,
    session: &mut PSession,
    mi: usize,
    host: &str,
    return_path: &str,
) -> Result<bool> {
    start_login_with(g, session, mi, host, return_path, None).await
}

/// `start_login` with a `login_hint` for the IdP (a username typed on the
/// module's login page).
pub async fn start_login_with(
    g: &Gateway,
    session: &mut PSession,
    mi: usize,
    host: &str,
    return_path: &str,
    login_hint: Option<&str>,
) -> Result<bool> {
    start_login_setting(g, session, mi, host, return_path, login_hint, Vec::new()).await
}

/// `start_login_with`, also setting `cookies` on the redirect.
async fn start_login_setting(
    g: &Gateway,
    session: &mut PSession,
    mi: usize,
    host: &str,
    return_path: &str,
    login_hint: Option<&str>,
    mut cookies: Vec<String>,
) -> Result<bool> {
    let Some(loaded) = g.oidc.loaded() else {
        return respond_page(
            session,
            503,
            pages::unavailable("The KaseyaOne identity provider cannot be reached."),
        )
        .await;
    };
    let client = g.client_addr(session);
    let client_ip = client.map(|ip| ip.to_string()).unwrap_or_default();
    let start = match g.begin_login(session.req_header(), client, mi, host, return_path, unix_now()) {
        Ok(s) => s,
        Err(super::logins::Refused::StoreDown) => return super::store_down(session).await,
        Err(super::logins::Refused::TooMany(wait)) => {
            tracing::info!(module.name = %g.module(mi).label(), client.ip = %client_ip, "login start refused: too many from this address");
            let headers = [("retry-after", wait.as_secs().max(1).to_string())];
            let html = pages::unavailable("Too many logins were started from your network.");
            return respond(session, 429, "text/html; charset=utf-8", &headers, html).await;
        }
    };
    let (state, nonce) = (&start.state, &start.nonce);
    let redirect_uri = format!("{}{PREFIX}callback", g.cfg.origin_for(host));
    let scope = g.oidc.settings.scopes.join(" ");
    let challenge = pkce_s256(&start.verifier);
    let mut params = vec![
        ("response_type", "code"),
        ("client_id", g.oidc.settings.client_id.as_str()),
        ("redirect_uri", &redirect_uri),
        ("scope", &scope),
        ("state", state),
        ("nonce", nonce),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
    ];
    if let Some(h) = login_hint.filter(|h| !h.is_empty()) {
        params.push(("login_hint", h));
    }
    let max_age = g.module(mi).max_age.map(|a| a.as_secs().to_string());
    if let Some(a) = &max_age {
        params.push(("max_age", a));
    }
    let url = with_params(&loaded.discovery.authorization_endpoint, &params);
    tracing::info!(module.name = %g.module(mi).name, client.ip = %client_ip, "login started");
    g.metrics
        .logins_started
        .with_label_values(&[g.module(mi).label()])
        .inc();
    cookies.extend(start.set_cookies);
    redirect(session, &url, cookies).await
}

async fn callback(g: &Gateway, session: &mut PSession, mi: usize, host: &str) -> Result<bool> {
    use crate::oidc::callback::{Answer, Refused, read};
    let req = session.req_header();
    // Before anything is looked up or redeemed: the response must be one
    // the code flow can give, from the provider this login used.
    let iss_required = g
        .oidc
        .loaded()
        .is_some_and(|l| l.discovery.authorization_response_iss_parameter_supported);
    let response = match read(req.uri.query().unwrap_or_default(), &g.oidc.issuer(), iss_required) {
        Ok(r) => r,
        Err(refused) => {
            tracing::warn!(module.name = %g.module(mi).label(), reason = %refused, "callback refused before the token request");
            let (metric, code, text) = match refused {
                Refused::WrongIssuer | Refused::IssuerMissing => (
                    "issuer",
                    "wrong_issuer",
                    "The answer came from an identity provider this login did not use.",
                ),
                Refused::Repeated(_) | Refused::Unexpected(_) => (
                    "callback",
                    "invalid_callback",
                    "The answer that reached this page was not one a login gives.",
                ),
            };
            g.login_failed(mi, metric);
            return respond_page(
                session,
                400,
                pages::idp_error(code, Some(text), &format!("{PREFIX}login")),
            )
            .await;
        }
    };
    let retry = format!("{PREFIX}login");
    let (txn, spent) = match g.finish_login(req, &response.state, unix_now()).await {
        Ok(Some(t)) => t,
        Ok(None) => {
            g.login_failed(mi, "state");
            return respond_page(session, 400, pages::login_expired(&retry)).await;
        }
        Err(_) => {
            g.login_failed(mi, "store");
            return super::store_down(session).await;
        }
    };
    let retry = format!(
        "{PREFIX}login?return_to={}",
        form_urlencoded::byte_serialize(txn.return_path.as_bytes()).collect::<String>()
    );
    if txn.route != g.module(mi).label() || txn.host != host {
        tracing::warn!("callback from a browser or host that did not start this login");
        g.login_failed(mi, "state");
        return respond_page(session, 400, pages::login_expired(&retry)).await;
    }
    let code = match response.answer {
        Answer::Code(code) => code,
        Answer::Error { error, description } => {
            tracing::info!(module.name = %g.module(mi).name, error = %error, "identity provider returned an error");
            g.login_failed(mi, "idp_error");
            return respond_page(session, 403, pages::idp_error(&error, description.as_deref(), &retry)).await;
        }
        Answer::Nothing => {
            g.login_failed(mi, "state");
            return respond_page(session, 400, pages::login_expired(&retry)).await;
        }
    };
    let redirect_uri = format!("{}{PREFIX}callback", g.cfg.origin_for(host));
    let tokens = match g.oidc.exchange(&code, &txn.verifier, &redirect_uri).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "code exchange failed");
            g.login_failed(mi, "code_exchange");
            return respond_page(
                session,
                502,
                pages::idp_error(
                    "exchange_failed",
                    Some("The identity provider did not accept the login. Try again."),
                    &retry,
                ),
            )
            .await;
        }
    };
    let Some(id_token) = tokens.id_token.clone() else {
        g.login_failed(mi, "id_token");
        return respond_page(session, 502, pages::idp_error("no_id_token", None, &retry)).await;
    };
    let module = g.module(mi);
    let issued_with = crate::oidc::client::IssuedWith {
        nonce: Some(&txn.nonce),
        access_token: Some(&tokens.access_token),
        code: Some(&code),
        max_age: module.max_age.map(|a| a.as_secs()),
    };
    let claims = match g
        .oidc
        .validate_id_token(&id_token, &issued_with, SystemTime::now())
        .await
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "ID token rejected");
            g.login_failed(mi, "id_token");
            return respond_page(
                session,
                502,
                pages::idp_error(
                    "invalid_id_token",
                    Some("The identity provider's answer could not be verified."),
                    &retry,
                ),
            )
            .await;
        }
    };
    let profile = match g.oidc.profile(&claims, &tokens.access_token).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(module.name = %module.label(), user.sub = %claims.sub, error = %e, "the user's claims could not be read");
            g.login_failed(mi, "userinfo");
            return respond_page(
                session,
                502,
                pages::idp_error(
                    "userinfo_failed",
                    Some("The identity provider's information about your account could not be read."),
                    &retry,
                ),
            )
            .await;
        }
    };
    let mut identity = Identity::from_profile(&claims.sub, claims.sid.as_deref(), profile);
    if !crate::policy::may_access(&identity.groups, &module.access_groups) {
        tracing::info!(module.name = %module.label(), user.sub = %claims.sub, decision = "deny", "access group check at login");
        g.login_failed(mi, "forbidden");
        return respond_page(
            session,
            403,
            pages::forbidden(&module.display_name, &module.access_groups),
        )
        .await;
    }
    // The seed's account conditions: a linked account, or a module account
    // whose email and/or username match (created when provisioning is on).
    let mut link_pending = false;
    if module.link_required {
        match g.link_of(&identity.sub, module.label()).await {
            Ok(Some(u)) => identity.module_user = Some(u.into()),
            Ok(None) => link_pending = true,
            Err(_) => {
                g.login_failed(mi, "store");
                return super::store_down(session).await;
            }
        }
    } else if let Some(accounts) = &g.accounts[mi] {
        match g.check_account(mi, accounts, &identity).await {
            Ok(crate::accounts::Outcome::Ok(a)) => identity.module_user = Some(a.username.into()),
            Ok(crate::accounts::Outcome::Provisioned(a)) => {
                tracing::info!(module.name = %module.label(), user.sub = %identity.sub, module.user = %a.username, "module account provisioned");
                identity.module_user = Some(a.username.into());
            }
            Ok(crate::accounts::Outcome::Refused(r)) => {
                tracing::info!(module.name = %module.label(), user.sub = %identity.sub, refusal = ?r, decision = "deny", "module account check");
                g.login_failed(mi, "account");
                return respond_page(
                    session,
                    403,
                    pages::account_refused(&module.display_name, &identity, &r),
                )
                .await;
            }
            Err(e) => {
                tracing::warn!(module.name = %module.label(), error = %e, "module account lookup failed");
                g.login_failed(mi, "account_lookup");
                return respond_page(session, 503, pages::accounts_unavailable(&module.display_name)).await;
            }
        }
    }
    let access_exp = unix_now() + tokens.expires_in.unwrap_or(300);
    // A new id at every login; an old session in this browser ends.
    if let Some(old) = g.cookie(session.req_header(), g.session_cookie).map(str::to_string)
        && g.end_session(&old).await.is_err()
    {
        g.login_failed(mi, "store");
        return super::store_down(session).await;
    }
    let id = random_token();
    let stored = g
        .put_session(
            &id,
            Arc::new(
                new_session(
                    g,
                    mi,
                    identity,
                    Tokens {
                        generation: 0,
                        id_token: Some(IdToken::new(&id_token)),
                        refresh_token: tokens.refresh_token.map(Into::into),
                        access_exp,
                    },
                )
                .with_link_pending(link_pending),
            ),
        )
        .await;
    if let Err(e) = stored {
        tracing::error!(error = %e, "cannot store a session");
        g.login_failed(mi, "store");
        return super::store_down(session).await;
    }
    tracing::info!(module.name = %module.label(), user.sub = %claims.sub, "login succeeded");
    g.metrics
        .logins
        .with_label_values(&[module.label(), "succeeded", ""])
        .inc();
    let cookie = g.session_cookie_header(&id, None);
    redirect(session, &txn.return_path, vec![cookie, spent]).await
}

/// Ends the unigate session, tells the module (its own logout path, with
/// the browser's cookies), expires the module's and unigate's cookies, and
/// sends the browser to the IdP's end_session_endpoint.
pub async fn logout(g: &Gateway, session: &mut PSession, mi: usize, host: &str, module_path: bool) -> Result<bool> {
    // A logout the browser's user may not have asked for is confirmed first.
    if let Some(done) = super::logout_confirm::guard(g, session, host).await? {
        return Ok(done);
    }
    let module = g.module(mi);
    let req = session.req_header();
    let Ok(readings) = g.module_cookie_readings(req, module) else {
        return super::module_cookies::too_many(session, module).await;
    };
    let ended = match g.cookie(req, g.session_cookie).map(str::to_string) {
        Some(id) => match g.end_session(&id).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "logout not possible: session store unavailable");
                return super::store_down(session).await;
            }
        },
        None => None,
    };
    let req = session.req_header();
    let logout_path = if module_path {
        Some(req.uri.path_and_query().map_or("/", |p| p.as_str()).to_string())
    } else {
        module.logout_paths.first().cloned()
    };
    if let Some(path) = logout_path
        && let Some(call) = g.module_call(mi)
    {
        // The module's own cookies only: never unigate's.
        let cookies = without_unigate_cookies(
            req.headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok()),
            |_| false,
        );
        let url = call.url(&path);
        let mut rb = call.client.get(&url).header("host", host);
        if let Some(cookies) = cookies {
            rb = rb.header("cookie", cookies);
        }
        match rb.send().await {
            Ok(r) => tracing::debug!(module.name = %module.name, status = r.status().as_u16(), "module told of logout"),
            Err(e) => tracing::warn!(module.name = %module.name, error = %e, "module could not be told of logout"),
        }
    }
    let mut cookies = vec![g.session_cookie_header("", Some(0))];
    for (i, c) in module.session_cookies.iter().enumerate() {
        // A local exception's record ends with the logout; a KaseyaOne
        // session's stays, so the cookie is refused if it turns up again.
        // Expired wherever it was set (its recorded path and domain), and
        // under the name it was sent with.
        let mut set = crate::session::CookieOwner::expiry(c, None);
        for r in readings.iter().filter(|r| r.name == i) {
            set.extend(super::module_cookies::raw_name_expiry(r, c, None));
            for o in g.reading_owners(r).await.unwrap_or_default() {
                if !o.kaseyaone {
                    for f in &r.forms {
                        g.forget_module_cookie(&crate::session::ModuleCookies::key(f)).await;
                    }
                }
                set.extend(crate::session::CookieOwner::expiry(c, Some(&o)));
                set.extend(super::module_cookies::raw_name_expiry(r, c, Some(&o)));
            }
        }
        let mut seen = std::collections::HashSet::new();
        set.retain(|v| seen.insert(v.clone()));
        cookies.extend(set);
    }
    let post_logout = g
        .oidc
        .settings
        .post_logout_redirect_uri
        .clone()
        .unwrap_or_else(|| format!("{}/", g.cfg.origin_for(host)));
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
        g.metrics.logouts.with_label_values(&["rp"]).inc();
    }
    let end_session = g.oidc.loaded().and_then(|l| l.discovery.end_session_endpoint.clone());
    match (end_session, id_token) {
        (Some(endpoint), Some(hint)) => {
            let url = with_params(
                &endpoint,
                &[
                    ("id_token_hint", &hint),
                    ("client_id", &g.oidc.settings.client_id),
                    ("post_logout_redirect_uri", &post_logout),
                ],
            );
            // The URL carries the ID token: no Referer takes it to the
            // IdP's pages' resources, and no cache keeps it (`respond`
            // sets `Cache-Control: no-store`).
            let mut headers: Vec<(&str, String)> = vec![("location", url), ("referrer-policy", "no-referrer".into())];
            headers.extend(cookies.into_iter().map(|c| ("set-cookie", c)));
            respond(session, 302, "text/plain; charset=utf-8", &headers, bytes::Bytes::new()).await
        }
        _ => {
            let mut headers: Vec<(&str, String)> = cookies.into_iter().map(|c| ("set-cookie", c)).collect();
            headers.push(("clear-site-data", "\"cookies\"".into()));
            respond(
                session,
                200,
                "text/html; charset=utf-8",
                &headers,
                pages::logged_out(&format!("{PREFIX}login")),
            )
            .await
        }
    }
}

/// A session for route `mi`: identity headers and App Launcher built once.
fn new_session(g: &Gateway, mi: usize, identity: Identity, tokens: Tokens) -> Session {
    let expires_at = unix_now() + g.cfg.session.absolute_timeout.as_secs();
    g.build_session(mi, identity, tokens, expires_at)
}

fn wants_json(session: &PSession) -> bool {
    session
        .req_header()
        .headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"))
}

/// Reads a small request body (a form), at most `max` bytes.
async fn read_form(session: &mut PSession, max: usize) -> Result<Option<Vec<(String, String)>>> {
    let mut body = Vec::new();
    while let Some(chunk) = session.read_request_body().await? {
        body.extend_from_slice(&chunk);
        if body.len() > max {
            return Ok(None);
        }
    }
    Ok(Some(form_urlencoded::parse(&body).into_owned().collect()))
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> &'a str {
    form.iter().find(|(k, _)| k == name).map_or("", |(_, v)| v.as_str())
}

/// A module with instances, at its own host: straight to the only instance
/// the user may open, or to the remembered one, else Choose an Instance.
pub async fn chooser(g: &Gateway, session: &mut PSession, mi: usize, host: &str, s: &Session) -> Result<bool> {
    let module = g.module(mi);
    let open: Vec<usize> = module
        .chooser
        .iter()
        .copied()
        .filter(|&r| crate::policy::may_access(&s.identity.groups, &g.module(r).access_groups))
        .collect();
    let req = session.req_header();
    let wanted = req.uri.path_and_query().map_or("/", |p| p.as_str());
    let path = safe_return_path(wanted).unwrap_or("/").to_string();
    let remembered = g.cookie(req, Own::Instance.name(g.cfg.tls)).and_then(|name| {
        open.iter()
            .copied()
            .find(|&r| g.module(r).instance.as_ref().is_some_and(|i| i.name == name))
    });
    let target = match open.as_slice() {
        [] => {
            return respond_page(
                session,
                403,
                pages::forbidden(&module.display_name, &module.access_groups),
            )
            .await;
        }
        [one] => Some(*one),
        _ => remembered,
    };
    match target.and_then(|r| g.module(r).hosts.first()) {
        Some(h) => redirect(session, &format!("{}{path}", g.cfg.origin_for(h)), vec![]).await,
        None => show_chooser(g, session, mi, host, &open, &path).await,
    }
}

async fn show_chooser(
    g: &Gateway,
    session: &mut PSession,
    mi: usize,
    _host: &str,
    open: &[usize],
    path: &str,
) -> Result<bool> {
    let module = g.module(mi);
    let return_to: String = form_urlencoded::byte_serialize(path.as_bytes()).collect();
    let list: Vec<(String, String, String)> = open
        .iter()
        .filter_map(|&r| {
            let i = g.module(r).instance.as_ref()?;
            Some((
                i.name.clone(),
                i.display_name.clone(),
                format!("{PREFIX}instances?choose={}&return_to={return_to}", i.name),
            ))
        })
        .collect();
    respond_page(session, 200, pages::choose_instance(&module.display_name, &list)).await
}

/// `/_unigate/instances`: Choose an Instance (the launcher's file tile);
/// `?choose=NAME` remembers the choice and opens the instance.
async fn instances(g: &Gateway, session: &mut PSession, mi: usize, host: &str) -> Result<bool> {
    let module = g.module(mi);
    if module.chooser.is_empty() {
        return respond_page(
            session,
            404,
            pages::page("Not found", maud::html! { h1 { "This module has no instances" } }),
        )
        .await;
    }
    let found = match g.session_for(session.req_header(), module, unix_now()).await {
        Ok(s) => s,
        Err(_) => return super::store_down(session).await,
    };
    let Some(s) = found.filter(|s| s.usable()) else {
        let back = session
            .req_header()
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        return start_login(g, session, mi, host, &back).await;
    };
    let open: Vec<usize> = module
        .chooser
        .iter()
        .copied()
        .filter(|&r| crate::policy::may_access(&s.identity.groups, &g.module(r).access_groups))
        .collect();
    if open.is_empty() {
        return respond_page(
            session,
            403,
            pages::forbidden(&module.display_name, &module.access_groups),
        )
        .await;
    }
    let req = session.req_header();
    let return_to = query_param(req, "return_to").unwrap_or_else(|| "/".into());
    let path = safe_return_path(&return_to).unwrap_or("/").to_string();
    let chosen = query_param(req, "choose").and_then(|name| {
        open.iter()
            .copied()
            .find(|&r| g.module(r).instance.as_ref().is_some_and(|i| i.name == name))
    });
    match chosen {
        Some(r) => {
            let inst = g.module(r);
            let (Some(h), Some(i)) = (inst.hosts.first(), inst.instance.as_ref()) else {
                return show_chooser(g, session, mi, host, &open, &path).await;
            };
            let cookie = Own::Instance.set_cookie(g.cfg.tls, &i.name, Some(31_536_000));
            tracing::info!(module.name = %module.name, instance = %i.name, user.sub = %s.identity.sub, "instance chosen");
            redirect(session, &format!("{}{path}", g.cfg.origin_for(h)), vec![cookie]).await
        }
        None => show_chooser(g, session, mi, host, &open, &path).await,
    }
}

/// A session whose module account is not linked yet: the link page first.
pub async fn link_first(g: &Gateway, session: &mut PSession) -> Result<bool> {
    let _ = g;
    if wants_json(session) || session.req_header().headers.contains_key("x-requested-with") {
        let body = serde_json::json!({
            "error": "link_required",
            "error_description": "link your module account first",
            "link_url": format!("{PREFIX}link"),
        });
        return respond(session, 403, "application/json", &[], body.to_string()).await;
    }
    let wanted = session.req_header().uri.path_and_query().map_or("/", |p| p.as_str());
    let back: String = form_urlencoded::byte_serialize(safe_return_path(wanted).unwrap_or("/").as_bytes()).collect();
    redirect(session, &format!("{PREFIX}link?return_to={back}"), vec![]).await
}

/// The link page: asks once for the module credentials, checks them at
/// the module's login page, and keeps only the link (sub → username).
async fn link(g: &Gateway, session: &mut PSession, mi: usize, host: &str) -> Result<bool> {
    let module = g.module(mi);
    let req = session.req_header();
    let Some(id) = g.cookie(req, g.session_cookie).map(str::to_string) else {
        return start_login(g, session, mi, host, "/").await;
    };
    let found = match g.session_for(req, module, unix_now()).await {
        Ok(s) => s,
        Err(_) => return super::store_down(session).await,
    };
    let req = session.req_header();
    let Some(s) = found.filter(|s| s.usable()) else {
        return start_login(g, session, mi, host, "/").await;
    };
    let post = req.method == http::Method::POST;
    let return_to = query_param(req, "return_to").unwrap_or_else(|| "/".into());
    if !s.link_pending {
        let path = safe_return_path(&return_to).unwrap_or("/").to_string();
        return redirect(session, &path, vec![]).await;
    }
    let who = s.identity.email.clone();
    let csrf = link_csrf_token(&id);
    if !post {
        let path = safe_return_path(&return_to).unwrap_or("/");
        return respond_page(
            session,
            200,
            pages::link_form(&module.display_name, &who, None, path, &csrf),
        )
        .await;
    }
    let Some(form) = read_form(session, 16 * 1024).await? else {
        return respond_page(
            session,
            413,
            pages::link_form(&module.display_name, &who, Some("That was too long."), "/", &csrf),
        )
        .await;
    };
    // Only this session's own link page may post: nothing is checked at
    // the module for a forged or another session's form.
    let sent = form
        .iter()
        .filter(|(k, _)| k == "csrf_token")
        .map(|(_, v)| v.as_bytes());
    let genuine = {
        let sent: Vec<&[u8]> = sent.collect();
        sent.len() == 1 && bool::from(subtle::ConstantTimeEq::ct_eq(sent[0], csrf.as_bytes()))
    };
    if !genuine {
        tracing::warn!(module.name = %module.label(), user.sub = %s.identity.sub, decision = "deny", "link form without this session's token");
        let page = pages::page(
            "Link refused",
            maud::html! { h1 { "This link request did not come from your link page" } p { a href={ (PREFIX) "link" } { "Open the link page again" } } },
        );
        return respond_page(session, 403, page).await;
    }
    let path = safe_return_path(field(&form, "return_to")).unwrap_or("/").to_string();
    let (user, password) = (field(&form, "module_username").trim(), field(&form, "module_password"));
    if user.is_empty() || password.is_empty() || user.len() > 256 || password.len() > 1024 {
        let page = pages::link_form(
            &module.display_name,
            &who,
            Some("Enter your module username and password."),
            &path,
            &csrf,
        );
        return respond_page(session, 400, page).await;
    }
    if let Some(wait) = g
        .link_attempts
        .hit(s.identity.sub.to_string(), std::time::Instant::now())
    {
        let headers = [("retry-after", wait.as_secs().max(1).to_string())];
        let msg = format!(
            "Too many attempts. Try again in {} minutes.",
            wait.as_secs().div_ceil(60)
        );
        let page = pages::link_form(&module.display_name, &who, Some(&msg), &path, &csrf);
        return respond(session, 429, "text/html; charset=utf-8", &headers, page).await;
    }
    match module_login(g, mi, host, user, password).await {
        Ok(true) => {
            if g.put_link(&s.identity.sub, module.label(), user).await.is_err() {
                return super::store_down(session).await;
            }
            let mut identity = s.identity.clone();
            identity.module_user = Some(user.into());
            let tokens = s.tokens.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let mut linked = new_session(g, mi, identity, tokens);
            linked.expires_at = s.expires_at;
            match g.replace_session(&id, &s, Arc::new(linked)).await {
                Ok(true) => {}
                // Ended while the module checked the password (a logout
                // elsewhere): not brought back; the next request logs in.
                Ok(false) => {
                    tracing::info!(module.name = %module.label(), user.sub = %s.identity.sub, "link dropped: the session ended meanwhile");
                    return redirect(session, &path, vec![]).await;
                }
                Err(_) => return super::store_down(session).await,
            }
            tracing::info!(module.name = %module.label(), user.sub = %s.identity.sub, module.user = %user, "module account linked");
            redirect(session, &path, vec![]).await
        }
        Ok(false) => {
            tracing::info!(module.name = %module.label(), user.sub = %s.identity.sub, "link refused: module did not accept the credentials");
            let page = pages::link_form(
                &module.display_name,
                &who,
                Some("Invalid username/password. The module did not accept these credentials."),
                &path,
                &csrf,
            );
            respond_page(session, 200, page).await
        }
        Err(e) => {
            tracing::warn!(module.name = %module.label(), error = %e, "module login endpoint unreachable");
            respond_page(session, 503, pages::accounts_unavailable(&module.display_name)).await
        }
    }
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
    mi: usize,
    host: &str,
    user: &str,
    password: &str,
) -> std::result::Result<bool, String> {
    use super::link_check::{Verdict, jar_after, judge};
    let module = g.module(mi);
    let call = g.module_call(mi).ok_or("no healthy upstream")?;
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
    if module.require_kaseyaone {
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

/// What a module that requires KaseyaOne does with a request that has no
/// KaseyaOne session.
pub enum Required {
    Done(bool),
    Proceed,
    Login,
}

/// Require Log In with KaseyaOne: module credentials only for the listed
/// exceptions, who sign in at `exception_path` (the module's login page);
/// their module sessions are recognised by a hash of the module's cookie.
pub async fn required(
    g: &Gateway,
    session: &mut PSession,
    ctx: &mut super::Ctx,
    mi: usize,
    host: &str,
) -> Result<Required> {
    let module = g.module(mi);
    let req = session.req_header();
    let path = req.uri.path();
    let at_exception = module.is_exception(path);
    let at_login = module.is_login(path);
    use super::local_credentials as lc;
    if (at_exception || at_login) && (lc::writes(&req.method) || lc::has_body(req)) && req.method != http::Method::POST
    {
        // Only a POSTed form is read (and checked) as a login.
        let headers = [("allow", "GET, HEAD, POST".to_string())];
        let page = pages::bad_module_login(&module.display_name, "Log in with the login form.");
        return respond(session, 405, "text/html; charset=utf-8", &headers, page)
            .await
            .map(Required::Done);
    }
    // The exception's login page shows the module's form; credentials in
    // its query string would be read by a module that accepts them there.
    if at_exception
        && !lc::writes(&req.method)
        && lc::the_username(&[], req.uri.query(), &module.username_field).is_err()
    {
        return lc::refuse_bad_login(session, module, lc::BadLogin::Ambiguous)
            .await
            .map(Required::Done);
    }
    if req.method == http::Method::POST && (at_exception || at_login) {
        return exception_login(g, session, mi, host, at_exception)
            .await
            .map(Required::Done);
    }
    if at_exception && !module.local_exceptions.is_empty() {
        if let Some(login) = module.login_paths.first() {
            ctx.rewrite = Some(match req.uri.query() {
                Some(q) => format!("{login}?{q}"),
                None => login.clone(),
            });
        }
        ctx.local = true;
        ctx.login_page = true;
        return Ok(Required::Proceed);
    }
    // A local exception's module session passes only when every value the
    // module could read as its session cookie is one: it may read any.
    let Ok(readings) = g.module_cookie_readings(req, module) else {
        return super::module_cookies::too_many(session, module)
            .await
            .map(Required::Done);
    };
    let mut local = !readings.is_empty();
    for r in &readings {
        match g.reading_owners(r).await {
            Ok(owners) => local &= !owners.is_empty() && owners.iter().all(|o| !o.kaseyaone),
            Err(e) => {
                tracing::error!(error = %e, "session store unavailable; failing closed");
                return super::store_down(session).await.map(Required::Done);
            }
        }
    }
    if local {
        ctx.local = true;
        return Ok(Required::Proceed);
    }
    Ok(Required::Login)
}

/// A module login form posted where KaseyaOne is required: forwarded only
/// for a listed exception; the module's answer goes back as it is, and the
/// module session it opens is remembered (by hash) as that user's.
async fn exception_login(
    g: &Gateway,
    session: &mut PSession,
    mi: usize,
    host: &str,
    at_exception: bool,
) -> Result<bool> {
    let module = g.module(mi);
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
    if !super::local_credentials::form_encoded(content_type) {
        return super::local_credentials::refuse_bad_login(
            session,
            module,
            super::local_credentials::BadLogin::Encoding,
        )
        .await;
    }
    let query = req.uri.query().map(str::to_string);
    let Some(form) = read_form(session, 64 * 1024).await? else {
        return respond_page(
            session,
            413,
            pages::page("Too large", maud::html! { h1 { "That form was too large" } }),
        )
        .await;
    };
    // The one username the module can read: every spelling of the field
    // in the body and the query string counts.
    let user = match super::local_credentials::the_username(&form, query.as_deref(), &module.username_field) {
        Ok(u) => u.trim().to_string(),
        Err(why) => return super::local_credentials::refuse_bad_login(session, module, why).await,
    };
    if !module.local_exceptions.iter().any(|u| u == &user) {
        tracing::info!(module.name = %module.label(), decision = "deny", "module credentials refused: Log In with KaseyaOne is required");
        let hint: String = form_urlencoded::byte_serialize(user.as_bytes()).collect();
        let login = format!("{PREFIX}login?login_hint={hint}");
        return respond_page(session, 403, pages::kaseyaone_required(&module.display_name, &login)).await;
    }
    let Some(call) = g.module_call(mi) else {
        return respond_page(session, 503, pages::no_healthy_upstream(&module.display_name)).await;
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
            return respond_page(session, 502, pages::upstream_down(&module.display_name)).await;
        }
    };
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("text/html; charset=utf-8")
        .to_string();
    let mut headers: Vec<(&str, String)> = Vec::new();
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
                    if let Err(e) = g.record_module_cookie(c.value_trimmed(), owner).await {
                        // Unrecorded, the module session would not be let
                        // through again: no half-done login.
                        tracing::error!(error = %e, "session store unavailable; failing closed");
                        return super::store_down(session).await;
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
    respond(session, status, &content_type, &headers, body).await
}

/// Back-Channel Logout 1.0: the IdP posts a logout token; every session of
/// its `sid` (or, without one, of its `sub`) ends on the spot. 200 when
/// done (also when nothing was live), 400 with a JSON error otherwise.
async fn backchannel_logout(g: &Gateway, session: &mut PSession) -> Result<bool> {
    let bad = |why: &str| serde_json::json!({"error": "invalid_request", "error_description": why}).to_string();
    if session.req_header().method != http::Method::POST {
        let headers = [("allow", "POST".to_string())];
        return respond(session, 405, "application/json", &headers, bad("POST a logout_token")).await;
    }
    let Some(form) = read_form(session, 64 * 1024).await? else {
        return respond(session, 400, "application/json", &[], bad("body too large")).await;
    };
    let token = field(&form, "logout_token");
    if token.is_empty() {
        return respond(session, 400, "application/json", &[], bad("logout_token is missing")).await;
    }
    let claims = match g.oidc.validate_logout_token(token, SystemTime::now()).await {
        Ok(c) => c,
        Err(e @ crate::oidc::logout_token::LogoutTokenRejected::KeysUnavailable) => {
            tracing::warn!(reason = %e, "back-channel logout postponed");
            return unavailable_json(session, &e.to_string()).await;
        }
        Err(e) => {
            tracing::warn!(reason = %e, "back-channel logout token refused");
            return respond(session, 400, "application/json", &[], bad(&e.to_string())).await;
        }
    };
    // A jti works once (kept past any token's lifetime with leeway); a
    // claim whose logout failed may be tried again.
    let first = match g.claim_jti(&claims.jti).await {
        Ok(f) => f,
        Err(e) => return store_down_json(session, &e).await,
    };
    if !first {
        tracing::warn!("back-channel logout token replayed");
        let e = crate::oidc::logout_token::LogoutTokenRejected::Replay;
        return respond(session, 400, "application/json", &[], bad(&e.to_string())).await;
    }
    let what = match (&claims.sid, &claims.sub) {
        (Some(sid), _) => crate::session::Revoke::Sid(sid.clone()),
        (None, Some(sub)) => crate::session::Revoke::Sub(sub.clone()),
        (None, None) => {
            let e = crate::oidc::logout_token::LogoutTokenRejected::NoSubject;
            return respond(session, 400, "application/json", &[], bad(&e.to_string())).await;
        }
    };
    // Bearer tokens of that user that name no IdP session cannot be told
    // apart from this session's: they end with it.
    if let (Some(_), Some(sub)) = (&claims.sid, &claims.sub)
        && let Err(e) = g.mark_bearer_revoked(&super::bearer::sidless_mark(sub)).await
    {
        return store_down_json(session, &e).await;
    }
    let ended = match g.revoke(&what).await {
        Ok(n) => n,
        // Not done, and the jti not marked done: the IdP's retry works.
        Err(e) => return store_down_json(session, &e).await,
    };
    g.finish_jti(&claims.jti).await;
    tracing::info!(kind = "backchannel", ended, sid = ?claims.sid, user.sub = ?claims.sub, "logout");
    g.metrics
        .logouts
        .with_label_values(&["backchannel"])
        .inc_by(ended as u64);
    respond(session, 200, "application/json", &[], "{}").await
}

/// The shared store is down during a back-channel logout: 503 (the IdP
/// retries).
async fn store_down_json(session: &mut PSession, e: &crate::session::redis::StoreError) -> Result<bool> {
    tracing::error!(error = %e, "back-channel logout: session store unavailable");
    unavailable_json(session, "session store unavailable").await
}

/// A back-channel logout that cannot be carried out now: 503 with
/// `Retry-After`, so that the IdP sends it again.
async fn unavailable_json(session: &mut PSession, why: &str) -> Result<bool> {
    let body = serde_json::json!({"error": "temporarily_unavailable", "error_description": why});
    let headers = [("retry-after", "5".to_string())];
    respond(session, 503, "application/json", &headers, body.to_string()).await
}

/// Front-Channel Logout 1.0: the IdP's logout page frames this with `iss`
/// and `sid`. The frame sends no SameSite cookies, so the sessions are
/// found by `sid`, server-side. Only the IdP's origin may frame it.
async fn frontchannel_logout(g: &Gateway, session: &mut PSession) -> Result<bool> {
    let req = session.req_header();
    let (iss, sid) = (query_param(req, "iss"), query_param(req, "sid"));
    let frame = format!("frame-ancestors {}", g.idp_origin);
    let headers = [("content-security-policy", frame)];
    let ok_iss = iss.as_deref() == Some(g.oidc.issuer().as_str());
    let Some(sid) = sid.filter(|s| ok_iss && !s.is_empty() && s.len() <= 255) else {
        tracing::warn!("front-channel logout without this issuer and a sid");
        let page = pages::page(
            "Logout failed",
            maud::html! { h1 { "This logout request is not valid" } },
        );
        return respond(session, 400, "text/html; charset=utf-8", &headers, page).await;
    };
    let ended = match g.revoke(&crate::session::Revoke::Sid(sid)).await {
        Ok(n) => n,
        Err(_) => return super::store_down(session).await,
    };
    tracing::info!(kind = "frontchannel", ended, "logout");
    g.metrics
        .logouts
        .with_label_values(&["frontchannel"])
        .inc_by(ended as u64);
    let page = pages::page("Logged out", maud::html! { h1 { "Logged out" } });
    respond(session, 200, "text/html; charset=utf-8", &headers, page).await
}

/// Expires module session cookies issued under a KaseyaOne session that has
/// ended, and sends the request round again (a navigation then logs in; an
/// API client gets 401).
pub async fn expire_module_cookies(
    g: &Gateway,
    session: &mut PSession,
    mi: usize,
    set_cookies: Vec<String>,
) -> Result<bool> {
    let module = g.module(mi);
    // The records stay: the module may still honour those cookies, and
    // they must keep being refused wherever they turn up.
    let mut set_cookies = set_cookies;
    set_cookies.dedup();
    let mut headers: Vec<(&str, String)> = set_cookies.into_iter().map(|c| ("set-cookie", c)).collect();
    tracing::info!(module.name = %module.label(), "module session of an ended KaseyaOne session refused; its cookies expired");
    let req = session.req_header();
    let api = super::client_kind(req) == crate::policy::ClientKind::Api;
    if api {
        headers.push(("www-authenticate", "Bearer realm=\"unigate\"".into()));
        let body =
            r#"{"error":"unauthenticated","error_description":"the session has ended; log in with KaseyaOne again"}"#;
        return respond(session, 401, "application/json", &headers, body).await;
    }
    let wanted = req.uri.path_and_query().map_or("/", |p| p.as_str());
    let again = safe_return_path(wanted).unwrap_or("/").to_string();
    if module.local_login || module.require_kaseyaone {
        // The module's own login (or its exceptions) decides next: the
        // same page again, without the dead cookies.
        headers.push(("location", again));
        return respond(session, 302, "text/plain; charset=utf-8", &headers, bytes::Bytes::new()).await;
    }
    let host = Gateway::host_of(req).map(|h| h.into_owned()).unwrap_or_default();
    let cookies = headers.into_iter().map(|(_, v)| v).collect();
    start_login_setting(g, session, mi, &host, &again, None, cookies).await
}
