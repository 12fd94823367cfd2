//! Module credentials through unigate, over real sockets: where Log In
//! with KaseyaOne is required, a local exception's login is read exactly
//! as the module reads it (one username, in the body, form-encoded), and
//! module credentials posted beside a KaseyaOne session are refused. The
//! demo module reads its login form as leniently as legacy portals do
//! (last value wins, the query string wins, JSON accepted).

mod common;

use common::*;
use serde_json::Value;

/// The portal requires KaseyaOne; `admin` is its one local exception.
async fn required_stack() -> Multi {
    MultiBuilder::demo()
        .module("portal", |m| {
            m.set("login", "required")
                .set("local_exceptions", vec!["admin"])
                .set("exception_path", "/local-login");
        })
        .start()
        .await
}

/// Whether the answer opened a module session (a module login that worked).
fn opened(r: &reqwest::Response) -> bool {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .any(|c| c.to_str().unwrap().starts_with("portal_session=") && !c.to_str().unwrap().contains("Max-Age=0"))
}

#[tokio::test]
async fn a_local_exception_login_has_one_username_the_module_reads() {
    let s = required_stack().await;
    let b = s.browser();
    let host = "portal.localhost";
    let form = "application/x-www-form-urlencoded";
    // (what, path and query, content type, body, status wanted)
    let cases: [(&str, &str, &str, &str, u16); 7] = [
        (
            "the username twice (the module reads the last)",
            "/local-login",
            form,
            "username=admin&username=localuser&password=local-demo-pass",
            400,
        ),
        (
            "the field in other case beside it (ASP.NET)",
            "/local-login",
            form,
            "username=admin&Username=localuser&password=local-demo-pass",
            400,
        ),
        (
            "a username in the query string too",
            "/login?username=localuser",
            form,
            "username=admin&password=local-demo-pass",
            400,
        ),
        (
            "JSON",
            "/local-login",
            "application/json",
            r#"{"username":"localuser","password":"local-demo-pass","x":"&username=admin&"}"#,
            415,
        ),
        (
            "multipart",
            "/local-login",
            "multipart/form-data; boundary=XX",
            "--XX\r\nContent-Disposition: form-data; name=\"username\"\r\n\r\nadmin\r\n--XX--\r\n",
            415,
        ),
        ("no content type", "/local-login", "", "username=admin&password=x", 415),
        (
            "another charset",
            "/local-login",
            "application/x-www-form-urlencoded; charset=utf-16",
            "username=admin&password=x",
            415,
        ),
    ];
    let mut wrong = Vec::new();
    for (what, path, ct, body, want) in cases {
        let mut rb = b.post(s.url(host, path)).body(body);
        if !ct.is_empty() {
            rb = rb.header("content-type", ct);
        }
        let r = rb.send().await.unwrap();
        if r.status().as_u16() != want || opened(&r) {
            wrong.push(format!(
                "{what}: {} (opened a module session: {})",
                r.status(),
                opened(&r)
            ));
        }
    }
    // The exception's login page with credentials in its query string.
    let r = b
        .get(s.url(host, "/local-login?username=localuser&password=local-demo-pass"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    if r.status() != 400 {
        wrong.push(format!("credentials in the exception page's query: {}", r.status()));
    }
    // Another method than POST at a login page.
    let r = b
        .put(s.url(host, "/local-login"))
        .header("content-type", form)
        .body("username=localuser&password=local-demo-pass")
        .send()
        .await
        .unwrap();
    if r.status() != 405 || opened(&r) {
        wrong.push(format!("PUT: {}", r.status()));
    }
    // A GET with a form body (Express and Werkzeug read it).
    let r = b
        .get(s.url(host, "/local-login"))
        .header("content-type", form)
        .body("username=localuser&password=local-demo-pass")
        .send()
        .await
        .unwrap();
    if r.status() != 405 || opened(&r) {
        wrong.push(format!("GET with a body: {}", r.status()));
    }
    // The exception's username in the form, another in a cookie (PHP's
    // `$_REQUEST` reads the cookie): the module never gets that cookie.
    let r = b
        .post(s.url(host, "/local-login"))
        .header("cookie", "username=localuser")
        .form(&[("username", "admin"), ("password", "local-demo-pass")])
        .send()
        .await
        .unwrap();
    if opened(&r) {
        wrong.push(format!(
            "a username cookie beside the form: {} opened a session",
            r.status()
        ));
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    // The exception still signs in.
    let r = b
        .post(s.url(host, "/local-login"))
        .form(&[("username", "admin"), ("password", "admin-demo-pass")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(opened(&r));
}

#[tokio::test]
async fn module_credentials_beside_a_kaseyaone_session_are_refused() {
    for portal in [
        "",
        "login = \"optional\"",
        "login = \"required\"\nlocal_exceptions = [\"admin\"]",
    ] {
        let s = MultiBuilder::demo()
            .module("portal", |m| m.extend(toml_table(portal)))
            .start()
            .await;
        let host = "portal.localhost";
        let b = s.browser();
        let (_, r) = s.walk(&b, "alice", &s.url(host, "/_unigate/login")).await;
        assert_eq!(r.status(), 200);
        for path in ["/login", "/login/", "/LOGIN", "/login;x=1", "/%6cogin"] {
            let r = b
                .post(s.url(host, path))
                .header("accept", "text/html")
                .form(&[("username", "admin"), ("password", "admin-demo-pass")])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 409, "{portal}: POST {path}");
            assert!(!opened(&r), "{portal}: POST {path}");
            let page = r.text().await.unwrap();
            assert!(page.contains("log out first"), "{page}");
        }
        // An API client gets JSON; alice is still alice at the module.
        let r = b
            .post(s.url(host, "/login"))
            .header("accept", "application/json")
            .form(&[("username", "admin"), ("password", "admin-demo-pass")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 409);
        assert_eq!(r.json::<Value>().await.unwrap()["error"], "kaseyaone_session");
        let who: Value = b
            .get(s.url(host, "/api/whoami"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_ne!(who["local_session_user"], "admin", "{portal}: {who}");
    }
}

/// BMS, whose West instance links accounts at a PHP-style login page
/// (`/php/login`: a failed login sets the session cookie and redirects),
/// with `link_success` set to `rule` (TOML; empty: the default).
async fn php_link_stack(rule: &str) -> Multi {
    let west = table_of(|w| {
        w.set("name", "west")
            .set("display_name", "Acme West")
            .set("hosts", vec!["bms-west.localhost"])
            .set("upstream", "{up:bms/west}")
            .set("link_required", true);
    });
    let bms = table_of(|m| {
        m.set("name", "bms")
            .set("display_name", "BMS")
            .set("hosts", vec!["bms.localhost"])
            .set("access_groups", vec!["bms-users"])
            .set("login", "automatic")
            .set("logout_paths", vec!["/logout"])
            .set("session_cookies", vec!["portal_session"])
            .set("login_paths", vec!["/php/login"])
            .set("instance", vec![west]);
        m.extend(toml_table(rule));
    });
    MultiBuilder::demo().modules(vec![bms]).start().await
}

/// alice at West's link page: her browser and the form's token.
async fn at_link_page(s: &Multi) -> (reqwest::Client, String) {
    let b = s.browser();
    let (url, r) = s.walk(&b, "alice", &s.url("bms-west.localhost", "/reports")).await;
    assert_eq!(r.status(), 200);
    assert!(url.contains("/_unigate/link"), "{url}");
    let token = link_form_token(&r.text().await.unwrap());
    (b, token)
}

async fn post_link(s: &Multi, b: &reqwest::Client, password: &str, token: Option<&str>) -> reqwest::Response {
    let mut form = vec![
        ("module_username", "a.admin"),
        ("module_password", password),
        ("return_to", "/reports"),
    ];
    if let Some(t) = token {
        form.push(("csrf_token", t));
    }
    b.post(s.url("bms-west.localhost", "/_unigate/link"))
        .form(&form)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_wrong_password_never_links_at_a_php_style_login() {
    let rules = [
        "",
        r#"link_success = { redirect_not_to = "/php/login" }"#,
        r#"link_success = { new_cookie = "portal_session" }"#,
        r#"link_success = { probe = "/reports" }"#,
    ];
    for rule in rules {
        let s = php_link_stack(rule).await;
        let (b, token) = at_link_page(&s).await;
        let r = post_link(&s, &b, "wrong", Some(&token)).await;
        assert_eq!(r.status(), 200, "[{rule}] a wrong password");
        let page = r.text().await.unwrap();
        assert!(page.contains("Invalid username/password"), "[{rule}] {page}");
        // Still not linked: the link page again.
        let r = b.get(s.url("bms-west.localhost", "/reports")).send().await.unwrap();
        assert!(
            location(&r).contains("/_unigate/link"),
            "[{rule}] linked with a wrong password"
        );
        // The right password links.
        let r = post_link(&s, &b, "west-demo-pass", Some(&token)).await;
        assert_eq!(r.status(), 302, "[{rule}] the right password");
        assert_eq!(location(&r), "/reports");
        let page = b
            .get(s.url("bms-west.localhost", "/reports"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(page.contains("Reports for a.admin"), "[{rule}] {page}");
    }
}

#[tokio::test]
async fn the_link_form_needs_this_sessions_token() {
    let s = php_link_stack("").await;
    let (b, token) = at_link_page(&s).await;
    let (_, other_token) = at_link_page(&s).await;
    for (what, t) in [
        ("no token", None),
        ("another session's token", Some(other_token.as_str())),
        ("a made-up token", Some("00")),
    ] {
        let r = post_link(&s, &b, "west-demo-pass", t).await;
        assert_eq!(r.status(), 403, "{what}");
        let r = b.get(s.url("bms-west.localhost", "/reports")).send().await.unwrap();
        assert!(location(&r).contains("/_unigate/link"), "{what}: linked");
    }
    assert!(
        !token.is_empty() && token != other_token,
        "each session has its own token"
    );
    let r = post_link(&s, &b, "west-demo-pass", Some(&token)).await;
    assert_eq!(r.status(), 302);
}

#[tokio::test]
async fn a_login_with_module_credentials_logs_out_at_the_module_with_no_kaseyaone_question() {
    let s = MultiBuilder::demo()
        .module("portal", |m| {
            m.set("login", "optional");
        })
        .start()
        .await;
    let host = "portal.localhost";
    let b = s.browser();
    let r = b
        .post(s.url(host, "/login"))
        .form(&[("username", "localuser"), ("password", "local-demo-pass")])
        .send()
        .await
        .unwrap();
    assert!(r.status().is_redirection(), "{}", r.status());
    let page = text(b.get(s.url(host, "/")).send().await.unwrap()).await;
    assert!(page.contains("Logged in with module credentials"), "{page}");
    // The module's own logout: no "Log out of KaseyaOne?" (there is no
    // KaseyaOne session here), and the module's session ends.
    let r = b
        .get(s.url(host, "/logout"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let page = text(r).await;
    assert!(page.contains("You are logged out of"), "{page}");
    assert!(!page.contains("Log out of KaseyaOne?"), "{page}");
    let r = b.get(s.url(host, "/")).send().await.unwrap();
    assert!(r.status().is_redirection(), "logged out: {}", r.status());
    // A browser that logged in with KaseyaOne still gets unigate's logout,
    // which ends KaseyaOne's session too.
    let k = s.browser();
    let (_, r) = s.walk(&k, "alice", &s.url(host, "/_unigate/login")).await;
    assert!(text(r).await.contains("Welcome, alice"));
    let r = k.get(s.url(host, "/logout")).send().await.unwrap();
    assert_eq!(r.status(), 302);
    assert!(
        location(&r).starts_with(&format!("{}/logout?", s.idp.issuer())),
        "{}",
        location(&r)
    );
}
