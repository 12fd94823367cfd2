//! The App Launcher injected into a module's HTML as it streams through
//! unigate: gzip from the module undone, the rest of the page byte for
//! byte, non-HTML untouched, a 5 MB page streamed whole.

mod common;

use std::io::Write;
use std::sync::Arc;

use axum::http::header;
use common::*;
use serde_json::Value;

const PAGE: &str = "<!doctype html><html><head><title>Legacy</title></head><body><h1>Legacy portal</h1><p>é – ünïcode</p></body></html>";

/// A page as a browser asks for it (`Accept: text/html`), as text.
async fn html_page(b: &reqwest::Client, url: String) -> String {
    b.get(url)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Opened by the test once it has received the first megabyte of `/stream`.
static STREAM_GATE: std::sync::OnceLock<Arc<tokio::sync::Notify>> = std::sync::OnceLock::new();

fn gzip(s: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(s).unwrap();
    e.finish().unwrap()
}

fn big_page() -> String {
    let row = "<tr><td>row</td><td>some data in a legacy table</td></tr>\n";
    format!(
        "<html><body><table>{}</table></body></html>",
        row.repeat(5 * 1024 * 1024 / row.len())
    )
}

/// A module that gzips its HTML whatever the request says, as old portals do.
async fn legacy_upstream() -> std::net::SocketAddr {
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/page",
            get(|| async {
                (
                    [
                        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                        (header::CONTENT_ENCODING, "gzip"),
                    ],
                    gzip(PAGE.as_bytes()),
                )
            }),
        )
        .route(
            "/data.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], "{\"body\":\"</body>\"}") }),
        )
        .route(
            "/big",
            get(|| async { ([(header::CONTENT_TYPE, "text/html")], big_page()) }),
        )
        .route(
            "/stream",
            get(|| async {
                let gate = STREAM_GATE.get_or_init(|| Arc::new(tokio::sync::Notify::new())).clone();
                let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
                tokio::spawn(async move {
                    let _ = tx.send(Ok(bytes::Bytes::from_static(b"<html><body><table>"))).await;
                    let row = "<tr><td>row</td><td>some data in a legacy table</td></tr>\n".repeat(1000);
                    for _ in 0..(5 * 1024 * 1024 / row.len()) {
                        if tx.send(Ok(bytes::Bytes::from(row.clone()))).await.is_err() {
                            return;
                        }
                    }
                    // The end of the page only once the client has the start.
                    gate.notified().await;
                    let _ = tx.send(Ok(bytes::Bytes::from_static(b"</table></body></html>"))).await;
                });
                (
                    [(header::CONTENT_TYPE, "text/html")],
                    axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
                )
            }),
        );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    addr
}

