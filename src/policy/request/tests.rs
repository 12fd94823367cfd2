//! The request decision as tables: route × request × what was found →
//! decision. No sockets, no store.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::config::route::RouteId;
use crate::policy::module_cookies::strip_bit;
use crate::session::cookie_forms::Reading;
use crate::session::{CookieOwner, HeaderSet, Identity, Tokens};

fn route() -> Route {
    Route {
        name: "portal".into(),
        label: "portal".into(),
        display_name: "Portal".into(),
        unified_login: true,
        login: LoginMode::Automatic,
        access_groups: vec!["portal-users".into()],
        logout_paths: vec!["/logout".into()],
        public_paths: vec!["/static".into()],
        login_paths: vec!["/login".into()],
        exception_path: "/local-login".into(),
        username_field: "username".into(),
        password_field: "password".into(),
        ..Route::default()
    }
}

fn session(sub: &str, groups: &[&str]) -> Session {
    let identity = Identity {
        sub: sub.into(),
        sid: Some("sid-1".into()),
        email: format!("{sub}@acme.example").into(),
        name: "".into(),
        username: sub.into(),
        company: "Acme".into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        module_user: None,
    };
    let tokens = Tokens {
        id_token: None,
        refresh_token: None,
        access_exp: u64::MAX / 2,
        generation: 0,
    };
    Session::new("portal".into(), identity, HeaderSet::default(), tokens)
}

struct Req {
    path: &'static str,
    target: &'static str,
    method: http::Method,
    headers: http::HeaderMap,
}

/// A browser's GET.
fn get(target: &'static str) -> Req {
    let path = target.split('?').next().unwrap();
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::ACCEPT, "text/html".parse().unwrap());
    Req {
        path,
        target,
        method: http::Method::GET,
        headers,
    }
}

impl Req {
    /// A script's.
    fn api(mut self) -> Self {
        self.headers
            .insert(http::header::ACCEPT, "application/json".parse().unwrap());
        self
    }
    fn post(mut self) -> Self {
        self.method = http::Method::POST;
        self.headers.insert(http::header::CONTENT_LENGTH, "20".parse().unwrap());
        self
    }
    fn bearer(mut self) -> Self {
        self.headers
            .insert(http::header::AUTHORIZATION, "Bearer token".parse().unwrap());
        self
    }
    fn facts(&self) -> RequestFacts<'_> {
        RequestFacts {
            path: self.path,
            target: self.target,
            query: self.target.split_once('?').map(|(_, q)| q),
            method: &self.method,
            headers: &self.headers,
        }
    }
}

/// A module cookie reading (of the configured name at `name`) issued to
/// `owner` (`None`: unigate never saw it issued).
fn reading(name: usize, owner: Option<(&str, bool)>) -> (Reading, Vec<Arc<CookieOwner>>) {
    let r = Reading {
        name,
        raw_name: "portal_session".into(),
        forms: vec![b"v".to_vec()],
    };
    let owners = owner
        .map(|(user, kaseyaone)| {
            let c = cookie::Cookie::parse("portal_session=v").unwrap();
            Arc::new(CookieOwner::of(&c, user, kaseyaone, Duration::from_secs(3600), 1_000).in_login(Some("sid-1")))
        })
        .into_iter()
        .collect();
    (r, owners)
}

fn decide_for(route: &Route, req: &Req, s: Option<&Session>, cookies: &Cookies) -> Decision {
    let facts = req.facts();
    unguarded(&facts, route).unwrap_or_else(|| {
        decide(
            &facts,
            route,
            &Found {
                session: s,
                cookies,
                now: NOW,
            },
        )
    })
}

/// The time every decision here is made at.
const NOW: u64 = 1_800_000_000;

fn login(to: &str) -> Decision {
    Decision::Login {
        return_path: to.into(),
        max_age: None,
    }
}

#[test]
fn what_needs_no_look_up() {
    let r = route();
    let mut off = route();
    off.unified_login = false;
    let cases: [(&Route, Req, Option<Decision>); 8] = [
        (&r, get("/_unigate/callback?code=x"), Some(Decision::Internal)),
        (&r, get("/logout"), Some(Decision::Logout)),
        (&r, get("/logout/now"), Some(Decision::Logout)),
        (&r, get("/static/app.css"), Some(Decision::Pass)),
        (&r, get("/staticky"), None),
        (&r, get("/reports"), None),
        (&off, get("/reports"), Some(Decision::Pass)),
        (
            &off,
            get("/_unigate/login"),
            Some(Decision::Reject(Reject::UnifiedLoginOff)),
        ),
    ];
    for (route, req, want) in cases {
        assert_eq!(unguarded(&req.facts(), route), want, "{}", req.target);
    }
}

