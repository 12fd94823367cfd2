//! The token endpoint: redeeming an authorization code and refreshing,
//! with this client's credentials; only `Bearer` token sets are accepted.

use super::{OidcClient, OidcError, TokenSet, read_json};

impl OidcClient {
    async fn token_request(&self, form: &[(&str, &str)]) -> Result<TokenSet, OidcError> {
        self.timed("token", self.token_request_untimed(form)).await
    }

    async fn token_request_untimed(&self, form: &[(&str, &str)]) -> Result<TokenSet, OidcError> {
        let loaded = self.loaded().ok_or(OidcError::NotReady)?;
        let r = self
            .client_auth(self.http.post(&loaded.discovery.token_endpoint))
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
