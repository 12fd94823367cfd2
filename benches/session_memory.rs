//! Memory per idle session in the memory store: the process's resident
//! set before and after 100,000 logged-in sessions (realistic identities,
//! an ES256 ID token of about 800 characters, a refresh token, identity
//! headers and App Launcher built as at login; each has served a request,
//! so its header values were shared out and an assertion signed and kept
//! in the signer's bounded cache), divided by their number.
//!
//! Then the lookup of a session by its id, timed one by one (200,000
//! lookups of random stored ids): its p50 and p99 with 1,000 sessions
//! stored and with all of them.
//!
//! `cargo bench --bench session_memory` (the target: ≤ 2 KiB per idle session);
//! `SESSIONS=1000000 cargo bench --bench session_memory` for a million
//! (the target: lookup p99 no worse than with a thousand, RSS ≤ 2.5 GiB).

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use unigate::gateway::testing;
use unigate::session::{IdToken, Identity, Tokens};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// An ES256 ID token as KaseyaOne-like providers issue them: about 800
/// characters, unique per user.
fn id_token(i: usize, now: u64) -> String {
    let header = r#"{"alg":"ES256","typ":"JWT","kid":"kaseyaone-signing-2026-11"}"#;
    let payload = format!(
        r#"{{"iss":"https://kaseyaone.example.com","sub":"7f0c6c1e-0d7c-4f47-b5a4-{i:012x}","aud":"unigate-portal","exp":{},"iat":{now},"auth_time":{now},"nonce":"n-{i:040x}","sid":"sid-{i:016x}","at_hash":"{i:022x}","email":"user{i}@acme-msp.example","email_verified":true,"name":"User {i}","preferred_username":"user{i}","company":"Acme MSP","groups":["portal-users","bms-users"],"amr":["pwd","otp"]}}"#,
        now + 300
    );
    let mut sig = [0u8; 64];
    for (k, b) in sig.iter_mut().enumerate() {
        *b = (i.wrapping_mul(31).wrapping_add(k * 7) % 251) as u8;
    }
    format!("{}.{}.{}", B64.encode(header), B64.encode(payload), B64.encode(sig))
}

/// 200,000 lookups of ids drawn from `ids` (a fixed pseudo-random
/// sequence), each timed on its own: the p50 and p99 in nanoseconds.
fn lookups(store: &unigate::session::MemoryStore, ids: &[String], now: u64) -> (u128, u128) {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let picks: Vec<&str> = (0..200_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ids[(x % ids.len() as u64) as usize].as_str()
        })
        .collect();
    let mut took: Vec<u128> = picks
        .iter()
        .map(|id| {
            let t = std::time::Instant::now();
            let found = std::hint::black_box(store.get_at(id, now));
            let ns = t.elapsed().as_nanos();
            assert!(found.is_some(), "a stored session");
            ns
        })
        .collect();
    took.sort_unstable();
    (took[took.len() / 2], took[took.len() * 99 / 100])
}