#[test]
fn a_session_of_a_member_goes_through_and_others_are_refused() {
    let r = route();
    let member = session("alice", &["portal-users"]);
    let stranger = session("bob", &["bms-users"]);
    let mut pending = session("carol", &["portal-users"]);
    pending.link_pending = true;
    let mut chooser = route();
    chooser.chooser = vec![crate::config::route::RouteId(1)];
    let none = Cookies::None;
    let cases: [(&Route, Req, &Session, Decision); 7] = [
        (&r, get("/reports"), &member, Decision::Forward { strip_cookies: 0 }),
        (
            &r,
            get("/reports").api(),
            &member,
            Decision::Forward { strip_cookies: 0 },
        ),
        (
            &r,
            get("/reports"),
            &stranger,
            Decision::Reject(Reject::Forbidden {
                account: Some("bob@acme.example".into()),
            }),
        ),
        (&r, get("/reports"), &pending, Decision::LinkFirst),
        (&chooser, get("/reports"), &member, Decision::Chooser),
        // Module credentials beside a KaseyaOne session.
        (
            &r,
            get("/login").post(),
            &member,
            Decision::Reject(Reject::CredentialsBesideSession {
                email: "alice@acme.example".into(),
            }),
        ),
        (&r, get("/login"), &member, Decision::Forward { strip_cookies: 0 }),
    ];
    for (route, req, s, want) in cases {
        assert_eq!(
            decide_for(route, &req, Some(s), &none),
            want,
            "{} as {}",
            req.target,
            s.identity.sub
        );
    }
}

