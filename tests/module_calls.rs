//! What a module gets from unigate beyond the proxied request itself, over
//! real sockets: none of unigate's own cookies (proxied requests, public
//! paths, the logout call), an opaque per-module session handle instead of
//! the KaseyaOne session id, and a logout only when the user asked for one
//! (a cross-site or cookieless logout is confirmed first).

mod common;

use std::net::SocketAddr;
use std::sync::Mutex;

use common::*;
use serde_json::Value;

/// The Cookie header of the last request the recorder saw for `path`.
fn cookie_sent_for(seen: &Mutex<Vec<String>>, path: &str) -> String {
    let seen = seen.lock().unwrap();
    let head = seen
        .iter()
        .rev()
        .find(|h| h.split_whitespace().nth(1).is_some_and(|p| p.starts_with(path)))
        .unwrap_or_else(|| panic!("the module never got {path}: {seen:?}"));
    head.lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("cookie:"))
        .map(|l| l[7..].trim().to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

#[tokio::test]
async fn no_unigate_cookie_reaches_the_module_proxied_public_or_at_logout() {
    let (up, seen) = recording_upstream("ok").await;
    let s = StackBuilder::new().upstream(up).start().await;
    let (b, jar) = s.browser();
    assert_eq!(s.login(&b, "alice", "/").await.status(), 302);
    let id = s.session_id(&jar).expect("a session");
    // Every cookie unigate has (or may set), in every spelling, beside the
    // module's own.
    let cookies = format!(
        "unigate={id}; unigate_login={id}; unigate_instance=east; __Host-unigate=x; __Host-unigate_login=y; \
         unigate_logout=z; portal_session=module-1; theme=dark"
    );
    let raw = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .resolve(HOST, SocketAddr::from(([127, 0, 0, 1], s.port)))
        .build()
        .unwrap();
    for path in ["/page", "/static/app.css", "/logout"] {
        let r = raw.get(s.url(path)).header("cookie", &cookies).send().await.unwrap();
        assert!(r.status().as_u16() < 400, "{path}: {}", r.status());
        let sent = cookie_sent_for(&seen.0, path);
        assert!(
            !sent.to_ascii_lowercase().contains("unigate"),
            "{path}: the module got `{sent}`"
        );
        assert!(sent.contains("theme=dark"), "{path}: `{sent}`");
        // A module session unigate never saw issued stays out beside a
        // KaseyaOne session; on a public path and at logout it goes along.
        assert_eq!(
            sent.contains("portal_session=module-1"),
            path != "/page",
            "{path}: `{sent}`"
        );
    }
}

/// The session handle module `host` got, and whether the assertion there
/// carried the raw sid.
async fn session_header(s: &Multi, b: &reqwest::Client, host: &str) -> String {
    let who: Value = b
        .get(s.url(host, "/api/whoami"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(who["assertion_verified"], true, "{who}");
    who["headers"]["x-kaseyaone-session"]
        .as_str()
        .expect("a session header")
        .to_string()
}

#[tokio::test]
async fn modules_get_a_per_module_session_handle_that_logs_nobody_out() {
    let s = MultiBuilder::demo().start().await;
    let b = s.browser();
    let (_, r) = s.walk(&b, "alice", &s.url("portal.localhost", "/")).await;
    assert_eq!(r.status(), 200);
    let (_, r) = s.walk(&b, "alice", &s.url("bms-east.localhost", "/")).await;
    assert_eq!(r.status(), 200);
    let sids = s.gw.gateway.state.sessions.memory().unwrap().sids();
    let sid = sids.first().expect("a KaseyaOne sid").clone();
    assert_eq!(sids.len(), 1, "one login: {sids:?}");
    let portal = session_header(&s, &b, "portal.localhost").await;
    assert!(!portal.is_empty());
    assert_ne!(portal, sid, "not the KaseyaOne session id");
    assert!(!portal.contains(&sid));
    assert_eq!(
        session_header(&s, &b, "portal.localhost").await,
        portal,
        "stable for the login"
    );
    let east = session_header(&s, &b, "bms-east.localhost").await;
    assert_ne!(east, portal, "different per module");
    assert_ne!(east, sid);
    // The assertion does not carry the sid either.
    let who: Value = b
        .get(s.url("portal.localhost", "/api/whoami"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!who["assertion"].to_string().contains(&sid), "{who}");
    assert!(!who["headers"].to_string().contains(&sid), "{who}");
    // A module that knows the handle cannot log the user out with it.
    let anon = reqwest::Client::new();
    for handle in [&portal, &east] {
        let url = url::Url::parse_with_params(
            &format!("http://127.0.0.1:{}/_unigate/frontchannel-logout", s.port),
            &[("iss", s.idp.issuer()), ("sid", handle.as_str())],
        )
        .unwrap();
        anon.get(url).send().await.unwrap();
    }
    let r = b.get(s.url("portal.localhost", "/api/whoami")).send().await.unwrap();
    assert_eq!(r.status(), 200, "still logged in");
    assert_eq!(r.json::<Value>().await.unwrap()["assertion_verified"], true);
    assert_eq!(
        s.gw.gateway.state.sessions.memory().unwrap().sids(),
        sids,
        "nobody was logged out"
    );
    assert_eq!(session_header(&s, &b, "bms-east.localhost").await, east);
}

/// The confirmation form's action and token.
fn confirm_form(page: &str) -> (String, String) {
    let attr = |after: &str, name: &str| {
        let at = page.find(after).unwrap_or_else(|| panic!("no {after} in {page}"));
        let rest = &page[at..];
        let v = rest.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
        rest[v..v + rest[v..].find('"').unwrap()].to_string()
    };
    (attr("<form", "action"), attr("name=\"token\"", "value"))
}

async fn logged_in(s: &Stack, b: &reqwest::Client) -> bool {
    let r = b.get(s.url("/api/whoami")).send().await.unwrap();
    r.status() == 200 && r.json::<Value>().await.unwrap()["assertion_verified"] == true
}

#[tokio::test]
async fn a_cross_site_logout_is_confirmed_first_and_a_forged_one_refused() {
    let s = stack().await;
    let (b, _) = s.browser();
    assert_eq!(s.login(&b, "alice", "/").await.status(), 302);
    assert!(logged_in(&s, &b).await);
    // Another site links to (or loads) the logout paths: a question, not a logout.
    for path in ["/logout", "/_unigate/logout"] {
        let r = b
            .get(s.url(path))
            .header("sec-fetch-site", "cross-site")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(
            r.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'")
        );
        let page = r.text().await.unwrap();
        assert!(page.contains("Log out of KaseyaOne?"), "{page}");
        let (action, _) = confirm_form(&page);
        assert_eq!(action, path);
        assert!(logged_in(&s, &b).await, "{path}: still logged in");
    }
    // Without unigate's session cookie (a cross-site subresource): the same.
    let (fresh, _) = s.browser();
    let r = fresh.get(s.url("/logout")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Log out of KaseyaOne?"));
    // Forged POSTs: from another site, or with a token that is not this
    // browser's, or none.
    let r = b
        .get(s.url("/logout"))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    let (action, token) = confirm_form(&r.text().await.unwrap());
    let (other, _) = s.browser();
    let r = other
        .get(s.url("/logout"))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    let (_, foreign) = confirm_form(&r.text().await.unwrap());
    for (site, tok) in [
        (Some("cross-site"), None),
        (None, None),
        (Some("same-site"), Some("not-a-token")),
        (None, Some(foreign.as_str())),
    ] {
        let mut rb = b.post(s.url(&action)).form(&[("token", tok.unwrap_or(""))]);
        if let Some(site) = site {
            rb = rb.header("sec-fetch-site", site);
        }
        let r = rb.send().await.unwrap();
        assert_eq!(r.status(), 403, "{site:?} {tok:?}");
        assert!(logged_in(&s, &b).await, "{site:?} {tok:?}: still logged in");
    }
    // The confirmation itself (a browser that sends no Sec-Fetch-Site): out.
    let r = b
        .post(s.url(&action))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert!(r.status() == 302 || r.status() == 200, "{}", r.status());
    assert!(!logged_in(&s, &b).await, "logged out");
}

#[tokio::test]
async fn a_logout_from_the_module_itself_happens_at_once() {
    for (method, site) in [
        ("GET", Some("same-origin")),
        ("GET", None),
        ("GET", Some("none")),
        ("POST", Some("same-origin")),
    ] {
        let s = stack().await;
        let (b, _) = s.browser();
        assert_eq!(s.login(&b, "alice", "/").await.status(), 302);
        assert!(logged_in(&s, &b).await);
        let mut rb = match method {
            "GET" => b.get(s.url("/logout")),
            _ => b.post(s.url("/logout")),
        };
        if let Some(site) = site {
            rb = rb.header("sec-fetch-site", site);
        }
        let r = rb.send().await.unwrap();
        assert!(
            r.status() == 302 || r.status() == 200,
            "{method} {site:?}: {}",
            r.status()
        );
        assert!(!logged_in(&s, &b).await, "{method} {site:?}: logged out");
    }
}

#[tokio::test]
async fn replicas_sharing_the_assertion_key_give_a_module_the_same_handle() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    let key = rcgen::KeyPair::generate().unwrap().serialize_pem();
    std::fs::write(dir.path().join("assertion.pem"), &key).unwrap();
    // The same key, written on another system.
    std::fs::write(dir.path().join("assertion-crlf.pem"), key.replace('\n', "\r\n")).unwrap();
    // With `[identity] assertion_key` from that file, when given.
    let load = |key_file: Option<&str>| {
        let mut config = gateway_table(1, "http://127.0.0.1:9");
        if let Some(file) = key_file {
            config.table("identity").set("assertion_key", format!("file:{file}"));
        }
        let portal = table_of(|m| {
            m.set("name", "portal")
                .set("hosts", vec![HOST])
                .set("upstream", "127.0.0.1:9")
                .set("access_groups", vec!["x"])
                .set("login", "automatic");
        });
        config.set("module", vec![portal]);
        let path = dir.path().join("unigate.toml");
        std::fs::write(&path, config_text(&config)).unwrap();
        unigate::gateway::config::GatewayConfig::load(&path).unwrap()
    };
    let id = unigate::session::Identity {
        sub: "s".into(),
        sid: Some("idp-sid".into()),
        email: "a@x.example".into(),
        name: "A".into(),
        username: "a".into(),
        company: "C".into(),
        groups: vec![],
        module_user: None,
    };
    let a = unigate::gateway::server::build(load(Some("assertion.pem")))
        .await
        .unwrap();
    let b = unigate::gateway::server::build(load(Some("assertion-crlf.pem")))
        .await
        .unwrap();
    let handle = a.state.signer.session_handle("portal", &id);
    assert_eq!(handle, b.state.signer.session_handle("portal", &id), "replicas agree");
    assert_ne!(handle, "idp-sid");
    // Without a shared key, each process has its own.
    let c = unigate::gateway::server::build(load(None)).await.unwrap();
    assert_ne!(handle, c.state.signer.session_handle("portal", &id));
}

#[tokio::test]
async fn a_prefetched_logout_link_logs_nobody_out() {
    let s = stack().await;
    let (b, _) = s.browser();
    assert_eq!(s.login(&b, "alice", "/").await.status(), 302);
    let r = b
        .get(s.url("/logout"))
        .header("sec-fetch-site", "same-origin")
        .header("sec-purpose", "prefetch")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Log out of KaseyaOne?"));
    assert!(logged_in(&s, &b).await, "still logged in");
}
