//! The proxy's phases over Pingora's in-memory session: a request written
//! into one end of a duplex pipe, the gateway's hooks called as Pingora
//! calls them, and the answer read from the other end. No sockets, no
//! upstream, no identity provider.

use std::sync::Arc;
use std::time::Duration;

use pingora::http::RequestHeader;
use pingora::proxy::Session as PSession;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::config::RouteId;
use super::identity::ASSERTION_HEADER;
use super::{Ctx, Gateway, testing};

const ALICE: &str = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFG";
const BOB: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn gateway() -> Arc<Gateway> {
    let g = testing::gateway(r#"public_paths = ["/static"]"#);
    testing::add_session(&g, ALICE, testing::identity("alice", &["portal-users"]));
    testing::add_session(&g, BOB, testing::identity("bob", &["bms-users"]));
    Arc::new(g)
}

/// What `request_filter` did with a raw request: whether it answered
/// (`true`) or goes on to the module, the context, and the answer's bytes.
struct Outcome {
    answered: bool,
    ctx: Ctx,
    answer: String,
    session: PSession,
}

impl Outcome {
    fn status(&self) -> u16 {
        self.answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
    }

    fn header(&self, name: &str) -> Option<&str> {
        let head = self.answer.split("\r\n\r\n").next()?;
        head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

async fn request_filter(g: &Arc<Gateway>, raw: &str) -> Outcome {
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    client.write_all(raw.as_bytes()).await.unwrap();
    let mut session = PSession::new_h1(Box::new(server));
    assert!(session.read_request().await.unwrap(), "the request is read");
    let mut ctx = g.new_ctx();
    let answered = g.request_filter(&mut session, &mut ctx).await.unwrap();
    let mut answer = Vec::new();
    if answered {
        let _ = tokio::time::timeout(Duration::from_millis(200), async {
            let mut buf = [0u8; 8192];
            while let Ok(n) = client.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                answer.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&answer);
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().to_string())
                        })
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    if body.len() >= len {
                        break;
                    }
                }
            }
        })
        .await;
    }
    Outcome {
        answered,
        ctx,
        answer: String::from_utf8_lossy(&answer).into_owned(),
        session,
    }
}

fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: portal.localhost:8080\r\n{extra}\r\n")
}

#[tokio::test]
async fn a_member_with_a_session_goes_on_to_the_module_with_their_identity() {
    let g = gateway();
    let mut o = request_filter(
        &g,
        &get(
            "/reports?page=2",
            &format!("Accept: text/html\r\nCookie: theme=dark; unigate={ALICE}\r\nAuthorization: Basic YTpi\r\nX-Unigate-User: mallory\r\n"),
        ),
    )
    .await;
    assert!(!o.answered, "not answered by unigate: {}", o.answer);
    assert_eq!(o.ctx.route, Some(RouteId(0)));
    assert!(o.ctx.peer.is_some(), "an upstream is chosen");
    assert_eq!(o.ctx.session.as_ref().map(|s| &*s.identity.sub), Some("alice"));
    // The request the module gets: alice's identity and assertion, none
    // of what the client sent in their place, no unigate cookie.
    let mut up: RequestHeader = o.session.req_header().clone();
    g.upstream_request_filter(&mut o.session, &mut up, &mut o.ctx)
        .await
        .unwrap();
    let h = |n: &str| up.headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    assert!(h(ASSERTION_HEADER).is_some_and(|a| a.split('.').count() == 3), "{up:?}");
    assert!(
        up.headers
            .get_all("x-unigate-user")
            .iter()
            .all(|v| v.as_bytes() != b"mallory")
    );
    assert_eq!(h("authorization"), None, "no other credential goes along");
    assert_eq!(h("cookie").as_deref(), Some("theme=dark"));
    assert_eq!(up.uri.path_and_query().unwrap().as_str(), "/reports?page=2");
}

#[tokio::test]
async fn a_user_outside_the_access_groups_gets_the_no_access_page() {
    let g = gateway();
    let o = request_filter(
        &g,
        &get("/reports", &format!("Accept: text/html\r\nCookie: unigate={BOB}\r\n")),
    )
    .await;
    assert!(o.answered);
    assert_eq!(o.status(), 403, "{}", o.answer);
    assert!(o.answer.contains("You do not have access to"), "{}", o.answer);
    assert!(o.ctx.session.is_none());
}

#[tokio::test]
async fn without_a_session_a_script_gets_401_and_a_browser_waits_for_the_provider() {
    let g = gateway();
    let o = request_filter(&g, &get("/api/items", "Accept: application/json\r\n")).await;
    assert_eq!(o.status(), 401, "{}", o.answer);
    assert_eq!(o.header("www-authenticate"), Some("Bearer realm=\"unigate\""));
    assert!(o.answer.contains("\"login_url\""), "{}", o.answer);
    // The provider's discovery never loaded (nothing listens there): no
    // login can start, and the browser is told to come back.
    let o = request_filter(&g, &get("/reports", "Accept: text/html\r\n")).await;
    assert_eq!(o.status(), 503, "{}", o.answer);
    assert_eq!(o.header("retry-after"), Some("5"));
}

#[tokio::test]
async fn a_path_that_walks_out_of_a_public_prefix_is_guarded() {
    let g = gateway();
    let o = request_filter(&g, &get("/static/app.css", "")).await;
    assert!(!o.answered, "a public path goes on: {}", o.answer);
    assert!(o.ctx.session.is_none());
    for path in ["/static/../admin", "/static/%2e%2e/admin", "/static/./../admin"] {
        let o = request_filter(&g, &get(path, "Accept: application/json\r\n")).await;
        assert!(o.answered, "{path}");
        assert!(matches!(o.status(), 400 | 401), "{path}: {}", o.answer);
    }
}

#[tokio::test]
async fn unigate_answers_health_on_any_host_and_refuses_unknown_hosts() {
    let g = gateway();
    let o = request_filter(&g, "GET /_unigate/healthz HTTP/1.1\r\nHost: elsewhere.example\r\n\r\n").await;
    assert_eq!(o.status(), 200, "{}", o.answer);
    let o = request_filter(&g, "GET / HTTP/1.1\r\nHost: elsewhere.example\r\n\r\n").await;
    assert_eq!(o.status(), 404, "{}", o.answer);
    assert!(o.ctx.route.is_none());
}
