//! The seed's journey (Log In with KaseyaOne) in a real headless Chromium
//! (Debian's `chromium` driven by `chromedriver`), every entry point:
//! (a) the module's own login page with "Log In with KaseyaOne", the
//! KaseyaOne forms with the verification code, back at the module with the
//! App Launcher; (b) the launcher to a second module (no prompt) with
//! Choose an Instance, and logout ending both sessions; (c) a refusal page
//! and its way out to another account; (d) logout after unigate's session
//! has expired still ending KaseyaOne's; (e) KaseyaOne's My Modules, each
//! tile kind; (f) the KaseyaOne icon beside a module-credentials login.
//!
//! Every end-user page on the way is checked by axe-core (tests/browser/
//! package.json; the test fails listing each serious or critical
//! violation) and screenshotted (`target/screenshots/`, or
//! `docs/screenshots/` with `UNIGATE_SCREENSHOTS=1`; see docs/pages.md).
//! `scripts/test` installs Chromium, chromedriver and axe-core; set
//! UNIGATE_SKIP_BROWSER=1 to skip on a machine without them.

#[path = "browser/axe.rs"]
mod axe;
mod common;
#[path = "browser/kaseyaone.rs"]
mod kaseyaone;
#[path = "browser/walk.rs"]
mod walk;

use std::time::Duration;

use common::*;
use kaseyaone::{confirm_logouts, demo_stack, log_in, module_user, open_launcher, wrong_code};
use walk::Walk;

#[tokio::test]
async fn a_b_log_in_with_kaseyaone_then_the_app_launcher_to_another_module() {
    let Some(mut w) = Walk::start("a+b").await else { return };
    let s = demo_stack().start().await;
    // The two east servers share their sessions, as replicas do.
    let east_sessions = || s.module("bms/east").module.live_sessions();
    let issuer = s.idp.issuer().to_string();

    w.step("a1 the module's login page, with Log In with KaseyaOne");
    w.goto(&s.url("portal.localhost", "/login")).await;
    let button = w.find("#unigate-kaseyaone-login").await;
    let label = w.text(&button).await;
    w.check(label == "Log In with KaseyaOne", format!("button reads {label:?}"))
        .await;
    // Module credentials would still work here: its own form is intact.
    w.find("form input[type=password]").await;
    let username = w.find("input[name=username]").await;
    w.ok(username.send_keys("alice").await, "type the username").await;
    w.page("1-module-login").await;
    w.click(&button, true).await;

    w.step("a2 KaseyaOne: username (from the module) and company");
    let user = w.find("input[name=username]").await;
    let url = w.url().await;
    w.check(
        url.starts_with(&format!("{issuer}/login?flow=")),
        "at KaseyaOne's login",
    )
    .await;
    let typed = w.ok(user.prop("value").await, "username value").await;
    w.check(
        typed.as_deref() == Some("alice"),
        format!("login_hint arrived: {typed:?}"),
    )
    .await;
    w.page("2-kaseyaone-login").await;
    w.fill_and_submit(&[("company", &company(&s.idp, "alice"))]).await;

    w.step("a3 KaseyaOne: password");
    w.find("input[name=password]").await;
    w.page("kaseyaone-password").await;
    w.fill_and_submit(&[("password", &password("alice"))]).await;

    w.step("a4 KaseyaOne: a wrong verification code");
    w.find("input[name=code]").await;
    w.page("kaseyaone-code").await;
    w.fill_and_submit(&[("code", &wrong_code(&s.idp, "alice"))]).await;
    w.find("[role=alert]").await;
    let url = w.url().await;
    w.check(
        url.starts_with(&format!("{issuer}/login")),
        "still at KaseyaOne's login",
    )
    .await;
    w.page("kaseyaone-wrong-code").await;

    w.step("a5 KaseyaOne: the right code, from where the form is now");
    log_in(&w, &s.idp, "alice").await;

    w.step("a6 back at the module, logged in with KaseyaOne");
    let (who, via) = module_user(&w).await;
    w.check(
        (who.as_str(), via.as_str()) == ("alice", "kaseyaone"),
        format!("{who} via {via}"),
    )
    .await;
    let url = w.url().await;
    w.check(url.starts_with(&s.url("portal.localhost", "/")), "on the portal")
        .await;

    w.step("a7 the App Launcher in the module's header");
    let bms = open_launcher(&w, "bms", "BMS").await;
    w.page("3-app-launcher").await;

    w.step("b1 the launcher's BMS tile: Choose an Instance, no KaseyaOne prompt");
    w.click(&bms, true).await;
    let east = w.link("Acme East").await;
    w.link("Acme West").await;
    let url = w.url().await;
    w.check(url.starts_with(&s.url("bms.localhost", "/")), "on the BMS host")
        .await;
    w.page("4-choose-an-instance").await;

    w.step("b2 Acme East, logged in");
    w.click(&east, true).await;
    let (who, via) = module_user(&w).await;
    w.check(via == "kaseyaone" && who == "alice", format!("{who} via {via}"))
        .await;
    let url = w.url().await;
    w.check(url.starts_with(&s.url("bms-east.localhost", "/")), "on east")
        .await;
    w.axe_check().await;

    w.step("b3 the choice remembered: the module's own address opens east");
    w.goto(&s.url("bms.localhost", "/reports")).await;
    w.find("main h1").await;
    let url = w.url().await;
    w.check(url == s.url("bms-east.localhost", "/reports"), "east's /reports")
        .await;
    w.check(east_sessions() == 1, "one module session on east").await;

    w.step("b4 the App Launcher's page of all modules");
    open_launcher(&w, "portal", "Demo Portal").await;
    let all = w.link("All modules").await;
    w.click(&all, true).await;
    let text = w.body_text().await;
    for m in ["Demo Portal", "BMS", "IT Glue"] {
        w.check(text.contains(m), format!("{m} listed")).await;
    }
    w.page("app-launcher-all-modules").await;

    w.step("b5 logout from the module ends the module's and KaseyaOne's sessions");
    w.goto(&s.url("bms-east.localhost", "/")).await;
    let out = w.link("Log out").await;
    w.click(&out, true).await;
    let asked = confirm_logouts(&mut w, &s.idp).await;
    w.check(asked == 0, "a logout from the module's own link is not asked again")
        .await;
    w.find("input[name=username]").await;
    let url = w.url().await;
    w.check(
        url.starts_with(&format!("{issuer}/login?flow=")),
        "KaseyaOne asks again",
    )
    .await;
    w.check(east_sessions() == 0, "module session ended").await;
    w.goto(&format!("{issuer}/")).await;
    w.find("input[name=username]").await;
    let url = w.url().await;
    w.check(url.starts_with(&format!("{issuer}/login")), "KaseyaOne session ended")
        .await;
    w.finish().await;
}

