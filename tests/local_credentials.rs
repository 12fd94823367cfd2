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
    let portal = r#"require_kaseyaone = true
        local_exceptions = ["admin"]
        exception_path = "/local-login""#;
    multi(
        ALL_HOSTS,
        unigate::demo_module::demo_accounts,
        "",
        &demo_modules(portal, "", ""),
    )
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
            wrong.push(format!("{what}: {} (opened a module session: {})", r.status(), opened(&r)));
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
    for portal in ["", "local_login = true", "require_kaseyaone = true\nlocal_exceptions = [\"admin\"]"] {
        let s = multi(
            ALL_HOSTS,
            unigate::demo_module::demo_accounts,
            "",
            &demo_modules(portal, "", ""),
        )
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
