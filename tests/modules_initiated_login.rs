//! Seamless from every entry point: OpenID Connect third-party-initiated
//! login at `/_unigate/login` (`iss`, `target_link_uri`, `login_hint`).
//! My Modules' tiles and Choose an Instance links, and the App Launcher's
//! tiles, go through it, so that a person with a KaseyaOne session lands
//! logged in on a module whose own login page would otherwise show
//! (`login = "optional"`).

mod common;

use common::*;
use url::Url;

/// The demo with portal's and BMS's login optional (their own login pages
/// show to a browser without a session); the IdP's tiles are on the
/// test's port, starting logins at portal's `/_unigate/login` (as the
/// common stack registers it).
async fn seamless_stack() -> Multi {
    MultiBuilder::demo()
        .module("portal", |m| {
            m.set("login", "optional");
        })
        .module("bms", |m| {
            m.set("login", "optional");
        })
        .start()
        .await
}

/// Follows redirects (relative ones on the URL's origin) until a page;
/// panics if one of them is KaseyaOne's login form: the point is that
/// none is.
async fn follow_without_login(b: &reqwest::Client, url: &str) -> (String, reqwest::Response) {
    let mut url = url.to_string();
    for _ in 0..12 {
        let r = b.get(&url).header("accept", "text/html").send().await.unwrap();
        eprintln!("GET {url} -> {} {:?}", r.status(), r.headers().get("location"));
        if !r.status().is_redirection() {
            return (url, r);
        }
        let next = location(&r);
        assert!(!next.starts_with("/login"), "asked to log in again at {url} -> {next}");
        url = if next.starts_with('/') {
            let u = Url::parse(&url).unwrap();
            format!("{}://{}{next}", u.scheme(), u.authority())
        } else {
            next
        };
    }
    panic!("too many redirects from {url}");
}

/// Logs `user` in to KaseyaOne (through bms-east) and returns My Modules.
async fn my_modules(s: &Multi, b: &reqwest::Client, user: &str) -> String {
    let (_, r) = s.walk(b, user, &s.url("bms-east.localhost", "/_unigate/login")).await;
    assert_eq!(r.status(), 200);
    let r = b.get(format!("{}/", s.idp.issuer())).send().await.unwrap();
    assert_eq!(r.status(), 200);
    text(r).await
}

/// The `href` of the first `<a>` with this attribute text in `page`.
fn href_of(page: &str, marker: &str) -> String {
    let at = page.find(marker).unwrap_or_else(|| panic!("no {marker} in {page}"));
    let start = page[..at].rfind("<a ").unwrap();
    let tag = &page[start..at + page[at..].find('>').unwrap()];
    let h = tag.find("href=\"").unwrap() + 6;
    let raw = &tag[h..h + tag[h..].find('"').unwrap()];
    raw.replace("&amp;", "&")
}