#[tokio::test]
async fn c_a_refusal_page_and_its_way_out_to_another_account() {
    let Some(mut w) = Walk::start("c").await else { return };
    let s = demo_stack().start().await;
    let issuer = s.idp.issuer().to_string();

    w.step("c1 dave (in no access group) logs in with KaseyaOne at the module");
    w.goto(&s.url("portal.localhost", "/login")).await;
    let button = w.find("#unigate-kaseyaone-login").await;
    w.click(&button, true).await;
    log_in(&w, &s.idp, "dave").await;

    w.step("c2 the refusal page, naming the account, with its way out");
    let out = w
        .find_x("//button[contains(normalize-space(.), 'use another account')]")
        .await;
    let text = w.body_text().await;
    w.check(text.contains("dave@globex.example"), "the account used is named")
        .await;
    w.check(text.contains("access group"), "the reason is given").await;
    w.page("no-access").await;

    w.step("c3 Log out of KaseyaOne / use another account");
    w.click(&out, true).await;
    let asked = confirm_logouts(&mut w, &s.idp).await;
    // One click, one question at most: the page's form carries the
    // browser's logout token (no confirmation of the module's side);
    // KaseyaOne, getting no ID token (the refused login left no session),
    // asks once.
    w.check(asked <= 1, format!("asked {asked} times")).await;

    w.step("c4 a login as someone else asks KaseyaOne's credentials again");
    w.goto(&s.url("portal.localhost", "/login")).await;
    let button = w.find("#unigate-kaseyaone-login").await;
    w.click(&button, true).await;
    let user = w.find("input[name=username]").await;
    let typed = w.ok(user.prop("value").await, "username value").await;
    w.check(typed.as_deref() != Some("dave"), "dave is not kept").await;
    let url = w.url().await;
    w.check(url.starts_with(&format!("{issuer}/login")), "KaseyaOne asks")
        .await;
    log_in(&w, &s.idp, "alice").await;
    let (who, via) = module_user(&w).await;
    w.check(
        (who.as_str(), via.as_str()) == ("alice", "kaseyaone"),
        format!("{who} via {via}"),
    )
    .await;
    w.finish().await;
}

