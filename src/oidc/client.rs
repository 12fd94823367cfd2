//! Talking to the OpenID Provider: discovery, the JWKS (re-fetched at most
//! once per cooldown when a token names an unknown key), the code exchange
//! and refresh at the token endpoint. Every call has a timeout and a bounded
//! response body; nothing here is on the authenticated hot path.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use jsonwebtoken::Algorithm;
use serde::Deserialize;

use super::id_token::{ASYMMETRIC, Expected, IdClaims, ProviderKeys, TokenRejected, validate_id_token};
use crate::config::settings::IdpSettings;

/// Largest IdP response read.
const MAX_BODY: usize = 1024 * 1024;
/// Least time after a JWKS fetch caused by an unknown `kid` before the
/// next such fetch (a flood of made-up `kid`s must not flood the provider).
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

/// When JWKS fetches for unknown `kid`s last happened.
#[derive(Default)]
struct KidRefetch {
    /// For a token anyone can send (bearer, logout token).
    by_anyone: Option<Instant>,
    /// For a token the provider handed over (at most one a second, for a
    /// provider that names keys it does not publish).
    by_provider: Option<Instant>,
}

/// Least time between two JWKS fetches for tokens from the provider.
const PROVIDER_REFETCH_FLOOR: Duration = Duration::from_secs(1);

pub struct Loaded {
    pub discovery: Discovery,
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

    /// The provider's issuer exactly as its discovery spells it (tokens
    /// must name it so, trailing `/` and all: Auth0's ends in one); the
    /// configured one until discovery is loaded.
    pub fn issuer(&self) -> String {
        self.loaded()
            .map_or_else(|| self.settings.issuer.clone(), |l| l.discovery.issuer.clone())
    }