#[tokio::test]
async fn a_my_modules_tile_lands_logged_in_where_the_module_would_show_its_login_page() {
    let s = seamless_stack().await;
    let b = s.browser();
    // Without a session, portal shows its own login page (login optional).
    let r = b
        .get(s.url("portal.localhost", "/"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!((r.status().is_redirection(), location(&r).as_str()), (true, "/login"));
    let r = b.get(s.url("portal.localhost", "/login")).send().await.unwrap();
    let page = text(r).await;
    assert!(page.contains("Log In with KaseyaOne"), "{page}");
    assert!(!page.contains("Welcome, alice"), "{page}");

    let home = my_modules(&s, &b, "alice").await;
    let tile = href_of(&home, r#"data-module="portal""#);
    let want = format!(
        "http://portal.localhost:{}/_unigate/login?iss={}",
        s.port,
        form_urlencoded::byte_serialize(s.idp.issuer().as_bytes()).collect::<String>()
    );
    assert!(tile.starts_with(&want), "{tile}");
    assert!(tile.contains("&login_hint=alice%40acme-msp.example"), "{tile}");
    let (url, r) = follow_without_login(&b, &tile).await;
    assert_eq!(url, s.url("portal.localhost", "/"));
    let page = text(r).await;
    assert!(
        page.contains("Welcome, alice") && page.contains("Logged in with KaseyaOne"),
        "{page}"
    );
}

#[tokio::test]
async fn choose_an_instance_on_my_modules_lands_logged_in_on_the_instance() {
    let s = seamless_stack().await;
    let b = s.browser();
    my_modules(&s, &b, "alice").await;
    let r = b.get(format!("{}/?choose=bms", s.idp.issuer())).send().await.unwrap();
    let page = text(r).await;
    assert!(page.contains("Choose an Instance"), "{page}");
    // The link names bms-west; its login starts at portal's initiation
    // endpoint, which sends the browser on to bms-west's.
    let link = href_of(&page, "Acme West");
    assert!(
        link.contains("target_link_uri=http%3A%2F%2Fbms-west.localhost"),
        "{link}"
    );
    let (url, r) = follow_without_login(&b, &link).await;
    assert_eq!(url, s.url("bms-west.localhost", "/"));
    let page = text(r).await;
    assert!(page.contains("Welcome, alice"), "{page}");
}

#[tokio::test]
async fn the_app_launcher_opens_another_module_logged_in() {
    let s = seamless_stack().await;
    let b = s.browser();
    let (_, r) = s
        .walk(&b, "alice", &s.url("bms-east.localhost", "/_unigate/login"))
        .await;
    let page = text(r).await;
    let tile = href_of(&page, r#"data-module="portal""#);
    assert!(
        tile.starts_with(&s.url("portal.localhost", "/_unigate/login?target_link_uri=")),
        "{tile}"
    );
    let (url, r) = follow_without_login(&b, &tile).await;
    assert_eq!(url, s.url("portal.localhost", "/"));
    assert!(text(r).await.contains("Welcome, alice"));
}

#[tokio::test]
async fn an_initiated_login_checks_the_issuer_and_where_it_leads() {
    let s = seamless_stack().await;
    let b = s.browser();
    let login = |q: &str| s.url("portal.localhost", &format!("/_unigate/login?{q}"));
    let enc = |v: &str| form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();

    // A link for another identity provider: a page saying so, no login.
    let r = b
        .get(login(&format!("iss={}", enc("https://other-idp.example"))))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(text(r).await.contains("identity provider these modules do not use"));

    // Off-site targets come back to the module's root: the login that
    // starts carries "/" as its return path, and lands there.
    for evil in [
        "https://evil.example/",
        "http://portal.localhost.evil.example/",
        "//evil.example/",
        &s.url("portal.localhost", "//evil.example/"),
    ] {
        let r = b
            .get(login(&format!(
                "iss={}&target_link_uri={}",
                enc(s.idp.issuer()),
                enc(evil)
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302, "{evil}");
        let to = location(&r);
        assert!(to.starts_with(s.idp.issuer()), "{evil}: {to}");
    }
    let (url, _) = s
        .walk(
            &b,
            "alice",
            &login(&format!("target_link_uri={}", enc("https://evil.example/steal"))),
        )
        .await;
    assert_eq!(url, s.url("portal.localhost", "/"));

    // Another host unigate serves: on to its own initiation endpoint.
    let target = s.url("bms-east.localhost", "/tickets?id=7");
    let r = b
        .get(login(&format!("target_link_uri={}&login_hint=alice", enc(&target))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(
        location(&r),
        format!(
            "{}?target_link_uri={}&login_hint=alice",
            s.url("bms-east.localhost", "/_unigate/login"),
            enc(&target)
        )
    );

    // The same works as a POSTed form (Core §4 allows either).
    let r = b
        .post(s.url("portal.localhost", "/_unigate/login"))
        .form(&[
            ("iss", s.idp.issuer()),
            ("target_link_uri", &s.url("portal.localhost", "/reports")),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "already logged in on portal: straight there");
    assert_eq!(location(&r), "/reports");
}

#[tokio::test]
async fn a_login_hint_naming_someone_else_goes_back_to_kaseyaone() {
    let s = seamless_stack().await;
    let b = s.browser();
    let (_, r) = s.walk(&b, "alice", &s.url("portal.localhost", "/_unigate/login")).await;
    assert!(text(r).await.contains("Welcome, alice"));
    let login = |hint: &str| {
        s.url(
            "portal.localhost",
            &format!("/_unigate/login?login_hint={hint}&return_to=/reports"),
        )
    };
    // alice, by username or email: no round trip.
    for hint in ["alice", "ALICE", "alice%40acme-msp.example"] {
        let r = b.get(login(hint)).send().await.unwrap();
        assert_eq!(r.status(), 303, "{hint}");
        assert_eq!(location(&r), "/reports");
    }
    // bob: KaseyaOne decides who this is, with bob's name as the hint.
    let r = b.get(login("bob")).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let to = location(&r);
    assert!(to.starts_with(s.idp.issuer()) && to.contains("login_hint=bob"), "{to}");
}
