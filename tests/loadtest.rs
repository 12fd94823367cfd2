//! `unigate loadtest` against a real stack on loopback (the embedded IdP, a
//! demo module, unigate): each scenario completes iterations without
//! errors and reports percentiles; a redirect to an origin it was not given
//! is refused, not followed; the binary writes its JSON summary. And the
//! loopback measurements that start their own stack (`unigate demo` and
//! `unigate passthrough` as child processes): the login through the IdP's
//! forms they measure with, the login storm, the wrk comparison.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use unigate::loadtest::instructions::sequential_gets;
use unigate::loadtest::stack::{self, Children, DemoPorts};
use unigate::loadtest::{Options, Scenario, User, auth_path, log_in, login_storm, run};

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
    assert!(s.gw.gateway.state.sessions.memory().unwrap().len() >= 8);
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

fn unigate_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_unigate"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_through_the_idp_forms_gives_a_session_that_reaches_the_module() {
    let s = load_stack().await;
    let url = url::Url::parse(&s.url("/_unigate/login")).unwrap();
    let idp = url::Url::parse(s.idp.issuer()).unwrap();
    let connect = Some(SocketAddr::from(([127, 0, 0, 1], s.port)));
    let cookies = log_in(&url, connect, &idp, &alice(&s)).await.unwrap();
    let sid = cookies.iter().find(|(k, _)| k == "unigate").map(|(_, v)| v.clone());
    let cookie = format!("unigate={}", sid.expect("a session cookie"));
    let host = format!("{HOST}:{}", s.port);
    let port = s.port;
    tokio::task::spawn_blocking(move || {
        // Keep-alive requests, one after another, on one connection: each
        // answered 200 by the module through unigate, plain and chunked.
        sequential_gets(port, &host, &[("Cookie", &cookie)], 50, "/ping").unwrap();
        sequential_gets(port, &host, &[("Cookie", &cookie)], 20, "/ping/chunked").unwrap();
        // Without the session: the login redirect, not a 200.
        let err = sequential_gets(port, &host, &[], 1, "/ping").unwrap_err();
        assert!(err.to_string().contains("status 30"), "{err}");
    })
    .await
    .unwrap();
    assert!(!s.gw.gateway.state.sessions.memory().unwrap().is_empty());
    // A wrong password: no session, the IdP's refusal named.
    let mut bad = alice(&s);
    bad.password = "not-the-password".into();
    let err = log_in(&url, connect, &idp, &bad).await.unwrap_err();
    assert!(err.contains("idp_refused"), "{err}");
}

/// `unigate demo` and `unigate passthrough` started the way the
/// measurements start them: alice logs in through the IdP's forms, and
/// her session reaches the module through unigate; the pass-through
/// reaches it with no session.
#[test]
fn the_measured_stack_starts_and_logs_in_as_the_measurements_do() {
    let d = DemoPorts::free().unwrap();
    let pt_port = stack::free_port().unwrap();
    let mut procs = Children::new(Duration::from_secs(10));
    let mut demo = vec!["demo".to_string()];
    demo.extend(d.args());
    demo.extend(["--threads".into(), "1".into()]);
    let bin = unigate_bin();
    procs.spawn("demo", &mut stack::quiet(bin, &demo, "warn")).unwrap();
    procs
        .spawn(
            "passthrough",
            &mut stack::quiet(bin, &stack::passthrough_args(pt_port, d.module_port), "warn"),
        )
        .unwrap();
    d.wait(Duration::from_secs(30)).unwrap();
    stack::wait_port(pt_port, Duration::from_secs(30)).unwrap();
    let alice = stack::demo_user(Path::new("config/idp.demo.toml")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sid = rt.block_on(stack::demo_session(&d, &alice)).unwrap();
    let host = format!("portal.localhost:{}", d.port);
    let cookie = format!("unigate={sid}");
    sequential_gets(d.port, &host, &[("Cookie", &cookie)], 20, "/ping").unwrap();
    sequential_gets(pt_port, &format!("127.0.0.1:{pt_port}"), &[], 20, "/ping").unwrap();
    // A module without its own login: no session, no page.
    let east = format!("bms-east.localhost:{}", d.port);
    let err = sequential_gets(d.port, &east, &[("Cookie", "unigate=forged")], 1, "/ping").unwrap_err();
    assert!(err.to_string().contains("status 30"), "{err}");
    procs.stop();
    // Stopped: nothing answers any more.
    assert!(std::net::TcpStream::connect(("127.0.0.1", d.port)).is_err());
    assert!(std::net::TcpStream::connect(("127.0.0.1", pt_port)).is_err());
}

#[test]
fn a_login_storm_logs_generated_users_in_through_the_idp_forms() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("storm.json");
    let opts = login_storm::Options {
        // More users than logins: each user's code is accepted once per 30 s.
        users: 300,
        concurrency: 2,
        duration: 2,
        warmup: 1,
        threads: Some(1),
        idp_config: PathBuf::from("config/idp.demo.toml"),
        config: PathBuf::from("config/unigate.demo.toml"),
        json: json.clone(),
        out_dir: dir.path().join("work"),
    };
    let r = login_storm::run(unigate_bin(), &opts).unwrap();
    assert_eq!(r.scenario, Scenario::Login);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert!(r.ok >= 2 && r.per_second > 0.0, "{} logins, {}/s", r.ok, r.per_second);
    assert!(r.latency_ms.p50 > 0.0 && r.latency_ms.p50 <= r.latency_ms.max);
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["scenario"], "login");
    assert_eq!(v["ok"].as_u64(), Some(r.ok));
    // The generated configs are gone.
    let left: Vec<_> = std::fs::read_dir("config")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.contains(&format!("login-storm-{}", std::process::id())))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// The wrk comparison, short: needs wrk (scripts/loadtest-auth-path
/// installs it); without it there is nothing to measure with.
#[test]
fn the_auth_path_comparison_measures_all_three_paths_with_wrk() {
    if std::process::Command::new("wrk").arg("--version").output().is_err() {
        eprintln!("wrk is not installed: the comparison is not run");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("auth-path.json");
    let opts = auth_path::Options {
        duration: 1,
        connections: 4,
        // `bare` without --bare-pingora: skipped, not an error.
        suites: "ping,login,bare".into(),
        rounds: 1,
        idp_config: PathBuf::from("config/idp.demo.toml"),
        config: PathBuf::from("config/unigate.demo.toml"),
        bare_pingora: None,
        json: json.clone(),
    };
    auth_path::run(unigate_bin(), &opts).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    for path in ["direct", "pingora_passthrough", "unigate"] {
        let rps = v["ping"]["median"][path]["rps"].as_f64().unwrap();
        assert!(rps > 0.0, "{path}: {rps}");
        // Every answer a 2xx: the session held through the run.
        assert_eq!(v["ping"]["all"][path][0]["non_2xx"], 0, "{path}");
    }
    assert!(v["ping"]["ratio"].as_f64().unwrap() > 0.0);
    // The login starts: every one a 302 (no 429: the limit was raised for
    // the run), and the generated config gone afterwards.
    let starts = &v["login"]["all"]["unigate_login_start"][0];
    assert!(starts["rps"].as_f64().unwrap() > 0.0, "{starts}");
    assert_eq!(starts["non_2xx"], 0);
    assert!(v["login"]["ratio"].as_f64().unwrap() > 0.0);
    let left: Vec<_> = std::fs::read_dir("config")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".loadtest-auth-path"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(v.get("store").is_none() && v.get("page").is_none() && v.get("bare").is_none());
}