    /// Fetches discovery and the JWKS. The discovered issuer must be the
    /// configured one (OIDC Discovery §4.3), up to a trailing `/`, which
    /// operators often add or leave out; from then on tokens must name the
    /// issuer exactly as discovery does.
    pub async fn load(&self) -> Result<(), OidcError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.settings.issuer.trim_end_matches('/')
        );
        let discovery: Discovery = self.get_json("discovery", &url).await?;
        if discovery.issuer.trim_end_matches('/') != self.settings.issuer.trim_end_matches('/') {
            return Err(OidcError::Invalid(format!(
                "discovery names issuer `{}`, not the configured `{}`",
                discovery.issuer, self.settings.issuer
            )));
        }
        let keys = self.fetch_keys(&discovery.jwks_uri).await?;
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
            keys,
            discovery,
            algorithms,
        };
        tracing::info!(keys = loaded.keys.len(), issuer = %self.settings.issuer, "identity provider discovery and JWKS loaded");
        *self.loaded.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(loaded));
        Ok(())
    }

    /// The signing keys of the JWKS at `uri`; entries that cannot be used
    /// are skipped (and logged), not fatal.
    async fn fetch_keys(&self, uri: &str) -> Result<ProviderKeys, OidcError> {
        let doc: serde_json::Value = self.get_json("jwks", uri).await?;
        let (keys, skipped) =
            ProviderKeys::from_json(&doc).ok_or_else(|| OidcError::Invalid("the JWKS has no `keys` list".into()))?;
        if skipped > 0 {
            tracing::info!(skipped, "JWKS entries that are not usable signing keys were skipped");
        }
        Ok(keys)
    }

    /// Re-fetches the JWKS for a token naming a key not seen in `seen`
    /// (the provider rotated): at once, however recently the keys were
    /// loaded, and one fetch for all the requests that need it. After a
    /// fetch caused by a token anyone can send (a bearer or logout token),
    /// the next such fetch waits for the cooldown; a token the provider
    /// itself handed over (`from_provider`: an ID token from the token
    /// endpoint, a signed UserInfo answer) is never held back by it, so
    /// made-up `kid`s cannot block logins after a real rotation. True when
    /// keys newer than `seen` are loaded.
    async fn refresh_keys(&self, seen: &Arc<Loaded>, from_provider: bool) -> bool {
        let mut last = self.kid_refetch.lock().await;
        // Someone fetched while this request waited: try those keys.
        if self.loaded().is_some_and(|now| !Arc::ptr_eq(&now, seen)) {
            return true;
        }
        let (when, wait) = if from_provider {
            (&mut last.by_provider, PROVIDER_REFETCH_FLOOR)
        } else {
            (&mut last.by_anyone, JWKS_COOLDOWN)
        };
        if when.is_some_and(|t| t.elapsed() < wait) {
            return false;
        }
        *when = Some(Instant::now());
        let fetched = self.fetch_keys(&seen.discovery.jwks_uri).await;
        let result = if fetched.is_ok() { "succeeded" } else { "failed" };
        self.metrics.jwks_refreshes.with_label_values(&[result]).inc();
        match fetched {
            Ok(keys) => {
                let next = Loaded {
                    discovery: seen.discovery.clone(),
                    keys,
                    algorithms: seen.algorithms.clone(),
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
    /// not seen yet (the provider rotated). `login` says what the token
    /// was issued with; `max_id_token_age` bounds its `iat`.
    pub async fn validate_id_token(
        &self,
        token: &str,
        login: &IssuedWith<'_>,
        now: SystemTime,
    ) -> Result<IdClaims, OidcError> {
        for attempt in 0..2 {
            let loaded = self.loaded().ok_or(OidcError::NotReady)?;
            let expected = Expected {
                nonce: login.nonce,
                access_token: login.access_token,
                code: login.code,
                max_age: login.max_age,
                max_iat_age: Some(self.settings.max_id_token_age.as_secs()),
                ..Expected::new(
                    &loaded.discovery.issuer,
                    &self.settings.client_id,
                    &loaded.algorithms,
                    LEEWAY,
                )
            };
            match validate_id_token(token, &loaded.keys, &expected, now) {
                Err(TokenRejected::UnknownKey) if attempt == 0 && self.refresh_keys(&loaded, true).await => continue,
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
            let expected = Expected::new(
                &loaded.discovery.issuer,
                &self.settings.client_id,
                &loaded.algorithms,
                LEEWAY,
            );
            match validate_logout_token(token, &loaded.keys, &expected, now) {
                // A key not seen yet: the provider may have rotated. When
                // the JWKS cannot be fetched now (cooldown, provider down)
                // the token can be neither accepted nor refused: the
                // provider is asked to retry. A fresh JWKS without the key
                // refuses it.
                Err(LogoutTokenRejected::Token(TokenRejected::UnknownKey)) if attempt == 0 => {
                    if !self.refresh_keys(&loaded, false).await {
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
            issuer: &loaded.discovery.issuer,
            api_audience: self.settings.api_audience.as_deref(),
            client_id: &self.settings.client_id,
            algorithms: &loaded.algorithms,
            leeway: LEEWAY,
            claims: &self.settings.claims,
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
                Err(AccessRejected::Token(TokenRejected::UnknownKey))
                    if attempt == 0 && self.refresh_keys(&loaded, false).await =>
                {
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

    /// An endpoint from discovery (`name` for the error when it has none).
    fn endpoint(&self, name: &str, pick: impl Fn(&Discovery) -> Option<&String>) -> Result<String, OidcError> {
        let loaded = self.loaded().ok_or(OidcError::NotReady)?;
        pick(&loaded.discovery)
            .cloned()
            .ok_or_else(|| OidcError::Invalid(format!("the provider has no {name}")))
    }

    async fn introspect_untimed(&self, token: &str) -> Result<serde_json::Value, OidcError> {
        let endpoint = self.endpoint("introspection_endpoint", |d| d.introspection_endpoint.as_ref())?;
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
        let tokens: TokenSet = read_json(r).await?;
        tokens.check_type()?;
        Ok(tokens)
    }

    /// Asks the UserInfo endpoint (OIDC Core §5.3) about the user the
    /// access token was issued for; the answer's `sub` must be `sub`, the
    /// ID token's (§5.3.2). A signed answer (`application/jwt`) is
    /// verified with the provider's keys, and its `iss` and `aud`, when
    /// present, must be the provider and this client. Any other answer
    /// than a 200 with a JSON object (or such a JWT) is an error.
    pub async fn userinfo(&self, access_token: &str, sub: &str) -> Result<serde_json::Value, OidcError> {
        let started = Instant::now();
        let r = self.userinfo_untimed(access_token, sub).await;
        self.metrics.idp_call("userinfo", r.is_ok(), started.elapsed());
        r
    }

    async fn userinfo_untimed(&self, access_token: &str, sub: &str) -> Result<serde_json::Value, OidcError> {
        let endpoint = self.endpoint("userinfo_endpoint", |d| d.userinfo_endpoint.as_ref())?;
        let r = self
            .http
            .get(endpoint)
            .bearer_auth(access_token)
            .header("accept", "application/json, application/jwt")
            .send()
            .await
            .map_err(|e| OidcError::Unreachable(e.to_string()))?;
        let status = r.status().as_u16();
        if status != 200 {
            return Err(OidcError::Refused {
                status,
                error: "userinfo".into(),
            });
        }
        let jwt = r
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.trim().to_ascii_lowercase().starts_with("application/jwt"));
        let body = read_body(r).await?;
        let claims = if jwt {
            let token = std::str::from_utf8(&body)
                .map_err(|_| OidcError::Invalid("the signed UserInfo is not text".into()))?
                .trim();
            self.verify_userinfo_jwt(token).await?
        } else {
            serde_json::from_slice::<serde_json::Value>(&body)
                .map_err(|_| OidcError::Invalid("the UserInfo answer is not JSON".into()))?
        };
        if !claims.is_object() {
            return Err(OidcError::Invalid("the UserInfo answer is not a JSON object".into()));
        }
        if claims.get("sub").and_then(|s| s.as_str()) != Some(sub) {
            return Err(OidcError::Invalid("the UserInfo `sub` is not the ID token's".into()));
        }
        Ok(claims)
    }

    /// A signed UserInfo answer's claims (encrypted ones are refused).
    async fn verify_userinfo_jwt(&self, token: &str) -> Result<serde_json::Value, OidcError> {
        if token.split('.').count() == 5 {
            return Err(OidcError::Invalid(
                "encrypted UserInfo answers are not supported".into(),
            ));
        }
        for attempt in 0..2 {
            let loaded = self.loaded().ok_or(OidcError::NotReady)?;
            let mut algorithms: Vec<Algorithm> = loaded
                .discovery
                .userinfo_signing_alg_values_supported
                .iter()
                .filter_map(|a| parse_alg(a))
                .collect();
            algorithms.extend(loaded.algorithms.iter().copied());
            match super::id_token::verify_signature(token, &loaded.keys, &algorithms) {
                Err(TokenRejected::UnknownKey) if attempt == 0 && self.refresh_keys(&loaded, true).await => continue,
                Err(e) => return Err(e.into()),
                Ok((_, claims)) => {
                    if claims
                        .get("iss")
                        .is_some_and(|i| i.as_str() != Some(loaded.discovery.issuer.as_str()))
                    {
                        return Err(TokenRejected::Issuer.into());
                    }
                    let aud_ok = match claims.get("aud") {
                        None => true,
                        Some(serde_json::Value::String(a)) => *a == self.settings.client_id,
                        Some(serde_json::Value::Array(v)) => {
                            v.iter().any(|a| a.as_str() == Some(&self.settings.client_id))
                        }
                        Some(_) => false,
                    };
                    if !aud_ok {
                        return Err(TokenRejected::Audience.into());
                    }
                    return Ok(claims);
                }
            }
        }
        Err(TokenRejected::UnknownKey.into())
    }

    /// The user's attributes (`[identity_provider.claims]`): from the ID
    /// token, completed by UserInfo when it lacks a mapped claim (or
    /// updated by it with `userinfo = "always"`). A mistyped claim, or a
    /// UserInfo answer that fails, fails the whole: nothing is guessed.
    pub async fn profile(&self, id: &IdClaims, access_token: &str) -> Result<super::claims::Profile, OidcError> {
        let map = &self.settings.claims;
        let from_id = map.profile(&id.all).map_err(|e| OidcError::Invalid(e.to_string()))?;
        let missing = map.missing(&from_id);
        let has_endpoint = self.loaded().is_some_and(|l| l.discovery.userinfo_endpoint.is_some());
        let profile = if self.settings.userinfo.ask(&missing)
            && (has_endpoint || self.settings.userinfo == super::claims::UserinfoMode::Always)
        {
            let answer = self.userinfo(access_token, &id.sub).await?;
            let from_userinfo = map
                .profile(&answer)
                .map_err(|e| OidcError::Invalid(format!("UserInfo: {e}")))?;
            from_id.updated_by(from_userinfo)
        } else {
            from_id
        };
        if profile.groups.is_none() && !map.groups.is_unused() {
            // Once loudly (a mapping or scope to fix), then quietly (users
            // without groups are normal for some providers).
            static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
            if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(
                    claim = map.groups.as_str(),
                    user.sub = %id.sub,
                    "the groups claim is in neither the ID token nor UserInfo: the user has no groups (check [identity_provider.claims] groups and the scopes asked for; said once)"
                );
            } else {
                tracing::debug!(claim = map.groups.as_str(), user.sub = %id.sub, "no groups claim");
            }
        }
        Ok(map.trusted(profile))
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
