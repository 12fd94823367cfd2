//! The module side of Unified Login over real sockets, against demo modules
//! and the embedded IdP: App Launcher tiles, a module with Unified Login
//! disabled, instances (Choose an Instance, remembered choice, direct links,
//! one open instance), and load-balanced upstreams with health checks.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use unigate::demo_module::demo_accounts as accounts;

/// `path` on `host` through that host's login initiation.
fn seamless(s: &Multi, host: &str, path: &str) -> String {
    let target: String = form_urlencoded::byte_serialize(s.url(host, path).as_bytes()).collect();
    s.url(host, &format!("/_unigate/login?target_link_uri={target}"))
}

async fn demo_stack() -> Multi {
    MultiBuilder::demo().accounts(accounts).start().await
}

#[tokio::test]
async fn launcher_tiles_follow_my_modules_rules_as_html_and_json() {
    let s = demo_stack().await;
    let b = s.browser();
    let (url, r) = s.walk(&b, "alice", &s.url("portal.localhost", "/")).await;
    assert_eq!(r.status(), 200, "{url}");
    let page = text(r).await;
    // The App Launcher menu, with alice's three modules and their tiles.
    assert!(page.contains(r#"id="unigate-launcher""#), "{page}");
    for (module, tile, hint) in [
        ("portal", "arrow", "Log In with KaseyaOne"),
        ("bms", "file", "Choose an instance (2 instances)"),
        ("itglue", "lock", "Log in with your module credentials"),
    ] {
        let a = format!(r#"data-module="{module}" data-tile="{tile}">"#);
        let at = page.find(&a).unwrap_or_else(|| panic!("{module} as {tile}: {page}"));
        // The tile's link says what it does (its icon is decorative).
        let link = &page[at..at + page[at..].find("</a>").unwrap()];
        assert!(link.contains(hint), "{link}");
        assert!(link.contains(r#"aria-hidden="true""#), "{link}");
    }
    // A named button, a menu with keys once its script runs: nothing of it
    // outside `unigate-` names.
    let launcher = launcher_of(&page);
    assert!(launcher.contains(r#"aria-label="App Launcher""#), "{launcher}");
    for needed in [
        "'aria-haspopup', 'menu'",
        "'role', 'menuitem'",
        "'Escape'",
        "(function () {",
    ] {
        assert!(launcher.contains(needed), "{needed}: {launcher}");
    }
    for attr in [" id=\"", " class=\""] {
        for (i, _) in launcher.match_indices(attr) {
            let v = &launcher[i + attr.len()..];
            for name in v[..v.find('"').unwrap()].split_whitespace() {
                assert!(name.starts_with("unigate-"), "{name} in {launcher}");
            }
        }
    }
    let json: Value = b
        .get(s.url("portal.localhost", "/_unigate/launcher"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tiles: Vec<(String, String, String)> = json["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                t["tile"].as_str().unwrap().to_string(),
                t["url"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        tiles,
        vec![
            ("portal".into(), "arrow".into(), seamless(&s, "portal.localhost", "/")),
            (
                "bms".into(),
                "file".into(),
                s.url("bms.localhost", "/_unigate/instances")
            ),
            ("itglue".into(), "lock".into(), s.url("itglue.localhost", "/login")),
        ]
    );
    assert_eq!(json["modules"][1]["instances"], 2);

    // The launcher as a page of its own: usable alone.
    let r = b
        .get(s.url("portal.localhost", "/_unigate/launcher"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let page = text(r).await;
    assert_accessible_page(&page);
    assert!(
        page.contains(r#"data-module="bms" data-tile="file">"#) && page.contains("Choose an instance"),
        "{page}"
    );

    // bob is only in portal-users: one tile.
    let b = s.browser();
    let (_, r) = s
        .walk(&b, "bob", &s.url("portal.localhost", "/_unigate/launcher"))
        .await;
    let page = text(r).await;
    assert!(page.contains(r#"data-module="portal""#), "{page}");
    assert!(!page.contains(r#"data-module="bms""#), "{page}");
    assert!(!page.contains(r#"data-module="itglue""#), "{page}");
}

/// The App Launcher in a module page.
fn launcher_of(page: &str) -> &str {
    let start = page
        .find(r#"<details id="unigate-launcher""#)
        .expect("the App Launcher");
    &page[start..start + page[start..].find("</details>").unwrap()]
}

#[tokio::test]
async fn a_module_without_unified_login_is_passed_through_with_its_own_login_only() {
    let s = demo_stack().await;
    let b = s.browser();
    // Its own login page, untouched: no button, no icon, no redirect.
    let r = b
        .get(s.url("itglue.localhost", "/login"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let page = text(r).await;
    assert!(page.contains("Log in to itglue"), "{page}");
    assert!(!page.contains("unigate-"), "nothing injected: {page}");
    // Module credentials work through unigate.
    let r = b
        .post(s.url("itglue.localhost", "/login"))
        .form(&[("username", "localuser"), ("password", "local-demo-pass")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "module login redirects");
    // Identity headers a client sends never reach it.
    let who: Value = b
        .get(s.url("itglue.localhost", "/api/whoami"))
        .header("x-kaseyaone-user", "alice")
        .header("X_KaseyaOne_Email", "alice@acme-msp.example")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(who["local_session_user"], "localuser");
    let identity_headers = who["headers"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| {
            ![
                "x-request-id",
                "x-forwarded-for",
                "x-forwarded-proto",
                "x-forwarded-host",
            ]
            .contains(&k.as_str())
        })
        .count();
    assert_eq!(identity_headers, 0, "{who}");
    // Log In with KaseyaOne is not offered there.
    let r = b
        .get(s.url("itglue.localhost", "/_unigate/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(text(r).await.contains("not enabled for IT Glue"));
}

#[tokio::test]
async fn instances_choose_remember_and_direct_links() {
    let s = demo_stack().await;
    let b = s.browser();
    // alice may open both instances: Choose an Instance.
    let (url, r) = s.walk(&b, "alice", &s.url("bms.localhost", "/reports")).await;
    assert_eq!(r.status(), 200, "{url}");
    assert!(url.starts_with(&s.url("bms.localhost", "/")), "{url}");
    let page = text(r).await;
    assert_accessible_page(&page);
    assert!(page.contains("Choose an Instance"), "{page}");
    assert!(page.contains(r#"data-instance="east""#) && page.contains(r#"data-instance="west""#));
    assert!(page.contains("Acme East") && page.contains("Acme West"), "{page}");
    // Choosing east remembers it and opens east, keeping the path.
    let r = b
        .get(s.url("bms.localhost", "/_unigate/instances?choose=east&return_to=%2Freports"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    // On through east's login initiation: logged in with the KaseyaOne
    // session, whatever east's login mode.
    assert_eq!(location(&r), seamless(&s, "bms-east.localhost", "/reports"));
    let remembered = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .any(|c| c.to_str().unwrap().starts_with("unigate_instance=east;"));
    assert!(remembered);
    // East logs in with no prompt (the IdP session) and serves the page.
    let (url, r) = s.walk(&b, "alice", &s.url("bms-east.localhost", "/reports")).await;
    assert_eq!(r.status(), 200, "{url}");
    assert!(text(r).await.contains("Reports for alice"));
    // The module's own host now goes straight to the remembered instance.
    let r = b
        .get(s.url("bms.localhost", "/"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(location(&r), seamless(&s, "bms-east.localhost", "/"));
    // The file tile's page always offers the choice again.
    let r = b
        .get(s.url("bms.localhost", "/_unigate/instances"))
        .send()
        .await
        .unwrap();
    assert!(text(r).await.contains("Choose an Instance"));
    // A direct link to the other instance works.
    let (url, r) = s.walk(&b, "alice", &s.url("bms-west.localhost", "/")).await;
    assert_eq!(r.status(), 200, "{url}");
    let page = text(r).await;
    assert!(page.contains("bms/west"), "served by west: {page}");
    // A choice of an instance the user may not open is ignored.
    let r = b
        .get(s.url("bms.localhost", "/_unigate/instances?choose=nope"))
        .send()
        .await
        .unwrap();
    assert!(text(r).await.contains("Choose an Instance"));
}

#[tokio::test]
async fn one_open_instance_needs_no_choice() {
    // west only for portal-users: carol (bms-users only) has east alone.
    let s = MultiBuilder::demo()
        .accounts(accounts)
        .instance("bms", "west", |w| {
            w.set("access_groups", vec!["portal-users"]);
        })
        .start()
        .await;
    let b = s.browser();
    let r = s.walk(&b, "carol", &s.url("bms.localhost", "/ping")).await;
    assert_eq!(r.0, s.url("bms-east.localhost", "/ping"), "straight to east");
    assert_eq!(r.1.status(), 200);
    // And the west host refuses her, naming the module and the instance,
    // her account, and the ways out.
    let (_, r) = s.walk(&b, "carol", &s.url("bms-west.localhost", "/")).await;
    assert_eq!(r.status(), 403);
    let page = text(r).await;
    assert_accessible_page(&page);
    assert!(page.contains("You do not have access to BMS · Acme West"), "{page}");
    assert!(page.contains("You used the KaseyaOne account <b>carol@"), "{page}");
    assert_ways_out(&page, s.idp.issuer());
}

#[tokio::test]
async fn upstreams_are_load_balanced_and_all_down_is_an_immediate_503() {
    let mut s = demo_stack().await;
    let b = s.browser();
    let (_, r) = s.walk(&b, "alice", &s.url("bms-east.localhost", "/")).await;
    assert_eq!(r.status(), 200);
    let (one, two) = (
        s.module("bms/east").addr.to_string(),
        s.module("bms/east#2").addr.to_string(),
    );
    let served_by = |r: &reqwest::Response| r.headers()["x-served-by"].to_str().unwrap().to_string();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..6 {
        let r = b.get(s.url("bms-east.localhost", "/")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        seen.insert(served_by(&r));
    }
    assert_eq!(
        seen,
        [one.clone(), two.clone()].into_iter().collect(),
        "both upstreams serve"
    );
    // One down: every request still works, from the other.
    s.modules.remove("bms/east").unwrap().stop();
    // Once the health checks (every 200 ms) see it: two requests in a row
    // (round robin would give each upstream one) served by the other.
    let east = s.url("bms-east.localhost", "/");
    let by_two = async || {
        let r = b.get(&east).send().await.unwrap();
        r.status() == 200 && served_by(&r) == two
    };
    let mut in_a_row = 0;
    wait_until(
        "the health checks take the stopped upstream out",
        Duration::from_secs(3),
        async || {
            in_a_row = if by_two().await { in_a_row + 1 } else { 0 };
            in_a_row >= 2
        },
    )
    .await;
    for _ in 0..6 {
        let r = b.get(s.url("bms-east.localhost", "/")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(served_by(&r), two);
    }
    // Both down: once the health checks see it, a 503 page at once.
    s.modules.remove("bms/east#2").unwrap().stop();
    wait_until("the health checks see both down", Duration::from_secs(3), async || {
        b.get(&east).send().await.unwrap().status() == 503
    })
    .await;
    let t = Instant::now();
    let r = b.get(s.url("bms-east.localhost", "/")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(t.elapsed() < Duration::from_millis(500), "{:?}", t.elapsed());
    assert_eq!(r.headers()["retry-after"], "10");
    assert!(text(r).await.contains("is unavailable"));
    // A single upstream down: the same.
    let (_, r) = s.walk(&b, "alice", &s.url("bms-west.localhost", "/")).await;
    assert_eq!(r.status(), 200);
    s.modules.remove("bms/west").unwrap().stop();
    let west = s.url("bms-west.localhost", "/");
    wait_until("the health checks see west down", Duration::from_secs(3), async || {
        b.get(&west).send().await.unwrap().status() == 503
    })
    .await;
    let t = Instant::now();
    let r = b.get(s.url("bms-west.localhost", "/")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(t.elapsed() < Duration::from_millis(500), "{:?}", t.elapsed());
}
