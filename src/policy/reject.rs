//! Why unigate refuses a request: one type for every refusal, whatever
//! decided it (the request decision, a login callback, a bearer check, an
//! endpoint of unigate's own). Each refusal knows its HTTP status, the
//! reason it is counted and logged under, and what an API client is told;
//! the page a person sees is drawn at the edge (`gateway::reject`), the
//! one place a refusal is written.

use crate::accounts::Refusal;
use crate::policy::credentials::BadLogin;
use crate::policy::path::PathRefusal;
use crate::session::Identity;

/// A refusal. Variants carry what the person or client is told.
#[derive(Debug, Clone, PartialEq)]
pub enum Reject {
    /// The shared session store cannot be reached: fail closed.
    StoreDown,
    /// The identity provider's discovery is not loaded: no login can start.
    IdpDown,
    /// The user is not in the route's access groups (nor in any of the
    /// module's instances'). `account`: the KaseyaOne account used (its
    /// email), when known, so the page can name it.
    Forbidden { account: Option<String> },
    /// A part of the module a rule keeps for some groups (`need`: one of
    /// them is missing) or for no one (`need` empty).
    AreaForbidden { account: Option<String>, need: Vec<String> },
    /// An API client whose login is older than the part of the module it
    /// asked for allows (seconds): log in again (RFC 9470).
    LoginTooOld { max_age: u64 },
    /// An API client without a session or bearer token.
    Unauthenticated,
    /// An API client with the module session of a KaseyaOne session that
    /// has ended.
    SessionEnded,
    /// A bearer token that is not a valid, unrevoked access token here.
    InvalidBearer(&'static str),
    /// The identity provider cannot check a bearer token now.
    BearerUnchecked,
    /// A module that requires a linked account, asked with a bearer token
    /// before the account was linked (linking needs a browser).
    LinkRequired,
    /// Too many logins started from this address: try again after
    /// `retry_after` seconds.
    TooManyLogins { retry_after: u64 },
    /// Every upstream of the route fails its health checks.
    NoUpstream,
    /// The module did not answer (or not over TLS it trusts).
    UpstreamDown,
    /// Something went wrong inside unigate while proxying.
    Internal,
    /// A module with instances, asked at its own host: nothing is behind it.
    NoInstanceChosen,
    /// `/_unigate/instances` on a module without instances.
    NoInstances,
    /// A path under `/_unigate/` that is not one of unigate's.
    NotFound,
    /// A request path unigate will not guess the meaning of.
    BadPath(PathRefusal),
    /// No `Host` header.
    NoHost,
    /// A host no route serves.
    UnknownHost(String),
    /// `/_unigate/` on a module with Unified Login off.
    UnifiedLoginOff,
    /// More module session cookie values than a browser sends.
    TooManyCookies,
    /// Module credentials posted beside a KaseyaOne session of this user.
    CredentialsBesideSession { email: String },
    /// A module login unigate cannot read exactly as the module would.
    BadModuleLogin(BadLogin),
    /// Module credentials where Log In with KaseyaOne is required, from a
    /// user who is not one of the local exceptions.
    KaseyaOneRequired { username: String },
    /// A link form that did not come from this session's link page.
    /// `account`: the KaseyaOne account of the session, for the page.
    LinkForged { account: Option<String> },
    /// A form larger than unigate reads.
    TooLarge,
    /// The module has no account for this user (or it does not match).
    AccountRefused { identity: Box<Identity>, refusal: Refusal },
    /// The module's accounts cannot be checked now.
    AccountsUnavailable,
    /// A request unigate's own protocol endpoints cannot use.
    BadRequest(String),
    /// A request a protocol endpoint cannot carry out now (the caller
    /// retries).
    Unavailable(String),
    /// A login that failed at the callback.
    Login(LoginFailure),
}

/// How a login failed at the callback; each offers `retry`, a login that
/// returns where this one was going.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginFailure {
    /// The answer names another identity provider, or none where the
    /// provider promises to name itself.
    WrongIssuer,
    /// The answer is not one the code flow gives.
    BadCallback,
    /// No login of this browser waits for this answer (expired, used, or
    /// started elsewhere).
    Expired { retry: String },
    /// The identity provider answered with an error.
    Provider {
        error: String,
        description: Option<String>,
        retry: String,
    },
    /// The code exchange failed.
    Exchange { retry: String },
    /// The token response held no ID token.
    NoIdToken { retry: String },
    /// The ID token failed a check.
    IdToken { retry: String },
    /// The user's claims (UserInfo) could not be read.
    Userinfo { retry: String },
    /// A logout (of this KaseyaOne session, or a revocation of this user)
    /// came while the login was finishing: it does not outlive it.
    Ended { retry: String },
}

