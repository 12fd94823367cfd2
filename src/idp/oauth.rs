//! The provider's OAuth 2.0 / OpenID Connect logic, apart from HTTP: checking
//! authorization requests, issuing codes, the token endpoint's grants, ID and
//! access tokens, userinfo, and logout tokens. Time is a parameter.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::Algorithm;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Provider;
use super::config::Client;
use super::directory::{Directory, UserId};
use super::store::{CodeRecord, Grant, IdpSession, RefreshRecord, random_token, token_key};

/// Longest accepted value of any request parameter.
pub const MAX_PARAM_LEN: usize = 2048;

pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

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

/// Parses query or form pairs, refusing repeated or oversized parameters.
pub fn params_map(pairs: Vec<(String, String)>) -> Result<HashMap<String, String>, String> {
    let mut map = HashMap::new();
    for (k, v) in pairs {
        if v.len() > MAX_PARAM_LEN || k.len() > 64 {
            return Err(format!("parameter `{}` is too long", truncate(&k, 64)));
        }
        if map.insert(k.clone(), v).is_some() {
            return Err(format!("parameter `{}` is repeated", truncate(&k, 64)));
        }
    }
    Ok(map)
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
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

pub use crate::crypto::pkce_s256;
pub use crate::oidc::with_params;

/// `at_hash`: the left half of the SHA-256 of the access token (OIDC Core §3.1.3.6).
pub fn at_hash(access_token: &str) -> String {
    B64.encode(&Sha256::digest(access_token.as_bytes())[..16])
}

/// An error from the token endpoint (RFC 6749 §5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenError {
    pub status: u16,
    pub error: &'static str,
    pub description: String,
    /// The client tried HTTP Basic: answer 401 with `WWW-Authenticate`.
    pub basic_challenge: bool,
}

impl TokenError {
    fn new(error: &'static str, description: impl Into<String>) -> Self {
        TokenError {
            status: 400,
            error,
            description: description.into(),
            basic_challenge: false,
        }
    }
    /// RFC 6749 §5.2 with RFC 7235: a 401 always carries a challenge.
    fn invalid_client(_basic: bool) -> Self {
        TokenError {
            status: 401,
            error: "invalid_client",
            description: "client authentication failed".into(),
            basic_challenge: true,
        }
    }
}

/// How the client authenticated at the token endpoint.
#[derive(Debug, Clone)]
pub enum ClientAuth {
    Basic { id: String, secret: String },
    Post { id: String, secret: String },
    None,
}

impl ClientAuth {
    /// From the `Authorization` header value (if any) and the form. Using
    /// both methods at once is refused (RFC 6749 §2.3).
    pub fn from_request(authorization: Option<&str>, form: &HashMap<String, String>) -> Result<ClientAuth, TokenError> {
        let post = form.get("client_secret").map(|secret| ClientAuth::Post {
            id: form.get("client_id").cloned().unwrap_or_default(),
            secret: secret.clone(),
        });
        let basic = match authorization {
            None => None,
            Some(h) => {
                let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
                if !scheme.eq_ignore_ascii_case("basic") {
                    return Err(TokenError::invalid_client(false));
                }
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(rest.trim())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| TokenError::invalid_client(true))?;
                let (id, secret) = decoded
                    .split_once(':')
                    .ok_or_else(|| TokenError::invalid_client(true))?;
                // RFC 6749 §2.3.1: both parts are form-urlencoded first.
                let dec = |s: &str| -> String {
                    form_urlencoded::parse(format!("x={s}").as_bytes())
                        .next()
                        .map(|(_, v)| v.into_owned())
                        .unwrap_or_default()
                };
                Some(ClientAuth::Basic {
                    id: dec(id),
                    secret: dec(secret),
                })
            }
        };
        match (basic, post) {
            (Some(_), Some(_)) => Err(TokenError::new(
                "invalid_request",
                "use one client authentication method, not two",
            )),
            (Some(b), None) => Ok(b),
            (None, Some(p)) => Ok(p),
            (None, None) => Ok(ClientAuth::None),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: u64,
    pub refresh_token: String,
    pub id_token: String,
    pub scope: String,
}

/// ID token claims (OIDC Core §2 plus KaseyaOne's profile claims).
#[derive(Debug, Serialize, Deserialize, Clone)]
pub struct IdTokenClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub azp: String,
    pub exp: u64,
    pub iat: u64,
    pub auth_time: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    pub sid: String,
    #[serde(flatten)]
    pub profile: ProfileClaims,
    pub amr: Vec<String>,
    pub at_hash: String,
}

