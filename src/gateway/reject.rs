//! The edge where answers are written: a `Reply` (what an endpoint of
//! unigate's own answers) and the one place a `Reject` becomes an HTTP
//! response — a page a person understands, or a JSON error for a script,
//! chosen by the request's `ClientKind` and nowhere else.

use bytes::Bytes;
use pingora::prelude::*;
use pingora::proxy::Session as PSession;

use super::respond;
use crate::config::route::Route;
use crate::pages;
use crate::policy::ClientKind;
use crate::policy::credentials::BadLogin;
pub use crate::policy::reject::{LoginFailure, Reject};
use crate::policy::request::PREFIX;
use crate::session::CookieOwner;

/// A whole response of unigate's own.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: std::borrow::Cow<'static, str>,
    /// Headers, in order; names may repeat (`set-cookie`).
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
}

impl Reply {
    /// An HTML page.
    pub fn page(status: u16, html: String) -> Reply {
        Reply {
            status,
            content_type: "text/html; charset=utf-8".into(),
            headers: Vec::new(),
            body: html.into(),
        }
    }

    /// A JSON document.
    pub fn json(status: u16, value: serde_json::Value) -> Reply {
        Reply {
            status,
            content_type: "application/json".into(),
            headers: Vec::new(),
            body: value.to_string().into(),
        }
    }

    /// Plain text.
    pub fn text(status: u16, text: &'static str) -> Reply {
        Reply {
            status,
            content_type: "text/plain".into(),
            headers: Vec::new(),
            body: Bytes::from_static(text.as_bytes()),
        }
    }

    /// A 302 to `location`.
    pub fn redirect(location: impl Into<String>) -> Reply {
        Reply {
            status: 302,
            content_type: "text/plain; charset=utf-8".into(),
            headers: vec![("location", location.into())],
            body: Bytes::new(),
        }
    }

    /// With this content type.
    pub fn with_content_type(mut self, content_type: String) -> Reply {
        self.content_type = content_type.into();
        self
    }

    /// With one more header.
    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }

    /// With these `Set-Cookie` values.
    pub fn with_cookies(mut self, cookies: impl IntoIterator<Item = String>) -> Reply {
        self.headers.extend(cookies.into_iter().map(|c| ("set-cookie", c)));
        self
    }

    pub async fn write(self, session: &mut PSession) -> Result<bool> {
        respond(session, self.status, &self.content_type, &self.headers, self.body).await
    }
}