impl LoginFailure {
    /// The OAuth-style error code shown on the page and sent to scripts.
    pub fn code(&self) -> &str {
        match self {
            LoginFailure::WrongIssuer => "wrong_issuer",
            LoginFailure::BadCallback => "invalid_callback",
            LoginFailure::Expired { .. } => "login_expired",
            LoginFailure::Provider { error, .. } => error,
            LoginFailure::Exchange { .. } => "exchange_failed",
            LoginFailure::NoIdToken { .. } => "no_id_token",
            LoginFailure::IdToken { .. } => "invalid_id_token",
            LoginFailure::Userinfo { .. } => "userinfo_failed",
            LoginFailure::Ended { .. } => "session_ended",
        }
    }

    /// What the person is told.
    pub fn description(&self) -> Option<&str> {
        match self {
            LoginFailure::WrongIssuer => Some("The answer came from an identity provider this login did not use."),
            LoginFailure::BadCallback => Some("The answer that reached this page was not one a login gives."),
            LoginFailure::Expired { .. } => Some("This login has expired."),
            LoginFailure::Provider { description, .. } => description.as_deref(),
            LoginFailure::Exchange { .. } => Some("The identity provider did not accept the login. Try again."),
            LoginFailure::NoIdToken { .. } => None,
            LoginFailure::IdToken { .. } => Some("The identity provider's answer could not be verified."),
            LoginFailure::Userinfo { .. } => {
                Some("The identity provider's information about your account could not be read.")
            }
            LoginFailure::Ended { .. } => {
                Some("You were logged out of KaseyaOne while this login was finishing. Log in again.")
            }
        }
    }

    /// Where "try again" goes: a fresh login (`None`: the plain one).
    pub fn retry(&self) -> Option<&str> {
        match self {
            LoginFailure::WrongIssuer | LoginFailure::BadCallback => None,
            LoginFailure::Expired { retry }
            | LoginFailure::Provider { retry, .. }
            | LoginFailure::Exchange { retry }
            | LoginFailure::NoIdToken { retry }
            | LoginFailure::IdToken { retry }
            | LoginFailure::Userinfo { retry }
            | LoginFailure::Ended { retry } => Some(retry),
        }
    }
}

