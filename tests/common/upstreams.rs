//! Test upstreams (modules unigate proxies to): the demo portal module, a
//! websocket echo, endless streams, a module recording request heads, a
//! back-channel logout receiver, and readers for request heads.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use unigate::demo_module::{DemoAccount, DemoModuleConfig, DemoModuleServer};

use super::HOST;

/// A server that records what is POSTed to `/bcl` and answers with the
/// status the test sets.
pub struct Receiver {
    pub addr: SocketAddr,
    pub tokens: mpsc::UnboundedReceiver<String>,
    pub status: Arc<Mutex<u16>>,
}

pub async fn receiver() -> Receiver {
    use axum::routing::post;
    let (tx, rx) = mpsc::unbounded_channel();
    let status = Arc::new(Mutex::new(200u16));
    let st = status.clone();
    let app = axum::Router::new().route(
        "/bcl",
        post(move |body: String| {
            let tx = tx.clone();
            let st = st.clone();
            async move {
                let token = form_urlencoded::parse(body.as_bytes())
                    .find(|(k, _)| k == "logout_token")
                    .map(|(_, v)| v.into_owned());
                let _ = tx.send(token.unwrap_or_default());
                axum::http::StatusCode::from_u16(*st.lock().unwrap()).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Receiver {
        addr,
        tokens: rx,
        status,
    }
}

pub async fn recv_within(rx: &mut mpsc::UnboundedReceiver<String>, d: Duration) -> Option<String> {
    tokio::time::timeout(d, rx.recv()).await.ok().flatten()
}

/// The demo portal module, trusting the assertions of the unigate on `port`.
pub async fn portal_module(port: u16) -> DemoModuleServer {
    DemoModuleServer::start(DemoModuleConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        name: "portal".into(),
        title: "Demo Portal".into(),
        jwks_url: format!("http://127.0.0.1:{port}/_unigate/jwks.json"),
        accounts: vec![DemoAccount::new("localuser", "", Some("local-pass"))],
        scim_token: None,
    })
    .await
    .unwrap()
}

/// A websocket echo module: every message comes back.
pub async fn websocket_upstream() -> std::net::SocketAddr {
    use futures_util::{SinkExt, StreamExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = l.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    if m.is_text() && ws.send(m).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A module whose every answer is endless: `/events` an event stream,
/// `/download` a body delimited by closing the connection, anything else
/// an NDJSON feed (chunked). Each sends one item, then holds its
/// connection until the other side goes away.
pub async fn stream_upstream() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let Some(head) = request_head(&mut s).await else {
                    return;
                };
                let start = if head.starts_with(b"GET /download ") {
                    "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\nconnection: close\r\n\r\nPART1"
                        .to_string()
                } else {
                    let (ct, item) = if head.starts_with(b"GET /events ") {
                        ("text/event-stream", "data: hello\n\n")
                    } else {
                        ("application/x-ndjson", "{\"n\":1}\n")
                    };
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: {ct}\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{item}\r\n",
                        item.len()
                    )
                };
                if s.write_all(start.as_bytes()).await.is_ok() {
                    let _ = s.read(&mut [0u8; 64]).await;
                }
            });
        }
    });
    addr
}

pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A websocket through unigate on `port` with session `id`, checked with
/// one echoed message.
pub async fn websocket_through(port: u16, id: &str) -> Ws {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://127.0.0.1:{port}/live"
    ))
    .unwrap();
    req.headers_mut()
        .insert("host", format!("{HOST}:{port}").parse().unwrap());
    req.headers_mut()
        .insert("cookie", format!("unigate={id}").parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("websocket through unigate");
    assert_eq!(resp.status(), 101);
    ws.send(Message::text("ping")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap().into_text().unwrap().as_str(), "ping");
    ws
}

/// True when the websocket ends (closed, reset, or a Close frame) within `d`.
pub async fn websocket_ends_within(ws: &mut Ws, d: Duration) -> bool {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    tokio::time::timeout(d, async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// Reads an HTTP request head (up to the blank line) from a test
/// upstream's connection; false when the client went away first.
pub async fn read_request_head(s: &mut (impl tokio::io::AsyncRead + Unpin)) -> bool {
    request_head(s).await.is_some()
}

/// The bytes of an HTTP request head (up to the blank line) read from a
/// test upstream's connection; None when the client went away first.
pub async fn request_head(s: &mut (impl tokio::io::AsyncRead + Unpin)) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 8192];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    Some(got)
}

/// The `portal_session=…` pair the module set in this response.
pub fn portal_cookie(r: &reqwest::Response) -> String {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("portal_session="))
        .expect("the module set its session cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

/// The request heads a test module received, in order.
#[derive(Clone, Default)]
pub struct Recorded(pub Arc<Mutex<Vec<String>>>);

impl Recorded {
    /// The request lines received (`GET /x HTTP/1.1`).
    pub fn lines(&self) -> Vec<String> {
        let heads = self.0.lock().unwrap();
        heads
            .iter()
            .map(|h| h.lines().next().unwrap_or_default().to_string())
            .collect()
    }

    pub fn clear(&self) {
        self.0.lock().unwrap().clear();
    }

    /// The headers of the last request, names lower-cased.
    pub fn last_headers(&self) -> Vec<(String, String)> {
        let heads = self.0.lock().unwrap();
        let head = heads.last().expect("the module got a request");
        head.lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect()
    }
}

/// A module that records every request head and answers `200` with
/// `body` (keep-alive: unigate may reuse the connection).
pub async fn recording_upstream(body: &'static str) -> (SocketAddr, Recorded) {
    use tokio::io::AsyncWriteExt;
    let rec = Recorded::default();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let r = rec.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let r = r.clone();
            tokio::spawn(async move {
                while let Some(head) = request_head(&mut s).await {
                    r.0.lock().unwrap().push(String::from_utf8_lossy(&head).into_owned());
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if s.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, rec)
}