#[tokio::test]
async fn the_launcher_goes_into_html_and_nothing_else_changes() {
    let up = legacy_upstream().await;
    let s = StackBuilder::new().upstream(up).start().await;
    let (b, jar) = s.browser();
    s.login(&b, "alice", "/page").await;
    // The user's App Launcher, built once at login.
    let id = s.session_id(&jar).unwrap();
    let snippet =
        s.gw.gateway
            .state
            .sessions
            .memory()
            .unwrap()
            .get(&id)
            .unwrap()
            .launcher
            .to_string();
    assert!(snippet.contains(r#"data-module="portal""#), "{snippet}");

    let r = b
        .get(s.url("/page"))
        .header("accept", "text/html")
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers().get("content-encoding").is_none(),
        "decompressed for the rewrite"
    );
    let body = r.text().await.unwrap();
    assert_eq!(body, PAGE.replace("<body>", &format!("<body>{snippet}")));

    let r = b.get(s.url("/data.json")).header("accept", "*/*").send().await.unwrap();
    assert_eq!(r.headers()["content-length"], "18");
    assert_eq!(r.text().await.unwrap(), "{\"body\":\"</body>\"}");

    let r = b.get(s.url("/big")).header("accept", "text/html").send().await.unwrap();
    let big = big_page();
    let body = r.bytes().await.unwrap();
    assert_eq!(body.len(), big.len() + snippet.len());
    let at = "<html><body>".len();
    assert_eq!(&body[..at], &big.as_bytes()[..at]);
    assert_eq!(&body[at..at + snippet.len()], snippet.as_bytes());
    assert_eq!(
        &body[at + snippet.len()..],
        &big.as_bytes()[at..],
        "the rest byte for byte"
    );

    let j: Value = b
        .get(s.url("/_unigate/launcher"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(j["user"], "alice");
    assert_eq!(j["modules"][0]["name"], "portal");
    let page = b
        .get(s.url("/_unigate/launcher"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("App Launcher") && page.contains("data-module=\"portal\""),
        "{page}"
    );
}

#[tokio::test]
async fn pages_without_a_kaseyaone_session_are_not_touched() {
    let s = stack().await;
    let (b, _) = s.browser();
    let r = b.get(s.url("/static/app.css")).send().await.unwrap();
    assert!(!r.text().await.unwrap().contains("unigate-launcher"));
    // The launcher itself needs a login.
    let r = b.get(s.url("/_unigate/launcher")).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let r = b
        .get(s.url("/_unigate/launcher"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn module_credentials_keep_working_with_the_kaseyaone_icon() {
    let s = StackBuilder::new()
        .module("portal", |m| {
            m.set("login", "optional");
        })
        .start()
        .await;
    let (b, _) = s.browser();
    // No KaseyaOne session: the module's own login, not the IdP.
    let r = b.get(s.url("/")).header("accept", "text/html").send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/login");
    let page = html_page(&b, s.url("/login")).await;
    assert!(page.contains("Log in to Demo Portal"));
    assert!(page.contains("id=\"unigate-kaseyaone\""), "the KaseyaOne icon: {page}");
    assert!(!page.contains("unigate-launcher"));
    // Local credentials through unigate.
    let r = b
        .post(s.url("/login"))
        .form(&[("username", "localuser"), ("password", "local-pass")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let page = html_page(&b, s.url("/")).await;
    assert!(page.contains("Logged in with module credentials"), "{page}");
    assert!(page.contains("unigate-kaseyaone") && !page.contains("unigate-launcher"));
    let w: Value = b.get(s.url("/api/whoami")).send().await.unwrap().json().await.unwrap();
    assert_eq!(w["assertion_verified"], false);
    assert!(
        w["headers"]
            .as_object()
            .unwrap()
            .keys()
            .all(|k| !k.starts_with("x-kaseyaone")),
        "{w}"
    );
    // The icon logs in with KaseyaOne; then the launcher replaces it.
    let r = b.get(s.url("/_unigate/login")).send().await.unwrap();
    assert!(location(&r).starts_with(&format!("{}/authorize?", s.idp.issuer())));
    let (b2, _) = s.browser();
    s.login(&b2, "alice", "/_unigate/login").await;
    let page = html_page(&b2, s.url("/")).await;
    assert!(
        page.contains("Logged in with KaseyaOne")
            && page.contains("unigate-launcher")
            && !page.contains("unigate-kaseyaone")
    );
}

#[tokio::test]
async fn the_login_page_gets_log_in_with_kaseyaone() {
    let s = StackBuilder::new()
        .module("portal", |m| {
            m.set("login", "optional").set("login_paths", vec!["/login"]);
        })
        .start()
        .await;
    let (b, _) = s.browser();
    let page = html_page(&b, s.url("/login")).await;
    let form_end = page.find("</form>").expect("the module's form");
    let button = page.find("id=\"unigate-kaseyaone-login\"").expect("the button");
    assert!(
        button > form_end,
        "the button comes right after the module's login form"
    );
    assert!(page.contains("Log In with KaseyaOne"));
    // Other pages get no button.
    let page = b
        .get(s.url("/reports"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 303);
    // A username typed on the module's page goes to the IdP as login_hint,
    // and the IdP pre-fills it.
    let r = b.get(s.url("/_unigate/login?login_hint=alice")).send().await.unwrap();
    let authorize = location(&r);
    assert_eq!(query_param(&authorize, "login_hint").as_deref(), Some("alice"));
    let r = b.get(&authorize).send().await.unwrap();
    let login_page = b
        .get(format!("{}{}", s.idp.issuer(), location(&r)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(login_page.contains("value=\"alice\""));
}

/// Five megabytes of HTML stream through the rewriter: the upstream holds
/// back the end of the page until the client has received its first
/// megabyte, so a proxy that buffered the body would never finish.
#[tokio::test]
async fn a_5_mb_page_streams_through_without_buffering() {
    let up = legacy_upstream().await;
    let s = StackBuilder::new().upstream(up).start().await;
    let (b, _) = s.browser();
    s.login(&b, "alice", "/").await;
    let gate = STREAM_GATE.get_or_init(|| Arc::new(tokio::sync::Notify::new())).clone();
    let run = async {
        let mut r = b
            .get(s.url("/stream"))
            .header("accept", "text/html")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let (mut got, mut opened, mut max_chunk) = (0usize, false, 0usize);
        let (mut head, mut tail) = (Vec::new(), Vec::new());
        while let Some(chunk) = r.chunk().await.unwrap() {
            if head.len() < 8192 {
                head.extend_from_slice(&chunk[..chunk.len().min(8192)]);
            }
            got += chunk.len();
            max_chunk = max_chunk.max(chunk.len());
            if got > 1024 * 1024 && !opened {
                gate.notify_one();
                opened = true;
            }
            tail.extend_from_slice(&chunk);
            if tail.len() > 8192 {
                tail.drain(..tail.len() - 8192);
            }
        }
        (got, opened, max_chunk, head, tail)
    };
    let (got, opened, max_chunk, head, tail) = tokio::time::timeout(std::time::Duration::from_secs(30), run)
        .await
        .expect("the page streamed: the client got its start before the upstream sent its end");
    assert!(opened);
    assert!(got > 5 * 1024 * 1024 - 100_000, "{got}");
    assert!(
        max_chunk < 1024 * 1024,
        "pieces go out as they come, not gathered: largest {max_chunk}"
    );
    let (head, tail) = (String::from_utf8_lossy(&head), String::from_utf8_lossy(&tail));
    assert!(
        head.starts_with("<html><body><nav id=\"unigate-launcher-region\" aria-label=\"KaseyaOne App Launcher\"><details id=\"unigate-launcher\""),
        "{head}"
    );
    assert!(
        tail.ends_with("<tr><td>row</td><td>some data in a legacy table</td></tr>\n</table></body></html>"),
        "{tail}"
    );
}

/// An injected page goes out chunked, so the connection stays open for the
/// next request (a body without a length would be ended by closing it).
#[tokio::test]
async fn injected_pages_keep_the_connection_alive() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = legacy_upstream().await;
    let s = StackBuilder::new().upstream(up).start().await;
    let (b, jar) = s.browser();
    s.login(&b, "alice", "/page").await;
    let id = s.session_id(&jar).unwrap();
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", s.port)).await.unwrap();
    let request = format!(
        "GET /big HTTP/1.1\r\nHost: {HOST}:{}\r\nAccept: text/html\r\nCookie: unigate={id}\r\n\r\n",
        s.port
    );
    for round in 0..2 {
        conn.write_all(request.as_bytes()).await.unwrap();
        // Read one chunked response to its terminating zero-length chunk.
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        while !got.ends_with(b"\r\n0\r\n\r\n") {
            let n = tokio::time::timeout(std::time::Duration::from_secs(10), conn.read(&mut buf))
                .await
                .expect("response in time")
                .unwrap();
            assert!(n > 0, "round {round}: the connection was closed");
            got.extend_from_slice(&buf[..n]);
        }
        let head = String::from_utf8_lossy(&got[..got.len().min(2000)]).to_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
        assert!(!head.contains("connection: close"), "{head}");
    }
}
