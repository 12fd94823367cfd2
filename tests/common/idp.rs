//! The embedded identity provider for tests: its demo configuration and
//! test client, a browser-like HTTP client, PKCE, logging in through the
//! real forms, the token endpoint (exchange, refresh), reading claims and
//! verifying JWTs against the provider's JWKS, and the outbox's mail.

use std::path::Path;
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use reqwest::redirect::Policy;
use unigate::idp::config::Client;
use unigate::idp::directory::totp_code;
use unigate::idp::{IdpConfig, IdpServer};
use unigate::secret::Secret;
use url::Url;

pub const SECRET: &str = "test-client-secret-0123456789";
pub const CLIENT: &str = "test-app";
pub const REDIRECT: &str = "http://127.0.0.1:1/cb";
pub const POST_LOGOUT: &str = "http://127.0.0.1:1/logged-out";
/// The `aud` of the test client's access tokens, and unigate's
/// `api_audience` in every test stack.
pub const API_AUDIENCE: &str = "https://api.unigate.test";

/// Demo passwords, as the README lists them.
pub fn password(user: &str) -> String {
    format!("{user}-demo-pass")
}

pub fn demo_config() -> IdpConfig {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut cfg = IdpConfig::load(&root.join("idp.demo.toml")).expect("demo config loads");
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.login.totp_replay_protection = false;
    let dir = tempfile::tempdir().unwrap().keep();
    cfg.outbox_dir = dir.join("outbox");
    // Users added at run time go to the test's own folder, never beside
    // the shipped config.
    cfg.users_file = Some(dir.join("idp.users.toml"));
    cfg
}

pub fn test_client(backchannel: Option<&str>, frontchannel: Option<&str>) -> Client {
    Client {
        client_id: CLIENT.into(),
        client_secret: Secret::new(SECRET),
        redirect_uris: vec![REDIRECT.into()],
        post_logout_redirect_uris: vec![POST_LOGOUT.into()],
        backchannel_logout_uri: backchannel.map(|u| Url::parse(u).unwrap()),
        frontchannel_logout_uri: frontchannel.map(|u| Url::parse(u).unwrap()),
        initiate_login_uri: None,
        id_token_alg: jsonwebtoken::Algorithm::ES256,
        api_audience: Some(API_AUDIENCE.into()),
        opaque_access_tokens: false,
    }
}

pub async fn start_idp(mut cfg: IdpConfig) -> IdpServer {
    if !cfg.clients.iter().any(|c| c.client_id == CLIENT) {
        cfg.clients.push(test_client(None, None));
    }
    IdpServer::start(cfg).await.expect("idp starts")
}

/// A browser-like HTTP client: keeps cookies, does not follow redirects.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(Policy::none())
        .build()
        .unwrap()
}

pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

pub fn pkce() -> Pkce {
    let verifier = format!("v{}", unigate::idp::store::random_token());
    let challenge = unigate::idp::oauth::pkce_s256(&verifier);
    Pkce { verifier, challenge }
}

pub fn authorize_url(issuer: &str, challenge: &str, extra: &[(&str, &str)]) -> String {
    let mut u = Url::parse(&format!("{issuer}/authorize")).unwrap();
    {
        let mut q = u.query_pairs_mut();
        q.append_pair("client_id", CLIENT)
            .append_pair("redirect_uri", REDIRECT)
            .append_pair("response_type", "code")
            .append_pair("scope", "openid email profile")
            .append_pair("state", "state-123")
            .append_pair("nonce", "nonce-456")
            .append_pair("code_challenge", challenge)
            .append_pair("code_challenge_method", "S256");
        for (k, v) in extra {
            q.append_pair(k, v);
        }
    }
    u.to_string()
}

/// The body of `r` as text.
pub async fn text(r: reqwest::Response) -> String {
    r.text().await.unwrap()
}

pub fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .unwrap_or_else(|| panic!("no Location on {}", r.status()))
        .to_str()
        .unwrap()
        .to_string()
}

pub fn query_param(url: &str, name: &str) -> Option<String> {
    let u = Url::parse(url).ok()?;
    u.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

pub fn current_code(cfg_user_secret: &[u8]) -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    totp_code(cfg_user_secret, now)
}

pub fn totp_secret(idp: &IdpServer, user: &str) -> Vec<u8> {
    idp.provider
        .cfg
        .users
        .iter()
        .find(|u| u.username == user)
        .unwrap()
        .totp_secret
        .clone()
}

pub fn company(idp: &IdpServer, user: &str) -> String {
    idp.provider
        .cfg
        .users
        .iter()
        .find(|u| u.username == user)
        .unwrap()
        .company
        .clone()
}

