//! The request decision: what unigate does with a request for a route,
//! from plain facts about the request and what the gateway found for it
//! (the session, whom the module cookies were issued to). No I/O, no
//! clock: the gateway gathers the facts, looks things up, calls
//! `unguarded` and then `decide`, and carries out the `Decision`.

use crate::config::route::{LoginMode, Route};
use crate::oidc::return_url::safe_return_path;
use crate::policy::credentials::{self, BadLogin};
use crate::policy::module_cookies::{self, Check, Cookies};
use crate::policy::reject::Reject;
use crate::policy::rules::{Rule, RuleAccess};
use crate::policy::{ClientKind, may_access};
use crate::session::Session;

/// Where unigate answers itself, on every module host.
pub const PREFIX: &str = "/_unigate/";

/// What the decision needs to know about a request. What needs a header
/// look-up (the client kind, a bearer token, a body) is read when a rule
/// asks for it: most requests, with a session, never do.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// The canonical path (`policy::path`): what the module is sent.
    pub path: &'a str,
    /// The path and query as sent on.
    pub target: &'a str,
    pub query: Option<&'a str>,
    pub method: &'a http::Method,
    pub headers: &'a http::HeaderMap,
}

impl<'a> RequestFacts<'a> {
    /// The `Authorization: Bearer` token, if any.
    pub fn bearer(&self) -> Option<&'a str> {
        bearer_token(self.headers)
    }

    /// A browser navigating, or a script (see `client_kind`).
    pub fn client(&self) -> ClientKind {
        client_kind(self.headers)
    }

    /// Whether the request declares a body (some frameworks read one on
    /// GET too).
    pub fn has_body(&self) -> bool {
        self.headers.contains_key(http::header::TRANSFER_ENCODING)
            || self
                .headers
                .get(http::header::CONTENT_LENGTH)
                .is_some_and(|v| v.as_bytes() != b"0")
    }
}

/// The `Authorization: Bearer` token of these headers, if any.
pub fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
}

/// A browser navigating, or a script that must get a 401 and JSON errors
/// rather than a redirect it cannot follow (`policy::classify`). A request
/// with a bearer token is a script's. Every refusal is written for the
/// client kind this says.
pub fn client_kind(headers: &http::HeaderMap) -> ClientKind {
    if bearer_token(headers).is_some() {
        return ClientKind::Api;
    }
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    crate::policy::classify(
        h("accept"),
        headers.contains_key("x-requested-with"),
        h("sec-fetch-mode"),
    )
}

/// What the gateway found for a guarded request.
#[derive(Debug, Clone, Copy)]
pub struct Found<'a> {
    /// The request's session for this route, if it is usable.
    pub session: Option<&'a Session>,
    /// The module session cookies and whom each was issued to.
    pub cookies: &'a Cookies,
    /// Unix time now (for a rule's login age).
    pub now: u64,
}

/// What unigate does with a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// To the module as it is, with no identity: a public path, or a
    /// module with Unified Login off.
    Pass,
    /// One of unigate's own pages (`/_unigate/…`).
    Internal,
    /// One of the module's logout paths: unigate logs out first.
    Logout,
    /// To the module with the session's identity, without the module
    /// cookies whose bits are in `strip_cookies` (another user's).
    Forward { strip_cookies: u64 },
    /// To the module with no identity: the module's own login and session
    /// decide. `login_page`: the "Log In with KaseyaOne" button goes on
    /// the page; `rewrite`: the target asked of the module instead.
    ForwardLocal { login_page: bool, rewrite: Option<String> },
    /// The bearer token decides (checked by the gateway).
    Bearer,
    /// To KaseyaOne to log in, then back to `return_path` (`max_age`,
    /// seconds: a rule there asks for a login at most this old, so the
    /// provider is asked for one).
    Login { return_path: String, max_age: Option<u64> },
    /// To KaseyaOne to log in again (`max_age`, seconds: a rule's
    /// `max_login_age` the session's login is older than), then back to
    /// `return_path`.
    StepUp { return_path: String, max_age: u64 },
    /// The session's module account is not linked yet: the link page first.
    LinkFirst,
    /// A module with instances, at its own host: to an instance, or
    /// Choose an Instance.
    Chooser,
    /// Module cookies of a KaseyaOne session that has ended: these
    /// `Set-Cookie` values expire them, and the request starts over.
    ExpireCookies(Vec<String>),
    /// Module credentials posted where Log In with KaseyaOne is required:
    /// only a local exception's go on (`at_exception`: to the exception
    /// path).
    ExceptionLogin { at_exception: bool },
    /// Refused.
    Reject(Reject),
}

