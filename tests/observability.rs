//! What operators watch: Prometheus metrics on the admin listener, checked
//! after a login, a refused callback and a logout; `X-Request-Id` made
//! (or a trusted proxy's kept) and passed to the module; and the JSON log
//! format with one structured event per auth decision, from the real binary.

mod common;

use std::io::BufRead;
use std::time::Duration;

use common::*;
use serde_json::Value;
use unigate::gateway::server::free_port;

async fn scrape(s: &Stack) -> String {
    let admin = s.gw.admin_addr.expect("admin listener");
    let r = reqwest::get(format!("http://{admin}/metrics")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"].to_str().unwrap().starts_with("text/plain"),
        "Prometheus text format"
    );
    r.text().await.unwrap()
}

/// The value of the sample `name{labels}` (exact label text), 0 if absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// Scrapes until `series` reads `want` (a request is counted just after its
/// response has gone out); returns the last scrape.
async fn scrape_until(s: &Stack, series: &str, want: f64) -> String {
    let t = std::time::Instant::now();
    loop {
        let m = scrape(s).await;
        if sample(&m, series) == want || t.elapsed() > Duration::from_secs(2) {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn metrics_count_logins_requests_and_logouts() {
    let s = StackBuilder::new()
        .gateway(|t| {
            t.table("admin")
                .set("address", "127.0.0.1:0")
                .set("token", "file:secret");
        })
        .start()
        .await;
    let before = scrape(&s).await;
    assert_eq!(sample(&before, "unigate_sessions"), 0.0);
    assert!(before.contains("# TYPE unigate_requests_total counter"), "{before}");

    let (b, _jar) = s.browser();
    assert_eq!(s.login(&b, "alice", "/").await.status(), 302);
    for _ in 0..3 {
        let r = b.get(s.url("/")).header("accept", "text/html").send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    // A callback nobody started: a failed login, for a reason.
    let iss: String = form_urlencoded::byte_serialize(s.idp.issuer().as_bytes()).collect();
    let r = b
        .get(s.url(&format!("/_unigate/callback?state=forged&code=x&iss={iss}")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), location(&r)),
        (303, "/_unigate/error".to_string())
    );

    let m = scrape_until(&s, r#"unigate_requests_total{module="portal",outcome="internal"}"#, 2.0).await;
    assert_eq!(sample(&m, r#"unigate_logins_started_total{module="portal"}"#), 1.0);
    assert_eq!(
        sample(
            &m,
            r#"unigate_logins_total{module="portal",reason="",result="succeeded"}"#
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            r#"unigate_logins_total{module="portal",reason="state",result="failed"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(&m, r#"unigate_requests_total{module="portal",outcome="login"}"#),
        1.0
    );
    assert_eq!(
        sample(&m, r#"unigate_requests_total{module="portal",outcome="proxied"}"#),
        3.0,
        "{m}"
    );
    assert_eq!(sample(&m, "unigate_sessions"), 1.0);
    assert_eq!(
        sample(
            &m,
            r#"unigate_idp_request_duration_seconds_count{call="token",result="ok"}"#
        ),
        1.0
    );
    assert!(
        sample(
            &m,
            r#"unigate_idp_request_duration_seconds_count{call="discovery",result="ok"}"#
        ) >= 1.0
    );

    // RP-initiated logout.
    let r = b.get(s.url("/logout")).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let m = scrape_until(&s, "unigate_sessions", 0.0).await;
    assert_eq!(sample(&m, r#"unigate_logouts_total{kind="rp"}"#), 1.0);
    assert_eq!(sample(&m, "unigate_sessions"), 0.0);
    // An API client without a session now: unauthenticated.
    let r = b
        .get(s.url("/api/whoami"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let m = scrape_until(
        &s,
        r#"unigate_requests_total{module="portal",outcome="unauthenticated"}"#,
        1.0,
    )
    .await;
    assert_eq!(
        sample(
            &m,
            r#"unigate_requests_total{module="portal",outcome="unauthenticated"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn a_request_id_is_kept_or_made_and_reaches_the_module() {
    let s = stack().await;
    let (b, _jar) = s.browser();
    s.login(&b, "alice", "/").await;
    // Made: none, one a client chose (only a trusted proxy's is kept; see
    // tests/forwarded.rs), or one that is not sane (spaces) gets a fresh one.
    for sent in [None, Some("trace-abc-123"), Some("has spaces in it")] {
        let mut rb = b.get(s.url("/api/whoami"));
        if let Some(v) = sent {
            rb = rb.header("x-request-id", v);
        }
        let r = rb.send().await.unwrap();
        let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
        assert_eq!(id.len(), 32, "{id}");
        assert!(id.bytes().all(|c| c.is_ascii_hexdigit()));
        let who: Value = r.json().await.unwrap();
        assert_eq!(
            who["headers"]["x-request-id"],
            id.as_str(),
            "the module saw the same id"
        );
    }
    // unigate's own answers carry one too.
    let r = b.get(s.url("/_unigate/healthz")).send().await.unwrap();
    assert_eq!(r.headers()["x-request-id"].len(), 32);
}

#[tokio::test]
async fn json_logs_carry_one_event_per_auth_decision() {
    let port = free_port().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    let config = dir.path().join("unigate.toml");
    // No IdP is reachable: the module has Unified Login off, and a host
    // nobody configured is refused.
    let mut text = gateway_table(port, "http://127.0.0.1:9");
    let legacy = table_of(|m| {
        m.set("name", "legacy")
            .set("hosts", vec!["legacy.localhost"])
            .set("upstream", "127.0.0.1:9")
            .set("access_groups", vec!["x"])
            .set("login", "automatic")
            .set("unified_login", false);
    });
    text.set("module", vec![legacy]);
    std::fs::write(&config, config_text(&text)).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_unigate"))
        .args(["--log-format", "json", "run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info,unigate::auth=debug")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let c = reqwest::Client::new();
    let t = std::time::Instant::now();
    // A client's own id is replaced: the log names the one unigate made.
    let id = loop {
        if let Ok(r) = c
            .get(format!("http://127.0.0.1:{port}/whatever?secret=not-logged"))
            .header("host", "nobody.localhost")
            .header("x-request-id", "json-log-test-1")
            .send()
            .await
        {
            assert_eq!(r.status(), 404);
            break r.headers()["x-request-id"].to_str().unwrap().to_string();
        }
        assert!(t.elapsed() < Duration::from_secs(10), "unigate did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut found = None;
    let t = std::time::Instant::now();
    while found.is_none() && t.elapsed() < Duration::from_secs(5) {
        let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            panic!("a log line that is not JSON: {line}");
        };
        assert_ne!(v["request_id"], "json-log-test-1", "{line}");
        if v["request_id"] == id.as_str() {
            found = Some(v);
        }
    }
    let _ = nix_kill(&child);
    let _ = child.wait();
    let v = found.expect("an auth decision event for the request");
    assert_eq!(v["target"], "unigate::auth");
    assert_eq!(v["level"], "INFO");
    assert_eq!(v["decision"], "rejected");
    assert_eq!(v["status"], 404);
    assert_eq!(v["module"], "-");
    assert_eq!(v["client.ip"], "127.0.0.1", "{v}");
    assert_eq!(v["path"], "/whatever", "the path without its query");
    assert!(!v.to_string().contains("not-logged"), "no query strings in logs");
}

/// SIGTERM, as an orchestrator stops it.
fn nix_kill(child: &std::process::Child) -> std::io::Result<()> {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    assert!(status.success());
    Ok(())
}
