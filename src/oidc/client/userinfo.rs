//! UserInfo (OIDC Core §5.3), plain or signed, and the user's profile: the
//! ID token's claims, completed or updated by UserInfo.

use jsonwebtoken::Algorithm;

use super::{OidcClient, OidcError, parse_alg, read_body, send_for_200};
use crate::oidc::id_token::{IdClaims, TokenRejected};

impl OidcClient {
    /// Asks the UserInfo endpoint (OIDC Core §5.3) about the user the
    /// access token was issued for; the answer's `sub` must be `sub`, the
    /// ID token's (§5.3.2). A signed answer (`application/jwt`) is
    /// verified with the provider's keys, and its `iss` and `aud`, when
    /// present, must be the provider and this client. Any other answer
    /// than a 200 with a JSON object (or such a JWT) is an error.
    pub async fn userinfo(&self, access_token: &str, sub: &str) -> Result<serde_json::Value, OidcError> {
        self.timed("userinfo", self.userinfo_untimed(access_token, sub)).await
    }

    async fn userinfo_untimed(&self, access_token: &str, sub: &str) -> Result<serde_json::Value, OidcError> {
        let endpoint = self.endpoint("userinfo_endpoint", |d| d.userinfo_endpoint.as_ref())?;
        let request = self
            .http
            .get(endpoint)
            .bearer_auth(access_token)
            .header("accept", "application/json, application/jwt");
        let r = send_for_200(request, "userinfo").await?;
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
            match crate::oidc::id_token::verify_signature(token, &loaded.keys, &algorithms) {
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
    pub async fn profile(&self, id: &IdClaims, access_token: &str) -> Result<crate::oidc::claims::Profile, OidcError> {
        let map = &self.settings.claims;
        let from_id = map.profile(&id.all).map_err(|e| OidcError::Invalid(e.to_string()))?;
        let missing = map.missing(&from_id);
        let has_endpoint = self.loaded().is_some_and(|l| l.discovery.userinfo_endpoint.is_some());
        let profile = if self.settings.userinfo.ask(&missing)
            && (has_endpoint || self.settings.userinfo == crate::oidc::claims::UserinfoMode::Always)
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
}