/// What a refusal looks like to this client. `route`: the route the
/// request was for, when it was routed; `origin`: the request's `Origin`
/// (a 401 carries CORS headers for the route's `cors_origins`);
/// `exits`: the ways out a refusal page offers.
pub fn render(r: &Reject, client: ClientKind, route: Option<&Route>, origin: Option<&str>, exits: &Exits<'_>) -> Reply {
    // The module, and its instance when the route is one ("BMS · Acme West").
    let module = route.map_or_else(|| "The module".to_string(), pages::module_name);
    let module = module.as_str();
    let status = r.status();
    let retry_after = r.retry_after();
    let with_retry = |reply: Reply| match retry_after {
        Some(s) => reply.with("retry-after", s.to_string()),
        None => reply,
    };
    // Answers that are JSON for every client: they answer scripts only.
    if client == ClientKind::Api || script_only(r) {
        return with_retry(json(r, route, origin));
    }
    let not_found = |h: &str| pages::page("Not found", maud::html! { h1 { (h) } });
    let logout = format!("{PREFIX}logout");
    let reply = match r {
        Reject::StoreDown => Reply::page(
            status,
            pages::unavailable("The Unified Login session store cannot be reached, so no one can be let in."),
        ),
        Reject::IdpDown => Reply::page(
            status,
            pages::unavailable("The KaseyaOne identity provider cannot be reached."),
        ),
        Reject::Forbidden { account } => Reply::page(
            status,
            pages::forbidden(
                module,
                route.map_or(&[][..], |m| &m.access_groups),
                &pages::WaysOut {
                    account: account.as_deref(),
                    logout: &logout,
                    logout_token: exits.logout_token,
                    my_modules: exits.my_modules,
                },
            ),
        ),
        Reject::AreaForbidden { account, need } => Reply::page(
            status,
            pages::area_forbidden(
                module,
                need,
                &pages::WaysOut {
                    account: account.as_deref(),
                    logout: &logout,
                    logout_token: exits.logout_token,
                    my_modules: exits.my_modules,
                },
            ),
        ),
        Reject::TooManyLogins { .. } => Reply::page(
            status,
            pages::unavailable("Too many logins were started from your network."),
        ),
        Reject::NoUpstream => Reply::page(status, pages::no_healthy_upstream(module)),
        // The module's own name: what its users know it by.
        Reject::UpstreamDown | Reject::Internal => Reply::page(
            status,
            pages::upstream_down(route.map_or("The module", |m| m.name.as_str())),
        ),
        Reject::NoInstanceChosen => Reply::page(
            status,
            pages::page(
                "Not found",
                maud::html! { h1 { "Choose an instance first" } p { a href={ (PREFIX) "instances" } { "Choose an Instance" } } },
            ),
        ),
        Reject::NoInstances => Reply::page(status, not_found("This module has no instances")),
        Reject::NotFound => Reply::page(status, not_found("Not found")),
        Reject::BadPath(why) => Reply::page(status, pages::bad_path(&why.to_string())),
        Reject::NoHost => Reply::page(status, pages::unknown_host("(none)")),
        Reject::UnknownHost(h) => Reply::page(status, pages::unknown_host(h)),
        Reject::UnifiedLoginOff => Reply::page(status, pages::unified_login_off(module)),
        Reject::TooManyCookies => {
            // Expired too: a browser that keeps sending them would keep
            // being refused.
            let expire = route
                .into_iter()
                .flat_map(|m| &m.session_cookies)
                .flat_map(|c| CookieOwner::expiry(c, None));
            Reply::page(status, pages::too_many_cookies(module)).with_cookies(expire)
        }
        Reject::CredentialsBesideSession { email } => Reply::page(
            status,
            pages::module_login_beside_kaseyaone(module, email, &format!("{PREFIX}logout")),
        ),
        Reject::BadModuleLogin(why) => {
            let reply = Reply::page(status, pages::bad_module_login(module, why.explain()));
            match why {
                BadLogin::NotAForm => reply.with("allow", "GET, HEAD, POST"),
                _ => reply,
            }
        }
        Reject::KaseyaOneRequired { username } => {
            let hint: String = form_urlencoded::byte_serialize(username.as_bytes()).collect();
            let login = format!("{PREFIX}login?login_hint={hint}");
            Reply::page(status, pages::kaseyaone_required(module, &login))
        }
        Reject::LinkForged { account } => Reply::page(
            status,
            pages::link_refused(
                module,
                &format!("{PREFIX}link"),
                &pages::WaysOut {
                    account: account.as_deref(),
                    logout: &logout,
                    logout_token: exits.logout_token,
                    my_modules: exits.my_modules,
                },
            ),
        ),
        Reject::TooLarge => Reply::page(
            status,
            pages::page("Too large", maud::html! { h1 { "That form was too large" } }),
        ),
        Reject::AccountRefused { identity, refusal } => {
            let ways = pages::WaysOut {
                account: None,
                logout: &logout,
                logout_token: exits.logout_token,
                my_modules: exits.my_modules,
            };
            Reply::page(status, pages::account_refused(module, identity, refusal, &ways))
        }
        Reject::AccountsUnavailable => Reply::page(status, pages::accounts_unavailable(module)),
        Reject::BadRequest(why) => Reply::page(
            status,
            pages::page(
                "Bad request",
                maud::html! { h1 { "This request is not valid" } p { (why) } },
            ),
        ),
        Reject::Unavailable(why) => Reply::page(status, pages::unavailable(why)),
        Reject::Login(LoginFailure::Expired { retry }) => Reply::page(status, pages::login_expired(retry)),
        Reject::Login(f) => Reply::page(
            status,
            pages::idp_error(f.code(), f.description(), f.retry().unwrap_or("/_unigate/login")),
        ),
        Reject::Unauthenticated
        | Reject::SessionEnded
        | Reject::InvalidBearer(_)
        | Reject::LinkRequired
        | Reject::LoginTooOld { .. } => json(r, route, origin),
        Reject::BearerUnchecked => Reply::page(
            status,
            pages::unavailable("The identity provider cannot check this token now."),
        ),
    };
    with_retry(reply)
}

/// Refusals only a script meets: they are JSON whoever asks.
fn script_only(r: &Reject) -> bool {
    matches!(
        r,
        Reject::Unauthenticated
            | Reject::SessionEnded
            | Reject::InvalidBearer(_)
            | Reject::LinkRequired
            | Reject::LoginTooOld { .. }
    )
}

