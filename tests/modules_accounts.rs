//! Module accounts behind Unified Login over real sockets, against demo
//! modules and the embedded IdP: the seed's account conditions (SCIM with
//! `both`, `email`, `username`, and a static file, a page per failure),
//! Automatic User Provisioning, the module's directory down, account
//! linking, and Require Log In with KaseyaOne with its exceptions.

mod common;

use common::*;
use serde_json::Value;
use unigate::demo_module::{DemoAccount, demo_accounts as accounts};

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
                // The module, the account used, and the ways out.
                assert_accessible_page(&page);
                assert!(page.contains("Demo Portal"), "{reason}: {page}");
                assert!(
                    page.contains("You used the KaseyaOne account <b>bob@acme-msp.example</b>"),
                    "{reason}: {page}"
                );
                assert_ways_out(&page, s.idp.issuer());
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
    assert_accessible_page(&page);
    // The module and the instance by name, and the KaseyaOne account.
    assert!(page.contains("<h1>Link your BMS · Acme West account</h1>"), "{page}");
    assert!(page.contains("<b>alice@acme-msp.example</b>"), "{page}");
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
    let page = text(r).await;
    assert_accessible_page(&page);
    // It never says which of the two was wrong.
    assert!(page.contains("Invalid username/password."), "{page}");
    for telling in [
        "wrong password",
        "unknown user",
        "no such user",
        "password is",
        "username is",
    ] {
        assert!(!page.to_lowercase().contains(telling), "{telling}: {page}");
    }
    // The username stays; the password is asked again, with the focus.
    let field = |id: &str| {
        let at = page.find(&format!(r#"id="{id}""#)).unwrap();
        let start = page[..at].rfind('<').unwrap();
        page[start..at + page[at..].find('>').unwrap()].to_string()
    };
    let (username, password) = (field("module_username"), field("module_password"));
    assert!(username.contains(r#"value="a.admin""#), "{username}");
    assert!(!username.contains("autofocus"), "{username}");
    assert!(
        password.contains("autofocus") && !password.contains("value="),
        "{password}"
    );
    assert_eq!(link_form_token(&page), token, "the same form again");
    // A form not from this session's link page: refused, with the same
    // names and ways out as the other refusals.
    let r = b
        .post(s.url(west, "/_unigate/link"))
        .form(&[
            ("module_username", "a.admin"),
            ("module_password", "west-demo-pass"),
            ("return_to", "/reports"),
            ("csrf_token", "00"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let page = text(r).await;
    assert_accessible_page(&page);
    assert!(page.contains(r#"data-reason="link_forged""#), "{page}");
    assert!(page.contains("BMS · Acme West"), "{page}");
    assert!(
        page.contains("You used the KaseyaOne account <b>alice@acme-msp.example</b>"),
        "{page}"
    );
    assert!(page.contains("Log out of KaseyaOne / use another account"), "{page}");
    assert!(page.contains("Back to My Modules"), "{page}");
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
async fn login_required_refuses_module_credentials_except_for_exceptions() {
    let s = MultiBuilder::demo()
        .accounts(accounts)
        .module("portal", |m| {
            m.set("login", "required")
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
