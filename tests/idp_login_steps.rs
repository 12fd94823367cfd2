//! What a login keeps and whom it is for, over real sockets: a failed
//! login returns to the step that failed with what was typed (and no page
//! tells a wrong password from a wrong code), and a `login_hint` naming
//! someone other than the browser's KaseyaOne session's user asks which
//! account to use.

mod common;

use common::*;
use serde_json::Value;

/// Posts one login step of `flow`.
async fn step(b: &reqwest::Client, iss: &str, flow: &str, step: &str, fields: &[(&str, &str)]) -> reqwest::Response {
    let mut form = vec![("flow", flow), ("step", step)];
    form.extend_from_slice(fields);
    b.post(format!("{iss}/login")).form(&form).send().await.unwrap()
}

/// The alert of a login page, and which step's form it shows.
fn alert_and_step(page: &str) -> (String, String) {
    let alert = page
        .split("role=\"alert\">")
        .nth(1)
        .map(|s| s.split('<').next().unwrap().to_string())
        .unwrap_or_default();
    (alert, form_value(page, "step"))
}

#[tokio::test]
async fn a_failed_login_returns_to_the_step_that_failed_and_keeps_what_was_typed() {
    let idp = start_idp(demo_config()).await;
    let iss = idp.issuer().to_string();
    let good = current_code(&totp_secret(&idp, "alice"));
    let wrong = if good == "000000" { "111111" } else { "000000" };
    let start = async |b: &reqwest::Client| {
        let path = location(&b.get(format!("{iss}/login")).send().await.unwrap());
        query_param(&format!("{iss}{path}"), "flow").unwrap()
    };

    // Right password, wrong code: back to the code step; username and
    // company kept; the right code then logs in without the password again.
    let b = browser();
    let flow = start(&b).await;
    step(
        &b,
        &iss,
        &flow,
        "identify",
        &[("username", "alice"), ("company", "Acme MSP")],
    )
    .await;
    step(&b, &iss, &flow, "password", &[("password", "alice-demo-pass")]).await;
    let r = step(&b, &iss, &flow, "code", &[("code", wrong)]).await;
    assert_eq!(r.status(), 401);
    let right_pw_page = r.text().await.unwrap();
    let (alert, at) = alert_and_step(&right_pw_page);
    assert!(alert.starts_with("Invalid username/password"), "{alert}");
    assert_eq!(at, "code");
    assert!(right_pw_page.contains("alice · Acme MSP"), "{right_pw_page}");
    let r = step(&b, &iss, &flow, "code", &[("code", &good)]).await;
    assert_eq!(location(&r), "/", "logged in");

    // Wrong password, wrong code: the very same page (no password oracle)...
    let b = browser();
    let flow2 = start(&b).await;
    step(
        &b,
        &iss,
        &flow2,
        "identify",
        &[("username", "alice"), ("company", "Acme MSP")],
    )
    .await;
    step(&b, &iss, &flow2, "password", &[("password", "not-her-password")]).await;
    let r = step(&b, &iss, &flow2, "code", &[("code", wrong)]).await;
    assert_eq!(r.status(), 401);
    let wrong_pw_page = r.text().await.unwrap();
    assert_eq!(
        wrong_pw_page.replace(&flow2, "FLOW"),
        right_pw_page.replace(&flow, "FLOW"),
        "a wrong code answers the same whatever the password was"
    );
    // ...and once the code is right, the password (and only it) is asked
    // again, with the same message.
    let r = step(&b, &iss, &flow2, "code", &[("code", &good)]).await;
    assert_eq!(r.status(), 401);
    let page = r.text().await.unwrap();
    let (alert2, at) = alert_and_step(&page);
    assert_eq!((alert2.as_str(), at.as_str()), (alert.as_str(), "password"));
    assert!(page.contains("alice · Acme MSP"));
    step(&b, &iss, &flow2, "password", &[("password", "alice-demo-pass")]).await;
    let r = step(&b, &iss, &flow2, "code", &[("code", &good)]).await;
    assert_eq!(location(&r), "/", "logged in");

    // An unknown user: the code step, same message; "Not you?" goes back to
    // the first step with what was typed.
    let b = browser();
    let flow3 = start(&b).await;
    step(
        &b,
        &iss,
        &flow3,
        "identify",
        &[("username", "alicia"), ("company", "Acme MSP")],
    )
    .await;
    step(&b, &iss, &flow3, "password", &[("password", "alice-demo-pass")]).await;
    let r = step(&b, &iss, &flow3, "code", &[("code", &good)]).await;
    let (alert3, at) = alert_and_step(&r.text().await.unwrap());
    assert_eq!((alert3.as_str(), at.as_str()), (alert.as_str(), "code"));
    let r = step(&b, &iss, &flow3, "restart", &[]).await;
    assert_eq!(r.status(), 302);
    let page = b
        .get(format!("{iss}/login?flow={flow3}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(form_value(&page, "step"), "identify");
    assert_eq!(form_value(&page, "username"), "alicia");
    assert_eq!(form_value(&page, "company"), "Acme MSP");
}

/// The "You are logged in as …" page's choice token.
async fn choice_page(b: &reqwest::Client, iss: &str, hint: &str) -> (u16, String) {
    let r = b
        .get(authorize_url(iss, &pkce().challenge, &[("login_hint", hint)]))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

async fn choose(b: &reqwest::Client, iss: &str, choice: &str, action: &str) -> reqwest::Response {
    b.post(format!("{iss}/authorize/choose"))
        .form(&[("choice", choice), ("action", action)])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_login_hint_for_someone_else_asks_which_account() {
    let idp = start_idp(demo_config()).await;
    let iss = idp.issuer().to_string();
    let b = browser();
    login(&idp, &b, "carol", &pkce(), &[]).await;
    let carol_sub = unigate::idp::directory::subject_for("Globex IT", "carol");

    // The hint names carol (any case, or her email): silent, as before.
    for hint in ["CAROL", " carol ", "Carol@Globex.example"] {
        let r = b
            .get(authorize_url(&iss, &pkce().challenge, &[("login_hint", hint)]))
            .send()
            .await
            .unwrap();
        assert!(location(&r).starts_with(REDIRECT), "{hint}");
    }
    // prompt=none with a hint for someone else: login_required, no page.
    let r = b
        .get(authorize_url(
            &iss,
            &pkce().challenge,
            &[("login_hint", "alice"), ("prompt", "none")],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(query_param(&location(&r), "error").as_deref(), Some("login_required"));

    // A hint for alice: the person chooses.
    let (status, page) = choice_page(&b, &iss, "alice").await;
    assert_eq!(status, 200);
    assert!(
        page.contains("You are logged in as <strong>carol</strong>. Continue as carol, or log in as alice."),
        "{page}"
    );
    assert!(page.contains("Continue as carol") && page.contains("Log in as alice"));
    let choice = form_value(&page, "choice");
    // The choice is bound to carol's browser, and works once.
    assert_eq!(choose(&browser(), &iss, &choice, "continue").await.status(), 400);
    let p = pkce();
    let r = b
        .get(authorize_url(&iss, &p.challenge, &[("login_hint", "alice")]))
        .send()
        .await
        .unwrap();
    let choice = form_value(&r.text().await.unwrap(), "choice");
    let r = choose(&b, &iss, &choice, "continue").await;
    let back = location(&r);
    assert!(back.starts_with(REDIRECT), "{back}");
    assert_eq!(query_param(&back, "state").as_deref(), Some("state-123"));
    let t: Value = exchange(&idp, &query_param(&back, "code").unwrap(), &p.verifier)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(claims(t["id_token"].as_str().unwrap())["sub"], carol_sub);
    assert_eq!(choose(&b, &iss, &choice, "continue").await.status(), 400, "used once");
    assert_eq!(choose(&b, &iss, "forged", "continue").await.status(), 400);

    // "Log in as alice": the login form with alice filled in; on success
    // the browser's KaseyaOne session is alice's.
    let p = pkce();
    let r = b
        .get(authorize_url(&iss, &p.challenge, &[("login_hint", "alice")]))
        .send()
        .await
        .unwrap();
    let choice = form_value(&r.text().await.unwrap(), "choice");
    let r = choose(&b, &iss, &choice, "switch").await;
    let login_path = location(&r);
    assert!(login_path.starts_with("/login?flow="), "{login_path}");
    let page = b
        .get(format!("{iss}{login_path}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(form_value(&page, "username"), "alice");
    let code = current_code(&totp_secret(&idp, "alice"));
    let r = post_login(&b, &iss, &login_path, "alice", "Acme MSP", "alice-demo-pass", &code).await;
    let back = location(&r);
    let t: Value = exchange(&idp, &query_param(&back, "code").unwrap(), &p.verifier)
        .await
        .json()
        .await
        .unwrap();
    let alice_sub = unigate::idp::directory::subject_for("Acme MSP", "alice");
    assert_eq!(claims(t["id_token"].as_str().unwrap())["sub"], alice_sub);
    let p = pkce();
    let r = b.get(authorize_url(&iss, &p.challenge, &[])).send().await.unwrap();
    let t: Value = exchange(&idp, &query_param(&location(&r), "code").unwrap(), &p.verifier)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        claims(t["id_token"].as_str().unwrap())["sub"],
        alice_sub,
        "the session is alice's now"
    );
}

#[tokio::test]
async fn a_login_hint_that_is_not_a_username_or_email_is_not_shown() {
    let idp = start_idp(demo_config()).await;
    let iss = idp.issuer().to_string();
    let b = browser();
    login(&idp, &b, "carol", &pkce(), &[]).await;
    let spoof = "alice. Your account is locked: call +1 555 0100 to unlock it";
    let long = "a".repeat(65);
    for hint in [spoof, long.as_str(), "alice<b>"] {
        let (status, page) = choice_page(&b, &iss, hint).await;
        assert_eq!(status, 200);
        assert!(
            page.contains("Continue as carol, or log in as another user.") && page.contains("Log in as another user"),
            "{page}"
        );
        assert!(
            !page.contains("locked") && !page.contains(&long) && !page.contains("alice"),
            "{page}"
        );
    }
    // Switching prefills nothing from such a hint.
    let (_, page) = choice_page(&b, &iss, spoof).await;
    let r = choose(&b, &iss, &form_value(&page, "choice"), "switch").await;
    let page = b
        .get(format!("{iss}{}", location(&r)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(form_value(&page, "username"), "");
    // An email address is shown as it is.
    let (_, page) = choice_page(&b, &iss, "alice+k1@acme-msp.example").await;
    assert!(page.contains("or log in as alice+k1@acme-msp.example."), "{page}");
}
