//! The seed's journey in a real headless Chromium (Debian's `chromium`
//! driven by `chromedriver`): the module's own login page with "Log In with
//! KaseyaOne", the KaseyaOne forms with the verification code, back at the
//! module with the App Launcher; the launcher to a second module (no
//! prompt) with Choose an Instance; logout ending both sessions.
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
    let png = c.screenshot().await.expect("screenshot");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

async fn fill_and_submit(c: &fantoccini::Client, fields: &[(&str, &str)]) {
    for (name, value) in fields {
        let el = c
            .wait()
            .for_element(Locator::Css(&format!("input[name={name}]")))
            .await
            .unwrap();
        el.clear().await.unwrap();
        el.send_keys(value).await.unwrap();
    }
    c.find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

async fn url_of(c: &fantoccini::Client) -> String {
    c.current_url().await.unwrap().to_string()
}

#[tokio::test]
async fn the_seed_journey_in_a_real_browser() {
    let Some((_driver, c)) = chromium().await else { return };
    let s = MultiBuilder::demo()
        .module("portal", |m| {
            m.set("login", "optional").set(
                "accounts",
                table_of(|a| {
                    a.set("source", "scim").set("match", "both");
                }),
            );
        })
        .start()
        .await;
    // The two east servers share their sessions, as replicas do.
    let east_sessions = || s.module("bms/east").module.live_sessions();
    let issuer = s.idp.issuer().to_string();

    // The module's own login page, with Log In with KaseyaOne under its form.
    c.goto(&s.url("portal.localhost", "/login")).await.unwrap();
    let button = c
        .wait()
        .for_element(Locator::Id("unigate-kaseyaone-login"))
        .await
        .unwrap();
    assert_eq!(button.text().await.unwrap(), "Log In with KaseyaOne");
    // Module credentials would still work here: its own form is intact.
    c.find(Locator::Css("form[action='/login'] input[name=password]"))
        .await
        .unwrap();
    c.find(Locator::Css("input[name=username]"))
        .await
        .unwrap()
        .send_keys("alice")
        .await
        .unwrap();
    screenshot(&c, "1-module-login").await;
    button.click().await.unwrap();

    // KaseyaOne: the username typed at the module arrives as login_hint.
    let user = c
        .wait()
        .for_element(Locator::Css("input[name=username]"))
        .await
        .unwrap();
    assert!(url_of(&c).await.starts_with(&format!("{issuer}/login?flow=")));
    assert_eq!(user.prop("value").await.unwrap().as_deref(), Some("alice"));
    screenshot(&c, "2-kaseyaone-login").await;
    fill_and_submit(&c, &[("username", "alice"), ("company", "Acme MSP")]).await;
    fill_and_submit(&c, &[("password", "alice-demo-pass")]).await;
    c.wait().for_element(Locator::Css("input[name=code]")).await.unwrap();
    let code = current_code(&totp_secret(&s.idp, "alice"));
    fill_and_submit(&c, &[("code", &code)]).await;

    // Back at the module, logged in, with the App Launcher in its header.
    let who = c.wait().for_element(Locator::Id("who")).await.unwrap();
    assert!(url_of(&c).await.starts_with(&s.url("portal.localhost", "/")));
    assert_eq!(who.attr("data-via").await.unwrap().as_deref(), Some("kaseyaone"));
    assert_eq!(who.attr("data-user").await.unwrap().as_deref(), Some("alice"));
    c.find(Locator::Css("#unigate-launcher summary"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let bms = c
        .wait()
        .for_element(Locator::Css(
            "#unigate-launcher-menu a[data-module=bms][data-tile=file]",
        ))
        .await
        .unwrap();
    assert!(bms.is_displayed().await.unwrap(), "the menu opened");
    screenshot(&c, "3-app-launcher").await;

    // The launcher's file tile: a second module, no KaseyaOne prompt,
    // and Choose an Instance.
    bms.click().await.unwrap();
    let east = c
        .wait()
        .for_element(Locator::Css("#instances a[data-instance=east]"))
        .await
        .unwrap();
    assert!(
        url_of(&c)
            .await
            .starts_with(&s.url("bms.localhost", "/_unigate/instances"))
    );
    c.find(Locator::Css("#instances a[data-instance=west]")).await.unwrap();
    screenshot(&c, "4-choose-an-instance").await;
    east.click().await.unwrap();
    let who = c.wait().for_element(Locator::Id("who")).await.unwrap();
    assert!(url_of(&c).await.starts_with(&s.url("bms-east.localhost", "/")));
    assert_eq!(who.attr("data-via").await.unwrap().as_deref(), Some("kaseyaone"));
    let title = c.find(Locator::Css("nav strong")).await.unwrap().text().await.unwrap();
    assert!(title.starts_with("bms/east"), "{title}");
    // The choice is remembered: the module's own address opens east.
    c.goto(&s.url("bms.localhost", "/reports")).await.unwrap();
    c.wait().for_element(Locator::Css("main h1")).await.unwrap();
    assert_eq!(url_of(&c).await, s.url("bms-east.localhost", "/reports"));
    assert_eq!(east_sessions(), 1);

    // Logout from the module ends the module session and the KaseyaOne
    // session: back at the module, the KaseyaOne login form is asked again.
    c.goto(&s.url("bms-east.localhost", "/")).await.unwrap();
    c.wait()
        .for_element(Locator::LinkText("Log out"))
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
        url_of(&c).await.starts_with(&format!("{issuer}/login?flow=")),
        "{}",
        url_of(&c).await
    );
    assert_eq!(east_sessions(), 0, "module session ended");
    c.goto(&format!("{issuer}/")).await.unwrap();
    c.wait()
        .for_element(Locator::Css("input[name=username]"))
        .await
        .unwrap();
    assert!(
        url_of(&c).await.starts_with(&format!("{issuer}/login")),
        "KaseyaOne session ended: {}",
        url_of(&c).await
    );
    c.close().await.unwrap();
}
