//! Memory per idle session in the memory store: the process's resident
//! set before and after 100,000 logged-in sessions (realistic identities,
//! an 800-byte ID token, a refresh token, identity headers and App
//! Launcher built as at login), divided by their number.
//!
//! `cargo bench --bench session_memory` (issue 7's target: ≤ 2 KiB).

use std::sync::Arc;

use unigate::gateway::config::GatewayConfig;
use unigate::session::{Identity, Tokens};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Resident set size in bytes, from /proc/self/statm.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn main() {
    // `cargo test --benches` runs every bench once: a short run there.
    let n: usize = if std::env::args().any(|a| a == "--bench") {
        100_000
    } else {
        2_000
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s"), "secret").unwrap();
    let cfg = GatewayConfig::from_toml(
        r#"
        [listen]
        address = "127.0.0.1:8080"
        public_url = "http://localhost:8080"
        [identity_provider]
        issuer = "http://127.0.0.1:9"
        client_id = "c"
        client_secret = "file:s"
        [[module]]
        name = "portal"
        hosts = ["portal.localhost"]
        upstream = "127.0.0.1:8081"
        access_groups = ["portal-users"]
        [[module]]
        name = "bms"
        hosts = ["bms.localhost"]
        upstream = "127.0.0.1:8082"
        access_groups = ["bms-users"]
        "#,
        dir.path(),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let g = rt.block_on(unigate::gateway::server::build(cfg)).unwrap();
    let now = 1_800_000_000;
    // Warm the allocator and the caches' internals before measuring.
    let make = |i: usize| {
        let identity = Identity {
            sub: format!("7f0c6c1e-0d7c-4f47-b5a4-{i:012x}"),
            sid: Some(format!("sid-{i:016x}")),
            email: format!("user{i}@acme-msp.example"),
            name: format!("User {i}"),
            username: format!("user{i}"),
            company: "Acme MSP".into(),
            groups: vec!["portal-users".into(), "bms-users".into()],
            module_user: None,
        };
        let tokens = Tokens {
            id_token: Some(format!("{i:0>800}")),
            refresh_token: Some(format!("{i:0>43}")),
            access_exp: now + 3600,
        };
        (
            format!("{i:0>43}"),
            Arc::new(g.build_session(0, identity, tokens, now + 3600)),
        )
    };
    for i in 0..1000 {
        let (id, s) = make(usize::MAX - i);
        rt.block_on(g.put_session(&id, s)).unwrap();
    }
    g.sessions.housekeeping();
    let before = rss();
    for i in 0..n {
        let (id, s) = make(i);
        rt.block_on(g.put_session(&id, s)).unwrap();
    }
    g.sessions.housekeeping();
    let after = rss();
    assert_eq!(g.local_sessions(), (n + 1000) as u64, "every session kept");
    let per = (after.saturating_sub(before)) as f64 / n as f64;
    println!(
        "session_memory: {n} sessions, RSS {:.1} MiB -> {:.1} MiB: {per:.0} bytes per session",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0
    );
}