#[tokio::test]
async fn d_logout_after_the_session_expired_still_ends_kaseyaone() {
    let Some(mut w) = Walk::start("d").await else { return };
    let idle = Duration::from_secs(2);
    let s = demo_stack()
        .session(|t| {
            t.set("idle_timeout", "2s");
        })
        .start()
        .await;
    let issuer = s.idp.issuer().to_string();

    w.step("d1 log in with KaseyaOne at the module");
    w.goto(&s.url("bms-east.localhost", "/")).await;
    log_in(&w, &s.idp, "alice").await;
    let (_, via) = module_user(&w).await;
    w.check(via == "kaseyaone", "logged in with KaseyaOne").await;

    w.step("d2 unigate's session expires while the page stays open");
    // The wait is the point: the idle timeout elapsing.
    tokio::time::sleep(idle + Duration::from_millis(700)).await;

    w.step("d3 Log out from the module");
    let out = w.link("Log out").await;
    w.click(&out, true).await;
    let asked = confirm_logouts(&mut w, &s.idp).await;
    // KaseyaOne asks once: no ID token comes with the logout of an expired
    // session, and a logout without one must be confirmed (logout CSRF).
    w.check(asked <= 1, format!("asked {asked} times")).await;

    w.step("d4 the next login asks KaseyaOne's credentials");
    w.goto(&s.url("bms-east.localhost", "/")).await;
    w.find("input[name=username]").await;
    let url = w.url().await;
    w.check(
        url.starts_with(&format!("{issuer}/login")),
        "KaseyaOne's session ended with the logout",
    )
    .await;
    w.axe_check().await;
    log_in(&w, &s.idp, "alice").await;
    let (_, via) = module_user(&w).await;
    w.check(via == "kaseyaone", "logged in again").await;
    w.finish().await;
}

#[tokio::test]
async fn e_my_modules_each_tile_kind() {
    let Some(mut w) = Walk::start("e").await else { return };
    let s = demo_stack().start().await;
    let issuer = s.idp.issuer().to_string();

    w.step("e1 log in to KaseyaOne: My Modules");
    w.goto(&format!("{issuer}/")).await;
    log_in(&w, &s.idp, "alice").await;
    w.find_x("//h1[normalize-space(.)='My Modules']").await;
    // The tiles' addresses, as the page has them.
    let href = async |name: &str| {
        let tile = w.link(name).await;
        w.attr(&tile, "href").await
    };
    let arrow = href("Demo Portal").await;
    let file = href("BMS").await;
    let lock = href("IT Glue").await;
    w.page("my-modules").await;

    w.step("e2 the file tile: Choose an Instance");
    let tile = w.link("BMS").await;
    w.click(&tile, true).await;
    let west = w.link("Acme West").await;
    w.link("Acme East").await;
    w.page("my-modules-choose-an-instance").await;

    w.step("e3 an instance opened for the first time: link the module account");
    w.click(&west, true).await;
    w.find("input[type=password]").await;
    let url = w.url().await;
    w.check(url.starts_with(&s.url("bms-west.localhost", "/")), "on west")
        .await;
    w.page("link-module-account").await;
    w.fill_and_submit(&[("module_username", "a.admin"), ("module_password", "west-demo-pass")])
        .await;
    let (who, via) = module_user(&w).await;
    w.check(via == "kaseyaone" && who == "a.admin", format!("{who} via {via}"))
        .await;

    w.step("e4 the arrow tile: on the module logged in, though its own login page is kept");
    w.goto(&format!("{issuer}/")).await;
    let tile = w.link("Demo Portal").await;
    let now = w.attr(&tile, "href").await;
    w.check(now == arrow, format!("the same tile address: {now} / {arrow}"))
        .await;
    w.click(&tile, true).await;
    let url = w.url().await;
    w.check(url.contains("portal.localhost"), format!("on the portal ({arrow})"))
        .await;
    // The tile goes through the portal's login initiation
    // (`/_unigate/login?iss=…&target_link_uri=…`): no login page, no click.
    w.check(
        arrow.contains("/_unigate/login?iss="),
        format!("the tile starts a login: {arrow}"),
    )
    .await;
    w.check(w.present("#who").await.is_some(), format!("logged in at once on {url}"))
        .await;
    let (who, via) = module_user(&w).await;
    w.check(via == "kaseyaone" && who == "alice", format!("{who} via {via}"))
        .await;
    w.axe_check().await;

    w.step("e5 the lock tile: the module's own login (Unified Login off)");
    w.goto(&lock).await;
    w.find("form input[type=password]").await;
    let url = w.url().await;
    w.check(url.starts_with(&s.url("itglue.localhost", "/")), "on IT Glue")
        .await;
    let kaseyaone = w.present("#unigate-kaseyaone-login").await;
    w.check(kaseyaone.is_none(), "no Log In with KaseyaOne there").await;
    w.page("lock-tile-module-login").await;

    w.step("e6 the file tile's address opens Choose an Instance too");
    w.goto(&format!("{issuer}/")).await;
    w.find_x("//h1[normalize-space(.)='My Modules']").await;
    w.goto(&file).await;
    w.link("Acme East").await;
    w.finish().await;
}

