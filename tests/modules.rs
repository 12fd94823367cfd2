//! The module side of Unified Login over real sockets, against demo modules
//! and the embedded IdP: App Launcher tiles, Unified Login disabled,
//! instances (Choose an Instance, remembered choice, direct links),
//! load-balanced upstreams with health checks, the seed's account
//! conditions (SCIM and file), Automatic User Provisioning, account
//! linking, and Require Log In with KaseyaOne with its exceptions.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use unigate::demo_module::DemoAccount;

fn accounts(label: &str) -> Vec<DemoAccount> {
    unigate::demo_module::demo_accounts(label)
}

async fn demo_stack() -> Multi {
    MultiBuilder::demo().accounts(accounts).start().await
}

async fn text(r: reqwest::Response) -> String {
    r.text().await.unwrap()
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
    for (module, tile) in [("portal", "arrow"), ("bms", "file"), ("itglue", "lock")] {
        assert!(
            page.contains(&format!(r#"data-module="{module}" data-tile="{tile}""#)),
            "{module} as {tile}: {page}"
        );
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
            ("portal".into(), "arrow".into(), s.url("portal.localhost", "/")),
            (
                "bms".into(),
                "file".into(),
                s.url("bms.localhost", "/_unigate/instances")
            ),
            ("itglue".into(), "lock".into(), s.url("itglue.localhost", "/login")),
        ]
    );
    assert_eq!(json["modules"][1]["instances"], 2);

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

#[tokio::test]
async fn a_module_without_unified_login_is_passed_through_with_local_login_only() {
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
    assert!(page.contains("Choose an Instance"), "{page}");
    assert!(page.contains(r#"data-instance="east""#) && page.contains(r#"data-instance="west""#));
    // Choosing east remembers it and opens east, keeping the path.
    let r = b
        .get(s.url("bms.localhost", "/_unigate/instances?choose=east&return_to=%2Freports"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(location(&r), s.url("bms-east.localhost", "/reports"));
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
    assert_eq!(location(&r), s.url("bms-east.localhost", "/"));
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
    // And the west host refuses her.
    let (_, r) = s.walk(&b, "carol", &s.url("bms-west.localhost", "/")).await;
    assert_eq!(r.status(), 403);
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

/// The demo stack, the portal matching accounts as `spec` (a TOML inline
/// table) says.
fn with_accounts<'a>(spec: &str) -> MultiBuilder<'a> {
    let spec = toml_value(spec);
    MultiBuilder::demo().module("portal", |m| {
        m.set("accounts", spec);
    })
}

/// The module account each login was let in as (what the module sees).
async fn module_user(s: &Multi, b: &reqwest::Client, host: &str) -> Value {
    b.get(s.url(host, "/api/whoami"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["headers"]["x-kaseyaone-module-user"]
        .clone()
}

#[tokio::test]
async fn module_accounts_must_match_by_scim_with_a_page_per_failure() {
    let portal = |extra: Vec<DemoAccount>| {
        move |label: &str| {
            let mut a = accounts(label);
            if label == "portal" {
                a.extend(extra.clone());
            }
            a
        }
    };
    // both: alice matches; carol's account has another email; bob has none.
    let extra = vec![
        DemoAccount::new("carol", "carol@old.example", None),
        DemoAccount::new("dave", "dave@globex.example", None).inactive(),
    ];
    let s = with_accounts(r#"{ source = "scim", match = "both", cache_ttl = "1h" }"#)
        .accounts(portal(extra))
        .start()
        .await;
    let b = s.browser();
    let (_, r) = s.walk(&b, "alice", &s.url("portal.localhost", "/")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(module_user(&s, &b, "portal.localhost").await, "alice");
    let lookups = s
        .module("portal")
        .module
        .scim_requests
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(lookups, 1, "both: one lookup by username when it matches");
    // Cached: a second login asks the module nothing.
    let b2 = s.browser();
    let (_, r) = s.walk(&b2, "alice", &s.url("portal.localhost", "/")).await;
    assert_eq!(r.status(), 200);
    let again = s
        .module("portal")
        .module
        .scim_requests
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(again, lookups, "the lookup is cached");

    // The IdP's carol is carol@globex.example; the module's has another email.
    // carol is not in portal-users: give the check a user who is, via a stack below.
    let (_, r) = s.walk(&s.browser(), "bob", &s.url("portal.localhost", "/")).await;
    assert_eq!(r.status(), 403);
    let page = text(r).await;
    assert!(page.contains(r#"data-reason="no_account""#), "{page}");
    assert!(page.contains("Automatic User Provisioning"), "says what to fix: {page}");
}

#[tokio::test]
async fn email_and_username_mismatches_and_unfinished_accounts_have_their_own_pages() {
    // bob@acme-msp.example in the IdP; vary the module's bob.
    for (module_bob, spec, reason) in [
        (
            DemoAccount::new("bob", "robert@elsewhere.example", None),
            r#"{ source = "scim", match = "both" }"#,
            Some("email_mismatch"),
        ),
        (
            DemoAccount::new("rob", "bob@acme-msp.example", None),
            r#"{ source = "scim", match = "both" }"#,
            Some("username_mismatch"),
        ),
        (
            DemoAccount::new("bob", "bob@acme-msp.example", None).inactive(),
            r#"{ source = "scim", match = "both" }"#,
            Some("not_activated"),
        ),
        // email only: a different username is fine, and is what the module gets.
        (
            DemoAccount::new("rob", "bob@acme-msp.example", None),
            r#"{ source = "scim", match = "email" }"#,
            None,
        ),
        // username only: a different email is fine.
        (
            DemoAccount::new("bob", "robert@elsewhere.example", None),
            r#"{ source = "scim", match = "username" }"#,
            None,
        ),
    ] {
        let expected_user = module_bob.username.clone();
        let extra = module_bob.clone();
        let s = with_accounts(spec)
            .accounts(move |label: &str| {
                let mut a = accounts(label);
                if label == "portal" {
                    a.push(extra.clone());
                }
                a
            })
            .start()
            .await;
        let b = s.browser();
        let (_, r) = s.walk(&b, "bob", &s.url("portal.localhost", "/")).await;
        match reason {
            Some(reason) => {
                assert_eq!(r.status(), 403, "{reason}");
                let page = text(r).await;
                assert!(page.contains(&format!(r#"data-reason="{reason}""#)), "{reason}: {page}");
            }
            None => {
                assert_eq!(r.status(), 200, "{spec}");
                assert_eq!(module_user(&s, &b, "portal.localhost").await, expected_user.as_str());
            }
        }
    }
}

#[tokio::test]
async fn accounts_from_a_static_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("accounts.toml");
    std::fs::write(
        &file,
        "[[account]]\nusername = \"alice\"\nemail = \"alice@acme-msp.example\"\n\n[[account]]\nusername = \"bob\"\nemail = \"old@acme-msp.example\"\n",
    )
    .unwrap();
    let spec = format!(r#"{{ source = "file", file = "{}", match = "both" }}"#, file.display());
    let s = with_accounts(&spec).accounts(accounts).start().await;
    let (_, r) = s.walk(&s.browser(), "alice", &s.url("portal.localhost", "/")).await;
    assert_eq!(r.status(), 200);
    let (_, r) = s.walk(&s.browser(), "bob", &s.url("portal.localhost", "/")).await;
    assert_eq!(r.status(), 403);
    assert!(text(r).await.contains(r#"data-reason="email_mismatch""#));
    // The module's SCIM API was never asked.
    assert_eq!(
        s.module("portal")
            .module
            .scim_requests
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[tokio::test]
async fn automatic_user_provisioning_creates_the_missing_account_with_the_default_role() {
    let spec = r#"{ source = "scim", match = "both", provisioning = true, default_role = "viewer" }"#;
    let s = with_accounts(spec).accounts(accounts).start().await;
    assert!(!s.module("portal").module.accounts().iter().any(|a| a.username == "bob"));
    let b = s.browser();
    let (_, r) = s.walk(&b, "bob", &s.url("portal.localhost", "/")).await;
    assert_eq!(r.status(), 200, "bob gets in");
    let created = s
        .module("portal")
        .module
        .accounts()
        .into_iter()
        .find(|a| a.username == "bob")
        .expect("account created by SCIM");
    assert_eq!(created.email, "bob@acme-msp.example");
    assert_eq!(created.role, "viewer");
    assert_eq!(module_user(&s, &b, "portal.localhost").await, "bob");
}

#[tokio::test]
async fn module_directory_down_is_a_clear_503() {
    let spec = r#"{ source = "scim", scim_url = "http://127.0.0.1:9/scim/v2" }"#;
    let s = with_accounts(spec).accounts(accounts).start().await;
    let (_, r) = s.walk(&s.browser(), "alice", &s.url("portal.localhost", "/")).await;
    assert_eq!(r.status(), 503);
    assert!(text(r).await.contains("cannot be checked right now"));
}

#[tokio::test]
async fn first_login_to_an_instance_links_the_module_account_once() {
    let s = MultiBuilder::demo()
        .accounts(accounts)
        .instance("bms", "west", |w| {
            w.set("link_required", true);
        })
        .start()
        .await;
    let west = "bms-west.localhost";
    let b = s.browser();
    let (url, r) = s.walk(&b, "alice", &s.url(west, "/reports")).await;
    assert_eq!(r.status(), 200);
    assert!(
        url.starts_with(&s.url(west, "/_unigate/link?return_to=%2Freports")),
        "{url}"
    );
    let page = text(r).await;
    assert!(
        page.contains("Link your Acme West account") || page.contains("Link your BMS account"),
        "{page}"
    );
    let token = link_form_token(&page);
    assert!(!token.is_empty(), "a CSRF token: {page}");
    // Nothing reaches the module before the link.
    let r = b
        .get(s.url(west, "/api/whoami"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "link_required");
    let sessions_before = s.module("bms/west").module.live_sessions();
    // Wrong password: the module refuses, the page says so.
    let r = b
        .post(s.url(west, "/_unigate/link"))
        .form(&[
            ("module_username", "a.admin"),
            ("module_password", "wrong"),
            ("return_to", "/reports"),
            ("csrf_token", &token),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(text(r).await.contains("Invalid username/password"));
    // Right credentials: linked, on to the page, as the module account.
    let r = b
        .post(s.url(west, "/_unigate/link"))
        .form(&[
            ("module_username", "a.admin"),
            ("module_password", "west-demo-pass"),
            ("return_to", "/reports"),
            ("csrf_token", &token),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(location(&r), "/reports");
    assert_eq!(module_user(&s, &b, west).await, "a.admin");
    let page = text(b.get(s.url(west, "/reports")).send().await.unwrap()).await;
    assert!(page.contains("Reports for a.admin"), "{page}");
    // The session the check opened at the module was ended again.
    assert_eq!(
        s.module("bms/west").module.live_sessions(),
        sessions_before + 1,
        "only the browser's own"
    );
    // Next login (a new browser): no link page.
    let b2 = s.browser();
    let (url, r) = s.walk(&b2, "alice", &s.url(west, "/reports")).await;
    assert_eq!(r.status(), 200, "{url}");
    assert!(url.ends_with("/reports"), "{url}");
    // East needs no link.
    let (url, r) = s.walk(&b2, "alice", &s.url("bms-east.localhost", "/")).await;
    assert_eq!(r.status(), 200, "{url}");
    assert!(!url.contains("/_unigate/link"));
}

#[tokio::test]
async fn require_kaseyaone_refuses_module_credentials_except_for_exceptions() {
    let s = MultiBuilder::demo()
        .accounts(accounts)
        .module("portal", |m| {
            m.set("require_kaseyaone", true)
                .set("local_exceptions", vec!["admin"])
                .set("exception_path", "/local-login");
        })
        .start()
        .await;
    let host = "portal.localhost";
    let b = s.browser();
    // The module's login page sends people to KaseyaOne.
    let r = b
        .get(s.url(host, "/login"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert!(location(&r).starts_with(s.idp.issuer()), "{}", location(&r));
    // Module credentials of anyone else are refused, with a page saying why.
    let r = b
        .post(s.url(host, "/login"))
        .form(&[("username", "localuser"), ("password", "local-demo-pass")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let page = text(r).await;
    assert!(page.contains("requires Log In with KaseyaOne"), "{page}");
    assert!(page.contains("login_hint=localuser"), "{page}");
    // A module session obtained behind unigate's back does not get through.
    let direct = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = direct
        .post(format!("http://{}/login", s.module("portal").addr))
        .form(&[("username", "localuser"), ("password", "local-demo-pass")])
        .send()
        .await
        .unwrap();
    let smuggled = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let r = b
        .get(s.url(host, "/"))
        .header("accept", "text/html")
        .header("cookie", &smuggled)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "to KaseyaOne, not into the module");
    // The exception signs in at the exception path: the module's own form.
    let r = b
        .get(s.url(host, "/local-login"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let page = text(r).await;
    assert!(page.contains(r#"action="/login""#), "{page}");
    let r = b
        .post(s.url(host, "/local-login"))
        .form(&[("username", "admin"), ("password", "admin-demo-pass")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "the module's own answer");
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .starts_with("portal_session=")
    );
    // …and uses the module with its session, with the KaseyaOne icon, no identity.
    let r = b
        .get(s.url(host, "/"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let page = text(r).await;
    assert!(page.contains("Welcome, admin"), "{page}");
    assert!(page.contains("unigate-kaseyaone"), "{page}");
    let who: Value = b
        .get(s.url(host, "/api/whoami"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(who["local_session_user"], "admin");
    assert_eq!(who["assertion_verified"], false);
    // KaseyaOne users still get in.
    let (_, r) = s.walk(&s.browser(), "alice", &s.url(host, "/")).await;
    assert_eq!(r.status(), 200);
}
