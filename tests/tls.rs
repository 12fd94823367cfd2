//! TLS with certificates made inside the test (rcgen): unigate serving TLS
//! and HTTP/2, its certificate reloaded when the files change (and kept
//! when the new files are broken); TLS to a module verified against the
//! module's own CA, and refused when verification fails; and every bad
//! certificate (and assertion key) named at `unigate check` time.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio::io::AsyncWriteExt;
use unigate::gateway::config::GatewayConfig;
use unigate::gateway::server::{GatewayServer, free_port};

fn test_ca() -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, "unigate test CA");
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

fn leaf(ca: &CertifiedIssuer<'static, KeyPair>, names: &[&str], edit: impl FnOnce(&mut CertificateParams)) -> Leaf {
    let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, names[0]);
    edit(&mut p);
    let key = KeyPair::generate().unwrap();
    let c = p.signed_by(&key, ca).unwrap();
    Leaf {
        cert_pem: c.pem(),
        key_pem: key.serialize_pem(),
        der: c.der().to_vec(),
    }
}

/// A config file in `dir` (beside the client secret): `listen` keys in
/// `[listen]`, `public_url` with `scheme`.
fn write_config(dir: &Path, port: u16, scheme: &str, listen: &str, rest: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("secret"), SECRET).unwrap();
    let text = format!(
        r#"
        [listen]
        address = "127.0.0.1:{port}"
        public_url = "{scheme}://localhost:{port}"
        threads = 1
        work_stealing = true
        {listen}
        [identity_provider]
        issuer = "http://127.0.0.1:9"
        client_id = "{CLIENT}"
        client_secret = "file:secret"
        {rest}
        "#
    );
    let path = dir.join("unigate.toml");
    std::fs::write(&path, text).unwrap();
    path
}

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

fn https_client(ca_pem: &str, host: &str, port: u16) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .resolve(host, SocketAddr::from(([127, 0, 0, 1], port)))
        .tls_info(true)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// The certificate the server presented, and the HTTP version spoken.
