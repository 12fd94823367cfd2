//! Regression tests for the identity provider's hardening: logout races,
//! cross-client codes, refresh errors, scope-bound claims, TOTP burning,
//! cross-site logout, password-reset revocation, login-start limits, a
//! private outbox and the users file's temporary files.

mod common;

use common::*;
use serde_json::Value;

#[tokio::test]
async fn a_code_issued_before_logout_is_dead_after_it() {
    let idp = start_idp(demo_config()).await;
    let iss = idp.issuer().to_string();
    let b = browser();
    let p = pkce();
    let back = login(&idp, &b, "alice", &p, &[]).await;
    let code = query_param(&back, "code").unwrap();
    // Log out (confirmation form, no hint) before the client redeems.
    let page = b
        .get(format!("{iss}/logout"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let r = b
        .post(format!("{iss}/logout/confirm"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = exchange(&idp, &code, &p.verifier).await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");
}

#[tokio::test]
async fn another_client_cannot_use_or_revoke_a_code() {
    let mut cfg = demo_config();
    let mut other = test_client(None, None);
    other.client_id = "other-app".into();
    cfg.clients.push(other);
    let idp = start_idp(cfg).await;
    let p = pkce();
    let back = login(&idp, &browser(), "bob", &p, &[]).await;
    let code = query_param(&back, "code").unwrap();
    let t: Value = exchange(&idp, &code, &p.verifier).await.json().await.unwrap();
    // The other client replays the (already redeemed) code: refused, and the
    // first client's tokens live on.
    let r = reqwest::Client::new()
        .post(format!("{}/token", idp.issuer()))
        .basic_auth("other-app", Some(SECRET))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
            ("code_verifier", p.verifier.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(refresh(&idp, t["refresh_token"].as_str().unwrap()).await.status(), 200);
}

#[tokio::test]
async fn a_refused_refresh_does_not_use_the_token_up() {
    let idp = start_idp(demo_config()).await;
    let p = pkce();
    let back = login(&idp, &browser(), "bob", &p, &[]).await;
    let t: Value = exchange(&idp, &query_param(&back, "code").unwrap(), &p.verifier)
        .await
        .json()
        .await
        .unwrap();
    let rt = t["refresh_token"].as_str().unwrap();
    let widen = reqwest::Client::new()
        .post(format!("{}/token", idp.issuer()))
        .basic_auth(CLIENT, Some(SECRET))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", rt),
            ("scope", "openid admin"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(widen.json::<Value>().await.unwrap()["error"], "invalid_scope");
    // Narrowing is allowed and is what the new tokens carry.
    let narrow: Value = reqwest::Client::new()
        .post(format!("{}/token", idp.issuer()))
        .basic_auth(CLIENT, Some(SECRET))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", rt),
            ("scope", "openid"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(narrow["scope"], "openid");
    let c = claims(narrow["id_token"].as_str().unwrap());
    assert!(
        c.get("email").is_none() && c.get("name").is_none(),
        "no email/profile claims without those scopes: {c}"
    );
    assert!(c.get("groups").is_some());
}

#[tokio::test]
async fn claims_follow_the_requested_scopes() {
    let idp = start_idp(demo_config()).await;
    let p = pkce();
    let url = authorize_url(idp.issuer(), &p.challenge, &[]).replace("scope=openid+email+profile", "scope=openid");
    let b = browser();
    let r = b.get(url).send().await.unwrap();
    let login_path = location(&r);
    let code = current_code(&totp_secret(&idp, "alice"));
    let r = post_login(
        &b,
        idp.issuer(),
        &login_path,
        "alice",
        "Acme MSP",
        "alice-demo-pass",
        &code,
    )
    .await;
    let back = location(&r);
    let t: Value = exchange(&idp, &query_param(&back, "code").unwrap(), &p.verifier)
        .await
        .json()
        .await
        .unwrap();
    let c = claims(t["id_token"].as_str().unwrap());
    assert!(c.get("email").is_none() && c.get("preferred_username").is_none());
    let info: Value = reqwest::Client::new()
        .get(format!("{}/userinfo", idp.issuer()))
        .bearer_auth(t["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(info.get("email").is_none());
    assert_eq!(info["sub"], c["sub"]);
}

#[tokio::test]
async fn a_password_typo_does_not_burn_the_code() {
    let mut cfg = demo_config();
    cfg.login.totp_replay_protection = true;
    let idp = start_idp(cfg).await;
    let iss = idp.issuer().to_string();
    let code = current_code(&totp_secret(&idp, "carol"));
    let b = browser();
    let path = location(&b.get(format!("{iss}/login")).send().await.unwrap());
    let r = post_login(&b, &iss, &path, "carol", "Globex IT", "typo", &code).await;
    assert_eq!(r.status(), 401);
    let b = browser();
    let path = location(&b.get(format!("{iss}/login")).send().await.unwrap());
    let r = post_login(&b, &iss, &path, "carol", "Globex IT", "carol-demo-pass", &code).await;
    assert_eq!(r.status(), 302, "the same code still works with the right password");
}

#[tokio::test]
async fn cross_site_logout_without_the_cookie_changes_nothing() {
    let idp = start_idp(demo_config()).await;
    let iss = idp.issuer().to_string();
    let b = browser();
    let p = pkce();
    let back = login(&idp, &b, "alice", &p, &[]).await;
    let t: Value = exchange(&idp, &query_param(&back, "code").unwrap(), &p.verifier)
        .await
        .json()
        .await
        .unwrap();
    // A request from elsewhere (no cookie) with alice's ID token as hint.
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{iss}/logout"))
        .query(&[("id_token_hint", t["id_token"].as_str().unwrap())])
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("set-cookie").is_none());
    // alice is still logged in, and her tokens still refresh.
    let r = b.get(authorize_url(&iss, &pkce().challenge, &[])).send().await.unwrap();
    assert!(location(&r).starts_with(REDIRECT));
    assert_eq!(refresh(&idp, t["refresh_token"].as_str().unwrap()).await.status(), 200);
}

#[tokio::test]
async fn a_password_reset_ends_the_users_sessions() {
    let idp = start_idp(demo_config()).await;
    let iss = idp.issuer().to_string();
    let outbox = idp.provider.outbox.dir().to_path_buf();
    let b = browser();
    let p = pkce();
    let back = login(&idp, &b, "bob", &p, &[]).await;
    let t: Value = exchange(&idp, &query_param(&back, "code").unwrap(), &p.verifier)
        .await
        .json()
        .await
        .unwrap();
    browser()
        .post(format!("{iss}/recover/password"))
        .form(&[("username", "bob"), ("company", "Acme MSP")])
        .send()
        .await
        .unwrap();
    let mut link = None;
    for _ in 0..100 {
        if let Some(Ok(e)) = std::fs::read_dir(&outbox).ok().and_then(|mut d| d.next()) {
            let m = std::fs::read_to_string(e.path()).unwrap();
            link = m.lines().find(|l| l.contains("token=")).map(|l| l.trim().to_string());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let token = query_param(&link.expect("reset mail"), "token").unwrap();
    let pw = "a-completely-new-password";
    let r = browser()
        .post(format!("{iss}/recover/reset"))
        .form(&[("token", token.as_str()), ("password", pw), ("confirm", pw)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        refresh(&idp, t["refresh_token"].as_str().unwrap()).await.status(),
        400,
        "grants revoked"
    );
    let r = b.get(authorize_url(&iss, &pkce().challenge, &[])).send().await.unwrap();
    assert!(location(&r).starts_with("/login?flow="), "IdP session ended");
}

#[tokio::test]
async fn authorize_accepts_form_post_and_login_starts_are_limited() {
    let mut cfg = demo_config();
    cfg.login.max_starts_per_minute_per_ip = 3;
    let idp = start_idp(cfg).await;
    let iss = idp.issuer().to_string();
    let p = pkce();
    let url = url::Url::parse(&authorize_url(&iss, &p.challenge, &[])).unwrap();
    let form: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let r = browser()
        .post(format!("{iss}/authorize"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert!(location(&r).starts_with("/login?flow="));
    for _ in 0..2 {
        assert_eq!(
            browser().get(format!("{iss}/login")).send().await.unwrap().status(),
            302
        );
    }
    let r = browser().get(format!("{iss}/login")).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.text().await.unwrap().contains("Too many logins from your network"));
}

#[tokio::test]
async fn every_wrong_code_in_a_kept_flow_counts_towards_throttling() {
    let mut cfg = demo_config();
    cfg.login.max_failures_per_user = 3;
    let idp = start_idp(cfg).await;
    let iss = idp.issuer().to_string();
    let good = current_code(&totp_secret(&idp, "bob"));
    let wrong = if good == "000000" { "111111" } else { "000000" };
    let b = browser();
    let path = location(&b.get(format!("{iss}/login")).send().await.unwrap());
    let flow = query_param(&format!("{iss}{path}"), "flow").unwrap();
    let post = async |fields: &[(&str, &str)]| {
        let mut form = vec![("flow", flow.as_str())];
        form.extend_from_slice(fields);
        b.post(format!("{iss}/login")).form(&form).send().await.unwrap()
    };
    post(&[("step", "identify"), ("username", "bob"), ("company", "Acme MSP")]).await;
    post(&[("step", "password"), ("password", "bob-demo-pass")]).await;
    // The flow stays at the code step with the password kept; each wrong
    // code is a failure of its own.
    for _ in 0..2 {
        let page = post(&[("step", "code"), ("code", wrong)]).await.text().await.unwrap();
        assert!(page.contains("Invalid username/password"), "{page}");
        assert_eq!(form_value(&page, "step"), "code");
    }
    let page = post(&[("step", "code"), ("code", wrong)]).await.text().await.unwrap();
    assert!(page.contains("Too many failed login attempts"), "{page}");
    // Now even the right code is refused.
    let r = post(&[("step", "code"), ("code", &good)]).await;
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("Too many failed login attempts"));
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[cfg(unix)]
#[tokio::test]
async fn the_outbox_holding_reset_links_is_private() {
    use std::os::unix::fs::PermissionsExt;
    // Created by the provider: 0700, and each mail 0600.
    let idp = start_idp(demo_config()).await;
    let outbox = idp.provider.outbox.dir().to_path_buf();
    assert!(!outbox.exists());
    let forgot = async |iss: &str| {
        browser()
            .post(format!("{iss}/recover/password"))
            .form(&[("username", "bob"), ("company", "Acme MSP")])
            .send()
            .await
            .unwrap()
    };
    assert_eq!(forgot(idp.issuer()).await.status(), 200);
    wait_for_mail(&outbox, 1).await;
    assert_eq!(mode(&outbox), 0o700);
    let files: Vec<_> = std::fs::read_dir(&outbox).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1);
    assert_eq!(mode(&files[0]), 0o600, "{}", files[0].display());

    // An outbox of this user's that others could read is narrowed.
    let cfg = demo_config();
    std::fs::create_dir_all(&cfg.outbox_dir).unwrap();
    std::fs::set_permissions(&cfg.outbox_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let idp = start_idp(cfg.clone()).await;
    assert_eq!(forgot(idp.issuer()).await.status(), 200);
    let mails = wait_for_mail(&cfg.outbox_dir, 1).await;
    assert!(mails[0].contains("Reset your KaseyaOne password"));
    assert_eq!(mode(&cfg.outbox_dir), 0o700);
}

#[cfg(unix)]
#[test]
fn the_users_file_is_never_written_through_a_planted_link() {
    use unigate::idp::users_file::{UsersFileError, update};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idp.users.toml");
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "keep me").unwrap();
    // Links at names a writer might use for its temporary file.
    for name in [
        format!("idp.users.toml.{}.tmp", std::process::id()),
        "idp.users.toml.tmp".to_string(),
    ] {
        std::os::unix::fs::symlink(&victim, dir.path().join(name)).unwrap();
    }
    update::<_, UsersFileError>(&path, |doc| {
        doc.users.clear();
        Ok(())
    })
    .unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_file(), "the users file is a file of its own");
    assert_eq!(mode(&path), 0o600);
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".idp.users.toml."))
        .collect();
    assert!(left.is_empty(), "no temporary file left: {left:?}");
}