#[tokio::test]
async fn f_the_kaseyaone_icon_beside_module_credentials() {
    let Some(mut w) = Walk::start("f").await else { return };
    let s = demo_stack().start().await;

    w.step("f1 module credentials at the module's own login page");
    w.goto(&s.url("portal.localhost", "/login")).await;
    w.fill_and_submit(&[("username", "localuser"), ("password", "local-demo-pass")])
        .await;
    let (who, via) = module_user(&w).await;
    w.check(via == "local" && who == "localuser", format!("{who} via {via}"))
        .await;

    w.step("f2 the KaseyaOne icon instead of the App Launcher");
    let icon = w
        .find_x("//a[@aria-label='Log In with KaseyaOne' or @title='Log In with KaseyaOne']")
        .await;
    let launcher =
        w.c.find(fantoccini::Locator::XPath("//*[@aria-label='App Launcher']"))
            .await;
    w.check(launcher.is_err(), "no App Launcher for module credentials")
        .await;
    w.page("kaseyaone-icon").await;

    w.step("f3 the icon logs in with KaseyaOne: back with the App Launcher");
    w.click(&icon, true).await;
    log_in(&w, &s.idp, "alice").await;
    let (who, via) = module_user(&w).await;
    w.check(via == "kaseyaone" && who == "alice", format!("{who} via {via}"))
        .await;
    open_launcher(&w, "bms", "BMS").await;
    w.axe_check().await;
    w.finish().await;
}

