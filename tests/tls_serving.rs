//! unigate serving TLS with certificates made inside the test (rcgen):
//! TLS and HTTP/2, its certificate reloaded when the files change (and kept
//! when the new files are broken); every bad certificate (and assertion
//! key) named at `unigate check` time; the login binding cookie under TLS.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use unigate::gateway::config::GatewayConfig;
use unigate::gateway::server::{GatewayServer, free_port};

fn https_client(ca_pem: &str, host: &str, port: u16) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .resolve(host, SocketAddr::from(([127, 0, 0, 1], port)))
        .tls_info(true)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// unigate on `port` with `public_url` in `scheme`, no IdP to reach, and a
/// module `portal` that is never reached.
fn portal_config(port: u16, scheme: &str) -> toml::Table {
    let mut t = tls_test_config(port, scheme, NOWHERE);
    t.set(
        "module",
        vec![table_of(|m| {
            m.set("name", "portal")
                .set("hosts", vec!["portal.localhost"])
                .set("upstream", "127.0.0.1:9")
                .set("access_groups", vec!["x"])
                .set("login", "automatic");
        })],
    );
    t
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
    let mut config = portal_config(port, "https");
    config
        .table("listen")
        .set("tls_cert", "tls.crt")
        .set("tls_key", "tls.key");
    let path = write_config(dir.path(), &config);
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
        let mut config = portal_config(1, scheme);
        config.table("listen").extend(toml_table(listen));
        let path = write_config(d, &config);
        let err = GatewayConfig::load(&path).expect_err(listen).to_string();
        assert!(err.contains(key) && err.contains(words), "{listen}: {err}");
    }
    let mut bad_ca = portal_config(1, "http");
    bad_ca
        .module("portal")
        .set("upstream_tls", true)
        .set("upstream_ca", "garbage.pem");
    let path = write_config(d, &bad_ca);
    let err = GatewayConfig::load(&path).unwrap_err().to_string();
    assert!(err.contains("module[0].upstream_ca"), "{err}");
    // The assertion key a start would fail on, too.
    let mut bad_key = portal_config(1, "http");
    bad_key.table("identity").set("assertion_key", "file:garbage.pem");
    let path = write_config(d, &bad_key);
    let err = GatewayConfig::load(&path).unwrap_err().to_string();
    assert!(err.contains("identity.assertion_key") && err.contains("PEM"), "{err}");
    let mut stray = portal_config(1, "http");
    stray.module("portal").set("upstream_ca", "good.crt");
    let path = write_config(d, &stray);
    let err = GatewayConfig::load(&path).unwrap_err().to_string();
    assert!(err.contains("only used with `upstream_tls = true`"), "{err}");

    // `unigate check` says so and exits 1; a good pair passes.
    let mut expired_pair = portal_config(1, "https");
    expired_pair
        .table("listen")
        .set("tls_cert", "expired.crt")
        .set("tls_key", "expired.key");
    let path = write_config(d, &expired_pair);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_unigate"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid now"));
    let mut good_pair = portal_config(1, "https");
    good_pair
        .table("listen")
        .set("tls_cert", "good.crt")
        .set("tls_key", "good.key");
    let path = write_config(d, &good_pair);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_unigate"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
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
    let mut config = tls_test_config(port, "https", idp.issuer());
    config
        .table("listen")
        .set("tls_cert", "tls.crt")
        .set("tls_key", "tls.key");
    config.set(
        "module",
        vec![table_of(|m| {
            m.set("name", "portal")
                .set("hosts", vec!["portal.localhost"])
                .set("upstream", module.addr.to_string())
                .set("access_groups", vec!["portal-users"])
                .set("login", "automatic");
        })],
    );
    let path = write_config(dir.path(), &config);
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
    // A planted binding is ignored: the login fails (shown at its stable
    // address, the reason in a `__Host-` cookie too), and no session.
    assert_eq!(r.status(), 303, "a planted binding is ignored");
    assert_eq!(location(&r), "/_unigate/error");
    let set = set_cookies(&r);
    assert!(set.iter().all(|c| !c.contains("unigate=")), "no session: {set:?}");
    assert!(
        set.iter()
            .any(|c| c.starts_with("__Host-unigate_error=") && c.contains("; Secure")),
        "{set:?}"
    );
    // The real one works.
    let (set, callback) = start().await;
    let r = gate.get(&callback).header("cookie", pair(&set)).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let set = set_cookies(&r);
    assert!(set.iter().any(|c| c.starts_with("__Host-unigate=")), "{set:?}");
    gw.shutdown().await;
}

/// The `Set-Cookie` values of an answer.
fn set_cookies(r: &reqwest::Response) -> Vec<&str> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|c| c.to_str().unwrap())
        .collect()
}
