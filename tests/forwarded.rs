//! Headers a client must not choose: forwarding headers (`X-Forwarded-*`,
//! `Forwarded`, `X-Real-IP`), the request id and identity-looking headers
//! from a client reach the module as unigate's own values or not at all;
//! from a trusted proxy (`[listen] trusted_proxies`) the forwarding chain
//! is kept with the peer appended. The login-start limit counts the client
//! unigate trusts, not an address a client wrote into a header.

mod common;

use std::net::SocketAddr;

use common::*;

fn values<'a>(head: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    head.iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

fn one<'a>(head: &'a [(String, String)], name: &str) -> Option<&'a str> {
    let v = values(head, name);
    assert!(v.len() <= 1, "{name} sent {} times: {head:?}", v.len());
    v.first().copied()
}

/// The test stack (IdP, unigate, module `portal` on `upstream`, public
/// `/static/`), with `trusted_proxies` in `[listen]` and
/// `login_starts_per_minute` in `[session]` when given.
async fn stack_listen(trusted_proxies: &[&str], login_starts_per_minute: Option<i64>, upstream: SocketAddr) -> Stack {
    StackBuilder::new()
        .upstream(upstream)
        .gateway(|t| {
            if !trusted_proxies.is_empty() {
                t.table("listen").set("trusted_proxies", trusted_proxies.to_vec());
            }
            if let Some(n) = login_starts_per_minute {
                t.table("session").set("login_starts_per_minute", n);
            }
        })
        .module("portal", |m| {
            // Only what these tests need: no logout paths, module
            // session cookies or CORS origins.
            for key in ["logout_paths", "session_cookies", "cors_origins"] {
                m.remove(key);
            }
        })
        .start()
        .await
}

/// What a client might send to choose its address, scheme, host and id.
const SPOOFED: [(&str, &str); 8] = [
    ("X-Forwarded-For", "1.2.3.4"),
    ("X-Real-IP", "1.2.3.4"),
    ("Forwarded", "for=1.2.3.4;proto=https;host=evil.example"),
    ("X-Forwarded-Host", "evil.example"),
    ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Port", "443"),
    ("X_Forwarded_For", "5.6.7.8"),
    ("X-Request-Id", "chosen"),
];

fn spoofed(rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    SPOOFED.iter().fold(rb, |rb, (n, v)| rb.header(*n, *v))
}

/// The module sees unigate's forwarding headers, none of the client's.
fn assert_replaced(head: &[(String, String)], port: u16, answered_id: &str) {
    assert_eq!(one(head, "x-forwarded-for"), Some("127.0.0.1"), "{head:?}");
    assert_eq!(one(head, "x-forwarded-proto"), Some("http"), "{head:?}");
    assert_eq!(
        one(head, "x-forwarded-host"),
        Some(format!("{HOST}:{port}").as_str()),
        "{head:?}"
    );
    for gone in ["x-real-ip", "forwarded", "x-forwarded-port", "x_forwarded_for"] {
        assert_eq!(one(head, gone), None, "{gone}: {head:?}");
    }
    let id = one(head, "x-request-id").expect("a request id");
    assert_ne!(id, "chosen");
    assert_eq!(id.len(), 32, "{id}");
    assert_eq!(id, answered_id, "the client is told the id the module saw");
    for (n, v) in head {
        assert!(
            !v.contains("1.2.3.4") && !v.contains("5.6.7.8") && !v.contains("evil.example"),
            "{n}: {v}"
        );
    }
}

