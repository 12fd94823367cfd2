//! The whole flow in a real headless Chromium (Debian's `chromium` driven by
//! `chromedriver`): the module through unigate, the KaseyaOne login forms
//! with the verification code, back on the module; then logout everywhere.
//! `scripts/test` installs both; set UNIGATE_SKIP_BROWSER=1 to skip on a
//! machine without them.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use fantoccini::{ClientBuilder, Locator};

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn chromium() -> Option<(Driver, fantoccini::Client)> {
    if std::env::var_os("UNIGATE_SKIP_BROWSER").is_some() {
        eprintln!("UNIGATE_SKIP_BROWSER is set: browser test skipped");
        return None;
    }
    // fantoccini's TLS stack brings ring beside aws-lc-rs: pick one.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let port = unigate::gateway::server::free_port().unwrap();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver is not installed: apt-get install chromium chromium-driver (scripts/test does)");
    let driver = Driver(child);
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let profile = tempfile::tempdir().unwrap().keep();
    let caps = serde_json::json!({
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1200,900",
                format!("--user-data-dir={}", profile.display()),
            ]
        }
    });
    let caps = caps.as_object().unwrap().clone().into_iter().collect();
    let client = ClientBuilder::rustls()
        .expect("rustls client")
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("chromium starts under chromedriver");
    Some((driver, client))
}

async fn screenshot(c: &fantoccini::Client, name: &str) {
    if let Ok(png) = c.screenshot().await {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join(format!("{name}.png")), png);
    }
}

async fn fill_and_submit(c: &fantoccini::Client, fields: &[(&str, &str)]) {
    for (name, value) in fields {
        let el = c
            .wait()
            .for_element(Locator::Css(&format!("input[name={name}]")))
            .await
            .unwrap();
        el.send_keys(value).await.unwrap();
    }
    c.find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

#[tokio::test]
async fn log_in_with_kaseyaone_in_a_real_browser() {
    let Some((_driver, c)) = chromium().await else { return };
    let s = stack().await;
    c.goto(&s.url("/reports")).await.unwrap();
    c.wait()
        .for_element(Locator::Css("input[name=username]"))
        .await
        .unwrap();
    assert!(
        c.current_url()
            .await
            .unwrap()
            .as_str()
            .starts_with(&format!("{}/login?flow=", s.idp.issuer()))
    );
    screenshot(&c, "1-login").await;
    fill_and_submit(&c, &[("username", "alice"), ("company", "Acme MSP")]).await;
    fill_and_submit(&c, &[("password", "alice-demo-pass")]).await;
    c.wait().for_element(Locator::Css("input[name=code]")).await.unwrap();
    screenshot(&c, "2-code").await;
    let code = current_code(&totp_secret(&s.idp, "alice"));
    fill_and_submit(&c, &[("code", &code)]).await;
    // Back where the user started, through the callback.
    c.wait()
        .for_url(&url::Url::parse(&s.url("/reports")).unwrap())
        .await
        .unwrap();
    let h1 = c.wait().for_element(Locator::Css("main h1")).await.unwrap();
    assert_eq!(h1.text().await.unwrap(), "Reports for alice");
    c.goto(&s.url("/")).await.unwrap();
    let who = c.wait().for_element(Locator::Id("who")).await.unwrap();
    assert_eq!(who.attr("data-via").await.unwrap().as_deref(), Some("kaseyaone"));
    assert_eq!(who.attr("data-user").await.unwrap().as_deref(), Some("alice"));
    screenshot(&c, "3-module").await;
    // The App Launcher icon is on the module's page; it opens the launcher.
    c.find(Locator::Css("#unigate-launcher a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let tile = c
        .wait()
        .for_element(Locator::Css("#launcher-tiles a[data-module=portal]"))
        .await
        .unwrap();
    screenshot(&c, "4-launcher").await;
    tile.click().await.unwrap();
    c.wait().for_element(Locator::Id("who")).await.unwrap();

    // Logout from the module's own link ends everything: back at the
    // module, unigate sends the browser to a KaseyaOne login form again.
    c.find(Locator::LinkText("Log out"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .for_element(Locator::Css("input[name=username]"))
        .await
        .unwrap();
    assert!(
        c.current_url()
            .await
            .unwrap()
            .as_str()
            .starts_with(&format!("{}/login?flow=", s.idp.issuer()))
    );
    assert_eq!(s.module.module.live_sessions(), 0);
    c.close().await.unwrap();
}
