//! The hot paths one at a time: cookie parse, session lookup (memory
//! store; Redis store cached and uncached, against a real `redis-server`
//! started here), ID-token validation (ES256 and RS256), identity header
//! build. Assertion signing and the whole decision are in `auth_decision`,
//! HTML injection per page size in `inject`.
//!
//! `cargo bench --bench hot_paths`

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::JwkSet;
use unigate::gateway::config::{GatewayConfig, HeaderPreset};
use unigate::gateway::identity::header_set;
use unigate::gateway::testing;
use unigate::idp::keys::SigningKey;
use unigate::oidc::id_token::{Expected, ProviderKeys, validate_id_token};
use unigate::session::{IdToken, Identity, Tokens, cookie_value};

const ID: &str = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFG";

fn identity() -> Identity {
    testing::identity("alice", &["portal-users", "bms-users"])
}

/// The test configuration with this `[session]`.
fn config(session: &str) -> GatewayConfig {
    testing::config(&format!("[session]\n{session}"))
}

/// A `redis-server` on a free loopback port, stopped on drop.
struct Redis(Child);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis() -> Option<(Redis, u16)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
        .ok()?;
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some((Redis(child), port));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("hot_paths");

    let header = format!("_ga=GA1.2.3; portal_session=abcdef; unigate={ID}; theme=dark; lang=en");
    g.bench_function("cookie_parse", |b| {
        b.iter(|| {
            cookie_value(std::iter::once(header.as_bytes()), "unigate")
                .unwrap()
                .len()
        })
    });

    let id = identity();
    g.bench_function("header_build", |b| {
        b.iter(|| header_set(&id, HeaderPreset::KaseyaOne, 4096, "session-handle"))
    });

    // ID tokens as the IdP signs them, validated as unigate does at login.
    let es = SigningKey::generate(Algorithm::ES256).unwrap();
    let rs = SigningKey::generate(Algorithm::RS256).unwrap();
    let keys = ProviderKeys::from_jwks(&JwkSet {
        keys: vec![es.jwk.clone(), rs.jwk.clone()],
    });
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "iss": "https://idp.example", "sub": "user-1", "aud": "c", "azp": "c",
        "exp": now + 300, "iat": now, "auth_time": now, "nonce": "n-1", "sid": "s-1",
        "email": "alice@acme-msp.example", "groups": ["portal-users"]
    });
    let expected = Expected {
        nonce: Some("n-1"),
        max_iat_age: Some(600),
        ..Expected::new("https://idp.example", "c", &[Algorithm::ES256, Algorithm::RS256], 30)
    };
    for (name, key) in [("id_token_es256", &es), ("id_token_rs256", &rs)] {
        let token = key.sign("JWT", &claims).unwrap();
        assert!(validate_id_token(&token, &keys, &expected, SystemTime::now()).is_ok());
        g.bench_function(name, |b| {
            b.iter(|| validate_id_token(&token, &keys, &expected, SystemTime::now()).unwrap())
        });
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let memory = rt
        .block_on(unigate::gateway::server::build(config("store = \"memory\"")))
        .unwrap();
    let tokens = || Tokens {
        generation: 0,
        id_token: Some(IdToken::new(&"x".repeat(800))),
        refresh_token: Some("r".repeat(43).into()),
        access_exp: now + 3600,
    };
    let session =
        Arc::new(memory.build_session(unigate::gateway::config::RouteId(0), identity(), tokens(), now + 3600));
    rt.block_on(memory.put_session(ID, session)).unwrap();
    g.bench_function("session_lookup_memory", |b| {
        // The proxy reads the clock once per request, before the lookup.
        b.iter(|| memory.session_at(ID, now).now_or_never().unwrap().unwrap().unwrap())
    });

    match redis() {
        None => eprintln!("hot_paths: no redis-server here; the Redis lookups are skipped"),
        Some((_redis, port)) => {
            let url = dir.path().join("u");
            std::fs::write(&url, format!("redis://127.0.0.1:{port}/0")).unwrap();
            let store = format!(
                "store = \"redis\"\nredis_url = \"file:{}\"\nencryption_key = \"file:k\"\nredis_prefix = \"bench\"",
                url.display()
            );
            let shared = rt.block_on(unigate::gateway::server::build(config(&store))).unwrap();
            let session =
                Arc::new(shared.build_session(unigate::gateway::config::RouteId(0), identity(), tokens(), now + 3600));
            rt.block_on(shared.put_session(ID, session)).unwrap();
            // The replica's local copy: what nearly every request pays.
            g.bench_function("session_lookup_redis_cached", |b| {
                b.to_async(&rt)
                    .iter(|| async { shared.session_at(ID, now).await.unwrap().unwrap() })
            });
            // A replica seeing the session first: a Redis round trip and
            // the record opened (AES-256-GCM).
            let store = shared.state.sessions.redis().cloned().unwrap();
            let h = unigate::session::redis::id_hash(ID);
            g.bench_function("session_lookup_redis_uncached", |b| {
                b.to_async(&rt)
                    .iter(|| async { store.load(&h).await.unwrap().unwrap() })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