async fn handshake(ca_pem: &str, port: u16) -> (Vec<u8>, reqwest::Version) {
    let c = https_client(ca_pem, "portal.localhost", port);
    let r = c
        .get(format!("https://portal.localhost:{port}/_unigate/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let der = r
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|t| t.peer_certificate())
        .expect("a peer certificate")
        .to_vec();
    (der, r.version())
}

#[tokio::test]
async fn unigate_serves_tls_and_http2_and_reloads_its_certificate() {
    let ca = test_ca();
    let first = leaf(&ca, &["portal.localhost"], |_| {});
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tls.crt"), &first.cert_pem).unwrap();
    std::fs::write(dir.path().join("tls.key"), &first.key_pem).unwrap();
    let port = free_port().unwrap();
    let path = write_config(
        dir.path(),
        port,
        "https",
        "tls_cert = \"tls.crt\"\ntls_key = \"tls.key\"",
        "[[module]]\nname = \"portal\"\nhosts = [\"portal.localhost\"]\nupstream = \"127.0.0.1:9\"\naccess_groups = [\"x\"]",
    );
    let gw = GatewayServer::start(GatewayConfig::load(&path).unwrap()).await.unwrap();
    let (der, version) = handshake(&ca.pem(), port).await;
    assert_eq!(der, first.der);
    assert_eq!(version, reqwest::Version::HTTP_2, "HTTP/2 by ALPN");
    // A plain-HTTP client gets nowhere.
    assert!(
        reqwest::get(format!("http://127.0.0.1:{port}/_unigate/healthz"))
            .await
            .is_err()
    );

    // cert-manager rotates the files: new connections get the new one.
    let second = leaf(&ca, &["portal.localhost"], |_| {});
    std::fs::write(dir.path().join("tls.key"), &second.key_pem).unwrap();
    std::fs::write(dir.path().join("tls.crt"), &second.cert_pem).unwrap();
    wait_until("the new certificate is picked up", Duration::from_secs(5), async || {
        handshake(&ca.pem(), port).await.0 == second.der
    })
    .await;
    // A broken rotation (a key that does not match) changes nothing. (The
    // wait is the point: long enough for the watcher to have seen it.)
    let third = leaf(&ca, &["portal.localhost"], |_| {});
    std::fs::write(dir.path().join("tls.crt"), &third.cert_pem).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (der, _) = handshake(&ca.pem(), port).await;
    assert_eq!(der, second.der, "the running certificate stayed");
    gw.shutdown().await;
}

#[tokio::test]
async fn tls_to_the_module_is_verified_against_its_ca() {
    let ca = test_ca();
    let module_cert = leaf(&ca, &["module.internal"], |_| {});
    let up = tls_upstream(&module_cert).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("module-ca.pem"), ca.pem()).unwrap();
    let port = free_port().unwrap();
    let module = |name: &str, extra: &str| {
        format!(
            "[[module]]\nname = \"{name}\"\nhosts = [\"{name}.localhost\"]\nupstream = \"{up}\"\naccess_groups = [\"x\"]\nunified_login = false\nupstream_tls = true\n{extra}\n"
        )
    };
    let rest = [
        module(
            "good",
            "upstream_sni = \"module.internal\"\nupstream_ca = \"module-ca.pem\"",
        ),
        // The system's roots do not know the test CA.
        module("unknownca", "upstream_sni = \"module.internal\""),
        // The right CA, but the certificate is not for this name.
        module(
            "wrongname",
            "upstream_sni = \"other.internal\"\nupstream_ca = \"module-ca.pem\"",
        ),
    ]
    .concat();
    let path = write_config(dir.path(), port, "http", "", &rest);
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

#[tokio::test]
async fn bad_certificates_are_named_at_check_time() {
    let ca = test_ca();
    let good = leaf(&ca, &["portal.localhost"], |_| {});
    let other = leaf(&ca, &["portal.localhost"], |_| {});
    let expired = leaf(&ca, &["portal.localhost"], |p| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("good.crt"), &good.cert_pem).unwrap();
    std::fs::write(d.join("good.key"), &good.key_pem).unwrap();
    std::fs::write(d.join("other.key"), &other.key_pem).unwrap();
    std::fs::write(d.join("expired.crt"), &expired.cert_pem).unwrap();
    std::fs::write(d.join("expired.key"), &expired.key_pem).unwrap();
    std::fs::write(d.join("garbage.pem"), "not a certificate\n").unwrap();
    let module = "[[module]]\nname = \"portal\"\nhosts = [\"portal.localhost\"]\nupstream = \"127.0.0.1:9\"\naccess_groups = [\"x\"]";
    let cases = [
        (
            "tls_cert = \"missing.crt\"\ntls_key = \"good.key\"",
            "https",
            "listen.tls_cert",
            "cannot read",
        ),
        (
            "tls_cert = \"good.crt\"\ntls_key = \"other.key\"",
            "https",
            "listen.tls_cert",
            "does not belong",
        ),
        (
            "tls_cert = \"expired.crt\"\ntls_key = \"expired.key\"",
            "https",
            "listen.tls_cert",
            "not valid now",
        ),
        (
            "tls_cert = \"garbage.pem\"\ntls_key = \"good.key\"",
            "https",
            "listen.tls_cert",
            "no PEM certificate",
        ),
        ("tls_cert = \"good.crt\"", "https", "listen.tls_key", "private key"),
        (
            "tls_cert = \"good.crt\"\ntls_key = \"good.key\"",
            "http",
            "listen.public_url",
            "https://",
        ),
    ];
    for (listen, scheme, key, words) in cases {
        let path = write_config(d, 1, scheme, listen, module);
        let err = GatewayConfig::load(&path).expect_err(listen).to_string();
        assert!(err.contains(key) && err.contains(words), "{listen}: {err}");
    }
    let bad_ca = format!("{module}\nupstream_tls = true\nupstream_ca = \"garbage.pem\"");
    let path = write_config(d, 1, "http", "", &bad_ca);
    let err = GatewayConfig::load(&path).unwrap_err().to_string();
    assert!(err.contains("module[0].upstream_ca"), "{err}");
    // The assertion key a start would fail on, too.
    let bad_key = format!("[identity]\nassertion_key = \"file:garbage.pem\"\n{module}");
    let path = write_config(d, 1, "http", "", &bad_key);
    let err = GatewayConfig::load(&path).unwrap_err().to_string();
    assert!(err.contains("identity.assertion_key") && err.contains("PEM"), "{err}");
    let stray = format!("{module}\nupstream_ca = \"good.crt\"");
    let path = write_config(d, 1, "http", "", &stray);
    let err = GatewayConfig::load(&path).unwrap_err().to_string();
    assert!(err.contains("only used with `upstream_tls = true`"), "{err}");

    // `unigate check` says so and exits 1; a good pair passes.
    let path = write_config(
        d,
        1,
        "https",
        "tls_cert = \"expired.crt\"\ntls_key = \"expired.key\"",
        module,
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_unigate"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid now"));
    let path = write_config(d, 1, "https", "tls_cert = \"good.crt\"\ntls_key = \"good.key\"", module);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_unigate"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
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
    m.set("require_kaseyaone", true)
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
async fn under_tls_the_login_binding_is_host_prefixed_and_a_sibling_cannot_plant_it() {
    let ca = test_ca();
    let cert = leaf(&ca, &["portal.localhost"], |_| {});
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tls.crt"), &cert.cert_pem).unwrap();
    std::fs::write(dir.path().join("tls.key"), &cert.key_pem).unwrap();
    let port = free_port().unwrap();
    let mut idp_cfg = demo_config();
    let mut client = test_client(None, None);
    client
        .redirect_uris
        .push(format!("https://portal.localhost:{port}/_unigate/callback"));
    idp_cfg.clients.push(client);
    let idp = start_idp(idp_cfg).await;
    let module = portal_module(port).await;
    let path = write_config(
        dir.path(),
        port,
        "https",
        "tls_cert = \"tls.crt\"\ntls_key = \"tls.key\"",
        &format!(
            "[[module]]\nname = \"portal\"\nhosts = [\"portal.localhost\"]\nupstream = \"{}\"\naccess_groups = [\"portal-users\"]",
            module.addr
        ),
    );
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("http://127.0.0.1:9", idp.issuer());
    std::fs::write(&path, text).unwrap();
    let gw = GatewayServer::start(GatewayConfig::load(&path).unwrap()).await.unwrap();
    let gate = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap()])
        .resolve("portal.localhost", SocketAddr::from(([127, 0, 0, 1], port)))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let idp_browser = browser();
    let url = |p: &str| format!("https://portal.localhost:{port}{p}");
    // A login start: the binding cookie, and the callback URL the IdP sends back.
    let start = async || {
        let r = gate.get(url("/")).header("accept", "text/html").send().await.unwrap();
        assert_eq!(r.status(), 302);
        let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
        let r = idp_browser.get(location(&r)).send().await.unwrap();
        let mut next = location(&r);
        if next.starts_with("/login?flow=") {
            let code = current_code(&totp_secret(&idp, "alice"));
            let r = post_login(
                &idp_browser,
                idp.issuer(),
                &next,
                "alice",
                &company(&idp, "alice"),
                &password("alice"),
                &code,
            )
            .await;
            next = location(&r);
        }
        assert!(next.starts_with(&url("/_unigate/callback?")), "{next}");
        (set, next)
    };
    // The login cookie's `name=value`.
    let pair = |set: &str| set.split(';').next().unwrap().to_string();
    let (set, callback) = start().await;
    assert!(set.starts_with("__Host-unigate_login_"), "{set}");
    assert!(set.contains("; Secure") && set.contains("Path=/;"), "{set}");
    assert!(!set.to_ascii_lowercase().contains("domain="), "{set}");
    // The same cookie under the plain name, as a sibling subdomain can set
    // it: not a binding.
    let planted = pair(&set).trim_start_matches("__Host-").to_string();
    let r = gate.get(&callback).header("cookie", planted).send().await.unwrap();
    assert_eq!(r.status(), 400, "a planted binding is ignored");
    assert!(
        !r.headers()
            .get_all("set-cookie")
            .iter()
            .any(|c| c.to_str().unwrap().contains("unigate=")),
        "no session"
    );
    // The real one works.
    let (set, callback) = start().await;
    let r = gate.get(&callback).header("cookie", pair(&set)).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let set: Vec<&str> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|c| c.to_str().unwrap())
        .collect();
    assert!(set.iter().any(|c| c.starts_with("__Host-unigate=")), "{set:?}");
    gw.shutdown().await;
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