/// The decision for a request that needs no look-up: unigate's own
/// paths, logout paths, public paths, and modules with Unified Login off.
/// `None`: the request is guarded (look up, then `decide`).
pub fn unguarded(facts: &RequestFacts<'_>, route: &Route) -> Option<Decision> {
    let internal = facts.path.starts_with(PREFIX);
    if !route.unified_login {
        // Unified Login off: the module's own login only, untouched.
        return Some(if internal {
            Decision::Reject(Reject::UnifiedLoginOff)
        } else {
            Decision::Pass
        });
    }
    if internal {
        return Some(Decision::Internal);
    }
    if route.is_logout(facts.path) {
        return Some(Decision::Logout);
    }
    match route
        .rule(facts.path, facts.method, facts.query, facts.headers)
        .map(|r| &r.access)
    {
        Some(RuleAccess::Public) => Some(Decision::Pass),
        Some(RuleAccess::Deny) => Some(Decision::Reject(Reject::AreaForbidden {
            account: None,
            need: Vec::new(),
        })),
        Some(_) => None,
        None if route.is_public(facts.path) => Some(Decision::Pass),
        None => None,
    }
}

/// A request to a logout path: unigate's logout (the module's, unigate's
/// and KaseyaOne's sessions end, after a confirmation where the browser's
/// user may not have asked), unless the browser is logged in to the module
/// with module credentials only (no KaseyaOne session here, and every
/// module session cookie it sends was issued to a login with module
/// credentials): then the module logs its own user out.
pub fn logout(route: &Route, has_session: bool, cookies: &Cookies) -> Decision {
    let local_logins = route.module_credentials() || route.requires_kaseyaone();
    if !has_session && local_logins && module_cookies::all_local(cookies) {
        Decision::ForwardLocal {
            login_page: false,
            rewrite: None,
        }
    } else {
        Decision::Logout
    }
}

/// The decision for a guarded request.
pub fn decide(facts: &RequestFacts<'_>, route: &Route, found: &Found<'_>) -> Decision {
    let rule = route.rule(facts.path, facts.method, facts.query, facts.headers);
    if let Some(s) = found.session {
        if let Some(refused) = refused_by(rule, route, &s.identity) {
            return Decision::Reject(refused);
        }
        if s.link_pending {
            return Decision::LinkFirst;
        }
        if !route.chooser.is_empty() {
            return Decision::Chooser;
        }
        if let Some(max_age) = rule.and_then(|r| r.max_login_age)
            && !fresh(s.auth_time(), max_age.as_secs(), found.now)
        {
            return step_up(facts, max_age.as_secs());
        }
        if credentials::beside_session(facts, route) {
            return Decision::Reject(Reject::CredentialsBesideSession {
                email: s.identity.email.to_string(),
            });
        }
        return match module_cookies::check(route, found.cookies, Some(s)) {
            Check::TooMany => Decision::Reject(Reject::TooManyCookies),
            Check::Strip(bits) => Decision::Forward { strip_cookies: bits },
            Check::Pass | Check::Expire(_) => Decision::Forward { strip_cookies: 0 },
        };
    }
    // A module session opened under a KaseyaOne session that has ended
    // (logout, back-/front-channel logout, expiry) never gets through: its
    // cookies are expired and the request starts over.
    match module_cookies::check(route, found.cookies, None) {
        Check::Expire(set) => return Decision::ExpireCookies(set),
        Check::TooMany => return Decision::Reject(Reject::TooManyCookies),
        Check::Pass | Check::Strip(_) => {}
    }
    if facts.bearer().is_some() {
        return Decision::Bearer;
    }
    // A module's Choose an Instance host has no page of its own to show:
    // to KaseyaOne, then to an instance, whatever the login mode; so does
    // a part of the module a rule guards: only a KaseyaOne login tells
    // whose groups, and how old a login, it is.
    if !route.chooser.is_empty() || rule.is_some() {
        return login_or_401(facts, rule.and_then(|r| r.max_login_age).map(|a| a.as_secs()));
    }
    match route.login {
        LoginMode::Required => {
            if let Some(d) = required(facts, route, found.cookies) {
                return d;
            }
        }
        // Module credentials keep working: the module's own login and
        // session decide; no identity headers go with the request.
        LoginMode::Optional => {
            return Decision::ForwardLocal {
                login_page: route.is_login_page(facts.path),
                rewrite: None,
            };
        }
        LoginMode::Automatic => {}
    }
    login_or_401(facts, None)
}

