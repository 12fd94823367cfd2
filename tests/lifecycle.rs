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
async fn open_gateway(upstream: SocketAddr, listen: &str) -> (unigate::gateway::server::GatewayServer, u16) {
    let port = free_port().unwrap();
    let rest = format!(
        r#"
        [[module]]
        name = "legacy"
        hosts = ["{HOST}"]
        upstream = "{upstream}"
        access_groups = ["portal-users"]
        unified_login = false
        "#
    );
    let (gw, _) = start_gateway_file(port, "http://127.0.0.1:9", listen, &rest).await;
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
    let (gw, port) = open_gateway(up, r#"shutdown_grace = "5s""#).await;
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
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        gw.gateway
            .state
            .lifecycle
            .in_flight
            .load(std::sync::atomic::Ordering::Acquire),
        1
    );
    let started = Instant::now();
    let stopping = tokio::spawn(gw.stop(false));
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Readiness is off while the request in flight finishes.
    let ready = c
        .get(format!("http://{HOST}:{port}/_unigate/readyz"))
        .send()
        .await
        .unwrap();
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
    let (gw, port) = open_gateway(up, r#"shutdown_grace = "500ms""#).await;
    let c = plain();
    let stuck = tokio::spawn(async move { c.get(format!("http://{HOST}:{port}/hangs")).send().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
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
    let port = free_port().unwrap();
    let mut idp_cfg = demo_config();
    let mut client = test_client(None, None);
    client
        .redirect_uris
        .push(format!("http://{HOST}:{port}/_unigate/callback"));
    idp_cfg.clients.push(client);
    let idp = start_idp(idp_cfg).await;
    let module = portal_module(port).await;
    let module_addr = module.addr;
    let rest = move |groups: &str, idle: &str| {
        format!(
            r#"
            [session]
            idle_timeout = "{idle}"
            [[module]]
            name = "portal"
            hosts = ["{HOST}"]
            upstream = "{}"
            access_groups = [{groups}]
            "#,
            module_addr
        )
    };
    let (mut gw, path) = start_gateway_file(port, idp.issuer(), "", &rest(r#""portal-users""#, "30m")).await;
    gw.watch_config(path.clone());
    let s = Stack { idp, module, gw, port };
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
    std::fs::write(
        &path,
        gateway_toml(port, s.idp.issuer(), "", &rest(r#""auditors""#, "30m")),
    )
    .unwrap();
    let until = |want: u16| {
        let b = b.clone();
        async move {
            let t = Instant::now();
            loop {
                let got = status(b.clone()).await;
                if got == want {
                    return;
                }
                assert!(t.elapsed() < Duration::from_secs(5), "still {got}, not {want}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    until(403).await;
    assert_eq!(
        s.gw.gateway.state.sessions.memory().unwrap().len(),
        1,
        "no one was logged out"
    );

    // Opened again: the same session gets in, no new login.
    std::fs::write(
        &path,
        gateway_toml(port, s.idp.issuer(), "", &rest(r#""portal-users""#, "30m")),
    )
    .unwrap();
    until(200).await;

    // A change only a restart can apply is refused whole: the running
    // configuration stays (the module stays open).
    std::fs::write(
        &path,
        gateway_toml(port, s.idp.issuer(), "", &rest(r#""auditors""#, "5m")),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(status(b.clone()).await, 200, "a refused reload changed nothing");
    // A broken file is refused too.
    std::fs::write(&path, "[listen]\naddress = 12\n").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(status(b.clone()).await, 200);
    assert!(!s.gw.reload_from(&path), "the broken file does not load");
}
