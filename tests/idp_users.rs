//! Users added at run time (`unigate idp user add`), over real sockets:
//! the Welcome to KaseyaOne mail, the first login where the user creates a
//! password and sets up the authenticator app, logging in, a restart, the
//! command's errors, and the real binary beside a running provider.

mod common;

use std::path::Path;
use std::time::SystemTime;

use common::*;
use serde_json::Value;
use unigate::idp::welcome::{AddUserError, NewUser, add_user};
use unigate::idp::{IdpConfig, IdpServer};

fn erin() -> NewUser {
    NewUser {
        company: "acme msp".into(),
        username: "erin".into(),
        email: "erin@acme-msp.example".into(),
        display_name: Some("Erin Engineer".into()),
        groups: vec!["portal-users".into(), " bms-users ".into()],
    }
}

/// The TOTP secret the welcome page shows (base32 in groups of four).
fn shown_secret(page: &str) -> Vec<u8> {
    let grouped = page
        .split("id=\"totp-secret\">")
        .nth(1)
        .expect("the page shows the key")
        .split('<')
        .next()
        .unwrap();
    let b32: String = grouped.split_whitespace().collect();
    assert!(
        page.contains(&format!("secret={b32}")),
        "the otpauth URI carries the same key"
    );
    totp_rs::Secret::Encoded(b32).to_bytes().unwrap()
}