#[tokio::test]
async fn forwarding_headers_and_the_request_id_from_a_client_are_replaced() {
    let (up, rec) = recording_upstream("ok").await;
    // A trusted range that does not hold the peer changes nothing.
    let s = stack_listen(&["10.0.0.0/8"], None, up).await;
    let (b, _) = s.browser();
    // A public path: no session needed.
    let r = spoofed(b.get(s.url("/static/app.js"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_replaced(&rec.last_headers(), s.port, &id);
    // A port the client wrote into `Host` is not the host modules are told.
    let r = spoofed(b.get(s.url("/static/app.js")))
        .header("host", "PORTAL.localhost:6666")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_replaced(&rec.last_headers(), s.port, &id);
    // A logged-in request.
    let r = s.login(&b, "alice", "/").await;
    assert_eq!(r.status(), 302);
    let r = spoofed(b.get(s.url("/reports"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let head = rec.last_headers();
    assert_replaced(&head, s.port, &id);
    assert_eq!(one(&head, "x-kaseyaone-user"), Some("alice"), "{head:?}");
}

#[tokio::test]
async fn a_trusted_proxy_keeps_its_chain_and_the_peer_is_appended() {
    let (up, rec) = recording_upstream("ok").await;
    let s = stack_listen(&["127.0.0.0/8", "::1/128"], None, up).await;
    let (b, _) = s.browser();
    let r = b
        .get(s.url("/static/app.js"))
        .header("X-Forwarded-For", "203.0.113.7, 10.1.2.3")
        .header("X-Forwarded-Proto", "https")
        .header("X-Forwarded-Host", "modules.example.com")
        .header("X-Real-IP", "203.0.113.7")
        .header("X-Request-Id", "ingress-trace-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-request-id"], "ingress-trace-1");
    let head = rec.last_headers();
    assert_eq!(
        one(&head, "x-forwarded-for"),
        Some("203.0.113.7, 10.1.2.3, 127.0.0.1"),
        "{head:?}"
    );
    assert_eq!(one(&head, "x-forwarded-proto"), Some("https"), "{head:?}");
    assert_eq!(one(&head, "x-forwarded-host"), Some("modules.example.com"), "{head:?}");
    assert_eq!(one(&head, "x-real-ip"), Some("203.0.113.7"), "{head:?}");
    assert_eq!(one(&head, "x-request-id"), Some("ingress-trace-1"), "{head:?}");
    // A proxy that sends none of them: unigate's own.
    let r = b.get(s.url("/static/app.js")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let head = rec.last_headers();
    assert_eq!(one(&head, "x-forwarded-for"), Some("127.0.0.1"), "{head:?}");
    assert_eq!(one(&head, "x-forwarded-proto"), Some("http"), "{head:?}");
    assert_eq!(
        one(&head, "x-forwarded-host"),
        Some(format!("{HOST}:{}", s.port).as_str())
    );
}

#[tokio::test]
async fn identity_looking_headers_never_reach_the_module() {
    let (up, rec) = recording_upstream("ok").await;
    let s = stack_listen(&[], None, up).await;
    let (b, _) = s.browser();
    let spoof = [
        ("Remote-Groups", "admins"),
        ("X-Webauth-User", "admin"),
        ("x_webauth_groups", "admins"),
        ("Remote-Email", "admin@evil.example"),
        ("Remote-Name", "admin"),
        ("X-Remote-Group", "admins"),
        ("X-Remote-Groups", "admins"),
        ("X-Authenticated-User", "admin"),
        ("X-Auth-User", "admin"),
        ("X-MS-CLIENT-PRINCIPAL-NAME", "admin"),
        ("X-Ms-Client-Principal", "eyJhZG1pbiI6dHJ1ZX0"),
        ("Cf-Access-Jwt-Assertion", "forged"),
        ("Cf-Access-Authenticated-User-Email", "admin@evil.example"),
    ];
    let send = |path: &str| {
        let rb = b.get(s.url(path));
        spoof.iter().fold(rb, |rb, (n, v)| rb.header(*n, *v))
    };
    // (unigate's own identity headers may name real groups, such as
    // alice's portal-admins: only the spoofed values are looked for.)
    let check = |head: Vec<(String, String)>| {
        for (n, v) in &head {
            let named = spoof
                .iter()
                .any(|(sn, _)| sn.replace('_', "-").eq_ignore_ascii_case(&n.replace('_', "-")));
            let spoofed = spoof
                .iter()
                .any(|(_, s)| v == s || v.split(',').any(|p| p.trim() == *s));
            assert!(
                !named && !spoofed && !v.contains("evil.example"),
                "{n}: {v} reached the module"
            );
        }
    };
    assert_eq!(send("/static/app.js").send().await.unwrap().status(), 200);
    check(rec.last_headers());
    s.login(&b, "alice", "/").await;
    assert_eq!(send("/reports").send().await.unwrap().status(), 200);
    let head = rec.last_headers();
    assert_eq!(one(&head, "x-kaseyaone-user"), Some("alice"), "{head:?}");
    check(head);
}

#[tokio::test]
async fn no_other_credential_goes_along_with_a_kaseyaone_identity() {
    let (up, rec) = recording_upstream("ok").await;
    let s = stack_listen(&[], None, up).await;
    let (b, _) = s.browser();
    // Another account's Basic credentials: without a session they are the
    // module's business (its own login keeps working)…
    let basic = "Basic YWRtaW46YWRtaW4tZGVtby1wYXNz";
    let r = b
        .get(s.url("/static/app.js"))
        .header("authorization", basic)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(one(&rec.last_headers(), "authorization"), Some(basic));
    // …beside alice's KaseyaOne session the module must not read them.
    s.login(&b, "alice", "/").await;
    let r = b
        .get(s.url("/reports"))
        .header("authorization", basic)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let head = rec.last_headers();
    assert_eq!(one(&head, "x-kaseyaone-user"), Some("alice"), "{head:?}");
    assert_eq!(one(&head, "authorization"), None, "{head:?}");
}

/// A login start, as a browser navigation: 302 to the IdP, or 429.
async fn start(s: &Stack, xff: Option<&str>) -> u16 {
    let (b, _) = s.browser();
    let mut rb = b.get(s.url("/reports")).header("accept", "text/html");
    if let Some(v) = xff {
        rb = rb.header("x-forwarded-for", v);
    }
    rb.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn the_login_start_limit_counts_the_client_unigate_trusts() {
    let (up, _) = recording_upstream("ok").await;
    // Behind a trusted proxy: each client has its own allowance, and a
    // spoofed leftmost entry does not give it a new one.
    let s = stack_listen(&["127.0.0.0/8"], Some(2), up).await;
    assert_eq!(start(&s, Some("198.51.100.1")).await, 302);
    assert_eq!(start(&s, Some("6.6.6.6, 198.51.100.1")).await, 302);
    assert_eq!(start(&s, Some("7.7.7.7, 198.51.100.1")).await, 429);
    assert_eq!(start(&s, Some("198.51.100.2")).await, 302, "another client");
    // Without trusted proxies an address in a header is just text: the
    // peer is the client, whatever it writes.
    let s = stack_listen(&[], Some(2), up).await;
    assert_eq!(start(&s, Some("198.51.100.1")).await, 302);
    assert_eq!(start(&s, Some("198.51.100.2")).await, 302);
    assert_eq!(start(&s, Some("198.51.100.3")).await, 429);
}

#[test]
fn unigate_check_names_each_bad_trusted_proxy() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    let mut config = gateway_table(8080, "http://127.0.0.1:1");
    config.table("listen").set(
        "trusted_proxies",
        vec![
            "10.0.0.0/8",
            "10.0.0.300/8",
            "proxy.internal",
            "10.1.2.3/8",
            "0.0.0.0/0",
            "::1/128",
        ],
    );
    let text = config_text(&config);
    let err = unigate::gateway::config::GatewayConfig::from_toml(&text, dir.path()).unwrap_err();
    let text = err.to_string();
    let bad: Vec<&str> = err
        .0
        .iter()
        .map(|e| e.path.as_str())
        .filter(|p| p.starts_with("listen.trusted_proxies"))
        .collect();
    assert_eq!(
        bad,
        [
            "listen.trusted_proxies[1]",
            "listen.trusted_proxies[2]",
            "listen.trusted_proxies[3]",
            "listen.trusted_proxies[4]"
        ],
        "{text}"
    );
    assert!(text.contains("`10.0.0.300/8` is not a network"), "{text}");
    assert!(text.contains("did you mean `10.0.0.0/8`"), "{text}");
    assert!(text.contains("trusts every address"), "{text}");
}
