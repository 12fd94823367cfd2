//! The embedded identity provider's login over real sockets: a full login
//! with password and TOTP, the IdP session (silent login, `prompt`,
//! `max_age`, `login_hint`), My Modules, throttling, single-use TOTP codes
//! and password recovery through the outbox.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

#[tokio::test]
async fn full_login_with_password_and_totp() {
    let idp = start_idp(demo_config()).await;
    let iss = idp.issuer().to_string();
    let b = browser();
    let p = pkce();
    let back = login(&idp, &b, "alice", &p, &[]).await;
    assert!(back.starts_with(REDIRECT), "{back}");
    assert_eq!(query_param(&back, "state").as_deref(), Some("state-123"));
    assert_eq!(query_param(&back, "iss").as_deref(), Some(iss.as_str()));
    let code = query_param(&back, "code").unwrap();
    let r = exchange(&idp, &code, &p.verifier).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let t: Value = r.json().await.unwrap();
    assert_eq!(t["token_type"], "Bearer");
    let id_token = t["id_token"].as_str().unwrap();
    let access = t["access_token"].as_str().unwrap();
    let (c, typ) = verify(&iss, id_token, CLIENT).await;
    assert_eq!(typ.as_deref(), Some("JWT"));
    assert_eq!(c["iss"], iss);
    assert_eq!(c["aud"], CLIENT);
    assert_eq!(c["azp"], CLIENT);
    assert_eq!(c["nonce"], "nonce-456");
    assert_eq!(c["email"], "alice@acme-msp.example");
    assert_eq!(c["preferred_username"], "alice");
    assert_eq!(c["name"], "Alice Admin");
    assert_eq!(c["company"], "Acme MSP");
    assert_eq!(
        c["groups"],
        serde_json::json!(["portal-users", "portal-admins", "bms-users", "itglue-users"])
    );
    assert_eq!(c["amr"], serde_json::json!(["pwd", "otp"]));
    assert_eq!(c["at_hash"], unigate::idp::oauth::at_hash(access));
    assert_eq!(c["sub"], unigate::idp::directory::subject_for("Acme MSP", "alice"));
    for k in ["exp", "iat", "auth_time", "sid"] {
        assert!(!c[k].is_null(), "{k}");
    }
    // RFC 9068: an access token for the API (its own audience), not the client.
    let (ac, atyp) = verify(&iss, access, API_AUDIENCE).await;
    assert_eq!(atyp.as_deref(), Some("at+jwt"));
    assert_eq!(ac["sub"], c["sub"]);
    assert_eq!(ac["aud"], API_AUDIENCE);
    assert_eq!(ac["client_id"], CLIENT);
    for k in ["iss", "exp", "iat", "jti", "scope", "sid", "groups"] {
        assert!(!ac[k].is_null(), "{k}");
    }
    let info: Value = reqwest::Client::new()
        .get(format!("{iss}/userinfo"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["sub"], c["sub"]);
    assert_eq!(info["email"], "alice@acme-msp.example");
    let bad = reqwest::Client::new()
        .get(format!("{iss}/userinfo"))
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    assert!(
        bad.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
}

#[tokio::test]
async fn idp_session_gives_silent_login_and_prompts_are_honoured() {
    let idp = start_idp(demo_config()).await;
    let iss = idp.issuer().to_string();
    let b = browser();
    login(&idp, &b, "alice", &pkce(), &[]).await;
    // Already logged in: straight back with a code, no prompt.
    let p = pkce();
    let r = b.get(authorize_url(&iss, &p.challenge, &[])).send().await.unwrap();
    let loc = location(&r);
    assert!(loc.starts_with(REDIRECT), "{loc}");
    let code = query_param(&loc, "code").unwrap();
    assert_eq!(exchange(&idp, &code, &p.verifier).await.status(), 200);
    // prompt=none also works with the session...
    let r = b
        .get(authorize_url(&iss, &p.challenge, &[("prompt", "none")]))
        .send()
        .await
        .unwrap();
    assert!(query_param(&location(&r), "code").is_some());
    // ...and without one is login_required.
    let r = browser()
        .get(authorize_url(&iss, &p.challenge, &[("prompt", "none")]))
        .send()
        .await
        .unwrap();
    let loc = location(&r);
    assert_eq!(query_param(&loc, "error").as_deref(), Some("login_required"));
    assert_eq!(query_param(&loc, "iss").as_deref(), Some(iss.as_str()));
    // prompt=login asks again.
    let r = b
        .get(authorize_url(&iss, &p.challenge, &[("prompt", "login")]))
        .send()
        .await
        .unwrap();
    assert!(location(&r).starts_with("/login?flow="));
    // max_age older than the login asks again; a generous one does not.
    // (The wait is the point: the login is now over a second old.)
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = b
        .get(authorize_url(&iss, &p.challenge, &[("max_age", "0")]))
        .send()
        .await
        .unwrap();
    assert!(location(&r).starts_with("/login?flow="));
    let r = b
        .get(authorize_url(&iss, &p.challenge, &[("max_age", "3600")]))
        .send()
        .await
        .unwrap();
    assert!(location(&r).starts_with(REDIRECT));
    // login_hint pre-fills the username, escaped.
    let r = browser()
        .get(authorize_url(&iss, &p.challenge, &[("login_hint", "carol<script>")]))
        .send()
        .await
        .unwrap();
    let c = browser();
    let _ = c;
    let login_path = location(&r);
    let b2 = browser();
    let r = b2
        .get(authorize_url(&iss, &p.challenge, &[("login_hint", "carol<script>")]))
        .send()
        .await
        .unwrap();
    let login_path2 = location(&r);
    assert_ne!(login_path, login_path2);
    let page = b2
        .get(format!("{iss}{login_path2}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("value=\"carol&lt;script&gt;\""), "{page}");
    assert!(!page.contains("carol<script>"));
    // A flow id from another browser is refused.
    let stolen = browser().get(format!("{iss}{login_path2}")).send().await.unwrap();
    assert_eq!(stolen.status(), 400);
}

async fn home_page(idp: &unigate::idp::IdpServer, user: &str, query: &str) -> String {
    let iss = idp.issuer();
    let b = browser();
    let r = b.get(format!("{iss}/login")).send().await.unwrap();
    let login_path = location(&r);
    let code = current_code(&totp_secret(idp, user));
    let r = post_login(&b, iss, &login_path, user, &company(idp, user), &password(user), &code).await;
    assert_eq!(location(&r), "/");
    b.get(format!("{iss}/{query}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn my_modules_tiles_follow_groups() {
    let idp = start_idp(demo_config()).await;
    let alice = home_page(&idp, "alice", "").await;
    assert!(alice.contains("My Modules"));
    // The arrow goes through the login initiation unigate registered
    // (`initiate_login_uri`), naming the module and the user.
    let issuer: String = form_urlencoded::byte_serialize(idp.issuer().as_bytes()).collect();
    assert!(
        alice.contains(&format!(
            r#"class="tile arrow" href="http://portal.localhost:8080/_unigate/login?iss={issuer}&amp;target_link_uri=http%3A%2F%2Fportal.localhost%3A8080%2F&amp;login_hint=alice%40acme-msp.example" data-module="portal""#
        )),
        "{alice}"
    );
    assert!(
        alice.contains(r#"class="tile file" href="/?choose=bms" data-module="bms""#),
        "{alice}"
    );
    assert!(
        alice.contains(r#"class="tile lock" href="http://itglue.localhost:8080/login" data-module="itglue""#),
        "{alice}"
    );
    assert!(!alice.contains("Choose an Instance"));
    // The tiles' icons are inline SVG: no character a font must have.
    use unigate::pages::TileKind;
    for t in [TileKind::Arrow, TileKind::File, TileKind::Lock] {
        assert!(alice.contains(t.icon().0), "{t:?}");
    }
    assert!(!alice.contains('➜') && !alice.contains('🔒') && !alice.contains('🗀'));

    let bob = home_page(&idp, "bob", "").await;
    assert!(bob.contains(r#"data-module="portal""#));
    assert!(!bob.contains(r#"data-module="bms""#), "bob is not in bms-users");
    assert!(!bob.contains(r#"data-module="itglue""#), "bob is not in itglue-users");

    let dialog = home_page(&idp, "alice", "?choose=bms").await;
    assert!(dialog.contains("Choose an Instance"));
    for (host, name) in [("bms-east", "Acme East"), ("bms-west", "Acme West")] {
        assert!(
            dialog.contains(&format!(
                r#"href="http://portal.localhost:8080/_unigate/login?iss={issuer}&amp;target_link_uri=http%3A%2F%2F{host}.localhost%3A8080%2F&amp;login_hint=alice%40acme-msp.example">{name}"#
            )),
            "{dialog}"
        );
    }
    let bob_dialog = home_page(&idp, "bob", "?choose=bms").await;
    assert!(
        !bob_dialog.contains("Choose an Instance"),
        "no dialog for a module bob may not access"
    );

    let dave = home_page(&idp, "dave", "").await;
    assert!(dave.contains("You have no modules yet."));
}

async fn attempt(idp: &unigate::idp::IdpServer, user: &str, company: &str, pw: &str, code: &str) -> (u16, String) {
    let b = browser();
    let r = b.get(format!("{}/login", idp.issuer())).send().await.unwrap();
    let path = location(&r);
    let r = post_login(&b, idp.issuer(), &path, user, company, pw, code).await;
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

#[tokio::test]
async fn failures_are_generic_and_throttled() {
    let mut cfg = demo_config();
    cfg.login.max_failures_per_user = 3;
    cfg.login.max_failures_per_ip = 6;
    let idp = start_idp(cfg).await;
    let good = current_code(&totp_secret(&idp, "alice"));
    let wrong_code = if good == "000000" { "111111" } else { "000000" };
    // Wrong password, unknown user, wrong company, wrong code: one message.
    let cases = [
        ("alice", "Acme MSP", "nope-nope-nope", good.as_str()),
        ("nobody", "Acme MSP", "alice-demo-pass", good.as_str()),
        ("alice", "Acme MSP", "alice-demo-pass", wrong_code),
    ];
    let mut pages = Vec::new();
    for (u, c, p, code) in cases {
        let (status, page) = attempt(&idp, u, c, p, code).await;
        assert_eq!(status, 401);
        let msg = page
            .split("role=\"alert\">")
            .nth(1)
            .unwrap()
            .split('<')
            .next()
            .unwrap()
            .to_string();
        pages.push(msg);
    }
    assert!(pages[0].starts_with("Invalid username/password"), "{}", pages[0]);
    assert_eq!(pages[0], pages[1]);
    assert_eq!(pages[0], pages[2]);
    // alice has 2 failures: the third locks her.
    let (_, page) = attempt(&idp, "alice", "Acme MSP", "wrong-again", &good).await;
    assert!(page.contains("Too many failed login attempts"), "{page}");
    // Now even the right values are refused, and the page says why.
    let (status, page) = attempt(&idp, "alice", "acme msp", "alice-demo-pass", &good).await;
    assert_eq!(status, 401);
    assert!(
        page.contains("Too many failed login attempts") && page.contains("try again in 15 minutes"),
        "{page}"
    );
    // Bob, from the same address, is not locked by alice's failures...
    let bob_code = current_code(&totp_secret(&idp, "bob"));
    let (status, _) = attempt(&idp, "bob", "Acme MSP", "bob-demo-pass", &bob_code).await;
    assert_eq!(status, 302);
    // ...until the address itself has failed too often.
    for i in 0..3 {
        attempt(&idp, &format!("ghost{i}"), "Acme MSP", "x", "123456").await;
    }
    let (status, page) = attempt(&idp, "bob", "Acme MSP", "bob-demo-pass", &bob_code).await;
    assert_eq!(status, 401);
    assert!(page.contains("Too many failed login attempts"));
}

#[tokio::test]
async fn totp_codes_are_single_use_when_replay_protection_is_on() {
    let mut cfg = demo_config();
    cfg.login.totp_replay_protection = true;
    let idp = start_idp(cfg).await;
    let code = current_code(&totp_secret(&idp, "carol"));
    let (status, _) = attempt(&idp, "carol", "Globex IT", "carol-demo-pass", &code).await;
    assert_eq!(status, 302);
    let (status, page) = attempt(&idp, "carol", "Globex IT", "carol-demo-pass", &code).await;
    assert_eq!(status, 401, "the same code a second time");
    assert!(page.contains("Invalid username/password"));
}

#[tokio::test]
async fn forgot_password_through_the_outbox() {
    let idp = start_idp(demo_config()).await;
    let iss = idp.issuer().to_string();
    let outbox = idp.provider.outbox.dir().to_path_buf();
    let b = browser();
    // Unknown accounts get the same answer and no mail.
    let r = b
        .post(format!("{iss}/recover/password"))
        .form(&[("username", "nobody"), ("company", "Acme MSP")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let unknown_page = r.text().await.unwrap();
    assert!(
        unknown_page.contains(
            "You will receive an email with further instructions if there is an account associated with your email and company name."
        ),
        "{unknown_page}"
    );
    let r = b
        .post(format!("{iss}/recover/password"))
        .form(&[("username", "bob"), ("company", "acme msp")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), unknown_page);
    let mails = wait_for_mail(&outbox, 1).await;
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert!(mail.contains("To: bob@acme-msp.example"), "{mail}");
    let link = mail
        .lines()
        .find(|l| l.contains("/recover/reset?token="))
        .unwrap()
        .trim()
        .to_string();
    assert!(link.starts_with(&iss));
    let r = b.get(&link).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let token = query_param(&link, "token").unwrap();
    let r = b
        .post(format!("{iss}/recover/reset"))
        .form(&[("token", token.as_str()), ("password", "short"), ("confirm", "short")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "too short, and the link still works");
    let newpw = "bob-brand-new-password";
    let r = b
        .post(format!("{iss}/recover/reset"))
        .form(&[("token", token.as_str()), ("password", newpw), ("confirm", newpw)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Password changed"));
    // The link works once.
    assert_eq!(b.get(&link).send().await.unwrap().status(), 400);
    let r = b
        .post(format!("{iss}/recover/reset"))
        .form(&[
            ("token", token.as_str()),
            ("password", "another-password-1"),
            ("confirm", "another-password-1"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // The new password logs in; the old one does not.
    let code = current_code(&totp_secret(&idp, "bob"));
    assert_eq!(attempt(&idp, "bob", "Acme MSP", "bob-demo-pass", &code).await.0, 401);
    assert_eq!(attempt(&idp, "bob", "Acme MSP", newpw, &code).await.0, 302);

    // Forgot username and forgot company name also write mail.
    b.post(format!("{iss}/recover/username"))
        .form(&[("email", "carol@globex.example"), ("company", "Globex IT")])
        .send()
        .await
        .unwrap();
    b.post(format!("{iss}/recover/company"))
        .form(&[("email", "ALICE@acme-msp.example")])
        .send()
        .await
        .unwrap();
    let mails = wait_for_mail(&outbox, 3).await;
    assert!(
        mails
            .iter()
            .any(|m| m.contains("Subject: Your KaseyaOne username") && m.contains("  carol"))
    );
    assert!(
        mails
            .iter()
            .any(|m| m.contains("Subject: Your KaseyaOne company name") && m.contains("  Acme MSP"))
    );
}
