//! The authenticated request decision, as unigate makes it for every
//! request: `Gateway::decide` (route by host, cookie parse, session
//! lookup, whom the module's session cookie was issued to,
//! `policy::request::decide`), then the identity headers and assertion on
//! the upstream request (`Gateway::send_identity`).
//! Also the uncached assertion signature, which a session pays at most
//! every 30 s.

use std::sync::Arc;
use std::time::SystemTime;

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use pingora::http::RequestHeader;
use unigate::gateway::identity::strip_identity_headers;
use unigate::gateway::{Gateway, testing};
use unigate::policy::request::Decision;
use unigate::session::Session;

const ID: &str = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFG";

fn gateway() -> Gateway {
    let g = testing::gateway(r#"session_cookies = ["portal_session"]"#);
    testing::add_session(&g, ID, testing::identity("alice", &["portal-users", "bms-users"]));
    // The module issued `portal_session=abcdef` to alice's session.
    let issued = cookie::Cookie::parse("portal_session=abcdef").unwrap();
    let owner = g.cookie_owner(&issued, "alice", true).in_login(Some("sid-alice"));
    g.state
        .sessions
        .record_module_cookie("abcdef", owner)
        .now_or_never()
        .expect("the memory store answers at once")
        .unwrap();
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
    // A route that watches no module session cookie (most modules).
    let plain = testing::gateway("");
    testing::add_session(&plain, ID, testing::identity("alice", &["portal-users"]));
    group.bench_function("decide_no_module_cookies", |b| b.iter(|| decide(&plain, &req)));
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