#[test]
fn module_cookies_are_judged_against_the_session() {
    let mut r = route();
    r.session_cookies = vec!["portal_session".into()];
    let alice = session("alice", &["portal-users"]);
    let mine = Cookies::Read(vec![reading(0, Some(("alice", true)))]);
    let bobs = Cookies::Read(vec![reading(0, Some(("bob", true)))]);
    let unknown = Cookies::Read(vec![reading(0, None)]);
    let local = Cookies::Read(vec![reading(0, Some(("ops", false)))]);
    let req = get("/reports");
    let bit = strip_bit(0);
    for (cookies, s, want) in [
        (&mine, Some(&alice), Decision::Forward { strip_cookies: 0 }),
        (&bobs, Some(&alice), Decision::Forward { strip_cookies: bit }),
        (&unknown, Some(&alice), Decision::Forward { strip_cookies: bit }),
        (&local, Some(&alice), Decision::Forward { strip_cookies: bit }),
        (
            &Cookies::TooMany,
            Some(&alice),
            Decision::Reject(Reject::TooManyCookies),
        ),
        (&Cookies::TooMany, None, Decision::Reject(Reject::TooManyCookies)),
        // No session: a module session unigate never saw issued is the
        // module's business; a local exception's too.
        (&unknown, None, login("/reports")),
        (&local, None, login("/reports")),
    ] {
        assert_eq!(decide_for(&r, &req, s, cookies), want, "{cookies:?}");
    }
    // A KaseyaOne user's module session without its KaseyaOne session:
    // expired where it was set, and the request starts over.
    match decide_for(&r, &req, None, &mine) {
        Decision::ExpireCookies(set) => {
            assert!(set.iter().all(|c| c.starts_with("portal_session=;")), "{set:?}");
            assert!(!set.is_empty());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn without_a_session_a_browser_logs_in_and_a_script_gets_401() {
    let r = route();
    let none = Cookies::None;
    for (req, want) in [
        (get("/reports?page=2"), login("/reports?page=2")),
        (get("/"), login("/")),
        // A target that could leave the origin returns to the root.
        (get("//evil.example/x"), login("/")),
        (get("/reports").api(), Decision::Reject(Reject::Unauthenticated)),
        (get("/reports").bearer(), Decision::Bearer),
    ] {
        assert_eq!(decide_for(&r, &req, None, &none), want, "{}", req.target);
    }
}

#[test]
fn with_module_login_optional_the_module_decides() {
    let mut r = route();
    r.login = LoginMode::Optional;
    let none = Cookies::None;
    for (req, want) in [
        (
            get("/reports"),
            Decision::ForwardLocal {
                login_page: false,
                rewrite: None,
            },
        ),
        (
            get("/login"),
            Decision::ForwardLocal {
                login_page: true,
                rewrite: None,
            },
        ),
        (
            get("/login").post(),
            Decision::ForwardLocal {
                login_page: true,
                rewrite: None,
            },
        ),
        // A bearer token still decides for itself.
        (get("/api").bearer(), Decision::Bearer),
    ] {
        assert_eq!(decide_for(&r, &req, None, &none), want, "{} {}", req.method, req.target);
    }
    // A Choose an Instance host has no login page of its own: KaseyaOne,
    // in every mode.
    r.chooser = vec![RouteId(1)];
    for mode in [LoginMode::Optional, LoginMode::Automatic, LoginMode::Required] {
        r.login = mode;
        assert_eq!(decide_for(&r, &get("/"), None, &none), login("/"), "{mode:?}");
        assert_eq!(
            decide_for(&r, &get("/x").api(), None, &none),
            Decision::Reject(Reject::Unauthenticated),
            "{mode:?}"
        );
    }
}

#[test]
fn where_kaseyaone_is_required_only_local_exceptions_use_module_credentials() {
    let mut r = route();
    r.login = LoginMode::Required;
    r.session_cookies = vec!["portal_session".into()];
    r.local_exceptions = vec!["ops".into()];
    let none = Cookies::None;
    let local = Cookies::Read(vec![reading(0, Some(("ops", false)))]);
    let mut put = get("/login");
    put.method = http::Method::PUT;
    let mut get_with_body = get("/local-login");
    get_with_body
        .headers
        .insert(http::header::TRANSFER_ENCODING, "chunked".parse().unwrap());
    let cases: [(Req, &Cookies, Decision); 9] = [
        (
            get("/login").post(),
            &none,
            Decision::ExceptionLogin { at_exception: false },
        ),
        (
            get("/local-login").post(),
            &none,
            Decision::ExceptionLogin { at_exception: true },
        ),
        (put, &none, Decision::Reject(Reject::BadModuleLogin(BadLogin::NotAForm))),
        (
            get_with_body,
            &none,
            Decision::Reject(Reject::BadModuleLogin(BadLogin::NotAForm)),
        ),
        (
            get("/local-login?username=ops"),
            &none,
            Decision::Reject(Reject::BadModuleLogin(BadLogin::Ambiguous)),
        ),
        // The exception path shows the module's login page.
        (
            get("/local-login?next=%2Fx"),
            &none,
            Decision::ForwardLocal {
                login_page: true,
                rewrite: Some("/login?next=%2Fx".into()),
            },
        ),
        // A local exception's module session goes on without KaseyaOne.
        (
            get("/reports"),
            &local,
            Decision::ForwardLocal {
                login_page: false,
                rewrite: None,
            },
        ),
        // Anyone else logs in with KaseyaOne, even on the login page.
        (get("/login"), &none, login("/login")),
        (get("/reports"), &none, login("/reports")),
    ];
    for (req, cookies, want) in cases {
        assert_eq!(
            decide_for(&r, &req, None, cookies),
            want,
            "{} {}",
            req.method,
            req.target
        );
    }
    // Without exceptions, the exception path is the KaseyaOne login too.
    r.local_exceptions.clear();
    assert_eq!(decide_for(&r, &get("/local-login"), None, &none), login("/local-login"));
}

#[test]
fn a_request_with_a_bearer_token_is_a_scripts_and_reads_its_token() {
    let browser = get("/reports");
    assert_eq!(browser.facts().client(), ClientKind::Navigation);
    assert_eq!(browser.facts().bearer(), None);
    let script = get("/reports").bearer();
    assert_eq!(script.facts().client(), ClientKind::Api, "despite Accept: text/html");
    assert_eq!(script.facts().bearer(), Some("token"));
    let mut basic = get("/reports");
    basic
        .headers
        .insert(http::header::AUTHORIZATION, "Basic YTpi".parse().unwrap());
    assert_eq!(basic.facts().bearer(), None);
    assert_eq!(basic.facts().client(), ClientKind::Navigation);
    assert!(!get("/x").facts().has_body() && get("/x").post().facts().has_body());
}

#[test]
fn a_login_with_module_credentials_only_is_logged_out_by_the_module() {
    let local = Cookies::Read(vec![reading(0, Some(("localuser", false)))]);
    let kaseyaone = Cookies::Read(vec![reading(0, Some(("alice", true)))]);
    let unknown = Cookies::Read(vec![reading(0, None)]);
    let to_module = Decision::ForwardLocal {
        login_page: false,
        rewrite: None,
    };
    let mut r = route();
    for (mode, has_session, cookies, want) in [
        // Module credentials only: the module's own logout.
        (LoginMode::Optional, false, &local, to_module.clone()),
        (LoginMode::Required, false, &local, to_module.clone()),
        // Anything of a KaseyaOne login: unigate's logout, which ends
        // KaseyaOne's session too (also once unigate's own has expired).
        (LoginMode::Optional, true, &local, Decision::Logout),
        (LoginMode::Optional, false, &kaseyaone, Decision::Logout),
        (LoginMode::Optional, false, &unknown, Decision::Logout),
        (LoginMode::Optional, false, &Cookies::None, Decision::Logout),
        // No module credentials here: a "local" cookie is not believed.
        (LoginMode::Automatic, false, &local, Decision::Logout),
    ] {
        r.login = mode;
        assert_eq!(logout(&r, has_session, cookies), want, "{mode:?} {has_session}");
    }
}

/// A session whose login was at `auth_time` (its ID token says so).
fn session_at(sub: &str, groups: &[&str], auth_time: u64) -> Session {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let jwt = format!(
        "{}.{}.{}",
        b64(r#"{"alg":"ES256"}"#),
        b64(&format!(r#"{{"sub":"{sub}","auth_time":{auth_time}}}"#)),
        b64("sig")
    );
    let s = session(sub, groups);
    s.tokens.lock().unwrap().id_token = Some(crate::session::IdToken::new(&jwt));
    s
}

/// The module with an admin area, a read-only API for a wider group, a
/// closed area, a billing page that needs a recent login, and a public
/// health page inside the admin area.
fn ruled() -> Route {
    use crate::policy::rules::{Rule, RuleAccess, RulePath};
    let rule = |paths: &[&str], methods: &[&str], access, age: Option<u64>| Rule {
        paths: paths.iter().map(|p| RulePath::parse(p)).collect(),
        methods: methods.iter().map(|m| m.to_string()).collect(),
        access,
        max_login_age: age.map(Duration::from_secs),
    };
    Route {
        login: LoginMode::Optional,
        paths_case_insensitive: true,
        rules: vec![
            rule(&["=/admin/health"], &[], RuleAccess::Public, None),
            rule(
                &["/admin/"],
                &[],
                RuleAccess::AlsoModule(vec!["portal-admins".into()]),
                None,
            ),
            rule(&["/api/"], &["GET"], RuleAccess::Instead(vec!["readers".into()]), None),
            rule(&["/old/"], &[], RuleAccess::Deny, None),
            rule(&["/billing/"], &[], RuleAccess::Module, Some(300)),
        ],
        ..route()
    }
}

#[test]
fn rules_decide_per_path_and_method_for_sessions() {
    let r = ruled();
    let none = Cookies::None;
    let alice = session_at("alice", &["portal-users", "portal-admins"], NOW - 60);
    let bob = session_at("bob", &["portal-users"], NOW - 60);
    // Within the clock skew a login's check allows: still fresh.
    let edge = session_at("eve", &["portal-users"], NOW - 300 - 59);
    let reader = session_at("rita", &["readers"], NOW - 60);
    let stale = session_at("sam", &["portal-users"], NOW - 300 - 61);
    let unknown = session("una", &["portal-users"]);
    let fwd = Decision::Forward { strip_cookies: 0 };
    let area = |need: &[&str], who: &str| {
        Decision::Reject(Reject::AreaForbidden {
            account: Some(format!("{who}@acme.example")),
            need: need.iter().map(|g| g.to_string()).collect(),
        })
    };
    let forbidden = |who: &str| {
        Decision::Reject(Reject::Forbidden {
            account: Some(format!("{who}@acme.example")),
        })
    };
    let step_up = |to: &str| Decision::StepUp {
        return_path: to.into(),
        max_age: 300,
    };
    let cases: Vec<(&str, Req, Option<&Session>, Decision)> = vec![
        ("admin, member", get("/admin/users"), Some(&alice), fwd.clone()),
        (
            "admin, not a member",
            get("/admin/users"),
            Some(&bob),
            area(&["portal-admins"], "bob"),
        ),
        // The canonical-path traps: the same area whatever the spelling.
        (
            "admin, upper case",
            get("/ADMIN/users"),
            Some(&bob),
            area(&["portal-admins"], "bob"),
        ),
        (
            "admin, ;param",
            get("/admin;x/users"),
            Some(&bob),
            area(&["portal-admins"], "bob"),
        ),
        (
            "admin, trailing dot",
            get("/admin./users"),
            Some(&bob),
            area(&["portal-admins"], "bob"),
        ),
        (
            "admin, no slash",
            get("/admin"),
            Some(&bob),
            area(&["portal-admins"], "bob"),
        ),
        ("admin health is public", get("/admin/health"), None, Decision::Pass),
        (
            "admin, outside the module's groups",
            get("/admin/users"),
            Some(&reader),
            forbidden("rita"),
        ),
        (
            "the API for readers only",
            get("/api/items"),
            Some(&reader),
            fwd.clone(),
        ),
        (
            "the API, the module's users are not readers",
            get("/api/items"),
            Some(&bob),
            area(&["readers"], "bob"),
        ),
        (
            "the API's writes fall back to the module's groups",
            get("/api/items").post(),
            Some(&bob),
            fwd.clone(),
        ),
        (
            "the API's writes, a reader outside the module",
            get("/api/items").post(),
            Some(&reader),
            forbidden("rita"),
        ),
        (
            "closed to everyone",
            get("/old/page"),
            Some(&alice),
            Decision::Reject(Reject::AreaForbidden {
                account: None,
                need: vec![],
            }),
        ),
        (
            "closed without a session too",
            get("/old/page"),
            None,
            Decision::Reject(Reject::AreaForbidden {
                account: None,
                need: vec![],
            }),
        ),
        ("billing, recent login", get("/billing/"), Some(&bob), fwd.clone()),
        ("billing, within the skew", get("/billing/"), Some(&edge), fwd.clone()),
        (
            "billing, old login",
            get("/billing/invoices?y=2026"),
            Some(&stale),
            step_up("/billing/invoices?y=2026"),
        ),
        (
            "billing, login time unknown",
            get("/billing/"),
            Some(&unknown),
            step_up("/billing/"),
        ),
        (
            "billing, old login, a script",
            get("/billing/").api(),
            Some(&stale),
            Decision::Reject(Reject::LoginTooOld { max_age: 300 }),
        ),
        (
            "billing, a member outside the module",
            get("/billing/"),
            Some(&reader),
            forbidden("rita"),
        ),
        // No rule: the module's own rules.
        ("elsewhere", get("/reports"), Some(&bob), fwd.clone()),
        (
            "elsewhere, outside the module",
            get("/reports"),
            Some(&reader),
            forbidden("rita"),
        ),
        // Optional login: without a session the module decides, except
        // where a rule guards: only a KaseyaOne login says who it is.
        (
            "elsewhere, no session",
            get("/reports"),
            None,
            Decision::ForwardLocal {
                login_page: false,
                rewrite: None,
            },
        ),
        ("admin, no session", get("/admin/users"), None, login("/admin/users")),
        (
            "billing, no session: a recent login asked for at once",
            get("/billing/"),
            None,
            Decision::Login {
                return_path: "/billing/".into(),
                max_age: Some(300),
            },
        ),
        (
            "billing, no session, a script",
            get("/billing/").api(),
            None,
            Decision::Reject(Reject::Unauthenticated),
        ),
        (
            "a bearer token in a guarded area",
            get("/admin/users").bearer(),
            None,
            Decision::Bearer,
        ),
    ];
    for (what, req, s, want) in cases {
        assert_eq!(decide_for(&r, &req, s, &none), want, "{what}");
    }
}
