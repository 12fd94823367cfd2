//! `unigate loadtest` against a real stack on loopback (the embedded IdP, a
//! demo module, unigate): each scenario completes iterations without
//! errors and reports percentiles; a redirect to an origin it was not given
//! is refused, not followed; the binary writes its JSON summary.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use unigate::loadtest::{Options, Scenario, User, run};

/// The stack, with unigate's per-address login-start limit raised: every
/// virtual user comes from 127.0.0.1.
async fn load_stack() -> Stack {
    StackBuilder::new()
        .session(|s| {
            s.set("login_starts_per_minute", 1000000);
        })
        .start()
        .await
}

fn alice(s: &Stack) -> User {
    User {
        username: "alice".into(),
        company: company(&s.idp, "alice"),
        password: password("alice"),
        totp: totp_secret(&s.idp, "alice"),
    }
}

fn options(s: &Stack, scenario: Scenario) -> Options {
    Options {
        url: url::Url::parse(&s.url("/page.html")).unwrap(),
        connect: Some(SocketAddr::from(([127, 0, 0, 1], s.port))),
        idp: Some(url::Url::parse(s.idp.issuer()).unwrap()),
        scenario,
        concurrency: 4,
        rate: None,
        duration: Duration::from_millis(1500),
        warmup: Duration::from_millis(300),
        sessions: 8,
        mix: 4,
        users: vec![alice(s)],
        logout_path: "/_unigate/logout".into(),
        follow_idp_logout: false,
        progress: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_runs_clean_against_a_real_stack() {
    let s = load_stack().await;
    for scenario in [Scenario::Browse, Scenario::SsoLogin, Scenario::Mixed, Scenario::Logout] {
        let r = run(options(&s, scenario)).await.unwrap();
        assert!(r.errors.is_empty(), "{scenario:?}: {:?}", r.errors);
        assert!(r.ok > 10, "{scenario:?}: only {} iterations", r.ok);
        let l = &r.latency_ms;
        assert!(l.p50 > 0.0 && l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p99_9 && l.p99_9 <= l.max);
        assert!((r.per_second - r.ok as f64 / 1.5).abs() < 0.01);
        if scenario == Scenario::Mixed {
            assert!(r.by_kind["browse"] > r.by_kind["sso-login"], "{:?}", r.by_kind);
        }
    }
    // The baseline: plain requests, no login, straight to the module.
    let mut o = options(&s, Scenario::Plain);
    o.url = url::Url::parse(&format!("http://{}/ping", s.module.addr)).unwrap();
    o.connect = None;
    o.users.clear();
    let r = run(o).await.unwrap();
    assert!(r.errors.is_empty() && r.ok > 10, "{:?}", r.errors);
    // A fixed rate: about rate × duration iterations, no more.
    let mut o = options(&s, Scenario::Browse);
    o.rate = Some(40.0);
    let r = run(o).await.unwrap();
    assert!((45..=66).contains(&r.ok), "{} iterations at 40/s for 1.5 s", r.ok);
    // Sessions were made by logins through unigate, not by a back door.
    assert!(s.gw.gateway.sessions.len() >= 8);
}

#[tokio::test]
async fn a_redirect_to_an_origin_not_given_is_refused() {
    let s = load_stack().await;
    let mut o = options(&s, Scenario::SsoLogin);
    // The IdP it was given is not the one unigate sends the browser to.
    o.idp = Some(url::Url::parse("http://127.0.0.1:1").unwrap());
    let err = run(o).await.unwrap_err();
    assert!(err.contains("foreign_redirect"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_writes_a_json_summary() {
    let s = load_stack().await;
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.csv");
    let secret = totp_rs::Secret::Raw(totp_secret(&s.idp, "alice"))
        .to_encoded()
        .to_string();
    std::fs::write(
        &users,
        format!("alice,{},{},{secret}\n", company(&s.idp, "alice"), password("alice")),
    )
    .unwrap();
    let json = dir.path().join("summary.json");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_unigate"))
        .args([
            "loadtest",
            "--scenario",
            "sso-login",
            "--duration",
            "1s",
            "--warmup",
            "200ms",
        ])
        .args(["--concurrency", "2", "--url", &s.url("/page.html")])
        .args(["--connect", &format!("127.0.0.1:{}", s.port), "--idp", s.idp.issuer()])
        .arg("--users")
        .arg(&users)
        .arg("--json")
        .arg(&json)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("latency ms: p50"), "{text}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["scenario"], "sso-login");
    assert!(v["ok"].as_u64().unwrap() > 0);
    assert_eq!(v["errors"], serde_json::json!({}));
    for q in ["p50", "p90", "p99", "p99_9"] {
        assert!(v["latency_ms"][q].as_f64().unwrap() > 0.0, "{q}");
    }
}