/// The account the person meant: with alice's KaseyaOne session in the
/// browser, "bob" typed on a module's login page asks which account to use
/// rather than logging in as alice; choosing bob logs in as bob.
#[tokio::test]
async fn h_another_username_at_the_module_asks_which_account() {
    let Some(mut w) = Walk::start("h").await else { return };
    // As in the demo, the portal creates bob's missing module account.
    let s = demo_stack()
        .module("portal", |m| {
            m.set(
                "accounts",
                toml_value(r#"{ source = "scim", match = "both", provisioning = true, default_role = "technician" }"#),
            );
        })
        .start()
        .await;

    w.step("h1 alice has a KaseyaOne session");
    w.goto(&format!("{}/", s.idp.issuer())).await;
    log_in(&w, &s.idp, "alice").await;
    w.find_x("//h1[normalize-space(.)='My Modules']").await;

    w.step("h2 bob typed on the portal's login page: KaseyaOne asks");
    w.goto(&s.url("portal.localhost", "/login")).await;
    let user = w.find("input[name=username]").await;
    w.ok(user.send_keys("bob").await, "type bob").await;
    let button = w.find("#unigate-kaseyaone-login").await;
    w.click(&button, true).await;
    let text = w.body_text().await;
    w.check(
        text.contains("You are logged in as alice") && text.contains("or log in as bob"),
        format!("the choice: {text}"),
    )
    .await;
    w.page("kaseyaone-which-account").await;

    w.step("h3 log in as bob: the login form with bob, then the portal as bob");
    let bob = w.find_x("//button[normalize-space(.)='Log in as bob']").await;
    w.click(&bob, true).await;
    let user = w.find("input[name=username]").await;
    let typed = w.ok(user.prop("value").await, "username value").await;
    w.check(typed.as_deref() == Some("bob"), format!("bob filled in: {typed:?}"))
        .await;
    log_in(&w, &s.idp, "bob").await;
    let (who, via) = module_user(&w).await;
    w.check(via == "kaseyaone" && who == "bob", format!("{who} via {via}"))
        .await;
    w.finish().await;
}

/// The App Launcher as a menu: the keyboard opens it on its first entry,
/// arrow keys move, Escape closes it and returns to the button; a click
/// outside closes it; in a 320-pixel window it stays inside the window.
#[tokio::test]
async fn i_the_app_launcher_by_keyboard_and_on_a_narrow_window() {
    let Some(mut w) = Walk::start("i").await else { return };
    let s = demo_stack().start().await;
    w.goto(&s.url("bms-east.localhost", "/")).await;
    log_in(&w, &s.idp, "alice").await;
    module_user(&w).await;
    let state = |w: &Walk| {
        let c = w.c.clone();
        async move {
            let v = c
                .execute(
                    "var d = document.getElementById('unigate-launcher'); \
                     var b = document.getElementById('unigate-launcher-button'); \
                     var a = document.activeElement; \
                     return [d.open, b.getAttribute('aria-expanded'), a ? (a.id || a.textContent.trim()) : ''];",
                    vec![],
                )
                .await
                .unwrap_or_default();
            serde_json::from_value::<(bool, Option<String>, String)>(v).unwrap_or((false, None, String::new()))
        }
    };
    let client = w.c.clone();
    let key = |k: &'static str| {
        let c = client.clone();
        async move {
            let el = c.active_element().await.expect("a focused element");
            el.send_keys(k).await.expect("keys sent");
        }
    };

    w.step("i1 Enter on the button opens the menu on its first entry");
    w.ok(
        w.c.execute("document.getElementById('unigate-launcher-button').focus()", vec![])
            .await,
        "focus the button",
    )
    .await;
    key("\u{e007}").await; // Enter
    let (open, expanded, focused) = state(&w).await;
    w.check(
        open && expanded.as_deref() == Some("true") && focused.starts_with("Demo Portal"),
        format!("open {open}, aria-expanded {expanded:?}, focus on {focused:?}"),
    )
    .await;

    w.step("i2 the down arrow moves to the next entry");
    key("\u{e015}").await; // ArrowDown
    let (_, _, focused) = state(&w).await;
    w.check(focused.starts_with("BMS"), format!("focus on {focused:?}"))
        .await;

    w.step("i3 Escape closes it and returns to the button");
    key("\u{e00c}").await; // Escape
    let (open, expanded, focused) = state(&w).await;
    w.check(
        !open && expanded.as_deref() == Some("false") && focused == "unigate-launcher-button",
        format!("open {open}, aria-expanded {expanded:?}, focus on {focused:?}"),
    )
    .await;

    w.step("i4 a click outside closes it");
    open_launcher(&w, "portal", "Demo Portal").await;
    let heading = w.find("h1").await;
    w.click(&heading, false).await;
    let (open, _, _) = state(&w).await;
    w.check(!open, "closed by the click outside").await;

    w.step("i5 in a 320-pixel window the menu stays inside the window");
    w.ok(w.c.set_window_size(320, 640).await, "narrow window").await;
    open_launcher(&w, "portal", "Demo Portal").await;
    let fits =
        w.c.execute(
            "var r = document.getElementById('unigate-launcher-menu').getBoundingClientRect(); \
             return r.left >= 0 && r.right <= window.innerWidth && r.width > 0;",
            vec![],
        )
        .await
        .ok()
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    w.check(fits, "the menu within the window").await;
    w.page("app-launcher-narrow").await;
    w.finish().await;
}

