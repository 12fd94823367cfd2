//! Refreshing a session's tokens before its access token expires, in the
//! background of the request that noticed: one refresh per session at a
//! time. A refreshed ID token is checked like the first one and must be
//! the same user from the same provider (OIDC Core §12.2); the user's
//! attributes are read again (ID token, UserInfo), so that a user removed
//! from a group loses access at the next refresh. Anything wrong ends the
//! session: the next request logs in again.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use pingora::http::RequestHeader;

use super::config::RouteId;
use super::{Gateway, unix_now};
use crate::oidc::claims::Profile;
use crate::oidc::client::{IssuedWith, TokenSet};
use crate::session::store;
use crate::session::{IdToken, Identity, Session};

/// Why a refreshed session cannot go on.
#[derive(Debug, thiserror::Error)]
enum Ended {
    #[error("the refresh failed: {0}")]
    Refresh(crate::oidc::client::OidcError),
    #[error("the refreshed ID token was refused: {0}")]
    IdToken(crate::oidc::client::OidcError),
    #[error("the refreshed ID token is about another user")]
    OtherUser,
    #[error("the user's claims could not be read: {0}")]
    Claims(crate::oidc::client::OidcError),
    #[error("the user's email or username changed: the module account is checked again at login")]
    AccountChanged,
    #[error("the session is no longer in the shared store")]
    Gone,
}

impl Ended {
    /// A failure that says nothing about the user: the provider could not
    /// be reached, or answered with a server error. Anything else (a
    /// refused refresh token, a token response or ID token that fails its
    /// checks) ends the session everywhere.
    fn is_transient(&self) -> bool {
        use crate::oidc::client::OidcError;
        use crate::oidc::id_token::TokenRejected;
        let provider_down = |e: &OidcError| {
            matches!(
                e,
                OidcError::Unreachable(_)
                    | OidcError::NotReady
                    | OidcError::Refused { status: 429 | 500.., .. }
                    // A kid still missing after a re-fetch (or none could be made).
                    | OidcError::Token(TokenRejected::UnknownKey)
            )
        };
        match self {
            Ended::Refresh(e) | Ended::IdToken(e) | Ended::Claims(e) => provider_down(e),
            Ended::OtherUser | Ended::AccountChanged | Ended::Gone => false,
        }
    }
}

/// The same identity, groups compared as a set (a provider may list them
/// in another order at each refresh).
fn same_identity(a: &Identity, b: &Identity) -> bool {
    fn set(i: &Identity) -> std::collections::BTreeSet<&String> {
        i.groups.iter().collect()
    }
    Identity {
        groups: Vec::new(),
        ..a.clone()
    } == Identity {
        groups: Vec::new(),
        ..b.clone()
    } && set(a) == set(b)
}

impl Gateway {
    /// Starts a background refresh when the access token of session `s`
    /// (route `rid`) is about to expire. Without a refresh token, an
    /// expired access token makes the next navigation log in again.
    pub(super) fn maybe_refresh(self: &Arc<Self>, req: &RequestHeader, s: &Arc<Session>, rid: RouteId, now: u64) {
        let exp = s.access_exp.load(Ordering::Relaxed);
        if exp > now + self.cfg().session.refresh_before.as_secs() {
            return;
        }
        let Some(id) = self.session_id(req).map(str::to_string) else {
            return;
        };
        if s.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let refresh_token = s.tokens.lock().unwrap_or_else(|p| p.into_inner()).refresh_token.clone();
        let Some(rt) = refresh_token else {
            s.refreshing.store(false, Ordering::Release);
            if exp <= now {
                s.needs_login.store(true, Ordering::Release);
            }
            return;
        };
        let (g, s) = (self.clone(), s.clone());
        tokio::spawn(async move {
            // `refreshing` stays set until the new session is in place: no
            // second refresh here can write the old identity back meanwhile.
            match g.refresh(&id, &s, &rt, rid).await {
                Ok(()) => tracing::debug!(user.sub = %s.identity.sub, "session refreshed"),
                Err(e) if e.is_transient() => {
                    // The provider is down or failing: nothing says the user
                    // lost access, but nothing confirms it either. The next
                    // navigation logs in again; the record stays.
                    tracing::info!(user.sub = %s.identity.sub, reason = %e, "refresh failed; the next navigation logs in again");
                    s.needs_login.store(true, Ordering::Release);
                }
                Err(e) => {
                    tracing::info!(user.sub = %s.identity.sub, reason = %e, "session ended at refresh; the next request logs in again");
                    s.needs_login.store(true, Ordering::Release);
                    // Everywhere: every replica's copy and what holds it.
                    if let Err(e) = g.end_session(&id).await {
                        tracing::error!(error = %e, "cannot end a session in the shared store");
                    }
                }
            }
            s.refreshing.store(false, Ordering::Release);
        });
    }

