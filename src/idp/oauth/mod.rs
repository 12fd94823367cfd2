//! The provider's OAuth 2.0 / OpenID Connect logic, apart from HTTP. Time
//! is a parameter. By concern: checking authorization requests and issuing
//! codes (`authorize`), the token endpoint's client authentication and
//! grants (`token_endpoint`), the tokens the provider signs (`tokens`), and
//! what a presented access token is worth (`introspection`: introspection
//! and userinfo).

mod authorize;
mod introspection;
mod token_endpoint;
mod tokens;

use std::collections::HashMap;
use std::time::Duration;

pub use crate::crypto::pkce_s256;
pub use crate::oidc::{unix, with_params};
pub use authorize::{AuthRequest, AuthorizeError, check_authorize};
pub use token_endpoint::{ClientAuth, TokenError, TokenResponse};
pub use tokens::{AccessTokenClaims, BACKCHANNEL_EVENT, IdTokenClaims, LogoutTokenClaims, ProfileClaims, at_hash};

/// Longest accepted value of any request parameter.
pub const MAX_PARAM_LEN: usize = 2048;

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

/// Retry schedule for back-channel logout delivery.
pub const LOGOUT_RETRY_DELAYS: [Duration; 3] = [
    Duration::from_millis(200),
    Duration::from_secs(1),
    Duration::from_secs(3),
];
