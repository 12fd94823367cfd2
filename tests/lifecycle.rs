//! unigate's life as a process: a graceful stop that finishes requests in
//! flight (readiness off first), a stop that does not wait past its grace,
//! and a configuration reload — by file change — that changes a module's
//! access groups live without logging anyone out.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::AsyncWriteExt;
use unigate::gateway::server::free_port;

/// An upstream that answers every request after `delay`.
async fn slow_upstream(delay: Duration) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                if !read_request_head(&mut s).await {
                    return;
                }
                tokio::time::sleep(delay).await;
                let body = "slow but done";
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    addr
}

/// unigate in front of `upstream`, Unified Login off (no login needed).
/// `shutdown_grace` in `[listen]`.
async fn open_gateway(upstream: SocketAddr, shutdown_grace: &str) -> (unigate::gateway::server::GatewayServer, u16) {
    let port = free_port().unwrap();
    let gw = start_gateway(port, "http://127.0.0.1:9", |t| {
        t.table("listen").set("shutdown_grace", shutdown_grace);
        let legacy = table_of(|m| {
            m.set("name", "legacy")
                .set("hosts", vec![HOST])
                .set("upstream", upstream.to_string())
                .set("access_groups", vec!["portal-users"])
                .set("login", "automatic")
                .set("unified_login", false);
        });
        t.set("module", vec![legacy]);
    })
    .await;
    (gw, port)
}

fn plain() -> reqwest::Client {
    reqwest::Client::builder()
        .resolve(HOST, SocketAddr::from(([127, 0, 0, 1], 0)))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_graceful_stop_turns_readiness_off_and_finishes_requests_in_flight() {
    let up = slow_upstream(Duration::from_millis(1500)).await;
    let (gw, port) = open_gateway(up, "5s").await;
    // The container HEALTHCHECK (`unigate healthcheck`) passes while serving.
    let health = |port: u16| {
        std::process::Command::new(env!("CARGO_BIN_EXE_unigate"))
            .args([
                "healthcheck",
                "--url",
                &format!("http://127.0.0.1:{port}/_unigate/healthz"),
            ])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(health(port), "healthcheck passes");
    let c = plain();
    let slow = tokio::spawn({
        let c = c.clone();
        async move {
            let r = c.get(format!("http://{HOST}:{port}/report")).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    });
    let in_flight = || {
        gw.gateway
            .state
            .lifecycle
            .in_flight
            .load(std::sync::atomic::Ordering::Acquire)
    };
    wait_until("the slow request is in flight", Duration::from_secs(2), async || {
        in_flight() >= 1
    })
    .await;
    assert_eq!(in_flight(), 1);
    let started = Instant::now();
    let stopping = tokio::spawn(gw.stop(false));
    // Readiness is off while the request in flight finishes.
    let readyz = format!("http://{HOST}:{port}/_unigate/readyz");
    wait_until("readiness off", Duration::from_secs(1), async || {
        c.get(&readyz).send().await.unwrap().status() == 503
    })
    .await;
    let ready = c.get(&readyz).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(ready.text().await.unwrap(), "shutting down");
    let (status, body) = slow.await.unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, "slow but done"),
        "the request in flight finished"
    );
    stopping.await.unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "stopped once nothing was in flight ({took:?})"
    );
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err(),
        "the listener is closed"
    );
    assert!(!health(port), "healthcheck fails once stopped");
}

#[tokio::test]
async fn a_stop_waits_no_longer_than_its_grace() {
    let up = slow_upstream(Duration::from_secs(30)).await;
    let (gw, port) = open_gateway(up, "500ms").await;
    let c = plain();
    let stuck = tokio::spawn(async move { c.get(format!("http://{HOST}:{port}/hangs")).send().await });
    wait_until("the stuck request is in flight", Duration::from_secs(2), async || {
        gw.gateway
            .state
            .lifecycle
            .in_flight
            .load(std::sync::atomic::Ordering::Acquire)
            == 1
    })
    .await;
    let started = Instant::now();
    gw.stop(false).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(3),
        "waited its grace, not more ({took:?})"
    );
    let r = tokio::time::timeout(Duration::from_secs(3), stuck)
        .await
        .expect("the stuck request ended");
    assert!(r.unwrap().is_err(), "the stuck request was cut, not answered");
}

#[tokio::test]
async fn a_reload_changes_access_groups_live_and_logs_no_one_out() {
    let mut s = StackBuilder::new()
        .session(|s| {
            s.set("idle_timeout", "30m");
        })
        .start()
        .await;
    s.gw.watch_config(s.config.clone());
    let (b, _jar) = s.browser();
    assert_eq!(s.login(&b, "alice", "/").await.status(), 302);
    let status = |b: reqwest::Client| {
        let u = s.url("/");
        async move {
            b.get(u)
                .header("accept", "text/html")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(status(b.clone()).await, 200);
    let sessions = s.gw.gateway.state.sessions.memory().unwrap().len();
    assert_eq!(sessions, 1);

    // The module is closed to alice's groups: within moments she gets 403,
    // not a login page — her session lives on.
    let groups = |groups: &str| {
        let groups = groups.to_string();
        move |t: &mut toml::Table| {
            t.module("portal").set("access_groups", vec![groups]);
        }
    };
    s.rewrite_config(groups("auditors"));
    let until = |want: u16| {
        let b = b.clone();
        async move {
            let what = format!("the reloaded module answering {want}");
            wait_until(&what, Duration::from_secs(5), async || status(b.clone()).await == want).await;
        }
    };
    until(403).await;
    assert_eq!(
        s.gw.gateway.state.sessions.memory().unwrap().len(),
        1,
        "no one was logged out"
    );

    // Opened again: the same session gets in, no new login.
    s.rewrite_config(groups("portal-users"));
    until(200).await;

    // A change only a restart can apply is refused whole: the running
    // configuration stays (the module stays open).
    s.rewrite_config(|t| {
        groups("auditors")(t);
        t.table("session").set("idle_timeout", "5m");
    });
    // Long enough for the watcher to see the file and refuse it: the
    // point is that nothing changes, so there is nothing to poll for.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(status(b.clone()).await, 200, "a refused reload changed nothing");
    // A broken file is refused too.
    // (Raw text: the file is deliberately not a valid configuration.)
    std::fs::write(&s.config, "[listen]\naddress = 12\n").unwrap();
    // As above: waiting is the point.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(status(b.clone()).await, 200);
    assert!(!s.gw.reload_from(&s.config), "the broken file does not load");
}
