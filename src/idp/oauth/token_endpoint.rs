//! The token endpoint (RFC 6749 §3.2): client authentication (Basic or
//! form, never both), and the `authorization_code` (PKCE-checked, once)
//! and `refresh_token` (rotated, reuse revokes the grant) grants, both only
//! for a user still in the directory.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::pkce_s256;
use crate::idp::Provider;
use crate::idp::config::Client;
use crate::idp::store::{Grant, IdpSession, random_token, token_key};

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
    pub(crate) fn new(error: &'static str, description: impl Into<String>) -> Self {
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

impl Provider {
    pub(super) fn authenticate_client(&self, auth: &ClientAuth) -> Result<&Client, TokenError> {
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
            // Nor for a user taken out of the directory since.
            if !self.user_active(record.user, now) {
                return Err(invalid());
            }
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
        if !self.user_active(grant.user, now) {
            grant.revoke();
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

    pub fn session_by_sid(&self, sid: &str) -> Option<Arc<IdpSession>> {
        let key = self.stores.sid_index.get(sid)?;
        self.stores.sessions.get(&key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
