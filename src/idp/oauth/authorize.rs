//! The authorization endpoint's logic: checking a request (OIDC Core
//! §3.1.2.2 with PKCE S256 required) and issuing a code for a logged-in
//! session.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

use super::{MAX_PARAM_LEN, params_map};
use crate::idp::Provider;
use crate::idp::directory::Directory;
use crate::idp::store::{CodeRecord, IdpSession, random_token, token_key};

/// A checked authorization request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRequest {
    pub client_id: String,
    pub redirect_uri: String,
    pub scope: String,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: String,
    pub prompt_none: bool,
    pub prompt_login: bool,
    pub max_age: Option<u64>,
    pub login_hint: Option<String>,
}

/// Why an authorization request was refused, and how to tell whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizeError {
    /// The client or redirect URI cannot be trusted: show a page, never
    /// redirect (RFC 6749 §4.1.2.1).
    Page(String),
    /// Send the error back to the client's redirect URI.
    Redirect {
        redirect_uri: String,
        error: &'static str,
        description: String,
        state: Option<String>,
    },
}

/// Checks an authorization request (OIDC Core §3.1.2.2 with PKCE S256 required).
pub fn check_authorize(dir: &Directory, pairs: Vec<(String, String)>) -> Result<AuthRequest, AuthorizeError> {
    // Find client and redirect URI first: until both are known good, errors
    // go on a page.
    let raw: Vec<(String, String)> = pairs;
    let first = |name: &str| raw.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let client_id = first("client_id")
        .ok_or_else(|| AuthorizeError::Page("The request names no client (client_id is missing).".into()))?;
    let client = dir.client(&client_id).ok_or_else(|| {
        AuthorizeError::Page("The application that sent you here is not registered with this identity provider.".into())
    })?;
    let redirect_uri = first("redirect_uri").ok_or_else(|| {
        AuthorizeError::Page("The request has no redirect_uri, so there is nowhere safe to send you back to.".into())
    })?;
    if !client.redirect_uris.iter().any(|r| r == &redirect_uri) {
        return Err(AuthorizeError::Page(
            "The redirect_uri of this request is not registered for the application, so you are not sent there.".into(),
        ));
    }
    let count = |name: &str| raw.iter().filter(|(k, _)| k == name).count();
    if count("client_id") > 1 || count("redirect_uri") > 1 {
        return Err(AuthorizeError::Page(
            "The request repeats client_id or redirect_uri.".into(),
        ));
    }
    let state = first("state");
    let fail = |error: &'static str, description: &str| AuthorizeError::Redirect {
        redirect_uri: redirect_uri.clone(),
        error,
        description: description.to_string(),
        state: state.clone().filter(|s| s.len() <= MAX_PARAM_LEN),
    };
    let p = params_map(raw.clone()).map_err(|e| fail("invalid_request", &e))?;
    if p.contains_key("request") {
        return Err(fail("request_not_supported", "request objects are not supported"));
    }
    if p.contains_key("request_uri") {
        return Err(fail("request_uri_not_supported", "request_uri is not supported"));
    }
    match p.get("response_type").map(String::as_str) {
        Some("code") => {}
        None => return Err(fail("invalid_request", "response_type is missing")),
        Some(_) => {
            return Err(fail(
                "unsupported_response_type",
                "only response_type=code is supported",
            ));
        }
    }
    if let Some(mode) = p.get("response_mode")
        && mode != "query"
    {
        return Err(fail("invalid_request", "only response_mode=query is supported"));
    }
    let scope = p.get("scope").cloned().unwrap_or_default();
    if !scope.split(' ').any(|s| s == "openid") {
        return Err(fail("invalid_scope", "scope must include openid"));
    }
    let code_challenge = match (
        p.get("code_challenge"),
        p.get("code_challenge_method").map(String::as_str),
    ) {
        (None, _) => return Err(fail("invalid_request", "PKCE is required: code_challenge is missing")),
        (Some(_), Some("S256")) => p["code_challenge"].clone(),
        (Some(_), _) => return Err(fail("invalid_request", "code_challenge_method must be S256")),
    };
    // RFC 7636 §4.2: 43 characters of base64url for a SHA-256.
    if code_challenge.len() != 43 || B64.decode(&code_challenge).is_err() {
        return Err(fail("invalid_request", "code_challenge is not a base64url SHA-256"));
    }
    let prompts: Vec<&str> = p
        .get("prompt")
        .map(|s| s.split(' ').filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    let prompt_none = prompts.contains(&"none");
    if prompt_none && prompts.len() > 1 {
        return Err(fail(
            "invalid_request",
            "prompt=none cannot be combined with other values",
        ));
    }
    let max_age = match p.get("max_age") {
        None => None,
        Some(v) => Some(
            v.parse::<u64>()
                .map_err(|_| fail("invalid_request", "max_age must be a number of seconds"))?,
        ),
    };
    Ok(AuthRequest {
        client_id,
        redirect_uri,
        scope,
        state,
        nonce: p.get("nonce").cloned(),
        code_challenge,
        prompt_none,
        prompt_login: prompts.contains(&"login") || prompts.contains(&"select_account"),
        max_age,
        login_hint: p.get("login_hint").cloned(),
    })
}