    /// One refresh, and the new session in place when the user's
    /// attributes changed. With the shared store, one replica refreshes a
    /// session at a time (a lock in Redis, held until the new tokens and
    /// identity are stored), and a replica whose copy is behind takes the
    /// tokens another one stored instead of spending a rotated refresh
    /// token twice.
    async fn refresh(&self, id: &str, s: &Arc<Session>, rt: &str, rid: RouteId) -> Result<(), Ended> {
        let Some(shared) = self.state.sessions.redis() else {
            if let Some(identity) = self.refresh_now(id, s, rt).await? {
                self.replace_identity(id, s, rid, identity).await;
            }
            return Ok(());
        };
        let h = crate::session::redis::id_hash(id);
        // Long enough for the token request, a JWKS fetch or two, UserInfo
        // and the writes.
        let ttl = self.state.oidc.settings.timeout * 6 + Duration::from_secs(5);
        let lock = match shared.lock_refresh(&h, ttl).await {
            Ok(Some(lock)) => lock,
            Ok(None) => return Ok(()), // another replica is at it: its tokens come through the record
            Err(e) => {
                // The next request tries again (and fails closed while
                // Redis is down).
                tracing::warn!(error = %e, "cannot take a refresh lock");
                return Ok(());
            }
        };
        let outcome = self.refresh_locked(shared, &h, id, s, rid).await;
        if let Err(e) = shared.unlock_refresh(&h, &lock).await {
            tracing::warn!(error = %e, "cannot release a refresh lock (it expires by itself)");
        }
        outcome
    }