/// `unigate demo` itself, as the README runs it but on ports other than
/// 8080/9000/8081: every My Modules link follows them, and a tile lands
/// logged in on the portal (whose own login page is kept).
#[tokio::test]
async fn g_the_demo_on_other_ports() {
    let Some(mut w) = Walk::start("g").await else { return };
    let ports = unigate::loadtest::stack::DemoPorts::free().unwrap();
    assert_ne!(ports.port, 8080);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_unigate"))
        .arg("demo")
        .args(ports.args())
        .current_dir(root)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _demo = Running(child);
    ports.wait(Duration::from_secs(60)).unwrap();
    let alice = unigate::loadtest::stack::demo_user(&root.join("config/idp.demo.toml")).unwrap();
    let who = kaseyaone::Account {
        issuer: ports.idp().as_str().trim_end_matches('/').to_string(),
        username: alice.username,
        company: alice.company,
        password: alice.password,
        totp: alice.totp,
    };

    w.step("g1 log in at KaseyaOne: My Modules");
    w.goto(&format!("{}/", who.issuer)).await;
    kaseyaone::log_in_as(&w, &who).await;
    w.find_x("//h1[normalize-space(.)='My Modules']").await;

    w.step("g2 every module link is on the demo's port");
    let links = |css: &'static str| {
        let w = &w;
        async move {
            let js = format!("return Array.from(document.querySelectorAll('{css}')).map(a => a.href)");
            let v = w.c.execute(&js, vec![]).await.ok();
            v.and_then(|v| serde_json::from_value::<Vec<String>>(v).ok())
                .unwrap_or_default()
        }
    };
    let tiles = links("a.tile").await;
    w.check(tiles.len() == 3, format!("three tiles: {tiles:?}")).await;
    // The file tile opens Choose an Instance here, at KaseyaOne.
    let (here, mut away): (Vec<String>, Vec<String>) = tiles.into_iter().partition(|h| h.starts_with(&who.issuer));
    w.goto(&here.concat()).await;
    away.extend(links("a.instance").await);
    w.check(away.len() == 4, format!("arrow, lock and two instances: {away:?}"))
        .await;
    let port = format!(":{}/", ports.port);
    for h in &away {
        w.check(
            h.contains(&port) && !h.contains(":8080") && !h.contains("%3A8080"),
            format!("{h} is on {port}"),
        )
        .await;
    }
    w.goto(&format!("{}/", who.issuer)).await;

    w.step("g3 the portal's tile: on the portal, logged in");
    let tile = w.find("a.tile[data-module=portal]").await;
    w.click(&tile, true).await;
    let (user, via) = module_user(&w).await;
    w.check(via == "kaseyaone" && user == "alice", format!("{user} via {via}"))
        .await;
    let url = w.url().await;
    w.check(
        url.starts_with(&format!("http://portal.localhost:{}/", ports.port)),
        url,
    )
    .await;
    w.finish().await;
}

/// A child process, killed when the test ends.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The check itself: axe-core, as the walks run it, reports a page with
/// a serious and a critical violation, naming the rules and the nodes.
#[tokio::test]
async fn axe_reports_what_it_finds() {
    let Some(mut w) = Walk::start("axe").await else { return };
    w.step("a page with an image without text and an unlabelled field");
    w.goto(r#"data:text/html,<!doctype html><html lang="en"><title>t</title><main><img src="x.png" id="pic"><input id="field"></main></html>"#)
        .await;
    w.axe_check().await;
    let found = w.take_violations();
    let all = found.join("\n");
    for rule in ["image-alt (critical): #pic", "label (critical): #field"] {
        assert!(all.contains(rule), "{rule} in:\n{all}");
    }
    w.finish().await;
}

#[tokio::test]
async fn j_a_part_of_the_module_for_administrators_only() {
    let Some(mut w) = Walk::start("j").await else { return };
    let s = demo_stack()
        .module("portal", |m| {
            // No account matching: bob has no portal account of his own.
            m.remove("accounts");
            m.set(
                "rule",
                toml_value(r#"[{ paths = ["/admin/"], access_groups = ["portal-admins"] }]"#),
            );
        })
        .start()
        .await;

    w.step("j1 bob (a portal user, not an administrator) opens the admin area");
    w.goto(&s.url("portal.localhost", "/admin/")).await;
    log_in(&w, &s.idp, "bob").await;
    // The refusal page, once it is there.
    w.find_x("//button[contains(normalize-space(.), 'use another account')]")
        .await;
    let text = w.body_text().await;
    let url = w.url().await;
    w.check(
        text.contains("this part of"),
        format!("the page says it is a part of the module: {url} {text}"),
    )
    .await;
    w.check(text.contains("portal-admins"), "the missing group is named")
        .await;
    w.check(text.contains("bob@"), "the account is named").await;
    w.page("area-no-access").await;

    w.step("j2 the rest of the portal is his");
    w.goto(&s.url("portal.localhost", "/reports")).await;
    let text = w.body_text().await;
    w.check(text.contains("Reports for bob"), "the reports page").await;
    w.finish().await;
}