/// Resident set size in bytes, from /proc/self/statm.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn main() {
    // `cargo test --benches` runs every bench once: a short run there.
    let n: usize = if std::env::args().any(|a| a == "--bench") {
        std::env::var("SESSIONS").map_or(100_000, |v| v.parse().expect("SESSIONS: a number"))
    } else {
        2_000
    };
    let cached = std::env::var("ASSERTION_CACHE").unwrap_or_else(|_| "10000".into());
    let cfg = testing::config(&format!(
        r#"
        [[module]]
        name = "bms"
        hosts = ["bms.localhost"]
        upstream = "127.0.0.1:8082"
        access_groups = ["bms-users"]
        [identity]
        assertion_cache = {cached}
        [session]
        max_sessions = {cap}
        "#,
        cap = n + 10_000
    ));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let g = rt.block_on(unigate::gateway::server::build(cfg)).unwrap();
    let now = 1_800_000_000;
    // Warm the allocator and the caches' internals before measuring.
    let make = |i: usize| {
        let identity = Identity {
            sub: format!("7f0c6c1e-0d7c-4f47-b5a4-{i:012x}").into(),
            sid: Some(format!("sid-{i:016x}").into()),
            email: format!("user{i}@acme-msp.example").into(),
            name: format!("User {i}").into(),
            username: format!("user{i}").into(),
            company: "Acme MSP".into(),
            groups: vec!["portal-users".into(), "bms-users".into()],
            module_user: None,
        };
        let tokens = Tokens {
            generation: 0,
            id_token: Some(IdToken::new(&id_token(i, now))),
            refresh_token: Some(format!("{i:0>43}").into()),
            access_exp: now + 3600,
        };
        let s = Arc::new(g.build_session(unigate::gateway::config::RouteId(0), identity, tokens, now + 3600));
        // It served a request: its identity headers were sent and its
        // assertion signed (and let go of later, as the session idles).
        assert!(s.headers.iter().count() >= 6);
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(now);
        g.state.signer.for_session(&s, at).expect("assertion signed");
        (format!("{i:0>43}"), s)
    };
    for i in 0..1000 {
        let (id, s) = make(usize::MAX - i);
        rt.block_on(g.put_session(&id, s)).unwrap();
    }
    g.state.sessions.housekeeping();
    let store = g.state.sessions.memory().expect("the memory store");
    let warm: Vec<String> = (0..1000).map(|i| format!("{:0>43}", usize::MAX - i)).collect();
    let (p50_small, p99_small) = lookups(store, &warm, now);
    let before = rss();
    for i in 0..n {
        let (id, s) = make(i);
        rt.block_on(g.put_session(&id, s)).unwrap();
    }
    g.state.sessions.housekeeping();
    let after = rss();
    assert_eq!(g.local_sessions(), (n + 1000) as u64, "every session kept");
    let all: Vec<String> = (0..n).map(|i| format!("{i:0>43}")).collect();
    let (p50_all, p99_all) = lookups(store, &all, now);
    println!(
        "session_memory: lookup p50/p99 with 1,000 sessions {p50_small} / {p99_small} ns; with {} sessions {p50_all} / {p99_all} ns",
        n + 1000
    );
    let per = (after.saturating_sub(before)) as f64 / n as f64;
    println!(
        "session_memory: {n} sessions (ID tokens of {} characters), RSS {:.1} MiB -> {:.1} MiB: {per:.0} bytes per session",
        id_token(0, now).len(),
        before as f64 / 1048576.0,
        after as f64 / 1048576.0
    );

    println!(
        "session_memory: sizes: Session {} B, Identity {} B, Tokens {} B, HeaderSet {} B",
        std::mem::size_of::<unigate::session::Session>(),
        std::mem::size_of::<Identity>(),
        std::mem::size_of::<Tokens>(),
        std::mem::size_of::<unigate::session::HeaderSet>()
    );
    // Of that, the cache's own bookkeeping: the same moka settings as the
    // memory store, the same keys, every entry holding one shared value.
    let shared = Arc::new(());
    let cache: moka::sync::Cache<Arc<str>, Arc<()>> = moka::sync::Cache::builder()
        .max_capacity(10_000_000)
        .time_to_idle(std::time::Duration::from_secs(3600))
        .eviction_policy(moka::policy::EvictionPolicy::lru())
        .eviction_listener(|_, _, _| {})
        .build();
    for i in 0..1000 {
        cache.insert(format!("{:0>43}", usize::MAX - i).into(), shared.clone());
    }
    cache.run_pending_tasks();
    let before = rss();
    for i in 0..n {
        cache.insert(format!("{i:0>43}").into(), shared.clone());
    }
    cache.run_pending_tasks();
    let after = rss();
    assert_eq!(cache.entry_count(), (n + 1000) as u64);
    println!(
        "session_memory: of which the cache entry and its 43-character key: {:.0} bytes",
        after.saturating_sub(before) as f64 / n as f64
    );
}
