//! Talking to the OpenID Provider: discovery, the JWKS (re-fetched at most
//! once per cooldown when a token names an unknown key), the code exchange
//! and refresh at the token endpoint. Every call has a timeout and a bounded
//! response body; nothing here is on the authenticated hot path.
//!
//! By concern: discovery and the JWKS (`discovery`), checking tokens with
//! the provider's keys and introspection (`validation`), the token
//! endpoint (`token_endpoint`), and UserInfo and the user's profile
//! (`userinfo`). Here: the client, its types, and the HTTP plumbing.

mod discovery;
mod token_endpoint;
mod userinfo;
mod validation;

use std::sync::{Arc, RwLock};
use std::time::Instant;

use jsonwebtoken::Algorithm;
use serde::Deserialize;

use super::id_token::{ASYMMETRIC, ProviderKeys, TokenRejected};
use crate::config::settings::IdpSettings;
use discovery::KidRefetch;

/// Largest IdP response read.
const MAX_BODY: usize = 1024 * 1024;
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
    /// RFC 9207: the provider names itself (`iss`) in every authorization
    /// response; one without is then refused.
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
    /// Algorithms a signed UserInfo answer may use.
    #[serde(default)]
    pub userinfo_signing_alg_values_supported: Vec<String>,
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
    /// RFC 6749 §5.1: required; unigate uses only `Bearer` tokens.
    #[serde(default)]
    pub token_type: Option<String>,
    #[serde(default)]
    pub id_token: Option<String>,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
}

pub use super::access_token::AccessClaims;

/// What an ID token was issued with, for the checks that tie it to them.
#[derive(Debug, Clone, Copy, Default)]
pub struct IssuedWith<'a> {
    /// The nonce of the authorization request (none for a refresh).
    pub nonce: Option<&'a str>,
    /// The access token of the same token response (`at_hash`).
    pub access_token: Option<&'a str>,
    /// The authorization code redeemed (`c_hash`).
    pub code: Option<&'a str>,
    /// The `max_age` of the authorization request (`auth_time`).
    pub max_age: Option<u64>,
}

impl TokenSet {
    /// RFC 6749 §5.1, §7.1: the type is required, and unigate can use only
    /// `Bearer` tokens (a DPoP or MAC token would need a key it never had).
    pub fn check_type(&self) -> Result<(), OidcError> {
        match self.token_type.as_deref() {
            Some(t) if t.eq_ignore_ascii_case("bearer") => Ok(()),
            Some(t) => Err(OidcError::Invalid(format!(
                "token_type `{}` is not `Bearer`",
                t.chars().take(32).collect::<String>()
            ))),
            None => Err(OidcError::Invalid("the token response has no token_type".into())),
        }
    }
}

pub struct Loaded {
    pub discovery: Discovery,
    /// The authorization endpoint, parsed once (None: not a URL).
    pub authorize: Option<super::QueryBase>,
    pub keys: ProviderKeys,
    pub algorithms: Vec<Algorithm>,
}

pub struct OidcClient {
    http: reqwest::Client,
    pub settings: IdpSettings,
    loaded: RwLock<Option<Arc<Loaded>>>,
    /// When a token with an unknown `kid` last caused a JWKS fetch; held
    /// across the fetch, so that concurrent unknown `kid`s share one.
    kid_refetch: tokio::sync::Mutex<KidRefetch>,
    /// IdP call latencies and JWKS refreshes (and the rest of unigate's
    /// metrics, which live as long as this client: across reloads).
    pub metrics: Arc<crate::metrics::Metrics>,
}

async fn read_body(mut r: reqwest::Response) -> Result<Vec<u8>, OidcError> {
    let mut body = Vec::new();
    while let Some(chunk) = r.chunk().await.map_err(|e| OidcError::Unreachable(e.to_string()))? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(OidcError::Invalid("response too large".into()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Sends a request to the provider; any answer but a 200 is `Refused`,
/// named `call`.
async fn send_for_200(request: reqwest::RequestBuilder, call: &str) -> Result<reqwest::Response, OidcError> {
    let r = request
        .send()
        .await
        .map_err(|e| OidcError::Unreachable(e.to_string()))?;
    let status = r.status().as_u16();
    if status != 200 {
        return Err(OidcError::Refused {
            status,
            error: call.into(),
        });
    }
    Ok(r)
}

async fn read_json<T: serde::de::DeserializeOwned>(r: reqwest::Response) -> Result<T, OidcError> {
    serde_json::from_slice(&read_body(r).await?).map_err(|e| OidcError::Invalid(e.to_string()))
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
            kid_refetch: tokio::sync::Mutex::new(KidRefetch::default()),
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
        self.timed(call, self.get_json_untimed(url)).await
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

    /// The provider's issuer exactly as its discovery spells it (tokens
    /// must name it so, trailing `/` and all: Auth0's ends in one); the
    /// configured one until discovery is loaded.
    pub fn issuer(&self) -> String {
        self.loaded()
            .map_or_else(|| self.settings.issuer.clone(), |l| l.discovery.issuer.clone())
    }

    /// Runs one call to the provider, recording its latency and outcome
    /// as `call`.
    async fn timed<T>(
        &self,
        call: &str,
        f: impl std::future::Future<Output = Result<T, OidcError>>,
    ) -> Result<T, OidcError> {
        let started = Instant::now();
        let r = f.await;
        self.metrics.idp_call(call, r.is_ok(), started.elapsed());
        r
    }

    /// This client's credentials as HTTP Basic (client_secret_basic).
    fn client_auth(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        request.basic_auth(
            form_encode(&self.settings.client_id),
            Some(form_encode(self.settings.client_secret.expose())),
        )
    }

    /// An endpoint from discovery (`name` for the error when it has none).
    fn endpoint(&self, name: &str, pick: impl Fn(&Discovery) -> Option<&String>) -> Result<String, OidcError> {
        let loaded = self.loaded().ok_or(OidcError::NotReady)?;
        pick(&loaded.discovery)
            .cloned()
            .ok_or_else(|| OidcError::Invalid(format!("the provider has no {name}")))
    }
}

/// RFC 6749 §2.3.1: client id and secret are form-encoded inside Basic.
fn form_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