/// Why `identity` may not make a request `rule` (or, with none, the
/// route's access groups) decides, if it may not.
pub fn refused_by(rule: Option<&Rule>, route: &Route, identity: &crate::session::Identity) -> Option<Reject> {
    match rule {
        None if !may_access(&identity.groups, &route.access_groups) => Some(Reject::Forbidden {
            account: identity.account(),
        }),
        None => None,
        Some(r) => r.admits(&identity.groups, &route.access_groups).err().map(|need| {
            // The module's own groups missing: the whole module is closed
            // to this user, not only this part.
            if need == route.access_groups.as_slice() && r.access != RuleAccess::Deny {
                Reject::Forbidden {
                    account: identity.account(),
                }
            } else {
                Reject::AreaForbidden {
                    account: identity.account(),
                    need: need.to_vec(),
                }
            }
        }),
    }
}

/// Whether a login at `auth_time` (unknown: not fresh) is at most
/// `max_age` seconds old at `now`, give or take the usual clock skew.
pub fn fresh(auth_time: Option<u64>, max_age: u64, now: u64) -> bool {
    // The clock skew the login's own check allows (`oidc::client::LEEWAY`):
    // a login accepted at the callback is not sent back at once.
    auth_time.is_some_and(|t| t.saturating_add(max_age + crate::oidc::client::LEEWAY) >= now)
}

/// A login too old for a rule: a browser logs in again, a script gets 401
/// (`insufficient_user_authentication`, RFC 9470).
pub fn step_up(facts: &RequestFacts<'_>, max_age: u64) -> Decision {
    match facts.client() {
        ClientKind::Api => Decision::Reject(Reject::LoginTooOld { max_age }),
        ClientKind::Navigation => Decision::StepUp {
            return_path: safe_return_path(facts.target).unwrap_or("/").to_string(),
            max_age,
        },
    }
}

/// No KaseyaOne identity: a browser goes to log in (back to where it
/// was going, if that stays on this origin; `max_age`: asking for a login
/// at most this old), a script gets 401.
pub fn login_or_401(facts: &RequestFacts<'_>, max_age: Option<u64>) -> Decision {
    match facts.client() {
        ClientKind::Api => Decision::Reject(Reject::Unauthenticated),
        // The request target itself can be `//evil.example/…`: it goes
        // through the same check as any return URL.
        ClientKind::Navigation => Decision::Login {
            return_path: safe_return_path(facts.target).unwrap_or("/").to_string(),
            max_age,
        },
    }
}

/// Require Log In with KaseyaOne, for a request without a KaseyaOne
/// identity: module credentials only for the listed exceptions, who sign
/// in at `exception_path` (which shows the module's login page); their
/// module sessions are recognised by their cookies' records. `None`: to
/// KaseyaOne.
pub fn required(facts: &RequestFacts<'_>, route: &Route, cookies: &Cookies) -> Option<Decision> {
    let at_exception = route.is_exception(facts.path);
    let at_login = route.is_login(facts.path);
    let post = facts.method == http::Method::POST;
    if (at_exception || at_login) && (credentials::writes(facts.method) || facts.has_body()) && !post {
        // Only a POSTed form is read (and checked) as a login.
        return Some(Decision::Reject(Reject::BadModuleLogin(BadLogin::NotAForm)));
    }
    // The exception's login page shows the module's form; credentials in
    // its query string would be read by a module that accepts them there.
    if at_exception
        && !credentials::writes(facts.method)
        && credentials::the_username(&[], facts.query, &route.username_field).is_err()
    {
        return Some(Decision::Reject(Reject::BadModuleLogin(BadLogin::Ambiguous)));
    }
    if post && (at_exception || at_login) {
        return Some(Decision::ExceptionLogin { at_exception });
    }
    if at_exception && !route.local_exceptions.is_empty() {
        let rewrite = route.login_paths.first().map(|login| match facts.query {
            Some(q) => format!("{login}?{q}"),
            None => login.clone(),
        });
        return Some(Decision::ForwardLocal {
            login_page: true,
            rewrite,
        });
    }
    match cookies {
        Cookies::TooMany => Some(Decision::Reject(Reject::TooManyCookies)),
        c if module_cookies::all_local(c) => Some(Decision::ForwardLocal {
            login_page: false,
            rewrite: None,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
