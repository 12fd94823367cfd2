//! Checking the tokens unigate is handed with the provider's keys (ID,
//! logout and JWT access tokens, each re-fetching the JWKS once for a key
//! not seen yet), and asking the provider about opaque ones
//! (introspection).

use std::time::SystemTime;

use super::{AccessClaims, IssuedWith, LEEWAY, Loaded, OidcClient, OidcError, read_json, send_for_200};
use crate::oidc::id_token::{Expected, IdClaims, TokenRejected, validate_id_token};

impl OidcClient {
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
    ) -> Result<crate::oidc::logout_token::LogoutClaims, crate::oidc::logout_token::LogoutTokenRejected> {
        use crate::oidc::logout_token::{LogoutTokenRejected, validate_logout_token};
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
    fn access_expected<'a>(&'a self, loaded: &'a Loaded) -> crate::oidc::access_token::AccessExpected<'a> {
        crate::oidc::access_token::AccessExpected {
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
        use crate::oidc::access_token::{AccessRejected, validate_access_jwt};
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
        let r = self.timed("introspection", self.introspect_untimed(token)).await;
        let loaded = self.loaded().ok_or(OidcError::NotReady)?;
        Ok(crate::oidc::access_token::from_introspection(
            &r?,
            &self.access_expected(&loaded),
            now,
        )?)
    }

    async fn introspect_untimed(&self, token: &str) -> Result<serde_json::Value, OidcError> {
        let endpoint = self.endpoint("introspection_endpoint", |d| d.introspection_endpoint.as_ref())?;
        let request = self
            .client_auth(self.http.post(endpoint))
            .header("accept", "application/json")
            .form(&[("token", token), ("token_type_hint", "access_token")]);
        read_json(send_for_200(request, "introspection").await?).await
    }
}
