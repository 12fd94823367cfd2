//! The tokens the provider signs: their claims (ID, access and
//! back-channel logout tokens), minting a grant's tokens, and verifying
//! its own.

use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::Algorithm;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{TokenError, TokenResponse, unix};
use crate::idp::Provider;
use crate::idp::config::Client;
use crate::idp::directory::UserId;
use crate::idp::keys::KeyError;
use crate::idp::store::{Grant, RefreshRecord, random_token, token_key};

pub use crate::oidc::logout_token::BACKCHANNEL_EVENT;

/// `at_hash`: the left half of the SHA-256 of the access token (OIDC Core §3.1.3.6).
pub fn at_hash(access_token: &str) -> String {
    B64.encode(&Sha256::digest(access_token.as_bytes())[..16])
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

impl Provider {
    pub(super) fn tokens_for(
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
        let server_error = |e: KeyError| {
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

    /// A signed Back-Channel Logout token for one client.
    pub fn logout_token(&self, client: &Client, user: UserId, sid: &str, now: SystemTime) -> Result<String, KeyError> {
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
