//! What a user may open among the routes: the App Launcher's tiles (with
//! My Modules' rules), a module's instances, and where a logout sends the
//! browser. Pure: the routes, the user's groups and the origins are
//! given.

use crate::config::route::{Route, RouteId};
use crate::pages::{LauncherTile, TileKind};
use crate::policy::may_access;
use crate::policy::request::PREFIX;

/// The App Launcher's tiles for a user with `groups`: every module (not
/// instance) in one of the user's access groups. A module with Unified
/// Login off is a lock to its own login page; one with instances is an
/// arrow to the only instance open to the user, or a file to Choose an
/// Instance (none open: no tile). `origin_for` gives the origin browsers
/// use for a host.
pub fn launcher_tiles(routes: &[Route], groups: &[String], origin_for: impl Fn(&str) -> String) -> Vec<LauncherTile> {
    let mut tiles = Vec::new();
    for m in routes.iter().filter(|m| m.instance.is_none()) {
        if !may_access(groups, &m.access_groups) {
            continue;
        }
        let Some(host) = m.hosts.first() else { continue };
        let origin = origin_for(host);
        let (tile, url, instances) = if !m.unified_login {
            let login = m.login_paths.first().map_or("/", String::as_str);
            (TileKind::Lock, format!("{origin}{login}"), 0)
        } else if m.chooser.is_empty() {
            (TileKind::Arrow, seamless_url(&origin, "/"), 0)
        } else {
            let open = open_instances(routes, m, groups);
            match open.as_slice() {
                [] => continue,
                [one] => match routes[one.index()].hosts.first() {
                    Some(h) => (TileKind::Arrow, seamless_url(&origin_for(h), "/"), 1),
                    None => continue,
                },
                many => (TileKind::File, format!("{origin}{PREFIX}instances"), many.len()),
            }
        };
        tiles.push(LauncherTile {
            name: m.name.clone(),
            display_name: m.display_name.clone(),
            url,
            tile,
            instances,
        });
    }
    tiles
}

/// The instances of module route `m` a user with `groups` may open (some
/// part of: by the instance's access groups, or a rule's that replace
/// them).
pub fn open_instances(routes: &[Route], m: &Route, groups: &[String]) -> Vec<RouteId> {
    m.chooser
        .iter()
        .copied()
        .filter(|r| routes[r.index()].admits_somewhere(groups))
        .collect()
}

/// The instance named `name` among `open`.
pub fn instance_named(routes: &[Route], open: &[RouteId], name: &str) -> Option<RouteId> {
    open.iter()
        .copied()
        .find(|r| routes[r.index()].instance.as_ref().is_some_and(|i| i.name == name))
}

/// Where a module with instances sends a user at its own host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceFor {
    /// The only instance open to them, or the one they chose before.
    Open(RouteId),
    /// Choose an Instance.
    Choose,
    /// No instance is open to them.
    NoneOpen,
}

/// Where a module with instances sends a user at its own host: the only
/// instance open to them, else the one they chose before (`remembered`,
/// if still open), else Choose an Instance.
pub fn instance_for(routes: &[Route], open: &[RouteId], remembered: Option<&str>) -> InstanceFor {
    match open {
        [] => InstanceFor::NoneOpen,
        [one] => InstanceFor::Open(*one),
        _ => remembered
            .and_then(|name| instance_named(routes, open, name))
            .map_or(InstanceFor::Choose, InstanceFor::Open),
    }
}

/// Where a logout sends the browser: the identity provider's end-session
/// endpoint, so that the KaseyaOne session ends too — with the session's
/// ID token as hint when there is one (the provider logs out at once), and
/// without when unigate's session had already ended (idle timeout): the
/// provider then asks the person to confirm. `None`: the provider has no
/// end-session endpoint, and unigate's own "logged out" page is all.
pub fn end_session_url(
    endpoint: Option<&str>,
    id_token: Option<&str>,
    client_id: &str,
    post_logout_redirect_uri: &str,
) -> Option<String> {
    let mut params = Vec::with_capacity(3);
    if let Some(hint) = id_token {
        params.push(("id_token_hint", hint));
    }
    params.push(("client_id", client_id));
    params.push(("post_logout_redirect_uri", post_logout_redirect_uri));
    Some(crate::oidc::with_params(endpoint?, &params))
}

