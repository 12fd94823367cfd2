//! The authenticated request decision, as unigate makes it for every
//! request: `Gateway::decide` (route by host, cookie parse, session
//! lookup, module cookies, `policy::request::decide`), then the identity
//! headers and assertion on the upstream request (`Gateway::send_identity`).
//! Also the uncached assertion signature, which a session pays at most
//! every 30 s.

use std::sync::Arc;
use std::time::SystemTime;

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use pingora::http::RequestHeader;
use unigate::gateway::Gateway;
use unigate::gateway::config::{GatewayConfig, RouteId};
use unigate::gateway::identity::{AssertionSigner, header_set, strip_identity_headers};
use unigate::idp::keys::SigningKey;
use unigate::oidc::client::OidcClient;
use unigate::policy::request::Decision;
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
    let headers = header_set(&identity, g.route(RouteId(0)).headers, 4096, "session-handle");
    g.state.sessions.memory().unwrap().insert(
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

/// The decision, as the proxy makes it (the memory store's lookup is
/// ready at once): the request goes through with the session.
fn decide(g: &Gateway, req: &RequestHeader) -> Arc<Session> {
    let routed = g
        .decide(req, unigate::gateway::unix_now())
        .now_or_never()
        .expect("the memory store answers at once")
        .expect("routed");
    assert_eq!(routed.decision, Decision::Forward { strip_cookies: 0 });
    routed.session.expect("the session")
}

fn bench(c: &mut Criterion) {
    let g = gateway();
    let req = request();
    let mut group = c.benchmark_group("auth_decision");
    group.bench_function("decide", |b| b.iter(|| decide(&g, &req)));
    group.bench_function("decide_and_identity_headers", |b| {
        b.iter_batched_ref(
            || req.clone(),
            |up| {
                let s = decide(&g, up);
                strip_identity_headers(up);
                g.send_identity(up, &s).unwrap();
            },
            criterion::BatchSize::SmallInput,
        )
    });
    let s = decide(&g, &req);
    group.bench_function("assertion_sign_uncached", |b| {
        b.iter(|| g.state.signer.sign(&s.identity, "portal", SystemTime::now()).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
