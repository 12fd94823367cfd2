//! Logout only when the user asked for it. A logout ends the KaseyaOne
//! session everywhere, so another site must not trigger one with a link,
//! an image or a form: a GET from another site (`Sec-Fetch-Site:
//! cross-site`), one that is not a top-level navigation (an image or frame
//! on the module's own pages), or one without unigate's session cookie
//! gets a confirmation
//! page whose form POSTs a token bound to this browser (an HMAC of a
//! random value kept in a short-lived cookie), as the
//! embedded IdP asks before a logout without `id_token_hint`. A POST
//! needs that token, or must come from the module's own pages with a
//! session (the module's own logout form).

use pingora::prelude::*;
use pingora::proxy::Session as PSession;

use super::cookies::Own;
use super::{Gateway, respond};
use crate::pages;

/// What to do with a request to a logout path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Log out now.
    Now,
    /// Show the confirmation page; nothing ends.
    Confirm,
    /// A POST that proves nothing: 403.
    Refuse,
}

/// The inputs of the decision, gathered from the request.
#[derive(Debug, Clone, Copy)]
pub struct LogoutRequest<'a> {
    pub post: bool,
    /// `Sec-Fetch-Site`, lowercase (browsers set it; pages cannot).
    pub fetch_site: Option<&'a str>,
    /// `Origin` is this module's origin.
    pub same_origin: bool,
    /// The request carries a unigate session cookie.
    pub has_session: bool,
    /// A POST with the confirmation token of this browser's cookie.
    pub token_ok: bool,
    /// A prefetch or prerender (`Sec-Purpose`/`Purpose: prefetch`): the
    /// browser guessing at a link, not the user following it.
    pub prefetch: bool,
    /// Not a top-level navigation, by the browser's word
    /// (`Sec-Fetch-Mode` other than `navigate`, or `Sec-Fetch-Dest` other
    /// than `document`): an image, a script, a frame or a fetch, which
    /// a page on the module or a sibling site can make without the user.
    pub subresource: bool,
}

pub fn decide(r: LogoutRequest<'_>) -> Gate {
    if r.post {
        if r.token_ok {
            return Gate::Now;
        }
        // The module's own logout form: same origin, said by the browser
        // (`Sec-Fetch-Site`, or `Origin` where that is not sent).
        let from_module = match r.fetch_site {
            Some(site) => site == "same-origin",
            None => r.same_origin,
        };
        return if from_module && r.has_session {
            Gate::Now
        } else if !r.has_session {
            // No session of unigate's in this browser: a stale token (a
            // page of another tab set a new one). Asking again costs
            // nothing and ends nothing.
            Gate::Confirm
        } else {
            Gate::Refuse
        };
    }
    if !r.has_session || r.prefetch || r.subresource {
        return Gate::Confirm;
    }
    match r.fetch_site {
        // A link on the module's pages, a sibling host, a typed URL or a
        // bookmark, or a client that does not say.
        None | Some("same-origin" | "same-site" | "none") => Gate::Now,
        _ => Gate::Confirm,
    }
}

/// How long a confirmation page may be answered.
pub(super) const CONFIRM_SECS: u64 = 600;