/// What a login started at `/_unigate/login` asked for: OpenID Connect
/// third-party-initiated login (Core §4: `iss`, `target_link_uri`,
/// `login_hint`, from My Modules and the App Launcher) or the "Log In
/// with KaseyaOne" button (`return_to`).
#[derive(Debug, Default, Clone, Copy)]
pub struct Initiation<'a> {
    pub iss: Option<&'a str>,
    pub target_link_uri: Option<&'a str>,
    pub return_to: Option<&'a str>,
    pub login_hint: Option<&'a str>,
}

/// Where an initiated login goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Initiated {
    /// Log in on this host (already logged in: go straight) and return
    /// to this path.
    Here { return_path: String },
    /// The target is on another host unigate serves: start there, at this
    /// URL (its own `/_unigate/login`).
    There { url: String },
}

/// Where a login initiated on `this_host` goes. `iss`, when given, must be
/// the configured `issuer` (else a refusal: the link is for another
/// provider). `target_link_uri` must be a URL on an origin unigate serves
/// (`origin_of` gives the origin browsers use for each host unigate
/// serves, `None` for any other) and pass the return-path rules; anything
/// else (an open-redirect attempt, a host unigate does not serve) returns
/// to this module's root, as a bad `return_to` does.
pub fn initiated_login(
    issuer: &str,
    this_host: &str,
    init: &Initiation<'_>,
    origin_of: impl Fn(&str) -> Option<String>,
) -> Result<Initiated, crate::policy::reject::Reject> {
    use crate::oidc::return_url::safe_return_path;
    if let Some(iss) = init.iss
        && iss.trim_end_matches('/') != issuer.trim_end_matches('/')
    {
        return Err(crate::policy::reject::Reject::BadRequest(
            "This login link names an identity provider these modules do not use.".into(),
        ));
    }
    let here = |p: &str| Initiated::Here {
        return_path: safe_return_path(p).unwrap_or("/").to_string(),
    };
    let Some(target) = init.target_link_uri else {
        return Ok(here(init.return_to.unwrap_or("/")));
    };
    if target.starts_with('/') {
        return Ok(here(target));
    }
    let Ok(url) = url::Url::parse(target) else {
        return Ok(here("/"));
    };
    let served = url
        .host_str()
        .filter(|_| matches!(url.scheme(), "http" | "https"))
        .and_then(|host| {
            let origin = origin_of(host)?;
            let same = url::Url::parse(&origin).is_ok_and(|o| o.origin() == url.origin());
            same.then_some((host.to_string(), origin))
        });
    let Some((host, origin)) = served else {
        return Ok(here("/"));
    };
    let path = &url[url::Position::BeforePath..url::Position::AfterQuery];
    let Some(path) = safe_return_path(path) else {
        return Ok(here("/"));
    };
    if host == this_host {
        return Ok(here(path));
    }
    let target = format!("{origin}{path}");
    let mut params = vec![("target_link_uri", target.as_str())];
    if let Some(h) = init.login_hint {
        params.push(("login_hint", h));
    }
    Ok(Initiated::There {
        url: crate::oidc::with_params(&format!("{origin}{PREFIX}login"), &params),
    })
}