/// A refusal as JSON: `error`, `error_description`, and what the client
/// needs to go on (`WWW-Authenticate`, where to log in or link).
fn json(r: &Reject, route: Option<&Route>, origin: Option<&str>) -> Reply {
    let (error, description) = r.json_error();
    let mut body = serde_json::json!({"error": error, "error_description": description});
    match r {
        Reject::Unauthenticated => body["login_url"] = format!("{PREFIX}login").into(),
        Reject::LoginTooOld { max_age } => body["max_age"] = (*max_age).into(),
        Reject::AreaForbidden { need, .. } => body["required_groups"] = need.clone().into(),
        Reject::LinkRequired => body["link_url"] = format!("{PREFIX}link").into(),
        _ => {}
    }
    let reply = Reply::json(r.status(), body);
    match r {
        Reject::Unauthenticated => {
            let mut reply = reply
                .with("www-authenticate", "Bearer realm=\"unigate\"")
                .with("vary", "Origin");
            if let Some(o) = origin.filter(|o| route.is_some_and(|m| m.cors_origins.iter().any(|c| c == o))) {
                reply = reply
                    .with("access-control-allow-origin", o)
                    .with("access-control-allow-credentials", "true")
                    .with("access-control-expose-headers", "WWW-Authenticate");
            }
            reply
        }
        Reject::SessionEnded => reply.with("www-authenticate", "Bearer realm=\"unigate\""),
        Reject::InvalidBearer(_) => reply.with("www-authenticate", "Bearer realm=\"unigate\", error=\"invalid_token\""),
        // RFC 9470: log in again, within `max_age` seconds of now.
        Reject::LoginTooOld { max_age } => reply.with(
            "www-authenticate",
            format!(
                "Bearer realm=\"unigate\", error=\"insufficient_user_authentication\", error_description=\"a more recent login is required\", max_age={max_age}"
            ),
        ),
        _ => reply,
    }
}

/// Writes a refusal.
pub async fn write(
    session: &mut PSession,
    r: &Reject,
    client: ClientKind,
    route: Option<&Route>,
    exits: &Exits<'_>,
) -> Result<bool> {
    let origin = session
        .req_header()
        .headers
        .get("origin")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    render(r, client, route, origin.as_deref(), exits).write(session).await
}

/// The ways out of a refusal page: KaseyaOne's My Modules, and this
/// browser's logout confirmation token (with its cookie set on the page),
/// so that "Log out of KaseyaOne / use another account" is one click.
#[derive(Debug, Default, Clone, Copy)]
pub struct Exits<'a> {
    pub my_modules: Option<&'a str>,
    pub logout_token: Option<&'a str>,
}