/// Posts the three login forms starting from a `/login?flow=…` path, with
/// the given password and code; returns the final response.
pub async fn post_login(
    b: &reqwest::Client,
    issuer: &str,
    login_path: &str,
    user: &str,
    company: &str,
    password: &str,
    code: &str,
) -> reqwest::Response {
    let flow = query_param(&format!("{issuer}{login_path}"), "flow").expect("flow id");
    let page = b.get(format!("{issuer}{login_path}")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let step = |step: &'static str, fields: Vec<(&'static str, String)>| {
        let mut form = vec![("flow", flow.clone()), ("step", step.to_string())];
        form.extend(fields);
        b.post(format!("{issuer}/login")).form(&form).send()
    };
    let r = step("identify", vec![("username", user.into()), ("company", company.into())])
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "identify step");
    let r = step("password", vec![("password", password.into())]).await.unwrap();
    if r.status() != 302 {
        // Throttled before the password is even checked.
        return r;
    }
    step("code", vec![("code", code.into())]).await.unwrap()
}

/// A whole interactive login through the forms; returns the redirect back
/// to the client (with `code`, `state`, `iss`).
pub async fn login(idp: &IdpServer, b: &reqwest::Client, user: &str, pkce: &Pkce, extra: &[(&str, &str)]) -> String {
    let issuer = idp.issuer();
    let r = b
        .get(authorize_url(issuer, &pkce.challenge, extra))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let login_path = location(&r);
    assert!(login_path.starts_with("/login?flow="), "{login_path}");
    let code = current_code(&totp_secret(idp, user));
    let r = post_login(
        b,
        issuer,
        &login_path,
        user,
        &company(idp, user),
        &password(user),
        &code,
    )
    .await;
    assert_eq!(r.status(), 302, "code step: {}", r.text().await.unwrap_or_default());
    location(&r)
}

pub async fn exchange(idp: &IdpServer, code: &str, verifier: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/token", idp.issuer()))
        .basic_auth(CLIENT, Some(SECRET))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .unwrap()
}

pub async fn refresh(idp: &IdpServer, refresh_token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/token", idp.issuer()))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", CLIENT),
            ("client_secret", SECRET),
        ])
        .send()
        .await
        .unwrap()
}

pub fn claims(jwt: &str) -> serde_json::Value {
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&B64.decode(payload).unwrap()).unwrap()
}

/// The provider's published JWKS.
pub async fn jwks(issuer: &str) -> JwkSet {
    reqwest::get(format!("{issuer}/.well-known/jwks.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Verifies a JWT against the provider's JWKS; returns its claims and header typ.
pub async fn verify(issuer: &str, jwt: &str, aud: &str) -> (serde_json::Value, Option<String>) {
    let header = jsonwebtoken::decode_header(jwt).unwrap();
    let set = jwks(issuer).await;
    let jwk = set.find(header.kid.as_deref().unwrap()).expect("kid published");
    let mut v = Validation::new(header.alg);
    v.set_audience(&[aud]);
    v.set_issuer(&[issuer]);
    let data = jsonwebtoken::decode::<serde_json::Value>(jwt, &DecodingKey::from_jwk(jwk).unwrap(), &v)
        .expect("signature and claims verify");
    (data.claims, header.typ)
}

/// The value of the form field `name` on an HTML page (`name="…" value="…"`).
pub fn form_value(page: &str, name: &str) -> String {
    page.split(&format!("name=\"{name}\" value=\""))
        .nth(1)
        .unwrap_or_else(|| panic!("no field {name} in {page}"))
        .split('"')
        .next()
        .unwrap()
        .to_string()
}

/// The `.eml` files in an outbox folder, sorted.
pub fn mails(dir: &Path) -> Vec<String> {
    let mut mails: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
                .map(|e| std::fs::read_to_string(e.path()).unwrap())
                .collect()
        })
        .unwrap_or_default();
    mails.sort();
    mails
}

/// Waits until the outbox holds at least `n` mails; returns them all.
pub async fn wait_for_mail(dir: &Path, n: usize) -> Vec<String> {
    let mut found = Vec::new();
    super::wait_until(
        &format!("{n} mail(s) in {}", dir.display()),
        std::time::Duration::from_secs(5),
        async || {
            found = mails(dir);
            found.len() >= n
        },
    )
    .await;
    found
}

/// The first line of a mail holding `path` (a link), trimmed.
pub fn link_in(mail: &str, path: &str) -> String {
    mail.lines()
        .find(|l| l.contains(path))
        .unwrap_or_else(|| panic!("no {path} link in {mail}"))
        .trim()
        .to_string()
}
