//! What a presented access token is worth: token introspection (RFC 7662)
//! for registered clients, and the UserInfo answer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use super::{AccessTokenClaims, ClientAuth, TokenError, unix};
use crate::idp::Provider;
use crate::idp::store::{Grant, token_key};

impl Provider {
    /// The claims of a live access token (a JWT or an opaque one) whose
    /// grant is not revoked and whose user is still in the directory.
    fn live_access_token(&self, token: &str, now: SystemTime) -> Option<(AccessTokenClaims, Arc<Grant>)> {
        let claims: AccessTokenClaims = if token.split('.').count() == 3 {
            self.verify_own(token, "at+jwt", false, now)?
        } else {
            let c = self.stores.opaque.get(&token_key(token))?;
            if c.exp <= unix(now) {
                return None;
            }
            (*c).clone()
        };
        let grant_id = self.stores.access.get(&claims.jti)?;
        let grant = self.stores.grants.get(&grant_id)?;
        (!grant.is_revoked() && self.user_active(grant.user, now)).then_some((claims, grant))
    }

    /// Token introspection (RFC 7662) for an authenticated client: the
    /// token's claims with `active: true`, or only `active: false` for a
    /// token that is unknown, expired, revoked, or not an access token.
    pub fn introspect(
        &self,
        auth: &ClientAuth,
        form: &HashMap<String, String>,
        now: SystemTime,
    ) -> Result<serde_json::Value, TokenError> {
        self.authenticate_client(auth)?;
        let token = form
            .get("token")
            .ok_or_else(|| TokenError::new("invalid_request", "token is missing"))?;
        let Some((claims, _)) = self.live_access_token(token, now) else {
            return Ok(serde_json::json!({ "active": false }));
        };
        let mut v = serde_json::to_value(&claims).unwrap_or_default();
        v["active"] = true.into();
        v["token_type"] = "Bearer".into();
        Ok(v)
    }

    /// The userinfo response for a bearer access token, or `None` when the
    /// token is invalid, expired or revoked.
    pub fn userinfo(&self, access_token: &str, now: SystemTime) -> Option<serde_json::Value> {
        let (claims, grant) = self.live_access_token(access_token, now)?;
        let user = self.dir.user(grant.user);
        let has = |s: &str| claims.scope.split(' ').any(|x| x == s);
        let mut info = serde_json::json!({
            "sub": claims.sub,
            "company": user.company,
            "groups": user.groups,
        });
        if has("email") {
            info["email"] = user.email.clone().into();
            info["email_verified"] = true.into();
        }
        if has("profile") {
            info["preferred_username"] = user.username.clone().into();
            info["name"] = user.display_name.clone().into();
        }
        Some(info)
    }
}
