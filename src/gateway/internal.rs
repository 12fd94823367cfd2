//! What unigate answers itself: `/_unigate/healthz|readyz|jwks.json` on any
//! host; and, on a module's host, the login start, the OIDC callback, and
//! logout (unigate's own path and the module's logout paths).

use std::sync::Arc;
use std::time::SystemTime;

use pingora::prelude::*;
use pingora::proxy::Session as PSession;

use super::{Gateway, PREFIX, redirect, respond, respond_page, unix_now};
use crate::idp::oauth::{pkce_s256, with_params};
use crate::idp::store::{random_token, token_key};
use crate::oidc::return_url::safe_return_path;
use crate::pages;
use crate::session::{Identity, LoginTxn, Session, Tokens};

/// The cookie binding login transactions to one browser.
const LOGIN_COOKIE: &str = "unigate_login";

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
            if g.oidc.ready() {
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
    let Some(s) = g.session_for(session.req_header(), g.module(mi)).filter(|s| s.usable()) else {
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
    let tiles: Vec<pages::LauncherTile> = g
        .cfg
        .modules
        .iter()
        .filter(|m| crate::policy::may_access(&s.identity.groups, &m.access_groups))
        .filter_map(|m| {
            m.hosts.first().map(|h| pages::LauncherTile {
                name: m.name.clone(),
                url: format!("{}/", g.cfg.origin_for(h)),
            })
        })
        .collect();
    let json = session
        .req_header()
        .headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"));
    if json {
        let body = serde_json::json!({
            "user": s.identity.username,
            "modules": tiles.iter().map(|t| serde_json::json!({"name": t.name, "url": t.url, "tile": "arrow"})).collect::<Vec<_>>(),
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
/// path kept server-side, the transaction bound to this browser's cookie.
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
    let Some(loaded) = g.oidc.loaded() else {
        return respond_page(
            session,
            503,
            pages::unavailable("The KaseyaOne identity provider cannot be reached."),
        )
        .await;
    };
    if let Some(addr) = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip())
        && let Some(wait) = g
            .login_starts
            .hit(crate::idp::store::client_key(addr), std::time::Instant::now())
    {
        let headers = [("retry-after", wait.as_secs().max(1).to_string())];
        let html = pages::unavailable("Too many logins were started from your network.");
        return respond(session, 429, "text/html; charset=utf-8", &headers, html).await;
    }
    let existing = g
        .cookie(session.req_header(), LOGIN_COOKIE)
        .filter(|v| crate::session::is_session_id(v))
        .map(str::to_string);
    let (binding, set_cookie) = match existing {
        Some(b) => (b, None),
        None => {
            let b = random_token();
            let secure = if g.cfg.tls { "; Secure" } else { "" };
            let c = format!("{LOGIN_COOKIE}={b}; Path=/; HttpOnly; SameSite=Lax{secure}; Max-Age=3600");
            (b, Some(c))
        }
    };
    let (state, nonce, verifier) = (random_token(), random_token(), random_token());
    let redirect_uri = format!("{}{PREFIX}callback", g.cfg.origin_for(host));
    let scope = g.oidc.settings.scopes.join(" ");
    let challenge = pkce_s256(&verifier);
    let mut params = vec![
        ("response_type", "code"),
        ("client_id", g.oidc.settings.client_id.as_str()),
        ("redirect_uri", &redirect_uri),
        ("scope", &scope),
        ("state", &state),
        ("nonce", &nonce),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
    ];
    if let Some(h) = login_hint.filter(|h| !h.is_empty()) {
        params.push(("login_hint", h));
    }
    let url = with_params(&loaded.discovery.authorization_endpoint, &params);
    g.txns.insert(
        state,
        LoginTxn {
            binding: token_key(&binding),
            nonce,
            verifier,
            return_path: return_path.to_string(),
            module: mi,
            host: host.to_string(),
        },
    );
    tracing::info!(module.name = %g.module(mi).name, "login started");
    redirect(session, &url, set_cookie.into_iter().collect()).await
}

async fn callback(g: &Gateway, session: &mut PSession, mi: usize, host: &str) -> Result<bool> {
    let req = session.req_header();
    let retry = format!("{PREFIX}login");
    let state = query_param(req, "state").unwrap_or_default();
    let Some(txn) = g.txns.take(&state) else {
        return respond_page(session, 400, pages::login_expired(&retry)).await;
    };
    let retry = format!(
        "{PREFIX}login?return_to={}",
        form_urlencoded::byte_serialize(txn.return_path.as_bytes()).collect::<String>()
    );
    let bound = g.cookie(req, LOGIN_COOKIE).map(token_key);
    if bound.as_deref() != Some(txn.binding.as_str()) || txn.module != mi || txn.host != host {
        tracing::warn!("callback from a browser or host that did not start this login");
        return respond_page(session, 400, pages::login_expired(&retry)).await;
    }
    // RFC 9207: when the IdP names itself, it must be the one we asked.
    if let Some(iss) = query_param(req, "iss")
        && iss != g.oidc.settings.issuer
    {
        tracing::warn!("callback names another issuer (mix-up attack?)");
        return respond_page(
            session,
            400,
            pages::idp_error(
                "wrong_issuer",
                Some("The answer came from an identity provider this login did not use."),
                &retry,
            ),
        )
        .await;
    }
    if let Some(error) = query_param(req, "error") {
        let description = query_param(req, "error_description");
        let error: String = error.chars().take(64).collect();
        let description: Option<String> = description.map(|d| d.chars().take(300).collect());
        tracing::info!(module.name = %g.module(mi).name, error = %error, "identity provider returned an error");
        return respond_page(session, 403, pages::idp_error(&error, description.as_deref(), &retry)).await;
    }
    let Some(code) = query_param(req, "code") else {
        return respond_page(session, 400, pages::login_expired(&retry)).await;
    };
    let redirect_uri = format!("{}{PREFIX}callback", g.cfg.origin_for(host));
    let tokens = match g.oidc.exchange(&code, &txn.verifier, &redirect_uri).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "code exchange failed");
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
        return respond_page(session, 502, pages::idp_error("no_id_token", None, &retry)).await;
    };
    let claims = match g
        .oidc
        .validate_id_token(&id_token, Some(&txn.nonce), SystemTime::now())
        .await
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "ID token rejected");
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
    let module = g.module(mi);
    if !crate::policy::may_access(&claims.groups, &module.access_groups) {
        tracing::info!(module.name = %module.name, user.sub = %claims.sub, decision = "deny", "access group check at login");
        return respond_page(session, 403, pages::forbidden(&module.name, &module.access_groups)).await;
    }
    let identity = Identity {
        sub: claims.sub.clone(),
        sid: claims.sid.clone(),
        email: claims.email.clone().unwrap_or_default(),
        name: claims.name.clone().unwrap_or_default(),
        username: claims.preferred_username.clone().unwrap_or_default(),
        company: claims.company.clone().unwrap_or_default(),
        groups: claims.groups.clone(),
    };
    let access_exp = unix_now() + tokens.expires_in.unwrap_or(300);
    // A new id at every login; an old session in this browser ends.
    if let Some(old) = g.cookie(session.req_header(), g.session_cookie) {
        g.sessions.remove(old);
    }
    let id = random_token();
    g.sessions.insert(
        id.clone(),
        Arc::new(Session::new(
            module.name.clone(),
            identity.clone(),
            super::identity::header_set(&identity, module.headers, g.cfg.identity.max_header_value),
            Tokens {
                id_token: Some(id_token),
                refresh_token: tokens.refresh_token,
                access_exp,
            },
        )),
    );
    tracing::info!(module.name = %module.name, user.sub = %claims.sub, "login succeeded");
    let cookie = g.session_cookie_header(&id, None);
    redirect(session, &txn.return_path, vec![cookie]).await
}