impl Reject {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Reject::StoreDown
            | Reject::IdpDown
            | Reject::BearerUnchecked
            | Reject::NoUpstream
            | Reject::AccountsUnavailable
            | Reject::Unavailable(_) => 503,
            Reject::Forbidden { .. }
            | Reject::AreaForbidden { .. }
            | Reject::LinkRequired
            | Reject::KaseyaOneRequired { .. }
            | Reject::LinkForged { .. }
            | Reject::AccountRefused { .. } => 403,
            Reject::Unauthenticated | Reject::SessionEnded | Reject::InvalidBearer(_) | Reject::LoginTooOld { .. } => {
                401
            }
            Reject::TooManyLogins { .. } => 429,
            Reject::UpstreamDown => 502,
            Reject::Internal => 500,
            Reject::NoInstanceChosen | Reject::NoInstances | Reject::NotFound | Reject::UnknownHost(_) => 404,
            Reject::UnifiedLoginOff => 404,
            Reject::BadPath(_) | Reject::NoHost | Reject::TooManyCookies | Reject::BadRequest(_) => 400,
            Reject::CredentialsBesideSession { .. } => 409,
            Reject::BadModuleLogin(BadLogin::Encoding) => 415,
            Reject::BadModuleLogin(BadLogin::Ambiguous) => 400,
            Reject::BadModuleLogin(BadLogin::NotAForm) => 405,
            Reject::TooLarge => 413,
            Reject::Login(f) => match f {
                LoginFailure::WrongIssuer
                | LoginFailure::BadCallback
                | LoginFailure::Expired { .. }
                | LoginFailure::Ended { .. } => 400,
                LoginFailure::Provider { .. } => 403,
                LoginFailure::Exchange { .. }
                | LoginFailure::NoIdToken { .. }
                | LoginFailure::IdToken { .. }
                | LoginFailure::Userinfo { .. } => 502,
            },
        }
    }

    /// The reason it is counted and logged under (for a failed login, the
    /// `reason` label of `unigate_logins_total`).
    pub fn metric_reason(&self) -> &'static str {
        match self {
            Reject::StoreDown => "store",
            Reject::IdpDown => "idp_down",
            Reject::Forbidden { .. } | Reject::AreaForbidden { .. } => "forbidden",
            Reject::LoginTooOld { .. } => "login_too_old",
            Reject::Unauthenticated => "unauthenticated",
            Reject::SessionEnded => "session_ended",
            Reject::InvalidBearer(_) => "invalid_token",
            Reject::BearerUnchecked => "token_unchecked",
            Reject::LinkRequired => "link_required",
            Reject::TooManyLogins { .. } => "too_many_logins",
            Reject::NoUpstream => "no_upstream",
            Reject::UpstreamDown => "upstream_down",
            Reject::Internal => "internal",
            Reject::NoInstanceChosen | Reject::NoInstances | Reject::NotFound => "not_found",
            Reject::BadPath(_) => "bad_path",
            Reject::NoHost | Reject::UnknownHost(_) => "unknown_host",
            Reject::UnifiedLoginOff => "unified_login_off",
            Reject::TooManyCookies => "too_many_cookies",
            Reject::CredentialsBesideSession { .. } => "credentials_beside_session",
            Reject::BadModuleLogin(_) => "bad_module_login",
            Reject::KaseyaOneRequired { .. } => "kaseyaone_required",
            Reject::LinkForged { .. } => "link_forged",
            Reject::TooLarge => "too_large",
            Reject::AccountRefused { .. } => "account",
            Reject::AccountsUnavailable => "account_lookup",
            Reject::BadRequest(_) => "bad_request",
            Reject::Unavailable(_) => "unavailable",
            Reject::Login(f) => match f {
                LoginFailure::WrongIssuer => "issuer",
                LoginFailure::BadCallback => "callback",
                LoginFailure::Expired { .. } => "state",
                LoginFailure::Provider { .. } => "idp_error",
                LoginFailure::Exchange { .. } => "code_exchange",
                LoginFailure::NoIdToken { .. } | LoginFailure::IdToken { .. } => "id_token",
                LoginFailure::Userinfo { .. } => "userinfo",
                LoginFailure::Ended { .. } => "logged_out",
            },
        }
    }

    /// `Retry-After` seconds, for refusals that pass.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Reject::StoreDown
            | Reject::IdpDown
            | Reject::BearerUnchecked
            | Reject::AccountsUnavailable
            | Reject::Unavailable(_) => Some(5),
            Reject::NoUpstream => Some(10),
            Reject::TooManyLogins { retry_after } => Some((*retry_after).max(1)),
            _ => None,
        }
    }

    /// The JSON error an API client gets: `error` and `error_description`.
    pub fn json_error(&self) -> (&str, String) {
        let d = |s: &str| s.to_string();
        match self {
            Reject::StoreDown => (
                "temporarily_unavailable",
                d("unigate's session store cannot be reached"),
            ),
            Reject::IdpDown => (
                "temporarily_unavailable",
                d("the KaseyaOne identity provider cannot be reached"),
            ),
            Reject::Forbidden { .. } => ("forbidden", d("not in the module's access groups")),
            Reject::AreaForbidden { need, .. } if need.is_empty() => {
                ("forbidden", d("this part of the module is closed to everyone"))
            }
            Reject::AreaForbidden { need, .. } => (
                "forbidden",
                format!("this part of the module is for members of {}", need.join(", ")),
            ),
            Reject::LoginTooOld { max_age } => (
                "insufficient_user_authentication",
                format!(
                    "this part of the module needs a login within the last {}; log in with KaseyaOne again",
                    humantime::format_duration(std::time::Duration::from_secs(*max_age))
                ),
            ),
            Reject::Unauthenticated => ("unauthenticated", d("log in with KaseyaOne first")),
            Reject::SessionEnded => (
                "unauthenticated",
                d("the session has ended; log in with KaseyaOne again"),
            ),
            Reject::InvalidBearer(why) => ("invalid_token", d(why)),
            Reject::BearerUnchecked => (
                "temporarily_unavailable",
                d("the identity provider cannot check this token now"),
            ),
            Reject::LinkRequired => ("link_required", d("link your module account first")),
            Reject::TooManyLogins { .. } => ("too_many_requests", d("too many logins were started from your network")),
            Reject::NoUpstream => ("temporarily_unavailable", d("the module has no healthy upstream")),
            Reject::UpstreamDown => ("bad_gateway", d("the module did not answer")),
            Reject::Internal => ("internal_error", d("the request could not be proxied")),
            Reject::NoInstanceChosen => ("not_found", d("choose an instance first")),
            Reject::NoInstances => ("not_found", d("this module has no instances")),
            Reject::NotFound => ("not_found", d("not found")),
            Reject::BadPath(why) => ("invalid_request", why.to_string()),
            Reject::NoHost => ("invalid_request", d("no Host header")),
            Reject::UnknownHost(h) => ("not_found", format!("no module is served at {h}")),
            Reject::UnifiedLoginOff => ("not_found", d("Log In with KaseyaOne is off for this module")),
            Reject::TooManyCookies => (
                "invalid_request",
                format!(
                    "more than {} values of the module's session cookies",
                    crate::session::cookie_forms::MAX_READINGS
                ),
            ),
            Reject::CredentialsBesideSession { .. } => (
                "kaseyaone_session",
                d("logged in with KaseyaOne: log out before signing in with module credentials"),
            ),
            Reject::BadModuleLogin(b) => ("invalid_request", d(b.explain())),
            Reject::KaseyaOneRequired { .. } => ("kaseyaone_required", d("log in with KaseyaOne")),
            Reject::LinkForged { .. } => (
                "invalid_request",
                d("this link request did not come from your link page"),
            ),
            Reject::TooLarge => ("invalid_request", d("the request body is too large")),
            Reject::AccountRefused { .. } => ("account_refused", d("no matching module account for this user")),
            Reject::AccountsUnavailable => (
                "temporarily_unavailable",
                d("the module's accounts cannot be checked now"),
            ),
            Reject::BadRequest(why) => ("invalid_request", why.clone()),
            Reject::Unavailable(why) => ("temporarily_unavailable", why.clone()),
            Reject::Login(f) => (f.code(), f.description().unwrap_or("the login failed").to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_has_an_error_status_and_a_reason() {
        let retry = || "/_unigate/login".to_string();
        let all = [
            Reject::StoreDown,
            Reject::IdpDown,
            Reject::Forbidden { account: None },
            Reject::AreaForbidden {
                account: None,
                need: vec!["admins".into()],
            },
            Reject::LoginTooOld { max_age: 300 },
            Reject::Unauthenticated,
            Reject::SessionEnded,
            Reject::InvalidBearer("x"),
            Reject::BearerUnchecked,
            Reject::LinkRequired,
            Reject::TooManyLogins { retry_after: 0 },
            Reject::NoUpstream,
            Reject::UpstreamDown,
            Reject::Internal,
            Reject::NoInstanceChosen,
            Reject::NoInstances,
            Reject::NotFound,
            Reject::BadPath(PathRefusal::NotUtf8),
            Reject::NoHost,
            Reject::UnknownHost("h".into()),
            Reject::UnifiedLoginOff,
            Reject::TooManyCookies,
            Reject::CredentialsBesideSession { email: "a@b".into() },
            Reject::BadModuleLogin(BadLogin::Encoding),
            Reject::BadModuleLogin(BadLogin::Ambiguous),
            Reject::BadModuleLogin(BadLogin::NotAForm),
            Reject::KaseyaOneRequired { username: "u".into() },
            Reject::LinkForged { account: None },
            Reject::TooLarge,
            Reject::AccountsUnavailable,
            Reject::BadRequest("b".into()),
            Reject::Unavailable("u".into()),
            Reject::Login(LoginFailure::WrongIssuer),
            Reject::Login(LoginFailure::BadCallback),
            Reject::Login(LoginFailure::Expired { retry: retry() }),
            Reject::Login(LoginFailure::Exchange { retry: retry() }),
            Reject::Login(LoginFailure::IdToken { retry: retry() }),
        ];
        for r in &all {
            assert!((400..600).contains(&r.status()), "{r:?}");
            assert!(!r.metric_reason().is_empty(), "{r:?}");
            let (error, description) = r.json_error();
            assert!(!error.is_empty() && !description.is_empty(), "{r:?}");
            // A client told to come back later is told when.
            assert_eq!(r.retry_after().is_some(), matches!(r.status(), 429 | 503), "{r:?}");
        }
    }

    #[test]
    fn failed_logins_are_counted_under_the_reasons_the_dashboards_know() {
        let retry = || "/r".to_string();
        for (f, reason, status) in [
            (LoginFailure::WrongIssuer, "issuer", 400),
            (LoginFailure::BadCallback, "callback", 400),
            (LoginFailure::Expired { retry: retry() }, "state", 400),
            (
                LoginFailure::Provider {
                    error: "access_denied".into(),
                    description: None,
                    retry: retry(),
                },
                "idp_error",
                403,
            ),
            (LoginFailure::Exchange { retry: retry() }, "code_exchange", 502),
            (LoginFailure::NoIdToken { retry: retry() }, "id_token", 502),
            (LoginFailure::IdToken { retry: retry() }, "id_token", 502),
            (LoginFailure::Userinfo { retry: retry() }, "userinfo", 502),
            (LoginFailure::Ended { retry: retry() }, "logged_out", 400),
        ] {
            let r = Reject::Login(f);
            assert_eq!((r.metric_reason(), r.status()), (reason, status), "{r:?}");
        }
        assert_eq!(Reject::StoreDown.metric_reason(), "store");
        assert_eq!(Reject::Forbidden { account: None }.metric_reason(), "forbidden");
        assert_eq!(Reject::AccountsUnavailable.metric_reason(), "account_lookup");
    }
}