/// The user's claims that ID and access tokens both carry.
#[derive(Debug, Serialize, Deserialize, Clone)]
pub struct ProfileClaims {
    /// With the `email` scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// With the `profile` scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<String>,
    /// With the `profile` scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub company: String,
    pub groups: Vec<String>,
}

/// Access token claims (RFC 9068).
#[derive(Debug, Serialize, Deserialize, Clone)]
pub struct AccessTokenClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub client_id: String,
    pub exp: u64,
    pub iat: u64,
    pub jti: String,
    pub scope: String,
    pub sid: String,
    #[serde(flatten)]
    pub profile: ProfileClaims,
}

/// Back-Channel Logout token claims (Back-Channel Logout 1.0 §2.4).
#[derive(Debug, Serialize, Deserialize, Clone)]
pub struct LogoutTokenClaims {
    pub iss: String,
    pub aud: String,
    pub iat: u64,
    pub exp: u64,
    pub jti: String,
    pub sub: String,
    pub sid: String,
    pub events: serde_json::Value,
}

pub const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

impl Provider {
    fn authenticate_client(&self, auth: &ClientAuth) -> Result<&Client, TokenError> {
        let (id, secret, basic) = match auth {
            ClientAuth::Basic { id, secret } => (id, secret, true),
            ClientAuth::Post { id, secret } => (id, secret, false),
            ClientAuth::None => return Err(TokenError::invalid_client(false)),
        };
        match self.dir.client(id) {
            Some(c) if c.client_secret.matches(secret.as_bytes()) => Ok(c),
            _ => Err(TokenError::invalid_client(basic)),
        }
    }

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

    /// The token endpoint: `authorization_code` and `refresh_token` grants.
    pub fn token(
        &self,
        auth: &ClientAuth,
        form: &HashMap<String, String>,
        now: SystemTime,
    ) -> Result<TokenResponse, TokenError> {
        let client = self.authenticate_client(auth)?;
        match form.get("grant_type").map(String::as_str) {
            Some("authorization_code") => self.exchange_code(client, form, now),
            Some("refresh_token") => self.refresh(client, form, now),
            None => Err(TokenError::new("invalid_request", "grant_type is missing")),
            Some(_) => Err(TokenError::new(
                "unsupported_grant_type",
                "use authorization_code or refresh_token",
            )),
        }
    }

