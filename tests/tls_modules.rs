//! TLS from unigate to a module, with certificates made inside the test
//! (rcgen): verified against the module's own CA, and refused (nothing
//! proxied, nothing sent in clear) when verification fails; a TLS-only
//! module told of a logout, checking link credentials, getting a local
//! exception's login and answering SCIM, all over TLS.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use common::*;
use rcgen::{CertifiedIssuer, KeyPair};
use tokio::io::AsyncWriteExt;
use unigate::gateway::config::GatewayConfig;
use unigate::gateway::server::{GatewayServer, free_port};

/// A TLS acceptor serving `leaf`.
fn acceptor(leaf: &Leaf) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    let chain = vec![rustls::pki_types::CertificateDer::from(leaf.der.clone())];
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
}

/// An upstream serving HTTPS with `leaf`, answering every request.
async fn tls_upstream(leaf: &Leaf) -> SocketAddr {
    let acceptor = acceptor(leaf);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(tcp).await else { return };
                if !read_request_head(&mut s).await {
                    return;
                }
                let body = "hello over tls";
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn tls_to_the_module_is_verified_against_its_ca() {
    let ca = test_ca();
    let module_cert = leaf(&ca, &["module.internal"], |_| {});
    let up = tls_upstream(&module_cert).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("module-ca.pem"), ca.pem()).unwrap();
    let port = free_port().unwrap();
    let module = |name: &str, sni: &str, ca: Option<&str>| {
        table_of(|m| {
            m.set("name", name)
                .set("hosts", vec![format!("{name}.localhost")])
                .set("upstream", up.to_string())
                .set("access_groups", vec!["x"])
                .set("login", "automatic")
                .set("unified_login", false)
                .set("upstream_tls", true)
                .set("upstream_sni", sni);
            if let Some(ca) = ca {
                m.set("upstream_ca", ca);
            }
        })
    };
    let mut config = tls_test_config(port, "http", NOWHERE);
    config.set(
        "module",
        vec![
            module("good", "module.internal", Some("module-ca.pem")),
            // The system's roots do not know the test CA.
            module("unknownca", "module.internal", None),
            // The right CA, but the certificate is not for this name.
            module("wrongname", "other.internal", Some("module-ca.pem")),
        ],
    );
    let path = write_config(dir.path(), &config);
    let gw = GatewayServer::start(GatewayConfig::load(&path).unwrap()).await.unwrap();
    let get = |host: &str| {
        let c = reqwest::Client::builder()
            .resolve(host, SocketAddr::from(([127, 0, 0, 1], port)))
            .build()
            .unwrap();
        let url = format!("http://{host}:{port}/page");
        async move {
            let r = c.get(url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(get("good.localhost").await, (200, "hello over tls".to_string()));
    for host in ["unknownca.localhost", "wrongname.localhost"] {
        let (status, body) = get(host).await;
        assert_eq!(status, 502, "{host}: verification failed, nothing proxied");
        assert!(!body.contains("hello over tls"));
    }
    gw.shutdown().await;
}

/// A TLS-only front for a plain module (`target`, set once the module
/// runs): TLS connections are relayed to it; anything else (a plain-HTTP
/// request) is counted in `plain` and closed, unanswered.
struct TlsFront {
    addr: SocketAddr,
    plain: Arc<std::sync::atomic::AtomicUsize>,
    target: Arc<std::sync::OnceLock<SocketAddr>>,
    /// The SNI name of each TLS connection.
    sni: Arc<std::sync::Mutex<Vec<String>>>,
}

async fn tls_front(leaf: &Leaf) -> TlsFront {
    let acceptor = acceptor(leaf);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front = TlsFront {
        addr: l.local_addr().unwrap(),
        plain: Arc::default(),
        target: Arc::default(),
        sni: Arc::default(),
    };
    let (plain, target, sni) = (front.plain.clone(), front.target.clone(), front.sni.clone());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let (acceptor, plain, target, sni) = (acceptor.clone(), plain.clone(), target.clone(), sni.clone());
            tokio::spawn(async move {
                let mut first = [0u8; 1];
                // 0x16: a TLS handshake record. Health checks connect and
                // close without a byte: not a request.
                match tcp.peek(&mut first).await {
                    Ok(1) if first[0] == 0x16 => {}
                    Ok(1) => {
                        plain.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        return;
                    }
                    _ => return,
                }
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let name = tls.get_ref().1.server_name().unwrap_or_default().to_string();
                sni.lock().unwrap().push(name);
                let Some(to) = target.get().copied() else { return };
                let Ok(mut up) = tokio::net::TcpStream::connect(to).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    front
}

/// The portal stack behind a TLS-only front whose certificate is for
/// `module.internal` from the test CA; `extra` edits the module.
async fn tls_module_stack(
    ca: &CertifiedIssuer<'static, KeyPair>,
    dir: &Path,
    extra: impl FnOnce(&mut toml::Table),
) -> (Stack, TlsFront) {
    tls_module_stack_trusting(ca, &ca.pem(), dir, extra).await
}

/// The same, with `trusted` (PEM) as the module's `upstream_ca`.
async fn tls_module_stack_trusting(
    ca: &CertifiedIssuer<'static, KeyPair>,
    trusted: &str,
    dir: &Path,
    extra: impl FnOnce(&mut toml::Table),
) -> (Stack, TlsFront) {
    let front = tls_front(&leaf(ca, &["module.internal"], |_| {})).await;
    let ca_file = dir.join("module-ca.pem");
    std::fs::write(&ca_file, trusted).unwrap();
    let s = StackBuilder::new()
        .upstream(front.addr)
        .module("portal", |m| {
            m.set("upstream_tls", true)
                .set("upstream_sni", "module.internal")
                .set("upstream_ca", ca_file.display().to_string());
            extra(m);
        })
        .start()
        .await;
    front.target.set(s.module.addr).unwrap();
    (s, front)
}

/// A local exception (`localuser` at `/local-login`) beside Require Log In
/// with KaseyaOne.
fn local_exception(m: &mut toml::Table) {
    m.set("login", "required")
        .set("local_exceptions", vec!["localuser"])
        .set("exception_path", "/local-login")
        .set("login_paths", vec!["/login"]);
}

/// The same for a module with an instance (on the portal's host) whose
/// first login links the module account.
async fn tls_instance_stack(ca: &CertifiedIssuer<'static, KeyPair>, dir: &Path) -> (Stack, TlsFront) {
    let front = tls_front(&leaf(ca, &["module.internal"], |_| {})).await;
    let ca_file = dir.join("module-ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let west = table_of(|w| {
        w.set("name", "west")
            .set("hosts", vec![HOST])
            .set("upstream", front.addr.to_string())
            .set("link_required", true);
    });
    let bms = table_of(|m| {
        m.set("name", "bms")
            .set("hosts", vec!["bms.localhost"])
            .set("access_groups", vec!["portal-users"])
            .set("login", "automatic")
            .set("logout_paths", vec!["/logout"])
            .set("session_cookies", vec!["portal_session"])
            .set("login_paths", vec!["/login"])
            .set("upstream_tls", true)
            .set("upstream_sni", "module.internal")
            .set("upstream_ca", ca_file.display().to_string())
            .set("instance", vec![west]);
    });
    let s = StackBuilder::new()
        .gateway(|t| {
            t.set("module", vec![bms]);
        })
        .start()
        .await;
    front.target.set(s.module.addr).unwrap();
    (s, front)
}

fn plain_requests(front: &TlsFront) -> usize {
    front.plain.load(std::sync::atomic::Ordering::SeqCst)
}

#[tokio::test]
async fn a_tls_only_module_is_told_of_a_logout_over_tls() {
    let ca = test_ca();
    let dir = tempfile::tempdir().unwrap();
    // Module logout: the module's session ends, told over TLS.
    let (s, front) = tls_module_stack(&ca, dir.path(), |_| {}).await;
    let (b, _) = s.browser();
    assert_eq!(s.login(&b, "alice", "/").await.status(), 302);
    let r = b.get(s.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200, "proxied over TLS");
    assert!(r.text().await.unwrap().contains("Welcome, alice"));
    assert_eq!(s.module.module.live_sessions(), 1, "the module opened its session");
    let r = b.get(s.url("/logout")).send().await.unwrap();
    assert!(r.status() == 302 || r.status() == 200, "{}", r.status());
    assert_eq!(s.module.module.live_sessions(), 0, "the module was told of the logout");
    assert_eq!(plain_requests(&front), 0, "nothing was sent in clear");
    let names = front.sni.lock().unwrap().clone();
    assert!(
        !names.is_empty() && names.iter().all(|n| n == "module.internal"),
        "{names:?}"
    );
}

#[tokio::test]
async fn a_tls_only_module_checks_link_credentials_over_tls() {
    let ca = test_ca();
    let dir = tempfile::tempdir().unwrap();
    // Link: the module credentials are checked over TLS.
    let (s, front) = tls_instance_stack(&ca, dir.path()).await;
    let (b, _) = s.browser();
    s.login(&b, "alice", "/").await;
    let r = b
        .get(s.url("/api/whoami"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "not linked yet");
    let page = b
        .get(s.url("/_unigate/link"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let token = link_form_token(&page);
    let r = b
        .post(s.url("/_unigate/link"))
        .form(&[
            ("module_username", "localuser"),
            ("module_password", "local-pass"),
            ("return_to", "/"),
            ("csrf_token", &token),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "linked: {}", r.text().await.unwrap_or_default());
    let who: serde_json::Value = b.get(s.url("/api/whoami")).send().await.unwrap().json().await.unwrap();
    assert_eq!(who["headers"]["x-kaseyaone-module-user"], "localuser", "{who}");
    assert_eq!(plain_requests(&front), 0, "no password sent in clear");
}

#[tokio::test]
async fn a_tls_only_module_gets_a_local_exceptions_login_over_tls() {
    let ca = test_ca();
    let dir = tempfile::tempdir().unwrap();
    // A local exception's login is forwarded over TLS.
    let (s, front) = tls_module_stack(&ca, dir.path(), local_exception).await;
    let (b, _) = s.browser();
    let r = b
        .post(s.url("/local-login"))
        .form(&[("username", "localuser"), ("password", "local-pass")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "the module's own answer");
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .starts_with("portal_session=")
    );
    assert_eq!(plain_requests(&front), 0, "no password sent in clear");
}

#[tokio::test]
async fn a_tls_only_module_answers_scim_over_tls() {
    let ca = test_ca();
    let dir = tempfile::tempdir().unwrap();
    // SCIM at the module's default base: looked up and provisioned over TLS.
    let (s, front) = tls_module_stack(&ca, dir.path(), |m| {
        m.set(
            "accounts",
            toml_value(r#"{ source = "scim", match = "both", provisioning = true, default_role = "viewer" }"#),
        );
    })
    .await;
    let (b, _) = s.browser();
    let r = s.login(&b, "alice", "/").await;
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap_or_default());
    assert!(
        s.module.module.accounts().iter().any(|a| a.username == "alice"),
        "provisioned by SCIM"
    );
    assert!(s.module.module.scim_requests.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    assert_eq!(plain_requests(&front), 0, "no SCIM request in clear");
}

#[tokio::test]
async fn a_module_certificate_that_does_not_verify_gets_nothing_unless_verification_is_off() {
    let (ca, other) = (test_ca(), test_ca());
    let dir = tempfile::tempdir().unwrap();
    for (verify, want) in [("", 502), ("upstream_verify = false", 303)] {
        let (s, front) = tls_module_stack_trusting(&ca, &other.pem(), dir.path(), |m| {
            local_exception(m);
            m.extend(toml_table(verify));
        })
        .await;
        let (b, _) = s.browser();
        let r = b
            .post(s.url("/local-login"))
            .form(&[("username", "localuser"), ("password", "local-pass")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "{verify:?}");
        assert_eq!(plain_requests(&front), 0, "{verify:?}: never in clear");
    }
}