/// Decides on a request to a logout path; `Some` when it was answered here
/// (confirmation page or refusal), `None` when the logout goes ahead.
pub async fn guard(g: &Gateway, session: &mut PSession, host: &str) -> Result<Option<bool>> {
    let tls = g.cfg().tls;
    let req = session.req_header();
    let post = req.method == http::Method::POST;
    let fetch_site = req
        .headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase);
    let origin = g.cfg().origin_for(host);
    let same_origin = req
        .headers
        .get(http::header::ORIGIN)
        .is_some_and(|o| o.as_bytes() == origin.as_bytes());
    let has_session = super::request::cookie(req, g.state.session_cookie).is_some_and(crate::session::is_session_id);
    let nonce = super::request::cookie(req, Own::Logout.name(tls))
        .filter(|v| crate::session::is_session_id(v))
        .map(str::to_string);
    let prefetch = ["sec-purpose", "purpose", "x-moz", "x-purpose"].iter().any(|n| {
        req.headers
            .get(*n)
            .is_some_and(|v| v.as_bytes().windows(8).any(|w| w.eq_ignore_ascii_case(b"prefetch")))
    });
    let fetch = |n: &str| req.headers.get(n).map(|v| v.as_bytes().to_ascii_lowercase());
    let subresource = fetch("sec-fetch-mode").is_some_and(|m| m != b"navigate")
        || fetch("sec-fetch-dest").is_some_and(|d| d != b"document");
    let token_ok = match (&nonce, post) {
        (Some(n), true) => match read_token(session).await? {
            Some(t) => g.state.signer.deployment.logout_token_ok(n, &t),
            None => false,
        },
        _ => false,
    };
    let gate = decide(LogoutRequest {
        post,
        fetch_site: fetch_site.as_deref(),
        same_origin,
        has_session,
        token_ok,
        prefetch,
        subresource,
    });
    match gate {
        Gate::Now => Ok(None),
        Gate::Confirm => {
            let nonce = nonce.unwrap_or_else(crate::crypto::random_token);
            let token = g.state.signer.deployment.logout_token(&nonce);
            let req = session.req_header();
            let action = req.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
            tracing::info!(fetch_site = ?fetch_site, has_session, "logout to be confirmed");
            let headers = [
                ("set-cookie", Own::Logout.set_cookie(tls, &nonce, Some(CONFIRM_SECS))),
                // The button cannot be clicked through someone else's frame.
                ("content-security-policy", "frame-ancestors 'none'".to_string()),
                ("x-frame-options", "DENY".to_string()),
            ];
            respond(
                session,
                200,
                "text/html; charset=utf-8",
                &headers,
                confirm_page(&action, &token),
            )
            .await
            .map(Some)
        }
        Gate::Refuse => {
            tracing::warn!(fetch_site = ?fetch_site, "logout POST without a valid confirmation refused");
            let page = pages::page(
                "Logout not confirmed",
                maud::html! {
                    h1 { "This logout was not confirmed" }
                    p { "The request did not come from this site's logout page. You are still logged in." }
                },
            );
            respond(session, 403, "text/html; charset=utf-8", &[], page)
                .await
                .map(Some)
        }
    }
}

/// The `token` field of a small urlencoded form body.
async fn read_token(session: &mut PSession) -> Result<Option<String>> {
    let mut body = Vec::new();
    while let Some(chunk) = session.read_request_body().await? {
        body.extend_from_slice(&chunk);
        if body.len() > 8 * 1024 {
            return Ok(None);
        }
    }
    Ok(form_urlencoded::parse(&body)
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned()))
}

fn confirm_page(action: &str, token: &str) -> String {
    pages::page(
        "Log out",
        maud::html! {
            h1 { "Log out of KaseyaOne?" }
            p { "You will be logged out of KaseyaOne and of the modules you opened with it." }
            form method="post" action=(action) {
                input type="hidden" name="token" value=(token);
                button type="submit" { "Log out" }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_logout_the_user_asked_for_goes_ahead() {
        use Gate::*;
        let r = |post, fetch_site, same_origin, has_session, token_ok| LogoutRequest {
            post,
            fetch_site,
            same_origin,
            has_session,
            token_ok,
            prefetch: false,
            subresource: false,
        };
        let embedded = |fetch_site| LogoutRequest {
            subresource: true,
            ..r(false, fetch_site, false, true, false)
        };
        let prefetched = |fetch_site| LogoutRequest {
            prefetch: true,
            ..r(false, fetch_site, false, true, false)
        };
        for (req, want) in [
            // GET with a session: at once unless from another site.
            (r(false, Some("same-origin"), false, true, false), Now),
            (r(false, Some("same-site"), false, true, false), Now),
            (r(false, Some("none"), false, true, false), Now),
            (r(false, None, false, true, false), Now),
            (r(false, Some("cross-site"), false, true, false), Confirm),
            (r(false, Some("something-new"), false, true, false), Confirm),
            // GET without a session cookie: nothing proves the user asked.
            (r(false, Some("same-origin"), true, false, false), Confirm),
            (r(false, None, false, false, false), Confirm),
            (r(false, Some("cross-site"), false, false, true), Confirm),
            // A browser prefetching the module's logout link.
            (prefetched(Some("same-origin")), Confirm),
            (prefetched(None), Confirm),
            // An image or frame on the module's own pages or a sibling's.
            (embedded(Some("same-origin")), Confirm),
            (embedded(Some("same-site")), Confirm),
            // POST: the token, or the module's own form with a session.
            (r(true, Some("same-origin"), true, true, true), Now),
            (r(true, Some("cross-site"), false, false, true), Now),
            (r(true, Some("same-origin"), true, true, false), Now),
            (r(true, None, true, true, false), Now),
            (r(true, Some("cross-site"), false, true, false), Refuse),
            (r(true, Some("cross-site"), true, true, false), Refuse),
            (r(true, Some("same-site"), false, true, false), Refuse),
            (r(true, None, false, true, false), Refuse),
            // Without a session (a refusal page's stale token, another
            // tab's): asked again, with a fresh token.
            (r(true, Some("same-origin"), true, false, false), Confirm),
            (r(true, None, false, false, false), Confirm),
        ] {
            assert_eq!(decide(req), want, "{req:?}");
        }
    }
}