/// A URL that opens `path` on `host` logged in with the KaseyaOne session
/// the browser has (through `/_unigate/login` there), rather than on the
/// module's own login page: for App Launcher tiles and Choose an Instance.
pub fn seamless_url(origin: &str, path: &str) -> String {
    let target = format!("{origin}{path}");
    crate::oidc::with_params(
        &format!("{origin}{PREFIX}login"),
        &[("target_link_uri", target.as_str())],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::route::InstanceRef;

    fn module(name: &str, groups: &[&str]) -> Route {
        Route {
            name: name.into(),
            label: name.into(),
            display_name: name.to_uppercase(),
            hosts: vec![format!("{name}.localhost")],
            access_groups: groups.iter().map(|g| g.to_string()).collect(),
            unified_login: true,
            login_paths: vec!["/login".into()],
            ..Route::default()
        }
    }

    fn instance(name: &str, groups: &[&str]) -> Route {
        let mut r = module(&format!("bms-{name}"), groups);
        r.name = "bms".into();
        r.instance = Some(InstanceRef {
            name: name.into(),
            display_name: name.to_uppercase(),
        });
        r
    }

    /// portal, legacy (Unified Login off), bms with instances east/west.
    fn routes() -> Vec<Route> {
        let mut legacy = module("legacy", &["staff"]);
        legacy.unified_login = false;
        let mut bms = module("bms", &["east", "west"]);
        bms.chooser = vec![RouteId(3), RouteId(4)];
        vec![
            module("portal", &["staff"]),
            legacy,
            bms,
            instance("east", &["east"]),
            instance("west", &["west"]),
        ]
    }

    fn g(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn each_user_sees_the_tiles_of_their_groups() {
        let rs = routes();
        let origin = |h: &str| format!("https://{h}");
        let tiles = |groups: &[&str]| -> Vec<(String, TileKind, String, usize)> {
            launcher_tiles(&rs, &g(groups), origin)
                .into_iter()
                .map(|t| (t.name, t.tile, t.url, t.instances))
                .collect()
        };
        let arrow = |n: &str, url: &str, i| (n.to_string(), TileKind::Arrow, url.to_string(), i);
        assert_eq!(
            tiles(&["staff"]),
            [
                // Through the module's login initiation: logged in with
                // the KaseyaOne session, never the module's login page.
                arrow(
                    "portal",
                    "https://portal.localhost/_unigate/login?target_link_uri=https%3A%2F%2Fportal.localhost%2F",
                    0
                ),
                (
                    "legacy".into(),
                    TileKind::Lock,
                    "https://legacy.localhost/login".into(),
                    0
                ),
            ]
        );
        // One instance open: straight to it.
        assert_eq!(
            tiles(&["east"]),
            [arrow(
                "bms",
                "https://bms-east.localhost/_unigate/login?target_link_uri=https%3A%2F%2Fbms-east.localhost%2F",
                1
            )]
        );
        // Both: Choose an Instance.
        assert_eq!(
            tiles(&["east", "west"]),
            [(
                "bms".into(),
                TileKind::File,
                "https://bms.localhost/_unigate/instances".into(),
                2
            )]
        );
        assert!(tiles(&["nobody"]).is_empty());
        assert!(tiles(&[]).is_empty());
    }

    #[test]
    fn an_instance_is_opened_only_by_its_groups() {
        let rs = routes();
        let bms = &rs[2];
        assert_eq!(open_instances(&rs, bms, &g(&["west"])), [RouteId(4)]);
        let both = open_instances(&rs, bms, &g(&["east", "west"]));
        assert_eq!(both, [RouteId(3), RouteId(4)]);
        use InstanceFor::*;
        assert_eq!(instance_for(&rs, &[], Some("east")), NoneOpen);
        assert_eq!(instance_for(&rs, &[RouteId(4)], Some("east")), Open(RouteId(4)));
        assert_eq!(instance_for(&rs, &both, Some("east")), Open(RouteId(3)));
        assert_eq!(instance_for(&rs, &both, None), Choose);
        // A remembered instance no longer open is not opened.
        assert_eq!(instance_for(&rs, &[RouteId(4), RouteId(0)], Some("east")), Choose);
        assert_eq!(instance_named(&rs, &both, "west"), Some(RouteId(4)));
        assert_eq!(instance_named(&rs, &both, "north"), None);
    }

    #[test]
    fn a_logout_goes_to_the_provider_whenever_it_has_an_end_session_endpoint() {
        let url = end_session_url(
            Some("https://idp.example/logout"),
            Some("a.b.c"),
            "portal",
            "https://portal.example/",
        )
        .unwrap();
        assert_eq!(
            url,
            "https://idp.example/logout?id_token_hint=a.b.c&client_id=portal&post_logout_redirect_uri=https%3A%2F%2Fportal.example%2F"
        );
        assert_eq!(end_session_url(None, Some("a.b.c"), "c", "/"), None);
        // unigate's session already ended: KaseyaOne's still ends, once
        // the person confirms it there.
        assert_eq!(
            end_session_url(
                Some("https://idp.example/logout"),
                None,
                "portal",
                "https://portal.example/"
            )
            .as_deref(),
            Some(
                "https://idp.example/logout?client_id=portal&post_logout_redirect_uri=https%3A%2F%2Fportal.example%2F"
            )
        );
    }

    fn origin_of(host: &str) -> Option<String> {
        ["portal.localhost", "bms-east.localhost"]
            .contains(&host)
            .then(|| format!("http://{host}:8080"))
    }

    fn init<'a>(iss: Option<&'a str>, target: Option<&'a str>) -> Initiation<'a> {
        Initiation {
            iss,
            target_link_uri: target,
            ..Initiation::default()
        }
    }

    #[test]
    fn an_initiated_login_goes_only_where_unigate_serves() {
        let iss = Some("http://idp.example:9000");
        let here = |p: &str| Ok(Initiated::Here { return_path: p.into() });
        for (target, want) in [
            (None, here("/")),
            (Some("http://portal.localhost:8080/"), here("/")),
            (Some("http://portal.localhost:8080/reports?q=1#frag"), here("/reports?q=1")),
            (Some("/reports"), here("/reports")),
            // Open redirects and look-alikes return to this module's root.
            (Some("https://evil.example/"), here("/")),
            (Some("http://portal.localhost.evil.example:8080/x"), here("/")),
            (Some("http://portal.localhost:8081/x"), here("/")),
            (Some("https://portal.localhost:8080/x"), here("/")),
            (Some("javascript:alert(1)//portal.localhost:8080/"), here("/")),
            (Some("//evil.example/"), here("/")),
            (Some("http://portal.localhost:8080//evil.example/"), here("/")),
            (Some("http://portal.localhost:8080/%2F%2Fevil.example/"), here("/")),
            (Some("http://user@portal.localhost:8080/x"), here("/x")),
            (Some("not a url"), here("/")),
            // Another host unigate serves: the login starts there.
            (
                Some("http://bms-east.localhost:8080/tickets"),
                Ok(Initiated::There {
                    url: "http://bms-east.localhost:8080/_unigate/login?target_link_uri=http%3A%2F%2Fbms-east.localhost%3A8080%2Ftickets".into(),
                }),
            ),
        ] {
            assert_eq!(
                initiated_login("http://idp.example:9000/", "portal.localhost", &init(iss, target), origin_of),
                want,
                "{target:?}"
            );
        }
    }

    #[test]
    fn an_initiated_login_from_another_issuer_is_refused_and_the_button_keeps_its_return_path() {
        let r = initiated_login(
            "http://idp.example:9000",
            "portal.localhost",
            &init(Some("https://other-idp.example"), Some("http://portal.localhost:8080/")),
            origin_of,
        );
        assert!(matches!(r, Err(crate::policy::reject::Reject::BadRequest(_))), "{r:?}");
        let button = Initiation {
            return_to: Some("/reports?x=1"),
            ..Initiation::default()
        };
        assert_eq!(
            initiated_login("http://idp.example:9000", "portal.localhost", &button, origin_of),
            Ok(Initiated::Here {
                return_path: "/reports?x=1".into()
            })
        );
        let hint = Initiation {
            target_link_uri: Some("http://bms-east.localhost:8080/"),
            login_hint: Some("alice"),
            ..Initiation::default()
        };
        let Ok(Initiated::There { url }) =
            initiated_login("http://idp.example:9000", "portal.localhost", &hint, origin_of)
        else {
            panic!("to the other host")
        };
        assert!(url.ends_with("&login_hint=alice"), "{url}");
    }
}