    async fn refresh_locked(
        &self,
        shared: &crate::session::redis::RedisStore,
        h: &[u8; 32],
        id: &str,
        s: &Arc<Session>,
        rid: RouteId,
    ) -> Result<(), Ended> {
        use crate::oidc::client::OidcError;
        match shared.load(h).await {
            Ok(None) => return Err(Ended::Gone),
            Ok(Some(r)) if store::take_newer_tokens(s, &r) => return Ok(()),
            Ok(Some(_)) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a session to refresh");
                return Ok(());
            }
        }
        let rt = s.tokens.lock().unwrap_or_else(|p| p.into_inner()).refresh_token.clone();
        let Some(rt) = rt else { return Ok(()) };
        match self.refresh_now(id, s, &rt).await {
            Ok(Some(identity)) => {
                self.replace_identity(id, s, rid, identity).await;
                Ok(())
            }
            Ok(None) => Ok(()),
            // Refused: unless another replica rotated the token after all
            // (a lock that expired under a very slow provider).
            Err(Ended::Refresh(OidcError::Refused { status: 400..=499, .. })) if matches!(shared.load(h).await, Ok(Some(r)) if store::take_newer_tokens(s, &r)) => {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The token request and the checks of its answer; the new tokens
    /// stored. On a failure that says nothing about the user (UserInfo
    /// down), the new refresh token is kept (the old one may be spent) but
    /// the access token's expiry is not pushed out, so every replica
    /// refreshes again soon and checks the user then.
    async fn refresh_now(&self, id: &str, s: &Arc<Session>, rt: &str) -> Result<Option<Identity>, Ended> {
        let refreshed = self.state.oidc.refresh(rt).await;
        let result = if refreshed.is_ok() { "succeeded" } else { "failed" };
        self.state.oidc.metrics.refreshes.with_label_values(&[result]).inc();
        let t = refreshed.map_err(Ended::Refresh)?;
        match self.refreshed_identity(s, &t).await {
            Ok(identity) => {
                self.store_tokens(id, s, t, true).await;
                Ok(identity.filter(|i| !same_identity(i, &s.identity)))
            }
            Err(e) => {
                if e.is_transient() {
                    self.store_tokens(id, s, t, false).await;
                }
                Err(e)
            }
        }
    }

    /// The identity the refresh response gives: from its ID token (checked
    /// as at login, the same `sub`) and UserInfo, or from UserInfo alone
    /// when it carries no ID token; `None` when nothing can be read again.
    async fn refreshed_identity(&self, s: &Session, t: &TokenSet) -> Result<Option<Identity>, Ended> {
        let old = &s.identity;
        let (profile, sid) = match &t.id_token {
            Some(jwt) => {
                let with = IssuedWith {
                    access_token: Some(&t.access_token),
                    ..IssuedWith::default()
                };
                let claims = self
                    .state
                    .oidc
                    .validate_id_token(jwt, &with, SystemTime::now())
                    .await
                    .map_err(Ended::IdToken)?;
                if *claims.sub != *old.sub {
                    return Err(Ended::OtherUser);
                }
                let profile = self
                    .state
                    .oidc
                    .profile(&claims, &t.access_token)
                    .await
                    .map_err(Ended::Claims)?;
                (profile, claims.sid.map(Into::into).or_else(|| old.sid.clone()))
            }
            None => {
                use crate::oidc::claims::UserinfoMode;
                let has_endpoint = self
                    .state
                    .oidc
                    .loaded()
                    .is_some_and(|l| l.discovery.userinfo_endpoint.is_some());
                if self.state.oidc.settings.userinfo == UserinfoMode::Never || !has_endpoint {
                    return Ok(None);
                }
                let answer = self
                    .state
                    .oidc
                    .userinfo(&t.access_token, &old.sub)
                    .await
                    .map_err(Ended::Claims)?;
                let map = &self.state.oidc.settings.claims;
                let mut fresh = map
                    .profile(&answer)
                    .map_err(|e| Ended::Claims(crate::oidc::client::OidcError::Invalid(e.to_string())))?;
                // Providers leave an empty group claim out: UserInfo that
                // names no groups means none, not "as before".
                if !map.groups.is_unused() && fresh.groups.is_none() {
                    fresh.groups = Some(Vec::new());
                }
                (map.trusted(profile_of(old).updated_by(fresh)), old.sid.clone())
            }
        };
        let mut identity = Identity::from_profile(&old.sub, sid.as_deref(), profile);
        identity.module_user = old.module_user.clone();
        Ok(Some(identity))
    }

    /// Keeps the refreshed tokens in the session, and in the shared store
    /// while the session is still there (a session revoked meanwhile is
    /// not brought back, and ends here too).
    async fn store_tokens(&self, id: &str, s: &Arc<Session>, t: TokenSet, extend: bool) {
        let now = unix_now();
        let record = {
            let mut tokens = s.tokens.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(rt) = t.refresh_token {
                tokens.refresh_token = Some(rt.into());
            }
            // The session's login time (`auth_time`, for rules that ask for
            // a recent login) is the login's: a refreshed ID token must
            // repeat it (or leave it out, as the login's did). One that
            // names another (a provider that breaks that rule), or leaves
            // out the login's, does not move it: the ID token that holds
            // the login's is kept.
            if let Some(jwt) = t.id_token {
                let new = IdToken::new(&jwt);
                if new.auth_time() == tokens.id_token.as_ref().and_then(IdToken::auth_time) {
                    tokens.id_token = Some(new);
                }
            }
            if extend {
                let exp = now + t.expires_in.unwrap_or(300);
                tokens.access_exp = exp;
                s.access_exp.store(exp, Ordering::Release);
            }
            tokens.generation += 1;
            store::record_of(s, &tokens)
        };
        if let Some(shared) = self.state.sessions.redis().filter(|_| !s.is_revoked()) {
            let h = crate::session::redis::id_hash(id);
            let left = Duration::from_secs(s.expires_at.saturating_sub(now).max(1));
            match shared
                .save(&h, &record, self.cfg().session.idle_timeout.min(left), true)
                .await
            {
                Ok(true) => {}
                Ok(false) => s.revoke(),
                Err(e) => tracing::error!(error = %e, "cannot store a refreshed session"),
            }
        }
    }

    /// Puts a session with the user's new attributes in the place of `s`;
    /// the module's access groups are then checked against the new groups
    /// at the next request. A changed email or username where a module
    /// account was matched or linked by them ends the session instead.
    async fn replace_identity(&self, id: &str, s: &Arc<Session>, rid: RouteId, identity: Identity) {
        let route = self.route(rid);
        let account_bound = route.link_required || self.routes.parts(rid).accounts.is_some();
        if account_bound && (identity.email != s.identity.email || identity.username != s.identity.username) {
            tracing::info!(user.sub = %s.identity.sub, reason = %Ended::AccountChanged, "session ended at refresh");
            s.needs_login.store(true, Ordering::Release);
            if let Err(e) = self.end_session(id).await {
                tracing::error!(error = %e, "cannot end a session in the shared store");
            }
            return;
        }
        tracing::info!(user.sub = %s.identity.sub, "the user's attributes changed at refresh");
        tracing::debug!(user.sub = %s.identity.sub, groups.before = ?s.identity.groups, groups.after = ?identity.groups, "groups at refresh");
        let tokens = s.tokens.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let next = self
            .build_session(rid, identity, tokens, s.expires_at)
            .with_link_pending(s.link_pending);
        match self.replace_session_now(id, s, Arc::new(next)).await {
            Ok(true) => {}
            Ok(false) => {
                // Replaced or ended meanwhile (a link, a logout): what is
                // stored now may carry the old attributes. Log in again.
                tracing::info!(user.sub = %s.identity.sub, "session changed during a refresh; ending it");
                if let Err(e) = self.end_session(id).await {
                    tracing::error!(error = %e, "cannot end a session in the shared store");
                }
            }
            Err(e) => {
                // The old attributes must not outlive a failed update.
                tracing::error!(error = %e, "cannot store a refreshed identity; ending the session");
                s.needs_login.store(true, Ordering::Release);
            }
        }
    }
}

/// A session's identity as a profile (what UserInfo then updates).
fn profile_of(id: &Identity) -> Profile {
    let some = |s: &str| Some(s.to_string());
    Profile {
        username: some(&id.username),
        email: some(&id.email),
        name: some(&id.name),
        company: some(&id.company),
        groups: Some(id.groups.clone()),
        email_verified: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_in_another_order_are_the_same_identity() {
        let a = Identity::from_profile(
            "s",
            None,
            Profile {
                groups: Some(vec!["a".into(), "b".into()]),
                ..Profile::default()
            },
        );
        let mut b = a.clone();
        b.groups.reverse();
        assert!(same_identity(&a, &b));
        b.groups.pop();
        assert!(!same_identity(&a, &b));
        let mut c = a.clone();
        c.email = "x@y".into();
        assert!(!same_identity(&a, &c));
    }

    #[test]
    fn only_an_unreachable_or_failing_provider_is_transient() {
        use crate::oidc::client::OidcError;
        let refused = |status| {
            Ended::Refresh(OidcError::Refused {
                status,
                error: "invalid_grant".into(),
            })
        };
        assert!(Ended::Refresh(OidcError::Unreachable("down".into())).is_transient());
        assert!(refused(503).is_transient());
        assert!(refused(429).is_transient(), "rate limited: says nothing about the user");
        assert!(Ended::IdToken(OidcError::Token(crate::oidc::id_token::TokenRejected::UnknownKey)).is_transient());
        assert!(!Ended::IdToken(OidcError::Token(crate::oidc::id_token::TokenRejected::Audience)).is_transient());
        assert!(!refused(400).is_transient(), "a refused refresh token ends the session");
        assert!(!refused(401).is_transient());
        assert!(!Ended::Refresh(OidcError::Invalid("token_type".into())).is_transient());
        assert!(!Ended::OtherUser.is_transient());
    }
}