impl Provider {
    /// Issues an authorization code for a logged-in session.
    pub fn issue_code(&self, request: Arc<AuthRequest>, session: &IdpSession) -> String {
        let code = random_token();
        session
            .clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(request.client_id.clone());
        self.stores.codes.insert(
            token_key(&code),
            Arc::new(CodeRecord {
                request,
                user: session.user,
                sid: session.sid.clone(),
                auth_time: session.auth_time.load(Ordering::Acquire),
                issued: Instant::now(),
                redeemed: std::sync::Mutex::new(None),
            }),
        );
        code
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idp::config::{Client, IdpConfig};
    use crate::idp::oauth::pkce_s256;
    use jsonwebtoken::Algorithm;
    use std::path::Path;

    fn dir() -> Directory {
        let mut cfg = IdpConfig::from_toml("", Path::new(".")).unwrap();
        cfg.clients.push(Client {
            client_id: "app".into(),
            client_secret: crate::secret::Secret::new("s3cret"),
            redirect_uris: vec!["https://app.example/cb".into()],
            post_logout_redirect_uris: vec![],
            backchannel_logout_uri: None,
            frontchannel_logout_uri: None,
            initiate_login_uri: None,
            id_token_alg: Algorithm::ES256,
            api_audience: None,
            opaque_access_tokens: false,
        });
        Directory::new(&cfg)
    }

    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    fn base() -> Vec<(String, String)> {
        [
            ("client_id", "app"),
            ("redirect_uri", "https://app.example/cb"),
            ("response_type", "code"),
            ("scope", "openid email"),
            ("state", "st"),
            ("nonce", "n"),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn with(k: &str, v: Option<&str>) -> Vec<(String, String)> {
        let mut p: Vec<_> = base().into_iter().filter(|(n, _)| n != k).collect();
        if let Some(v) = v {
            p.push((k.to_string(), v.to_string()));
        }
        p
    }

    #[test]
    fn authorize_table() {
        let d = dir();
        assert!(check_authorize(&d, base()).is_ok());
        let page = |p| matches!(check_authorize(&d, p), Err(AuthorizeError::Page(_)));
        assert!(page(with("client_id", None)));
        assert!(page(with("client_id", Some("other"))));
        assert!(page(with("redirect_uri", None)));
        assert!(page(with("redirect_uri", Some("https://app.example/cb/"))));
        assert!(page(with("redirect_uri", Some("https://evil.example/cb"))));
        let redirect_error = |p| match check_authorize(&d, p) {
            Err(AuthorizeError::Redirect { error, state, .. }) => {
                assert_eq!(state.as_deref(), Some("st"));
                error
            }
            other => panic!("expected a redirect error, got {other:?}"),
        };
        assert_eq!(
            redirect_error(with("response_type", Some("token"))),
            "unsupported_response_type"
        );
        assert_eq!(redirect_error(with("response_type", None)), "invalid_request");
        assert_eq!(redirect_error(with("scope", Some("email"))), "invalid_scope");
        assert_eq!(redirect_error(with("code_challenge", None)), "invalid_request");
        assert_eq!(
            redirect_error(with("code_challenge_method", Some("plain"))),
            "invalid_request"
        );
        assert_eq!(redirect_error(with("code_challenge_method", None)), "invalid_request");
        assert_eq!(redirect_error(with("code_challenge", Some("short"))), "invalid_request");
        assert_eq!(redirect_error(with("prompt", Some("none login"))), "invalid_request");
        assert_eq!(redirect_error(with("max_age", Some("soon"))), "invalid_request");
        assert_eq!(redirect_error(with("request", Some("x"))), "request_not_supported");
        let mut dup = base();
        dup.push(("nonce".into(), "again".into()));
        assert_eq!(redirect_error(dup), "invalid_request");
        assert_eq!(
            redirect_error(with("nonce", Some(&"x".repeat(3000)))),
            "invalid_request"
        );
    }

    #[test]
    fn pkce_matches_rfc7636_example() {
        assert_eq!(pkce_s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"), CHALLENGE);
    }
}