async fn welcome_post(b: &reqwest::Client, iss: &str, token: &str, pw: &str, code: &str) -> (u16, String) {
    let r = b
        .post(format!("{iss}/welcome"))
        .form(&[("token", token), ("password", pw), ("confirm", pw), ("code", code)])
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Logs in through /authorize and the forms; the ID token's claims.
async fn log_in(idp: &IdpServer, user: &str, company: &str, pw: &str, secret: &[u8]) -> Value {
    let t = log_in_with(&browser(), idp, user, company, pw, secret).await;
    claims(t["id_token"].as_str().unwrap())
}

/// Logs in browser `b` through /authorize and the forms; the token response.
async fn log_in_with(
    b: &reqwest::Client,
    idp: &IdpServer,
    user: &str,
    company: &str,
    pw: &str,
    secret: &[u8],
) -> Value {
    let p = pkce();
    let r = b
        .get(authorize_url(idp.issuer(), &p.challenge, &[]))
        .send()
        .await
        .unwrap();
    let r = post_login(b, idp.issuer(), &location(&r), user, company, pw, &current_code(secret)).await;
    assert_eq!(r.status(), 302, "login of {user}: {}", r.text().await.unwrap());
    let code = query_param(&location(&r), "code").unwrap();
    exchange(idp, &code, &p.verifier).await.json().await.unwrap()
}

/// Adds erin to a running provider and creates her password through the
/// welcome link; her password and TOTP secret.
async fn onboard_erin(idp: &IdpServer, cfg: &IdpConfig) -> (&'static str, Vec<u8>) {
    let added = add_user(cfg, idp.issuer(), erin(), SystemTime::now()).await.unwrap();
    let b = browser();
    let page = b.get(&added.link).send().await.unwrap().text().await.unwrap();
    let secret = shown_secret(&page);
    let pw = "erin-first-password";
    let token = query_param(&added.link, "token").unwrap();
    let (status, page) = welcome_post(&b, idp.issuer(), &token, pw, &current_code(&secret)).await;
    assert_eq!(status, 200, "{page}");
    (pw, secret)
}

/// Takes every entry named `username` out of the users file, as an
/// administrator editing it would.
fn remove_from_users_file(cfg: &IdpConfig, username: &str) {
    unigate::idp::users_file::update::<_, unigate::idp::users_file::UsersFileError>(
        cfg.users_file.as_ref().unwrap(),
        |doc| {
            doc.users.retain(|e| e.username != username);
            Ok(())
        },
    )
    .unwrap();
}

#[tokio::test]
async fn a_user_added_to_a_running_idp_creates_a_password_logs_in_and_survives_a_restart() {
    let cfg = demo_config();
    let idp = start_idp(cfg.clone()).await;
    let iss = idp.issuer().to_string();
    let outbox = idp.provider.outbox.dir().to_path_buf();
    let added = add_user(&cfg, &iss, erin(), SystemTime::now()).await.unwrap();
    assert_eq!((added.username.as_str(), added.company.as_str()), ("erin", "Acme MSP"));

    // The Welcome to KaseyaOne mail, from the noreply address, with the
    // username and company name and the link.
    let mails = wait_for_mail(&outbox, 1).await;
    let mail = &mails[0];
    assert!(mail.contains("From: KaseyaOne <noreply@kaseya.invalid>"), "{mail}");
    assert!(mail.contains("To: erin@acme-msp.example"), "{mail}");
    assert!(mail.contains("Subject: Welcome to KaseyaOne"), "{mail}");
    assert!(
        mail.contains("Username:     erin") && mail.contains("Company Name: Acme MSP"),
        "{mail}"
    );
    let link = link_in(mail, "/welcome?token=");
    assert_eq!(link, added.link);
    assert!(link.starts_with(&format!("{iss}/welcome?token=")));
    let token = query_param(&link, "token").unwrap();

    // No password yet: logging in fails like any wrong value.
    let (status, _) = {
        let b = browser();
        let path = location(&b.get(format!("{iss}/login")).send().await.unwrap());
        let r = post_login(&b, &iss, &path, "erin", "Acme MSP", "anything-at-all", "123456").await;
        (r.status().as_u16(), r.text().await.unwrap())
    };
    assert_eq!(status, 401);

    // The link opens the first-login page of the running provider (no restart).
    let b = browser();
    let page = b.get(&link).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Welcome to KaseyaOne") && page.contains("erin") && page.contains("Acme MSP"));
    let secret = shown_secret(&page);
    let pw = "erin-first-password";
    let code = current_code(&secret);
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let (status, page) = welcome_post(&b, &iss, &token, pw, wrong).await;
    assert_eq!(status, 400, "a wrong code: {page}");
    assert!(page.contains("verification code"));
    let (status, _) = welcome_post(&b, &iss, &token, "short", &code).await;
    assert_eq!(status, 400, "a short password");
    let (status, page) = welcome_post(&b, &iss, &token, pw, &code).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Your password is created"), "{page}");
    // The link works once.
    assert_eq!(b.get(&link).send().await.unwrap().status(), 400);
    assert_eq!(welcome_post(&b, &iss, &token, "another-password-1", &code).await.0, 400);

    let c = log_in(&idp, "erin", "Acme MSP", pw, &secret).await;
    assert_eq!(c["preferred_username"], "erin");
    assert_eq!(c["name"], "Erin Engineer");
    assert_eq!(c["company"], "Acme MSP");
    assert_eq!(c["groups"], serde_json::json!(["portal-users", "bms-users"]));
    assert_eq!(c["sub"], unigate::idp::directory::subject_for("Acme MSP", "erin"));

    // A restart keeps the user and the password they created.
    idp.shutdown().await;
    let idp = start_idp(cfg.clone()).await;
    let c = log_in(&idp, "erin", "acme msp", pw, &secret).await;
    assert_eq!(c["preferred_username"], "erin");
}

fn err<T>(r: Result<T, AddUserError>) -> String {
    r.map(|_| ()).unwrap_err().to_string()
}

#[tokio::test]
async fn adding_a_user_explains_what_is_wrong() {
    let cfg = demo_config();
    let base = "http://127.0.0.1:1";
    let now = SystemTime::now();
    let with = |f: &dyn Fn(&mut NewUser)| {
        let mut u = erin();
        f(&mut u);
        u
    };
    let e = err(add_user(&cfg, base, with(&|u| u.company = "Initech".into()), now).await);
    assert!(
        e.contains("company `Initech` is not a [[company]]") && e.contains("Acme MSP, Globex IT"),
        "{e}"
    );
    let e = err(add_user(&cfg, base, with(&|u| u.email = "erin-at-acme".into()), now).await);
    assert_eq!(e, "`erin-at-acme` is not an email address");
    let e = err(add_user(&cfg, base, with(&|u| u.username = "  ".into()), now).await);
    assert!(e.contains("username must not be empty"), "{e}");
    // A user of the config, and one added before, in any spelling.
    let e = err(add_user(&cfg, base, with(&|u| u.username = "Alice".into()), now).await);
    assert_eq!(e, "user `Alice` already exists in company `Acme MSP`");
    add_user(&cfg, base, erin(), now).await.unwrap();
    let e = err(add_user(&cfg, base, with(&|u| u.username = "ERIN".into()), now).await);
    assert_eq!(e, "user `ERIN` already exists in company `Acme MSP`");
    // Nothing of the refused ones reached the users file.
    let file = std::fs::read_to_string(cfg.users_file.as_ref().unwrap()).unwrap();
    assert_eq!(file.matches("[[user]]").count(), 1, "{file}");
    assert!(!file.contains("Initech") && !file.contains("erin-at-acme"));
    // No address for the link: a clear error.
    let mut no_issuer = cfg.clone();
    no_issuer.listen = "127.0.0.1:0".parse().unwrap();
    no_issuer.issuer = None;
    let e = err(unigate::idp::welcome::link_base(&no_issuer, None));
    assert!(e.contains("set server.issuer"), "{e}");
}

#[tokio::test]
async fn forgot_password_before_the_first_login_sends_a_new_welcome_link() {
    let mut cfg = demo_config();
    cfg.login.totp_replay_protection = true;
    let idp = start_idp(cfg.clone()).await;
    let iss = idp.issuer().to_string();
    let outbox = idp.provider.outbox.dir().to_path_buf();
    let first = add_user(&cfg, &iss, erin(), SystemTime::now()).await.unwrap();
    let b = browser();
    let key = shown_secret(&b.get(&first.link).send().await.unwrap().text().await.unwrap());
    let forgot = async |username: &str| {
        let r = browser()
            .post(format!("{iss}/recover/password"))
            .form(&[("username", username), ("company", "Acme MSP")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    };
    forgot("erin").await;
    let mails = wait_for_mail(&outbox, 2).await;
    let links: Vec<String> = mails.iter().map(|m| link_in(m, "/welcome?token=")).collect();
    let second = links
        .iter()
        .find(|l| **l != first.link)
        .expect("a new welcome link")
        .clone();
    assert!(mails.iter().all(|m| m.contains("Subject: Welcome to KaseyaOne")));
    // Asking for a new mail spoils nothing: the link the user may be using
    // still works, and both links show the key already set up in the app.
    let page = b.get(&first.link).send().await.unwrap();
    assert_eq!(page.status(), 200, "the first link still works");
    assert_eq!(shown_secret(&page.text().await.unwrap()), key, "the same key");
    let page = b.get(&second).send().await.unwrap().text().await.unwrap();
    assert_eq!(shown_secret(&page), key, "the new link shows the same key");

    // A second request so soon sends erin nothing; frank, asking after her,
    // gets his new mail.
    let frank = NewUser {
        username: "frank".into(),
        email: "frank@acme-msp.example".into(),
        ..erin()
    };
    add_user(&cfg, &iss, frank, SystemTime::now()).await.unwrap();
    forgot("erin").await;
    forgot("frank").await;
    let mut mails = Vec::new();
    wait_until(
        "frank's second welcome mail",
        std::time::Duration::from_secs(5),
        async || {
            mails = common::mails(&outbox);
            mails.iter().filter(|m| m.contains("To: frank@")).count() == 2
        },
    )
    .await;
    assert_eq!(
        mails.iter().filter(|m| m.contains("To: erin@")).count(),
        2,
        "one new welcome mail per user per interval"
    );

    // The first link creates the password; then no link works.
    let token = query_param(&first.link, "token").unwrap();
    let pw = "erin-second-try-password";
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let code = unigate::idp::directory::totp_code(&key, now);
    let (status, page) = welcome_post(&b, &iss, &token, pw, &code).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        b.get(&second).send().await.unwrap().status(),
        400,
        "the other link is closed"
    );
    // The code that confirmed the app is used up; the next one logs in.
    let b = browser();
    let path = location(&b.get(format!("{iss}/login")).send().await.unwrap());
    let r = post_login(&b, &iss, &path, "erin", "Acme MSP", pw, &code).await;
    assert_eq!(r.status(), 401);
    let next = unigate::idp::directory::totp_code(&key, now + 30);
    let r = b
        .post(format!("{iss}/login"))
        .form(&[
            ("flow", query_param(&format!("{iss}{path}"), "flow").unwrap().as_str()),
            ("step", "code"),
            ("code", next.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(location(&r), "/", "logged in with the next code, the password kept");
}

async fn userinfo_status(iss: &str, access_token: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{iss}/userinfo"))
        .bearer_auth(access_token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_user_taken_out_of_the_users_file_loses_her_sessions_and_tokens() {
    let mut rx = receiver().await;
    let mut cfg = demo_config();
    cfg.clients
        .push(test_client(Some(&format!("http://{}/bcl", rx.addr)), None));
    let idp = start_idp(cfg.clone()).await;
    let iss = idp.issuer().to_string();
    let (pw, secret) = onboard_erin(&idp, &cfg).await;
    let b = browser();
    let t = log_in_with(&b, &idp, "erin", "Acme MSP", pw, &secret).await;
    let sub = claims(t["id_token"].as_str().unwrap())["sub"].clone();
    let access = t["access_token"].as_str().unwrap().to_string();
    // While she is in the file: single sign-on, My Modules, her tokens.
    let r = b.get(authorize_url(&iss, &pkce().challenge, &[])).send().await.unwrap();
    assert!(location(&r).starts_with(REDIRECT));
    assert_eq!(b.get(format!("{iss}/")).send().await.unwrap().status(), 200);
    assert_eq!(userinfo_status(&iss, &access).await, 200);
    let r = refresh(&idp, t["refresh_token"].as_str().unwrap()).await;
    assert_eq!(r.status(), 200);
    let refresh_token = r.json::<Value>().await.unwrap()["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();

    remove_from_users_file(&cfg, "erin");
    // Her browser is no longer logged in, and her tokens are refused.
    let r = b.get(authorize_url(&iss, &pkce().challenge, &[])).send().await.unwrap();
    assert!(location(&r).starts_with("/login?flow="), "no silent sign-on");
    let r = b.get(format!("{iss}/")).send().await.unwrap();
    assert_eq!(location(&r), "/login", "no My Modules");
    assert_eq!(refresh(&idp, &refresh_token).await.status(), 400);
    assert_eq!(userinfo_status(&iss, &access).await, 401);
    // Her application is told, as at a logout.
    let token = recv_within(&mut rx.tokens, std::time::Duration::from_secs(5))
        .await
        .expect("a back-channel logout token");
    let (lc, typ) = verify(&iss, &token, CLIENT).await;
    assert_eq!(typ.as_deref(), Some("logout+jwt"));
    assert_eq!(lc["sub"], sub);

    // A user added after her is never reached through her old session, and
    // her tokens stay dead when she is added again.
    let frank = NewUser {
        username: "frank".into(),
        ..erin()
    };
    add_user(&cfg, &iss, frank, SystemTime::now()).await.unwrap();
    add_user(&cfg, &iss, erin(), SystemTime::now()).await.unwrap();
    let r = b.get(format!("{iss}/")).send().await.unwrap();
    assert_eq!(location(&r), "/login");
    assert_eq!(refresh(&idp, &refresh_token).await.status(), 400);
    assert_eq!(userinfo_status(&iss, &access).await, 401);
}

#[tokio::test]
async fn the_applications_of_a_removed_user_are_told_without_anyone_asking() {
    let mut rx = receiver().await;
    let mut cfg = demo_config();
    cfg.clients
        .push(test_client(Some(&format!("http://{}/bcl", rx.addr)), None));
    let idp = start_idp(cfg.clone()).await;
    let (pw, secret) = onboard_erin(&idp, &cfg).await;
    let t = log_in_with(&browser(), &idp, "erin", "Acme MSP", pw, &secret).await;
    let sid = claims(t["id_token"].as_str().unwrap())["sid"].clone();
    remove_from_users_file(&cfg, "erin");
    // No request to the provider: it notices the file by itself.
    let token = recv_within(&mut rx.tokens, std::time::Duration::from_secs(10))
        .await
        .expect("a back-channel logout token");
    let (lc, _) = verify(idp.issuer(), &token, CLIENT).await;
    assert_eq!(lc["sid"], sid);
}

/// A config file for the command beside a running provider: the same
/// companies, users file and outbox, but (as under `unigate demo
/// --idp-port`) not the address the provider listens on.
fn command_config(dir: &Path, cfg: &IdpConfig) -> std::path::PathBuf {
    let companies: String = cfg
        .companies
        .iter()
        .map(|c| format!("[[company]]\nname = \"{c}\"\n"))
        .collect();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:9\"\n[outbox]\ndir = \"{}\"\n[directory]\nusers_file = \"{}\"\n{companies}",
        cfg.outbox_dir.display(),
        cfg.users_file.as_ref().unwrap().display()
    );
    let path = dir.join("idp.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn unigate(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_unigate"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

#[tokio::test]
async fn the_command_adds_a_user_to_a_running_idp() {
    let cfg = demo_config();
    let idp = start_idp(cfg.clone()).await;
    let iss = idp.issuer().to_string();
    let dir = tempfile::tempdir().unwrap();
    let config = command_config(dir.path(), &cfg);
    let config = config.to_str().unwrap();
    let help = String::from_utf8_lossy(&unigate(&["idp", "user", "add", "--help"]).stdout).into_owned();
    assert!(help.contains("--base-url <URL>") && help.contains("idp-port"), "{help}");
    let bad = unigate(&[
        "idp",
        "user",
        "add",
        "--config",
        config,
        "--company",
        "Globex IT",
        "--username",
        "x",
        "--email",
        "x@globex.example",
        "--base-url",
        "127.0.0.1:9100",
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--base-url `127.0.0.1:9100` is not an http://"));
    let add = [
        "idp",
        "user",
        "add",
        "--config",
        config,
        "--base-url",
        iss.as_str(),
        "--company",
        "Globex IT",
        "--username",
        "frank",
        "--email",
        "frank@globex.example",
        "--groups",
        "bms-users,portal-users",
    ];
    let out = unigate(&add);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("added frank (Globex IT)"), "{stdout}");
    let again = unigate(&add);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("user `frank` already exists in company `Globex IT`"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let list = unigate(&["idp", "user", "list", "--config", config]);
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.contains("Globex IT\tfrank\tfrank@globex.example\tbms-users,portal-users\twelcome mail sent"),
        "{list}"
    );

    // The running provider knows frank at once.
    let mails = wait_for_mail(&cfg.outbox_dir, 1).await;
    let link = link_in(&mails[0], "/welcome?token=");
    assert!(link.starts_with(&iss), "{link}");
    let b = browser();
    let page = b.get(&link).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("frank"), "{page}");
    let secret = shown_secret(&page);
    let pw = "frank-first-password";
    let token = query_param(&link, "token").unwrap();
    assert_eq!(welcome_post(&b, &iss, &token, pw, &current_code(&secret)).await.0, 200);
    let c = log_in(&idp, "frank", "Globex IT", pw, &secret).await;
    assert_eq!(c["groups"], serde_json::json!(["bms-users", "portal-users"]));
    let list = unigate(&["idp", "user", "list", "--config", config]);
    assert!(String::from_utf8_lossy(&list.stdout).contains("frank@globex.example\tbms-users,portal-users\tactive"));
}