/// Ends the unigate session, tells the module (its own logout path, with
/// the browser's cookies), expires the module's and unigate's cookies, and
/// sends the browser to the IdP's end_session_endpoint.
pub async fn logout(g: &Gateway, session: &mut PSession, mi: usize, host: &str, module_path: bool) -> Result<bool> {
    let module = g.module(mi);
    let req = session.req_header();
    let ended = g.cookie(req, g.session_cookie).and_then(|id| g.sessions.remove(id));
    let logout_path = if module_path {
        Some(req.uri.path_and_query().map_or("/", |p| p.as_str()).to_string())
    } else {
        module.logout_paths.first().cloned()
    };
    if let Some(path) = logout_path {
        let cookies: Vec<String> = req
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect();
        let url = format!("http://{}{}", module.upstream, path);
        let mut rb = g.http.get(&url).header("host", host);
        if !cookies.is_empty() {
            rb = rb.header("cookie", cookies.join("; "));
        }
        match rb.send().await {
            Ok(r) => tracing::debug!(module.name = %module.name, status = r.status().as_u16(), "module told of logout"),
            Err(e) => tracing::warn!(module.name = %module.name, error = %e, "module could not be told of logout"),
        }
    }
    let mut cookies = vec![g.session_cookie_header("", Some(0))];
    for c in &module.session_cookies {
        cookies.push(format!(
            "{c}=; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT"
        ));
    }
    let post_logout = g
        .oidc
        .settings
        .post_logout_redirect_uri
        .clone()
        .unwrap_or_else(|| format!("{}/", g.cfg.origin_for(host)));
    let id_token = ended
        .as_ref()
        .and_then(|s| s.tokens.lock().unwrap_or_else(|p| p.into_inner()).id_token.clone());
    if let Some(s) = &ended {
        tracing::info!(module.name = %module.name, user.sub = %s.identity.sub, "logout");
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
            redirect(session, &url, cookies).await
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