    fn exchange_code(
        &self,
        client: &Client,
        form: &HashMap<String, String>,
        now: SystemTime,
    ) -> Result<TokenResponse, TokenError> {
        let code = form
            .get("code")
            .ok_or_else(|| TokenError::new("invalid_request", "code is missing"))?;
        let invalid = || TokenError::new("invalid_grant", "the code is invalid, expired or already used");
        let record = self.stores.codes.get(&token_key(code)).ok_or_else(invalid)?;
        {
            // Another client presenting this code learns nothing and revokes nothing.
            if record.request.client_id != client.client_id {
                return Err(invalid());
            }
            let mut redeemed = record.redeemed.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(grant_id) = redeemed.as_ref() {
                // RFC 6749 §4.1.2: a reused code revokes what it issued.
                if let Some(g) = self.stores.grants.get(grant_id) {
                    g.revoke();
                }
                tracing::warn!(client.id = %client.client_id, "authorization code reused; its grant is revoked");
                return Err(invalid());
            }
            if record.issued.elapsed() > self.cfg.tokens.code_ttl {
                return Err(invalid());
            }
            if form.get("redirect_uri") != Some(&record.request.redirect_uri) {
                return Err(TokenError::new(
                    "invalid_grant",
                    "redirect_uri does not match the authorization request",
                ));
            }
            let verifier = form
                .get("code_verifier")
                .ok_or_else(|| TokenError::new("invalid_grant", "code_verifier is missing (PKCE)"))?;
            // RFC 7636 §4.1: 43 to 128 unreserved characters.
            let well_formed = (43..=128).contains(&verifier.len())
                && verifier
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
            if !well_formed || pkce_s256(verifier) != record.request.code_challenge {
                return Err(TokenError::new(
                    "invalid_grant",
                    "code_verifier does not match the code_challenge",
                ));
            }
            // The IdP session the code came from must still be alive, and the
            // grant is attached to it under its lock, so a logout either
            // happened before (no tokens) or will revoke this grant.
            let session = self.session_by_sid(&record.sid).ok_or_else(invalid)?;
            let mut session_grants = session.grants.lock().unwrap_or_else(|p| p.into_inner());
            let Some(session_grants) = session_grants.as_mut() else {
                return Err(invalid());
            };
            let grant_id = random_token();
            let grant = Arc::new(Grant {
                client_id: client.client_id.clone(),
                user: record.user,
                sid: record.sid.clone(),
                scope: record.request.scope.clone(),
                auth_time: record.auth_time,
                revoked: Default::default(),
            });
            let tokens = self.tokens_for(
                client,
                &grant_id,
                &grant,
                &grant.scope,
                record.request.nonce.clone(),
                now,
            )?;
            self.stores.grants.insert(grant_id.clone(), grant.clone());
            session_grants.push(grant_id.clone());
            *redeemed = Some(grant_id);
            Ok(tokens)
        }
    }

    fn refresh(
        &self,
        client: &Client,
        form: &HashMap<String, String>,
        now: SystemTime,
    ) -> Result<TokenResponse, TokenError> {
        let token = form
            .get("refresh_token")
            .ok_or_else(|| TokenError::new("invalid_request", "refresh_token is missing"))?;
        let invalid = || TokenError::new("invalid_grant", "the refresh token is invalid, expired or revoked");
        let record = self.stores.refresh.get(&token_key(token)).ok_or_else(invalid)?;
        let grant = self.stores.grants.get(&record.grant_id).ok_or_else(invalid)?;
        if grant.client_id != client.client_id || grant.is_revoked() {
            return Err(invalid());
        }
        if record.used.load(Ordering::Acquire) {
            // A rotated-out token came back: someone holds a copy. Revoke the family.
            grant.revoke();
            tracing::warn!(client.id = %client.client_id, "refresh token reused; its grant is revoked");
            return Err(invalid());
        }
        // RFC 6749 §6: a refresh may narrow the scope, never widen it.
        let scope = match form.get("scope") {
            None => grant.scope.clone(),
            Some(scope) => {
                let granted: Vec<&str> = grant.scope.split(' ').collect();
                if !scope.split(' ').all(|s| granted.contains(&s)) {
                    return Err(TokenError::new("invalid_scope", "a refresh cannot widen the scope"));
                }
                scope.clone()
            }
        };
        let tokens = self.tokens_for(client, &record.grant_id, &grant, &scope, None, now)?;
        // Used up only now that the new tokens exist; a concurrent second
        // use of the same token loses here and counts as reuse.
        if record.used.swap(true, Ordering::AcqRel) {
            grant.revoke();
            return Err(invalid());
        }
        Ok(tokens)
    }

