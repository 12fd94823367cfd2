//! The canonical path over loopback: a request that walks out of a public
//! prefix never reaches the module without a login, an ambiguous path is
//! refused with 400, the module is sent the path unigate decided on, and
//! logout paths are recognised in every spelling a module reads as theirs.
//! Requests are written by hand on a raw socket: HTTP clients resolve dot
//! segments before sending, which would hide the attack.

mod common;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The status, the `Location` (if any) and the body of a request written
/// by hand, with `target` exactly as given.
async fn raw(port: u16, target: &[u8], cookie: Option<&str>) -> (u16, String, String) {
    let (status, location, body, _) = raw_full(port, target, cookie).await;
    (status, location, body)
}

async fn raw_full(port: u16, target: &[u8], cookie: Option<&str>) -> (u16, String, String, Vec<String>) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut req = b"GET ".to_vec();
    req.extend_from_slice(target);
    req.extend_from_slice(
        format!(" HTTP/1.1\r\nHost: {HOST}:{port}\r\nAccept: text/html\r\nConnection: close\r\n").as_bytes(),
    );
    if let Some(c) = cookie {
        req.extend_from_slice(format!("Cookie: {c}\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    s.write_all(&req).await.unwrap();
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut resp)).await;
    let text = String::from_utf8_lossy(&resp).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line for {}: {text:?}", String::from_utf8_lossy(target)));
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let header = |name: &str| -> Vec<String> {
        head.lines()
            .filter_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
            .collect()
    };
    let location = header("location").pop().unwrap_or_default();
    (status, location, body.to_string(), header("set-cookie"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_path_walking_out_of_a_public_prefix_gets_a_login_not_the_module() {
    let (up, seen) = recording_upstream("module").await;
    let stack = StackBuilder::new().upstream(up).start().await;
    let authorize = format!("{}/authorize?", stack.idp.issuer());
    let absolute = format!("http://{HOST}:{}/static/../admin", stack.port);
    let walks: Vec<&[u8]> = vec![
        b"/static/../admin",
        b"/static/%2e%2e/admin",
        b"/static/%2E%2E/admin",
        b"/static/.%2e/admin",
        b"/static/..;/admin",
        b"/static/..;jsessionid=x/admin",
        b"/static/..%3b/admin",
        b"/static;x/../admin",
        b"/static/x/../../admin",
        absolute.as_bytes(),
    ];
    for target in walks {
        let (status, location, _) = raw(stack.port, target, None).await;
        let shown = String::from_utf8_lossy(target);
        assert_eq!(status, 302, "{shown}");
        assert!(location.starts_with(&authorize), "{shown} -> {location}");
    }
    assert!(seen.lines().is_empty(), "the module saw: {:?}", seen.lines());
    // The login it started returns to the canonical path, not to the trick.
    let (b, jar) = stack.browser();
    let (_, authorize_url, set_cookies) = raw_with_cookies(stack.port, b"/static/%2e%2e/admin").await;
    let url = url::Url::parse(&stack.url("/")).unwrap();
    for c in set_cookies {
        jar.add_cookie_str(&c, &url);
    }
    let r = b.get(&authorize_url).send().await.unwrap();
    let flow = location(&r);
    let code = current_code(&totp_secret(&stack.idp, "alice"));
    let r = post_login(
        &b,
        stack.idp.issuer(),
        &flow,
        "alice",
        &company(&stack.idp, "alice"),
        &password("alice"),
        &code,
    )
    .await;
    let r = b.get(location(&r)).send().await.unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(location(&r), "/admin");
}

/// `raw`, returning the `Set-Cookie` values instead of the body.
async fn raw_with_cookies(port: u16, target: &[u8]) -> (u16, String, Vec<String>) {
    let (status, location, _, cookies) = raw_full(port, target, None).await;
    (status, location, cookies)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ambiguous_path_is_refused_with_400() {
    let (up, seen) = recording_upstream("module").await;
    let stack = StackBuilder::new().upstream(up).start().await;
    let refused: Vec<&[u8]> = vec![
        b"/static/..%2fadmin",
        b"/static/..%2Fadmin",
        b"/static/..\\admin",
        b"/static/..%5cadmin",
        b"/static/%252e%252e/admin",
        b"/static/%25252e%25252e/admin",
        b"/static/.../admin",
        b"/static/..%20/admin",
        b"/../admin",
        b"/static/../../admin",
        b"/static/a%00b",
        b"/static/%ff",
        b"/static/a%zz",
    ];
    for target in refused {
        let (status, _, body) = raw(stack.port, target, None).await;
        let shown = String::from_utf8_lossy(target);
        assert_eq!(status, 400, "{shown}");
        // Pingora refuses some of these itself; the rest get unigate's page.
        if body.contains("<html") {
            assert!(body.contains("cannot be opened"), "{shown}: {body}");
        }
    }
    // Raw bytes that are not UTF-8: refused, whether by Pingora or unigate.
    let (status, _, _) = raw(stack.port, b"/static/\xff/../admin", None).await;
    assert!(status == 400, "non-UTF-8 path: {status}");
    assert!(seen.lines().is_empty(), "the module saw: {:?}", seen.lines());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_module_is_sent_the_path_unigate_decided_on() {
    let (up, seen) = recording_upstream("module").await;
    let stack = StackBuilder::new().upstream(up).start().await;
    // Public: no login; the module sees the canonical path.
    let (status, _, body) = raw(stack.port, b"/static/./css//app.css?v=1", None).await;
    assert_eq!((status, body.as_str()), (200, "module"));
    assert_eq!(
        seen.lines().pop().as_deref(),
        Some("GET /static/css/app.css?v=1 HTTP/1.1")
    );
    // Absolute-form: forwarded in origin-form, canonical.
    let absolute = format!("http://{HOST}:{}/static/a/./b", stack.port);
    let (status, _, _) = raw(stack.port, absolute.as_bytes(), None).await;
    assert_eq!(status, 200);
    assert_eq!(seen.lines().pop().as_deref(), Some("GET /static/a/b HTTP/1.1"));
    // Logged in: the same.
    let (b, jar) = stack.browser();
    stack.login(&b, "alice", "/").await;
    let id = stack.session_id(&jar).expect("a session");
    let cookie = format!("unigate={id}");
    let (status, _, _) = raw(stack.port, b"/a/./b//c/%7Euser;jsessionid=1/x/..", Some(&cookie)).await;
    assert_eq!(status, 200);
    assert_eq!(
        seen.lines().pop().as_deref(),
        Some("GET /a/b/c/~user;jsessionid=1/ HTTP/1.1")
    );
    // unigate's own paths are found by their canonical form too.
    let (status, _, body) = raw(stack.port, b"/x/../_unigate/healthz", None).await;
    assert_eq!((status, body.as_str()), (200, "ok"));
}

/// A module with `public_paths = [prefix]` behind unigate, and its recorder.
async fn public_prefix_module(prefix: &str) -> (Multi, Recorded) {
    let (up, seen) = recording_upstream("module").await;
    let portal = table_of(|m| {
        m.set("name", "portal")
            .set("hosts", vec![HOST])
            .set("upstream", up.to_string())
            .set("access_groups", vec!["portal-users"])
            .set("login", "automatic")
            .set("public_paths", vec![prefix]);
    });
    let m = MultiBuilder::demo()
        .hosts(&[HOST])
        .accounts(|_| vec![])
        .modules(vec![portal])
        .start()
        .await;
    (m, seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn public_prefixes_match_whole_segments() {
    for prefix in ["/static", "/static/"] {
        let (m, seen) = public_prefix_module(prefix).await;
        for (target, public) in [
            ("/static", true),
            ("/static/", true),
            ("/static/app.css", true),
            ("/static-admin", false),
            ("/static-admin/x", false),
            ("/staticX", false),
            ("/static;x/admin", false),
            ("/Static/app.css", false),
        ] {
            seen.clear();
            let (status, _, _) = raw(m.port, target.as_bytes(), None).await;
            if public {
                assert_eq!(status, 200, "{prefix}: {target}");
                assert_eq!(seen.lines().len(), 1, "{prefix}: {target}");
            } else {
                assert_eq!(status, 302, "{prefix}: {target} needs a login");
                assert!(seen.lines().is_empty(), "{prefix}: {target} reached the module");
            }
        }
    }
}

/// Logs alice in, then sends `target` with her session: true when that
/// ended her unigate session (the next request must log in again).
async fn logs_out(stack: &Stack, target: &str) -> bool {
    let (b, jar) = stack.browser();
    stack.login(&b, "alice", "/").await;
    let id = stack.session_id(&jar).expect("a session");
    let cookie = format!("unigate={id}");
    let (before, _, _) = raw(stack.port, b"/", Some(&cookie)).await;
    assert_eq!(before, 200, "logged in");
    let (status, location, _) = raw(stack.port, target.as_bytes(), Some(&cookie)).await;
    let (after, _, _) = raw(stack.port, b"/", Some(&cookie)).await;
    let ended = after == 302;
    if ended {
        assert_eq!(status, 302, "{target}");
        assert!(
            location.starts_with(&format!("{}/logout?", stack.idp.issuer())),
            "{target} -> {location}"
        );
    }
    ended
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_paths_match_every_spelling_the_module_reads_as_logout() {
    let stack = stack().await;
    for target in [
        "/logout",
        "/logout/",
        "//logout",
        "/logout;x",
        "/logout%3bx",
        "/x/../logout",
        "/%6cogout",
        // Where PHP, ASP.NET or Spring would still run the logout.
        "/logout/x",
        "/logout.json",
    ] {
        assert!(logs_out(&stack, target).await, "{target} must log out");
    }
    for target in ["/LOGOUT", "/logoutx", "/x/logout"] {
        assert!(!logs_out(&stack, target).await, "{target} is not a logout path");
    }
    // Case, and the trailing dots and spaces Windows trims, matter only
    // where the module says case does not.
    let ci = StackBuilder::new()
        .module("portal", |m| {
            m.set("logout_paths_case_insensitive", true);
        })
        .start()
        .await;
    for target in ["/LOGOUT", "/Logout;x/", "/logout.", "/LogOut%20"] {
        assert!(
            logs_out(&ci, target).await,
            "{target} must log out when case does not matter"
        );
    }
}

#[test]
fn configured_paths_that_are_not_canonical_or_open_a_login_page_are_errors() {
    let text = |paths: &str| {
        format!(
            r#"
            [listen]
            address = "127.0.0.1:1"
            public_url = "http://localhost:1"
            [identity_provider]
            issuer = "http://127.0.0.1:2"
            client_id = "c"
            client_secret = "env:UNIGATE_SURELY_UNSET_VAR"
            [[module]]
            name = "m"
            hosts = ["m.localhost"]
            upstream = "127.0.0.1:3"
            access_groups = ["g"]
            {paths}
            "#
        )
    };
    for bad in [
        r#"public_paths = ["/static/../admin"]"#,
        r#"public_paths = ["//static"]"#,
        r#"logout_paths = ["/log%6fut"]"#,
        r#"login_paths = ["/login;x"]"#,
        r#"exception_path = "/a/./b""#,
        "public_paths = [\"/account\"]\nlogin_paths = [\"/account/login\"]",
    ] {
        let err = unigate::gateway::config::GatewayConfig::from_toml(&text(bad), std::path::Path::new("."))
            .expect_err(bad)
            .to_string();
        assert!(
            err.contains("canonical") || err.contains("parameter") || err.contains("covers the login page"),
            "{bad}: {err}"
        );
    }
}
