//! Module session cookies in the spellings frameworks read, over real
//! sockets: after a logout the module's own session cookie (still live at
//! the module, which was not told) is refused however it is written —
//! behind decoys, quoted, octal-escaped, percent-encoded, under a name PHP
//! mangles — and another user's module cookie beside a KaseyaOne session
//! is kept from the module in those spellings too. The demo module reads
//! its cookie as leniently as PHP, Rack, Express and Django together.

mod common;

use common::*;
use serde_json::Value;

/// The portal with the module's own login allowed (so that a request
/// without a KaseyaOne session reaches the module, with its cookies).
async fn portal_stack() -> Multi {
    portal_stack_builder().start().await
}

fn portal_stack_builder<'a>() -> MultiBuilder<'a> {
    MultiBuilder::demo().module("portal", |m| {
        m.set("login", "optional");
    })
}

/// A client with no cookie jar that does not follow redirects.
fn plain(s: &Multi) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .resolve("portal.localhost", std::net::SocketAddr::from(([127, 0, 0, 1], s.port)))
        .build()
        .unwrap()
}

/// `user` logs in; returns their portal cookie value and `Cookie` header.
async fn log_in(s: &Multi, user: &str) -> (String, String) {
    let (b, jar) = s.browser_with_jar();
    let portal = s.url("portal.localhost", "/");
    // With the module's own login allowed, Log In with KaseyaOne is a link.
    let (_, r) = s.walk(&b, user, &s.url("portal.localhost", "/_unigate/login")).await;
    assert_eq!(r.status(), 200);
    let value = portal_cookie(&r).split_once('=').unwrap().1.to_string();
    let header = reqwest::cookie::CookieStore::cookies(&*jar, &url::Url::parse(&portal).unwrap()).unwrap();
    (value, header.to_str().unwrap().to_string())
}

/// What the module itself says of this portal cookie header, asked directly.
async fn module_reads(s: &Multi, cookie: &str) -> Value {
    reqwest::Client::new()
        .get(format!("http://{}/api/whoami", s.module("portal").addr))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

const DECOYS: &str = "after 16 decoys";

/// The spellings of `portal_session=value` a framework reads as that session.
fn spellings(value: &str) -> Vec<(&'static str, String)> {
    let first = value.as_bytes()[0];
    let rest = &value[1..];
    let decoys: Vec<String> = (0..16).map(|i| format!("portal_session=decoy{i}")).collect();
    vec![
        (DECOYS, format!("{}; portal_session={value}", decoys.join("; "))),
        (
            "after 3 decoys",
            format!("{}; portal_session={value}", decoys[..3].join("; ")),
        ),
        (
            "quoted (Express drops the last character)",
            format!("portal_session=\"{value}!"),
        ),
        (
            "one character octal-escaped",
            format!("portal_session=\"\\{first:03o}{rest}\""),
        ),
        (
            "one character percent-encoded",
            format!("portal_session=%{first:02X}{rest}"),
        ),
        ("a name PHP mangles", format!("portal.session={value}")),
        ("a percent-encoded name", format!("portal%5Fsession={value}")),
    ]
}

#[tokio::test]
async fn after_logout_the_module_session_is_refused_in_every_spelling() {
    after_logout(portal_stack().await).await;
}

#[tokio::test]
async fn after_logout_the_module_session_is_refused_in_every_spelling_with_redis() {
    after_logout(portal_stack_builder().redis().start().await).await;
}

async fn after_logout(s: Multi) {
    let (value, header) = log_in(&s, "alice").await;
    // Logged out with unigate's cookie only: the module is not told with
    // its cookie, so alice's module session stays live at the module.
    let ours: String = header
        .split("; ")
        .filter(|c| !c.starts_with("portal_session="))
        .collect::<Vec<_>>()
        .join("; ");
    let r = plain(&s)
        .get(s.url("portal.localhost", "/_unigate/logout"))
        .header("cookie", &ours)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_redirection() || r.status() == 200, "{}", r.status());
    let mut through = Vec::new();
    for (what, cookie) in spellings(&value) {
        // The module would read it as alice's session…
        assert_eq!(
            module_reads(&s, &cookie).await["local_session_user"],
            "alice",
            "{what}: the module reads {cookie}"
        );
        // …so unigate never lets it through: an API client gets 401 (or
        // 400 for more values than a browser sends), not the module.
        let r = plain(&s)
            .get(s.url("portal.localhost", "/api/whoami"))
            .header("accept", "application/json")
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        if !(status == 401 || status == 400) || body.contains("alice") {
            through.push(format!("{what}: API {status} {body}"));
        }
        // A browser gets the cookie expired (under the name it sent too).
        let r = plain(&s)
            .get(s.url("portal.localhost", "/"))
            .header("accept", "text/html")
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let set: Vec<String> = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|c| c.to_str().unwrap().to_string())
            .collect();
        let name = cookie.rsplit("; ").next().unwrap().split('=').next().unwrap();
        if !set
            .iter()
            .any(|c| c.starts_with(&format!("{name}=;")) && c.contains("Max-Age=0"))
        {
            through.push(format!("{what}: not expired: {status} {set:?}"));
        }
        let body = r.text().await.unwrap();
        let want = if what == DECOYS { 400 } else { 302 };
        if status != want || body.contains("Welcome, alice") || (want == 400 && !body.contains("Too many")) {
            through.push(format!("{what}: page {status}, want {want}"));
        }
    }
    assert!(through.is_empty(), "{through:#?}");
}

