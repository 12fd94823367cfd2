//! Talking to the OpenID Provider: discovery, the JWKS (re-fetched at most
//! once per cooldown when a token names an unknown key), the code exchange
//! and refresh at the token endpoint. Every call has a timeout and a bounded
//! response body; nothing here is on the authenticated hot path.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::JwkSet;
use serde::Deserialize;

use super::id_token::{ASYMMETRIC, Expected, IdClaims, ProviderKeys, TokenRejected, validate_id_token};
use crate::gateway::config::IdpSettings;

/// Largest IdP response read.
const MAX_BODY: usize = 1024 * 1024;
/// Least time between two JWKS fetches caused by unknown `kid`s.
const JWKS_COOLDOWN: Duration = Duration::from_secs(30);
/// Clock skew tolerated in token times.
pub const LEEWAY: u64 = 60;

#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
    pub jwks_uri: String,
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
    #[serde(default)]
    pub id_token_signing_alg_values_supported: Vec<String>,
    /// RFC 7662 / RFC 8414: where opaque access tokens are introspected.
    #[serde(default)]
    pub introspection_endpoint: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("the identity provider cannot be reached: {0}")]
    Unreachable(String),
    #[error("the identity provider answered {status}: {error}")]
    Refused { status: u16, error: String },
    #[error("the identity provider's answer is not valid: {0}")]
    Invalid(String),
    #[error("the identity provider's discovery is not loaded yet")]
    NotReady,
    #[error("token rejected: {0}")]
    Token(#[from] TokenRejected),
    #[error("access token rejected: {0}")]
    Access(#[from] super::access_token::AccessRejected),
}

#[derive(Debug, Clone, Deserialize)]
pub struct TokenSet {
    pub access_token: String,
    #[serde(default)]
    pub id_token: Option<String>,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
}

pub use super::access_token::AccessClaims;

pub struct Loaded {
    pub discovery: Discovery,
    pub keys: ProviderKeys,
    pub algorithms: Vec<Algorithm>,
}

pub struct OidcClient {
    http: reqwest::Client,
    pub settings: IdpSettings,
    loaded: RwLock<Option<Arc<Loaded>>>,
    last_jwks_fetch: Mutex<Option<Instant>>,
    /// IdP call latencies and JWKS refreshes (and the rest of unigate's
    /// metrics, which live as long as this client: across reloads).
    pub metrics: Arc<crate::metrics::Metrics>,
}

async fn read_json<T: serde::de::DeserializeOwned>(mut r: reqwest::Response) -> Result<T, OidcError> {
    let mut body = Vec::new();
    while let Some(chunk) = r.chunk().await.map_err(|e| OidcError::Unreachable(e.to_string()))? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(OidcError::Invalid("response too large".into()));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| OidcError::Invalid(e.to_string()))
}

fn parse_alg(s: &str) -> Option<Algorithm> {
    s.parse::<Algorithm>().ok().filter(|a| ASYMMETRIC.contains(a))
}