/// Whether this refusal's page offers "Log out of KaseyaOne / use another
/// account".
pub fn has_ways_out(r: &Reject) -> bool {
    matches!(
        r,
        Reject::Forbidden { .. }
            | Reject::AreaForbidden { .. }
            | Reject::LinkForged { .. }
            | Reject::AccountRefused { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(r: &'a Reply, name: &str) -> Vec<&'a str> {
        r.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn route() -> Route {
        Route {
            display_name: "Portal".into(),
            access_groups: vec!["portal-users".into()],
            session_cookies: vec!["portal_session".into()],
            cors_origins: vec!["https://app.example".into()],
            ..Route::default()
        }
    }

    #[test]
    fn a_person_gets_a_page_and_a_script_gets_json() {
        let m = route();
        for r in [
            Reject::Forbidden { account: None },
            Reject::StoreDown,
            Reject::TooManyCookies,
        ] {
            let page = render(&r, ClientKind::Navigation, Some(&m), None, &Exits::default());
            let json = render(&r, ClientKind::Api, Some(&m), None, &Exits::default());
            assert_eq!((page.status, json.status), (r.status(), r.status()));
            assert!(page.content_type.starts_with("text/html"), "{r:?}");
            assert_eq!(json.content_type, "application/json", "{r:?}");
            let v: serde_json::Value = serde_json::from_slice(&json.body).unwrap();
            assert_eq!(v["error"], r.json_error().0, "{r:?}");
        }
        let page = render(
            &Reject::Forbidden {
                account: Some("bob@acme.example".into()),
            },
            ClientKind::Navigation,
            Some(&m),
            None,
            &Exits {
                my_modules: Some("https://idp.example/"),
                logout_token: None,
            },
        );
        let html = String::from_utf8_lossy(&page.body);
        assert!(html.contains("Portal") && html.contains("portal-users"), "{html}");
        // A way out: the account used, another account, My Modules.
        assert!(html.contains("bob@acme.example"), "{html}");
        assert!(html.contains(r#"href="/_unigate/logout""#), "{html}");
        assert!(
            html.contains(r#"href="https://idp.example/">Back to My Modules"#),
            "{html}"
        );
    }

    #[test]
    fn refusal_pages_name_the_module_and_instance_and_the_account_and_offer_ways_out() {
        use crate::accounts::Refusal;
        use crate::config::route::InstanceRef;
        let west = Route {
            display_name: "BMS".into(),
            instance: Some(InstanceRef {
                name: "west".into(),
                display_name: "Acme West".into(),
            }),
            ..route()
        };
        let alice = crate::session::Identity::alice();
        let refused = |refusal: Refusal| Reject::AccountRefused {
            identity: Box::new(alice.clone()),
            refusal,
        };
        let account = || Some("alice@acme.example".to_string());
        for r in [
            Reject::Forbidden { account: account() },
            refused(Refusal::NoAccount),
            refused(Refusal::EmailMismatch {
                module_email: "old@acme.example".into(),
            }),
            refused(Refusal::UsernameMismatch {
                module_username: "a.admin".into(),
            }),
            refused(Refusal::NotActivated {
                username: "alice".into(),
            }),
            Reject::LinkForged { account: account() },
        ] {
            let page = render(
                &r,
                ClientKind::Navigation,
                Some(&west),
                None,
                &Exits {
                    my_modules: Some("https://idp.example/"),
                    logout_token: None,
                },
            );
            assert_eq!(page.status, 403);
            let html = String::from_utf8_lossy(&page.body);
            assert!(html.contains("BMS · Acme West"), "{r:?}: {html}");
            assert!(
                html.contains("You used the KaseyaOne account <b>alice@acme.example</b>"),
                "{r:?}: {html}"
            );
            assert!(
                html.contains(r#"href="/_unigate/logout">Log out of KaseyaOne / use another account"#),
                "{r:?}: {html}"
            );
            assert!(
                html.contains(r#"href="https://idp.example/">Back to My Modules"#),
                "{r:?}: {html}"
            );
            // A script gets the same JSON as ever: no account, no page.
            let json = render(
                &r,
                ClientKind::Api,
                Some(&west),
                None,
                &Exits {
                    my_modules: Some("https://idp.example/"),
                    logout_token: None,
                },
            );
            let v: serde_json::Value = serde_json::from_slice(&json.body).unwrap();
            let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
            assert_eq!(keys, ["error", "error_description"], "{r:?}");
            assert_eq!(v["error"], r.json_error().0);
            assert!(!String::from_utf8_lossy(&json.body).contains("alice"), "{v}");
        }
    }

    #[test]
    fn refusals_that_pass_say_when_to_come_back() {
        let r = render(
            &Reject::StoreDown,
            ClientKind::Navigation,
            None,
            None,
            &Exits::default(),
        );
        assert_eq!(header(&r, "retry-after"), ["5"]);
        let r = render(
            &Reject::TooManyLogins { retry_after: 42 },
            ClientKind::Api,
            None,
            None,
            &Exits::default(),
        );
        assert_eq!((r.status, header(&r, "retry-after")), (429, vec!["42"]));
        let r = render(
            &Reject::NoUpstream,
            ClientKind::Navigation,
            None,
            None,
            &Exits::default(),
        );
        assert_eq!(header(&r, "retry-after"), ["10"]);
    }

    #[test]
    fn a_401_names_the_scheme_and_lets_only_configured_origins_read_it() {
        let m = route();
        let r = render(
            &Reject::Unauthenticated,
            ClientKind::Api,
            Some(&m),
            Some("https://app.example"),
            &Exits::default(),
        );
        assert_eq!(header(&r, "www-authenticate"), ["Bearer realm=\"unigate\""]);
        assert_eq!(header(&r, "access-control-allow-origin"), ["https://app.example"]);
        let r = render(
            &Reject::Unauthenticated,
            ClientKind::Api,
            Some(&m),
            Some("https://evil.example"),
            &Exits::default(),
        );
        assert!(header(&r, "access-control-allow-origin").is_empty());
        let r = render(
            &Reject::InvalidBearer("expired"),
            ClientKind::Navigation,
            Some(&m),
            None,
            &Exits::default(),
        );
        assert_eq!(r.content_type, "application/json");
        assert!(header(&r, "www-authenticate")[0].contains("invalid_token"));
    }

    #[test]
    fn too_many_module_cookies_are_expired_for_a_browser() {
        let m = route();
        let r = render(
            &Reject::TooManyCookies,
            ClientKind::Navigation,
            Some(&m),
            None,
            &Exits::default(),
        );
        let set = header(&r, "set-cookie");
        assert!(
            !set.is_empty() && set.iter().all(|c| c.starts_with("portal_session=;")),
            "{set:?}"
        );
    }
}