#[tokio::test]
async fn another_users_module_session_stays_out_in_every_spelling() {
    let s = portal_stack().await;
    let (alice_value, _) = log_in(&s, "alice").await;
    let (_, bob) = log_in(&s, "bob").await;
    let mut through = Vec::new();
    for (what, alices) in spellings(&alice_value) {
        // alice's cookie first: PHP, Rack and Express read the first.
        let cookie = format!("{alices}; {bob}");
        let r = plain(&s)
            .get(s.url("portal.localhost", "/api/whoami"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        if what == DECOYS {
            if status != 400 {
                through.push(format!("{what}: {status}, want 400"));
            }
            continue;
        }
        let who: Value = r.json().await.unwrap();
        if status != 200 || who["assertion"]["preferred_username"] != "bob" || who["local_session_user"] == "alice" {
            through.push(format!("{what}: {status} {who}"));
        }
    }
    assert!(
        through.is_empty(),
        "alice's module session reached the module beside bob's: {through:#?}"
    );
}

#[tokio::test]
async fn a_module_session_opened_with_module_credentials_stays_out_beside_a_kaseyaone_session() {
    let s = MultiBuilder::demo()
        .module("portal", |m| {
            m.set("login", "optional");
        })
        .start()
        .await;
    let host = "portal.localhost";
    // Someone signs in with module credentials: unigate records nothing.
    let r = s
        .browser()
        .post(s.url(host, "/login"))
        .form(&[("username", "localuser"), ("password", "local-demo-pass")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let theirs = portal_cookie(&r);
    // alice logs in with KaseyaOne; her browser then carries that module
    // session beside her unigate session.
    let (b, jar) = s.browser_with_jar();
    let (_, r) = s.walk(&b, "alice", &s.url(host, "/_unigate/login")).await;
    assert_eq!(r.status(), 200);
    let url = url::Url::parse(&s.url(host, "/")).unwrap();
    let ours = reqwest::cookie::CookieStore::cookies(&*jar, &url).unwrap();
    let unigate = ours
        .to_str()
        .unwrap()
        .split("; ")
        .find(|c| c.starts_with("unigate="))
        .unwrap()
        .to_string();
    let who: Value = s
        .browser()
        .get(s.url(host, "/api/whoami"))
        .header("cookie", format!("{unigate}; {theirs}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(who["headers"]["x-kaseyaone-user"], "alice", "{who}");
    assert_ne!(who["local_session_user"], "localuser", "{who}");
}
