//! A flood of login starts from many addresses pushes no one's login out
//! and grows no server state without bound.
//!
//! The 200,000 starts go through the gateway's own login-start function
//! (`login_start_from`: the per-address limit, then the transaction) rather
//! than HTTP: over loopback every request comes from 127.0.0.1, and 200,000
//! requests through a debug build on two cores would take minutes. The
//! login that must survive goes through the real gateway over loopback,
//! from its start to its callback.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use common::*;

/// More than any legitimate callback count in this test, far fewer than
/// the starts: what the server may keep for 200,000 login starts.
const PENDING_BOUND: u64 = 16;
/// The gateway's cap on the login-start counter's entries.
const COUNTER_BOUND: u64 = 100_000;

/// The `i`th of 50,000 addresses: half IPv4, half the /64s of one IPv6 /48.
fn address(i: u32) -> IpAddr {
    let a = i % 50_000;
    if a.is_multiple_of(2) {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + a))
    } else {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 7, (a / 2) as u16, 0, 0, 0, 1))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_started_before_a_flood_of_starts_completes_after_it() {
    let s = stack().await;
    let (b, jar) = s.browser();
    // The victim starts logging in.
    let r = b
        .get(s.url("/reports?x=1"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let authorize = location(&r);
    // 200,000 starts from 50,000 addresses, four each (under the limit).
    let g = s.gw.gateway.clone();
    let flood = tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            for i in 0..200_000u32 {
                g.login_start_from(address(i), 0, HOST, "/flood")
                    .await
                    .unwrap_or_else(|e| panic!("start {i} from {}: {e}", address(i)));
            }
        });
        g.login_state_sizes()
    });
    let sizes = flood.await.unwrap();
    assert!(
        sizes.pending + sizes.used <= PENDING_BOUND,
        "login transactions kept on the server: {sizes:?}"
    );
    assert!(sizes.rate_counter <= COUNTER_BOUND, "{sizes:?}");
    // The victim's login completes.
    let r = b.get(&authorize).send().await.unwrap();
    let next = location(&r);
    let callback = if next.starts_with("/login?flow=") {
        let code = current_code(&totp_secret(&s.idp, "alice"));
        let r = post_login(
            &b,
            s.idp.issuer(),
            &next,
            "alice",
            &company(&s.idp, "alice"),
            &password("alice"),
            &code,
        )
        .await;
        assert_eq!(r.status(), 302);
        location(&r)
    } else {
        next
    };
    assert!(callback.starts_with(&s.url("/_unigate/callback?")), "{callback}");
    let r = b.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 302, "the callback succeeds");
    assert_eq!(location(&r), "/reports?x=1");
    assert!(s.session_id(&jar).is_some(), "logged in");
    let sizes = s.gw.gateway.login_state_sizes();
    assert!(sizes.pending + sizes.used <= PENDING_BOUND, "{sizes:?}");
    // The same callback again: refused (single use).
    let r = b.get(&callback).send().await.unwrap();
    assert_eq!(failed_login_page(&b, &r).await.unwrap().status(), 400);
}

/// The `unigate_login_*` cookies the browser holds for the stack.
fn txn_cookies(s: &Stack, jar: &reqwest::cookie::Jar) -> usize {
    use reqwest::cookie::CookieStore;
    let url = url::Url::parse(&s.url("/")).unwrap();
    jar.cookies(&url).map_or(0, |h| {
        h.to_str()
            .unwrap()
            .split("; ")
            .filter(|kv| kv.starts_with("unigate_login_"))
            .count()
    })
}

/// The IdP's answer to an authorization request: the callback URL, after
/// logging in at the IdP when it asks.
async fn through_idp(s: &Stack, b: &reqwest::Client, authorize: &str) -> String {
    let r = b.get(authorize).send().await.unwrap();
    let next = location(&r);
    if !next.starts_with("/login?flow=") {
        return next;
    }
    let code = current_code(&totp_secret(&s.idp, "alice"));
    let r = post_login(
        b,
        s.idp.issuer(),
        &next,
        "alice",
        &company(&s.idp, "alice"),
        &password("alice"),
        &code,
    )
    .await;
    location(&r)
}

#[tokio::test]
async fn several_tabs_log_in_at_once_and_their_cookies_stay_capped() {
    let s = stack().await;
    let (b, jar) = s.browser();
    let mut authorize = Vec::new();
    for tab in ["/a", "/b", "/c"] {
        let r = b.get(s.url(tab)).header("accept", "text/html").send().await.unwrap();
        assert_eq!(r.status(), 302);
        authorize.push((tab, location(&r)));
    }
    assert_eq!(txn_cookies(&s, &jar), 3);
    // Finished in any order, each tab lands where it started.
    for (tab, a) in authorize.iter().rev() {
        let callback = through_idp(&s, &b, a).await;
        let r = b.get(&callback).send().await.unwrap();
        assert_eq!(r.status(), 302, "{tab}");
        assert_eq!(location(&r), *tab);
    }
    assert_eq!(txn_cookies(&s, &jar), 0, "spent cookies are expired");
    // Logins started and never finished do not pile up.
    let (b, jar) = s.browser();
    let mut last = String::new();
    for i in 0..20 {
        let r = b
            .get(s.url(&format!("/tab{i}")))
            .header("accept", "text/html")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302);
        last = location(&r);
        assert!(txn_cookies(&s, &jar) <= unigate::gateway::logins::MAX_PENDING);
    }
    assert_eq!(txn_cookies(&s, &jar), unigate::gateway::logins::MAX_PENDING);
    // The newest still completes.
    let callback = through_idp(&s, &b, &last).await;
    let r = b.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(location(&r), "/tab19");
}