    fn tokens_for(
        &self,
        client: &Client,
        grant_id: &str,
        grant: &Grant,
        scope: &str,
        nonce: Option<String>,
        now: SystemTime,
    ) -> Result<TokenResponse, TokenError> {
        let has = |s: &str| scope.split(' ').any(|x| x == s);
        let (email_scope, profile_scope) = (has("email"), has("profile"));
        let user = self.dir.user(grant.user);
        let profile = ProfileClaims {
            email: email_scope.then(|| user.email.clone()),
            preferred_username: profile_scope.then(|| user.username.clone()),
            name: profile_scope.then(|| user.display_name.clone()),
            company: user.company.clone(),
            groups: user.groups.clone(),
        };
        let sub = self.dir.sub(grant.user).to_string();
        let iat = unix(now);
        let t = &self.cfg.tokens;
        let server_error = |e: super::keys::KeyError| {
            tracing::error!(error = %e, "token signing failed");
            TokenError {
                status: 500,
                error: "server_error",
                description: "token signing failed".into(),
                basic_challenge: false,
            }
        };
        let jti = random_token();
        let access = AccessTokenClaims {
            iss: self.issuer.clone(),
            sub: sub.clone(),
            aud: self.api_audience(client),
            client_id: client.client_id.clone(),
            exp: iat + t.access_token_ttl.as_secs(),
            iat,
            jti: jti.clone(),
            scope: scope.to_string(),
            sid: grant.sid.clone(),
            profile: profile.clone(),
        };
        let key = self.keys.current(client.id_token_alg);
        let access_token = if client.opaque_access_tokens {
            let t = random_token();
            self.stores.opaque.insert(token_key(&t), Arc::new(access));
            t
        } else {
            key.sign("at+jwt", &access).map_err(server_error)?
        };
        self.stores.access.insert(jti, grant_id.to_string());
        let id = IdTokenClaims {
            iss: self.issuer.clone(),
            sub,
            aud: client.client_id.clone(),
            azp: client.client_id.clone(),
            exp: iat + t.id_token_ttl.as_secs(),
            iat,
            auth_time: grant.auth_time,
            nonce,
            sid: grant.sid.clone(),
            profile: profile.clone(),
            amr: vec!["pwd".into(), "otp".into()],
            at_hash: at_hash(&access_token),
        };
        let id_token = key.sign("JWT", &id).map_err(server_error)?;
        let refresh_token = random_token();
        self.stores.refresh.insert(
            token_key(&refresh_token),
            Arc::new(RefreshRecord {
                grant_id: grant_id.to_string(),
                used: Default::default(),
            }),
        );
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer".into(),
            expires_in: t.access_token_ttl.as_secs(),
            refresh_token,
            id_token,
            scope: scope.to_string(),
        })
    }

    /// Verifies one of this provider's own tokens (signature, issuer, `typ`);
    /// `exp` is checked against `now` unless `allow_expired`.
    pub fn verify_own<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        typ: &str,
        allow_expired: bool,
        now: SystemTime,
    ) -> Option<T> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        if header.typ.as_deref() != Some(typ) || !matches!(header.alg, Algorithm::ES256 | Algorithm::RS256) {
            return None;
        }
        let key = self.keys.find(header.kid.as_deref()?, now)?;
        if key.alg != header.alg {
            return None;
        }
        let mut v = jsonwebtoken::Validation::new(key.alg);
        v.validate_exp = false;
        v.validate_aud = false;
        v.required_spec_claims.clear();
        v.set_issuer(&[&self.issuer]);
        let data = jsonwebtoken::decode::<serde_json::Value>(token, key.decoding_key(), &v).ok()?;
        let exp = data.claims.get("exp")?.as_u64()?;
        if !allow_expired && exp <= unix(now) {
            return None;
        }
        serde_json::from_value(data.claims).ok()
    }

    /// The `aud` of a client's access tokens: its `api_audience`, or the
    /// issuer + `/api`.
    pub fn api_audience(&self, client: &Client) -> String {
        client
            .api_audience
            .clone()
            .unwrap_or_else(|| format!("{}/api", self.issuer))
    }

    /// The claims of a live access token (a JWT or an opaque one) whose
    /// grant is not revoked.
    fn live_access_token(&self, token: &str, now: SystemTime) -> Option<(AccessTokenClaims, Arc<Grant>)> {
        let claims: AccessTokenClaims = if token.split('.').count() == 3 {
            self.verify_own(token, "at+jwt", false, now)?
        } else {
            let c = self.stores.opaque.get(&token_key(token))?;
            if c.exp <= unix(now) {
                return None;
            }
            (*c).clone()
        };
        let grant_id = self.stores.access.get(&claims.jti)?;
        let grant = self.stores.grants.get(&grant_id)?;
        (!grant.is_revoked()).then_some((claims, grant))
    }

    /// Token introspection (RFC 7662) for an authenticated client: the
    /// token's claims with `active: true`, or only `active: false` for a
    /// token that is unknown, expired, revoked, or not an access token.
    pub fn introspect(
        &self,
        auth: &ClientAuth,
        form: &HashMap<String, String>,
        now: SystemTime,
    ) -> Result<serde_json::Value, TokenError> {
        self.authenticate_client(auth)?;
        let token = form
            .get("token")
            .ok_or_else(|| TokenError::new("invalid_request", "token is missing"))?;
        let Some((claims, _)) = self.live_access_token(token, now) else {
            return Ok(serde_json::json!({ "active": false }));
        };
        let mut v = serde_json::to_value(&claims).unwrap_or_default();
        v["active"] = true.into();
        v["token_type"] = "Bearer".into();
        Ok(v)
    }

    /// The userinfo response for a bearer access token, or `None` when the
    /// token is invalid, expired or revoked.
    pub fn userinfo(&self, access_token: &str, now: SystemTime) -> Option<serde_json::Value> {
        let (claims, grant) = self.live_access_token(access_token, now)?;
        let user = self.dir.user(grant.user);
        let has = |s: &str| claims.scope.split(' ').any(|x| x == s);
        let mut info = serde_json::json!({
            "sub": claims.sub,
            "company": user.company,
            "groups": user.groups,
        });
        if has("email") {
            info["email"] = user.email.clone().into();
            info["email_verified"] = true.into();
        }
        if has("profile") {
            info["preferred_username"] = user.username.clone().into();
            info["name"] = user.display_name.clone().into();
        }
        Some(info)
    }

    pub fn session_by_sid(&self, sid: &str) -> Option<Arc<IdpSession>> {
        let key = self.stores.sid_index.get(sid)?;
        self.stores.sessions.get(&key)
    }

    /// A signed Back-Channel Logout token for one client.
    pub fn logout_token(
        &self,
        client: &Client,
        user: UserId,
        sid: &str,
        now: SystemTime,
    ) -> Result<String, super::keys::KeyError> {
        let iat = unix(now);
        let claims = LogoutTokenClaims {
            iss: self.issuer.clone(),
            aud: client.client_id.clone(),
            iat,
            exp: iat + 120,
            jti: random_token(),
            sub: self.dir.sub(user).to_string(),
            sid: sid.to_string(),
            events: serde_json::json!({ BACKCHANNEL_EVENT: {} }),
        };
        self.keys.current(client.id_token_alg).sign("logout+jwt", &claims)
    }
}

/// Retry schedule for back-channel logout delivery.
pub const LOGOUT_RETRY_DELAYS: [Duration; 3] = [
    Duration::from_millis(200),
    Duration::from_secs(1),
    Duration::from_secs(3),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idp::config::IdpConfig;
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

    #[test]
    fn client_auth_parsing() {
        let form: HashMap<String, String> = HashMap::new();
        let b = base64::engine::general_purpose::STANDARD.encode("my%20app:p%3Ass");
        match ClientAuth::from_request(Some(&format!("Basic {b}")), &form).unwrap() {
            ClientAuth::Basic { id, secret } => {
                assert_eq!(id, "my app");
                assert_eq!(secret, "p:ss");
            }
            other => panic!("{other:?}"),
        }
        let mut both = HashMap::new();
        both.insert("client_id".to_string(), "x".to_string());
        both.insert("client_secret".to_string(), "y".to_string());
        assert!(ClientAuth::from_request(Some(&format!("Basic {b}")), &both).is_err());
        assert!(ClientAuth::from_request(Some("Basic !!!"), &form).is_err());
    }
}
