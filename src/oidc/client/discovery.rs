//! Discovery and the provider's keys: loading both, and re-fetching the
//! JWKS when a token names a key not seen yet (one fetch for all who need
//! it, and a cooldown against made-up `kid`s).

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::Algorithm;

use super::{Discovery, Loaded, OidcClient, OidcError, parse_alg};
use crate::oidc::id_token::ProviderKeys;

/// Least time after a JWKS fetch caused by an unknown `kid` before the
/// next such fetch (a flood of made-up `kid`s must not flood the provider).
const JWKS_COOLDOWN: Duration = Duration::from_secs(30);

/// When JWKS fetches for unknown `kid`s last happened.
#[derive(Default)]
pub(super) struct KidRefetch {
    /// For a token anyone can send (bearer, logout token).
    by_anyone: Option<Instant>,
    /// For a token the provider handed over (at most one a second, for a
    /// provider that names keys it does not publish).
    by_provider: Option<Instant>,
}

/// Least time between two JWKS fetches for tokens from the provider.
const PROVIDER_REFETCH_FLOOR: Duration = Duration::from_secs(1);

impl OidcClient {
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
            authorize: crate::oidc::QueryBase::new(&discovery.authorization_endpoint),
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
    pub(super) async fn refresh_keys(&self, seen: &Arc<Loaded>, from_provider: bool) -> bool {
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
                    authorize: seen.authorize.clone(),
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
}