impl OidcClient {
    pub fn new(settings: IdpSettings) -> Result<Self, OidcError> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| OidcError::Invalid(e.to_string()))?;
        Ok(OidcClient {
            http,
            settings,
            loaded: RwLock::new(None),
            last_jwks_fetch: Mutex::new(None),
            metrics: Arc::default(),
        })
    }

    /// Discovery and keys, once loaded.
    pub fn loaded(&self) -> Option<Arc<Loaded>> {
        self.loaded.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn ready(&self) -> bool {
        self.loaded().is_some_and(|l| !l.keys.is_empty())
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, call: &str, url: &str) -> Result<T, OidcError> {
        let started = Instant::now();
        let r = self.get_json_untimed(url).await;
        self.metrics.idp_call(call, r.is_ok(), started.elapsed());
        r
    }

    async fn get_json_untimed<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, OidcError> {
        let r = self
            .http
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| OidcError::Unreachable(e.to_string()))?;
        if !r.status().is_success() {
            return Err(OidcError::Refused {
                status: r.status().as_u16(),
                error: format!("GET {url}"),
            });
        }
        read_json(r).await
    }

    /// Fetches discovery and the JWKS. The discovered issuer must be exactly
    /// the configured one (OIDC Discovery §4.3).
    pub async fn load(&self) -> Result<(), OidcError> {
        let url = format!("{}/.well-known/openid-configuration", self.settings.issuer);
        let discovery: Discovery = self.get_json("discovery", &url).await?;
        if discovery.issuer.trim_end_matches('/') != self.settings.issuer {
            return Err(OidcError::Invalid(format!(
                "discovery names issuer `{}`, not the configured `{}`",
                discovery.issuer, self.settings.issuer
            )));
        }
        let set: JwkSet = self.get_json("jwks", &discovery.jwks_uri).await?;
        let mut algorithms: Vec<Algorithm> = discovery
            .id_token_signing_alg_values_supported
            .iter()
            .filter_map(|a| parse_alg(a))
            .collect();
        if algorithms.is_empty() {
            // OIDC Discovery: RS256 must be supported when nothing is listed.
            algorithms.push(Algorithm::RS256);
        }
        let loaded = Loaded {
            keys: ProviderKeys::from_jwks(&set),
            discovery,
            algorithms,
        };
        tracing::info!(keys = loaded.keys.len(), issuer = %self.settings.issuer, "identity provider discovery and JWKS loaded");
        *self.loaded.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(loaded));
        *self.last_jwks_fetch.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        Ok(())
    }

    /// Re-fetches the JWKS unless one was fetched within the cooldown.
    async fn refresh_keys(&self) -> bool {
        {
            let mut last = self.last_jwks_fetch.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < JWKS_COOLDOWN) {
                return false;
            }
            *last = Some(Instant::now());
        }
        let Some(current) = self.loaded() else { return false };
        let fetched = self.get_json::<JwkSet>("jwks", &current.discovery.jwks_uri).await;
        let result = if fetched.is_ok() { "succeeded" } else { "failed" };
        self.metrics.jwks_refreshes.with_label_values(&[result]).inc();
        match fetched {
            Ok(set) => {
                let next = Loaded {
                    discovery: current.discovery.clone(),
                    keys: ProviderKeys::from_jwks(&set),
                    algorithms: current.algorithms.clone(),
                };
                tracing::info!(keys = next.keys.len(), "JWKS re-fetched");
                *self.loaded.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(next));
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "JWKS re-fetch failed");
                false
            }
        }
    }

    /// Validates an ID token, re-fetching the JWKS once if it names a key
    /// not seen yet (the provider rotated).
    pub async fn validate_id_token(
        &self,
        token: &str,
        nonce: Option<&str>,
        now: SystemTime,
    ) -> Result<IdClaims, OidcError> {
        for attempt in 0..2 {
            let loaded = self.loaded().ok_or(OidcError::NotReady)?;
            let expected = Expected {
                issuer: &self.settings.issuer,
                client_id: &self.settings.client_id,
                nonce,
                algorithms: &loaded.algorithms,
                leeway: LEEWAY,
            };
            match validate_id_token(token, &loaded.keys, &expected, now) {
                Err(TokenRejected::UnknownKey) if attempt == 0 && self.refresh_keys().await => continue,
                other => return Ok(other?),
            }
        }
        Err(TokenRejected::UnknownKey.into())
    }

    /// Validates a back-channel logout token, re-fetching the JWKS once for
    /// a key not seen yet. Replays are the caller's to refuse.
    pub async fn validate_logout_token(
        &self,
        token: &str,
        now: SystemTime,
    ) -> Result<super::logout_token::LogoutClaims, super::logout_token::LogoutTokenRejected> {
        use super::logout_token::{LogoutTokenRejected, validate_logout_token};
        for attempt in 0..2 {
            let Some(loaded) = self.loaded() else {
                return Err(LogoutTokenRejected::KeysUnavailable);
            };
            let expected = Expected {
                issuer: &self.settings.issuer,
                client_id: &self.settings.client_id,
                nonce: None,
                algorithms: &loaded.algorithms,
                leeway: LEEWAY,
            };
            match validate_logout_token(token, &loaded.keys, &expected, now) {
                // A key not seen yet: the provider may have rotated. When
                // the JWKS cannot be fetched now (cooldown, provider down)
                // the token can be neither accepted nor refused: the
                // provider is asked to retry. A fresh JWKS without the key
                // refuses it.
                Err(LogoutTokenRejected::Token(TokenRejected::UnknownKey)) if attempt == 0 => {
                    // (Another request may have fetched the keys meanwhile.)
                    let fresh =
                        self.refresh_keys().await || self.loaded().is_some_and(|now| !Arc::ptr_eq(&now, &loaded));
                    if !fresh {
                        return Err(LogoutTokenRejected::KeysUnavailable);
                    }
                }
                other => return other,
            }
        }
        Err(LogoutTokenRejected::Token(TokenRejected::UnknownKey))
    }

    /// What a bearer token must be for this deployment.
    fn access_expected<'a>(&'a self, loaded: &'a Loaded) -> super::access_token::AccessExpected<'a> {
        super::access_token::AccessExpected {
            issuer: &self.settings.issuer,
            api_audience: self.settings.api_audience.as_deref(),
            client_id: &self.settings.client_id,
            algorithms: &loaded.algorithms,
            leeway: LEEWAY,
        }
    }

    /// Validates a JWT bearer token as an RFC 9068 access token for
    /// `api_audience` (see `access_token`), re-fetching the JWKS once for a
    /// key not seen yet.
    pub async fn validate_access_token(&self, token: &str, now: SystemTime) -> Result<AccessClaims, OidcError> {
        use super::access_token::{AccessRejected, validate_access_jwt};
        for attempt in 0..2 {
            let loaded = self.loaded().ok_or(OidcError::NotReady)?;
            match validate_access_jwt(token, &loaded.keys, &self.access_expected(&loaded), now) {
                Err(AccessRejected::Token(TokenRejected::UnknownKey)) if attempt == 0 && self.refresh_keys().await => {
                    continue;
                }
                other => return Ok(other?),
            }
        }
        Err(TokenRejected::UnknownKey.into())
    }

    /// Whether the provider offers token introspection (RFC 7662).
    pub fn can_introspect(&self) -> bool {
        self.loaded()
            .is_some_and(|l| l.discovery.introspection_endpoint.is_some())
    }

    /// Asks the provider about an opaque bearer token (RFC 7662), with
    /// this client's credentials as at the token endpoint, and reads the
    /// answer (see `access_token::from_introspection`).
    pub async fn introspect(&self, token: &str, now: SystemTime) -> Result<AccessClaims, OidcError> {
        let started = Instant::now();
        let r = self.introspect_untimed(token).await;
        self.metrics.idp_call("introspection", r.is_ok(), started.elapsed());
        let loaded = self.loaded().ok_or(OidcError::NotReady)?;
        Ok(super::access_token::from_introspection(
            &r?,
            &self.access_expected(&loaded),
            now,
        )?)
    }

    async fn introspect_untimed(&self, token: &str) -> Result<serde_json::Value, OidcError> {
        let loaded = self.loaded().ok_or(OidcError::NotReady)?;
        let endpoint = loaded
            .discovery
            .introspection_endpoint
            .as_deref()
            .ok_or_else(|| OidcError::Invalid("the provider has no introspection_endpoint".into()))?;
        let r = self
            .http
            .post(endpoint)
            .basic_auth(
                form_encode(&self.settings.client_id),
                Some(form_encode(self.settings.client_secret.expose())),
            )
            .header("accept", "application/json")
            .form(&[("token", token), ("token_type_hint", "access_token")])
            .send()
            .await
            .map_err(|e| OidcError::Unreachable(e.to_string()))?;
        let status = r.status().as_u16();
        if status != 200 {
            return Err(OidcError::Refused {
                status,
                error: "introspection".into(),
            });
        }
        read_json(r).await
    }

    async fn token_request(&self, form: &[(&str, &str)]) -> Result<TokenSet, OidcError> {
        let started = Instant::now();
        let r = self.token_request_untimed(form).await;
        self.metrics.idp_call("token", r.is_ok(), started.elapsed());
        r
    }

    async fn token_request_untimed(&self, form: &[(&str, &str)]) -> Result<TokenSet, OidcError> {
        let loaded = self.loaded().ok_or(OidcError::NotReady)?;
        let r = self
            .http
            .post(&loaded.discovery.token_endpoint)
            .basic_auth(
                form_encode(&self.settings.client_id),
                Some(form_encode(self.settings.client_secret.expose())),
            )
            .form(form)
            .send()
            .await
            .map_err(|e| OidcError::Unreachable(e.to_string()))?;
        let status = r.status().as_u16();
        if status != 200 {
            let body: serde_json::Value = read_json(r).await.unwrap_or_default();
            return Err(OidcError::Refused {
                status,
                error: body["error"].as_str().unwrap_or("unknown").chars().take(64).collect(),
            });
        }
        read_json(r).await
    }

    /// Redeems an authorization code (client_secret_basic, PKCE verifier).
    pub async fn exchange(&self, code: &str, verifier: &str, redirect_uri: &str) -> Result<TokenSet, OidcError> {
        self.token_request(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ])
        .await
    }

    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenSet, OidcError> {
        self.token_request(&[("grant_type", "refresh_token"), ("refresh_token", refresh_token)])
            .await
    }
}

/// RFC 6749 §2.3.1: client id and secret are form-encoded inside Basic.
fn form_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
