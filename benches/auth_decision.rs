//! The authenticated request decision, as unigate makes it for every
//! request: cookie parse → session lookup → access-group policy → identity
//! headers and assertion on the upstream request. Also the uncached
//! assertion signature, which a session pays at most every 30 s.

use std::sync::Arc;
use std::time::SystemTime;

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use pingora::http::RequestHeader;
use unigate::gateway::Gateway;
use unigate::gateway::config::GatewayConfig;
use unigate::gateway::identity::{ASSERTION_HEADER, AssertionSigner, header_set, strip_identity_headers};
use unigate::idp::keys::SigningKey;
use unigate::oidc::client::OidcClient;
use unigate::policy::may_access;
use unigate::session::{Identity, Session, Tokens};

const ID: &str = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFG";

fn gateway() -> Gateway {
    let dir = tempfile::tempdir().unwrap().keep();
    std::fs::write(dir.join("s"), "secret").unwrap();
    let cfg = GatewayConfig::from_toml(
        r#"
        [listen]
        address = "127.0.0.1:8080"
        public_url = "http://localhost:8080"
        [identity_provider]
        issuer = "http://127.0.0.1:9000"
        client_id = "c"
        client_secret = "file:s"
        [[module]]
        name = "portal"
        hosts = ["portal.localhost"]
        upstream = "127.0.0.1:8081"
        access_groups = ["portal-users"]
        "#,
        &dir,
    )
    .unwrap();
    let oidc = Arc::new(OidcClient::new(cfg.idp.clone()).unwrap());
    let signer = AssertionSigner::new(
        SigningKey::generate(jsonwebtoken::Algorithm::ES256).unwrap(),
        "unigate",
        std::time::Duration::from_secs(60),
        10_000,
    );
    let g = Gateway::new(cfg, oidc, signer).unwrap();
    let identity = Identity {
        sub: "7f0c6c1e-0d7c-4f47-b5a4-3c8e2f1d9a10".into(),
        sid: Some("sid-1".into()),
        email: "alice@acme-msp.example".into(),
        name: "Alice Admin".into(),
        username: "alice".into(),
        company: "Acme MSP".into(),
        groups: vec!["portal-users".into(), "bms-users".into()],
        module_user: None,
    };
    let headers = header_set(&identity, g.module(0).headers, 4096, "session-handle");
    g.sessions.insert(
        ID.into(),
        Arc::new(Session::new(
            "portal".into(),
            identity,
            headers,
            Tokens {
                generation: 0,
                id_token: None,
                refresh_token: None,
                access_exp: u64::MAX / 2,
            },
        )),
    );
    g
}

fn request() -> RequestHeader {
    let mut r = RequestHeader::build("GET", b"/reports?page=2", None).unwrap();
    r.insert_header("host", "portal.localhost:8080").unwrap();
    r.insert_header("accept", "text/html").unwrap();
    r.insert_header(
        "cookie",
        format!("_ga=GA1.2.3; portal_session=abcdef; unigate={ID}; theme=dark"),
    )
    .unwrap();
    r
}

fn bench(c: &mut Criterion) {
    let g = gateway();
    let req = request();
    let module = g.module(0).clone();
    let mut group = c.benchmark_group("auth_decision");
    group.bench_function("cookie_session_policy", |b| {
        b.iter(|| {
            // Memory store: the lookup's future is ready at once.
            let s = g
                .session_for(&req, &module, unigate::gateway::unix_now())
                .now_or_never()
                .unwrap()
                .unwrap()
                .expect("session");
            assert!(may_access(&s.identity.groups, &module.access_groups));
            s
        })
    });
    group.bench_function("full_with_headers", |b| {
        b.iter_batched_ref(
            || req.clone(),
            |up| {
                let s = g
                    .session_for(up, &module, unigate::gateway::unix_now())
                    .now_or_never()
                    .unwrap()
                    .unwrap()
                    .expect("session");
                assert!(may_access(&s.identity.groups, &module.access_groups));
                strip_identity_headers(up);
                for (name, value) in s.headers.iter() {
                    up.insert_header(name, value).unwrap();
                }
                let a = g.signer.for_session(&s, SystemTime::now()).unwrap();
                up.insert_header(ASSERTION_HEADER, a).unwrap();
            },
            criterion::BatchSize::SmallInput,
        )
    });
    let s = g
        .session_for(&req, &module, unigate::gateway::unix_now())
        .now_or_never()
        .unwrap()
        .unwrap()
        .unwrap();
    group.bench_function("assertion_sign_uncached", |b| {
        b.iter(|| g.signer.sign(&s.identity, "portal", SystemTime::now()).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
