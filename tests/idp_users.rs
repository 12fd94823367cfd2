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
    let b = browser();
    let p = pkce();
    let r = b
        .get(authorize_url(idp.issuer(), &p.challenge, &[]))
        .send()
        .await
        .unwrap();
    let r = post_login(
        &b,
        idp.issuer(),
        &location(&r),
        user,
        company,
        pw,
        &current_code(secret),
    )
    .await;
    assert_eq!(r.status(), 302, "login of {user}: {}", r.text().await.unwrap());
    let code = query_param(&location(&r), "code").unwrap();
    let t: Value = exchange(idp, &code, &p.verifier).await.json().await.unwrap();
    claims(t["id_token"].as_str().unwrap())
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
    let e = err(unigate::idp::welcome::link_base(&no_issuer));
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
    let r = b
        .post(format!("{iss}/recover/password"))
        .form(&[("username", "erin"), ("company", "Acme MSP")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mails = wait_for_mail(&outbox, 2).await;
    let links: Vec<String> = mails.iter().map(|m| link_in(m, "/welcome?token=")).collect();
    let second = links.iter().find(|l| **l != first.link).expect("a new welcome link");
    assert!(mails.iter().all(|m| m.contains("Subject: Welcome to KaseyaOne")));
    assert_eq!(
        b.get(&first.link).send().await.unwrap().status(),
        400,
        "the old link is dead"
    );
    let page = b.get(second).send().await.unwrap().text().await.unwrap();
    let secret = shown_secret(&page);
    let token = query_param(second, "token").unwrap();
    let pw = "erin-second-try-password";
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let code = unigate::idp::directory::totp_code(&secret, now);
    let (status, page) = welcome_post(&b, &iss, &token, pw, &code).await;
    assert_eq!(status, 200, "{page}");
    // The code that confirmed the app is used up; the next one logs in.
    let b = browser();
    let path = location(&b.get(format!("{iss}/login")).send().await.unwrap());
    let r = post_login(&b, &iss, &path, "erin", "Acme MSP", pw, &code).await;
    assert_eq!(r.status(), 401);
    let next = unigate::idp::directory::totp_code(&secret, now + 30);
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

/// A config file for the command beside a running provider: the same
/// companies, users file and outbox, and the provider's address.
fn command_config(dir: &Path, cfg: &IdpConfig, issuer: &str) -> std::path::PathBuf {
    let companies: String = cfg
        .companies
        .iter()
        .map(|c| format!("[[company]]\nname = \"{c}\"\n"))
        .collect();
    let text = format!(
        "[server]\nissuer = \"{issuer}\"\n[outbox]\ndir = \"{}\"\n[directory]\nusers_file = \"{}\"\n{companies}",
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
    let config = command_config(dir.path(), &cfg, &iss);
    let config = config.to_str().unwrap();
    let add = [
        "idp",
        "user",
        "add",
        "--config",
        config,
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
