//! What the walks do at KaseyaOne and around it: the stack they walk
//! through, the login forms as a given user, logout confirmations, the App
//! Launcher.

use std::time::Duration;

use fantoccini::elements::Element;
use unigate::idp::IdpServer;

use super::walk::{Walk, xpath_str};
use crate::common::*;

/// The demo's shape (`config/unigate.demo.toml`): the portal keeps its own
/// login page beside Log In with KaseyaOne and matches module accounts;
/// BMS west links the module account at the first login. The IdP's My
/// Modules tiles lead to this unigate's port (the common stack moves them).
pub fn demo_stack<'a>() -> MultiBuilder<'a> {
    MultiBuilder::demo()
        .module("portal", |m| {
            m.set("login", "optional")
                .set("accounts", toml_value(r#"{ source = "scim", match = "both" }"#));
        })
        .instance("bms", "west", |i| {
            i.set("link_required", true);
        })
}

/// Goes through KaseyaOne's login forms as `user` (username and company,
/// password, verification code) from whichever of them the browser is
/// at, until it has left them.
pub async fn log_in(w: &Walk, idp: &IdpServer, user: &str) {
    let who = Account {
        issuer: idp.issuer().to_string(),
        username: user.to_string(),
        company: company(idp, user),
        password: password(user),
        totp: totp_secret(idp, user),
    };
    log_in_as(w, &who).await
}

/// A KaseyaOne account, as its owner types it.
pub struct Account {
    pub issuer: String,
    pub username: String,
    pub company: String,
    pub password: String,
    /// The TOTP secret (raw bytes).
    pub totp: Vec<u8>,
}

/// [`log_in`] for an account of any KaseyaOne, such as a `unigate demo`
/// running in its own process.
pub async fn log_in_as(w: &Walk, who: &Account) {
    let user = who.username.as_str();
    let login = format!("{}/login", who.issuer);
    for _ in 0..6 {
        let mut form = None;
        for _ in 0..200 {
            if !w.url().await.starts_with(&login) {
                return;
            }
            form = {
                let mut found = None;
                for f in ["code", "password", "username"] {
                    if w.present(&format!("input[name={f}]")).await.is_some() {
                        found = Some(f);
                        break;
                    }
                }
                found
            };
            if form.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        match form {
            Some("code") => {
                let code = current_code(&who.totp);
                w.fill_and_submit(&[("code", &code)]).await
            }
            Some("password") => w.fill_and_submit(&[("password", &who.password)]).await,
            Some(_) => {
                w.fill_and_submit(&[("username", user), ("company", &who.company)])
                    .await
            }
            None => w.fail("no KaseyaOne login form").await,
        }
    }
    w.fail(format!("still at KaseyaOne's login as {user} after six forms"))
        .await;
}

/// A verification code `user` does not have now (nor 30 s before or after).
pub fn wrong_code(idp: &IdpServer, user: &str) -> String {
    let secret = totp_secret(idp, user);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let valid: Vec<String> = [now - 30, now, now + 30]
        .iter()
        .map(|t| unigate::idp::directory::totp_code(&secret, *t))
        .collect();
    ["000000", "111111", "222222"]
        .into_iter()
        .find(|c| !valid.iter().any(|v| v == c))
        .unwrap()
        .to_string()
}

/// Confirms every "Log out of KaseyaOne?" page the browser meets (each an
/// end-user page: checked and screenshotted, as `kaseyaone-logout-confirm`
/// at KaseyaOne, `module-logout-confirm` at the module); returns how many.
pub async fn confirm_logouts(w: &mut Walk, idp: &IdpServer) -> usize {
    let mut n = 0;
    for _ in 0..3 {
        let Some(button) =
            w.c.find(fantoccini::Locator::XPath(
                "//main//form[@method='post']//button[normalize-space(.)='Log out']",
            ))
            .await
            .ok()
        else {
            break;
        };
        if w.url().await.starts_with(idp.issuer()) {
            w.page("kaseyaone-logout-confirm").await;
        } else {
            w.page("module-logout-confirm").await;
        }
        w.click(&button, true).await;
        n += 1;
    }
    n
}

/// Opens the App Launcher in a module's header; returns its entry for the
/// module `name` (shown as `display`), visible.
pub async fn open_launcher(w: &Walk, name: &str, display: &str) -> Element {
    let button = w
        .find_x("//*[@aria-label='App Launcher' or @title='App Launcher'][not(self::a)]")
        .await;
    w.click(&button, false).await;
    let entry = w
        .find_x(&format!(
            "//a[@data-module={} or normalize-space(.)={}]",
            xpath_str(name),
            xpath_str(display)
        ))
        .await;
    for _ in 0..100 {
        if entry.is_displayed().await.unwrap_or(false) {
            return entry;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    w.fail(format!("the App Launcher did not show {display}")).await
}

/// The module's own page, logged in: who the module says is there
/// (`data-user`) and how (`data-via`: `kaseyaone` or `local`).
pub async fn module_user(w: &Walk) -> (String, String) {
    let who = w.find("#who").await;
    (w.attr(&who, "data-user").await, w.attr(&who, "data-via").await)
}
