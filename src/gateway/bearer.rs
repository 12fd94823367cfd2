//! `Authorization: Bearer` requests: an access token for this deployment's
//! API (an RFC 9068 JWT for `api_audience`, or an opaque token the IdP
//! vouches for by introspection), never an ID token or a logout token; and
//! then every check a session gets: not revoked (admin revoke, back- and
//! front-channel logout, on every replica), the module's access groups,
//! `link_required`, and account matching.
//!
//! Revocation: a revoke of a `sub`, `email` or `sid` leaves a marker "bearer
//! tokens of this user (or IdP session) issued up to time T are refused",
//! kept in memory and, with the shared store, in Redis, for longer than any
//! accepted token lives (`access_token::MAX_LIFETIME_SECS`). Every bearer
//! request compares its token's `iat` with the markers — the cache of
//! verified tokens never skips that comparison.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use pingora::prelude::*;
use pingora::proxy::Session as PSession;
use sha2::{Digest, Sha256};

use super::config::RouteId;
use super::reject::Reject;
use super::request::bearer_token;
use super::{Account, Ctx, Gateway, down, unix_now};
use crate::oidc::access_token::{AccessClaims, MAX_LIFETIME_SECS, MAX_TOKEN_LEN, is_jwt_shaped};
use crate::oidc::client::{LEEWAY, OidcError};
use crate::policy::request::{fresh, refused_by};
use crate::session::{Identity, Revoke};

/// How long a verified JWT is trusted without checking it again (its
/// expiry comes first when sooner).
const JWT_CACHE: u64 = 600;
/// How long an introspection answer is trusted: the IdP's own revocation
/// of an opaque token shows within this time (its expiry comes first).
const INTROSPECTION_CACHE: u64 = 60;
/// How long a revocation marker lives: past the longest token it refuses.
const MARK_TTL: Duration = Duration::from_secs(MAX_LIFETIME_SECS + 4 * LEEWAY);

/// A token checked once: who it is for, when it was issued, and until when
/// the check holds.
pub struct Verified {
    identity: Identity,
    iat: Option<u64>,
    /// When the user logged in, if the token says.
    auth_time: Option<u64>,
    until: u64,
}

/// Verified tokens by SHA-256 (bounded, each entry expiring at its
/// `until`), and this process's revocation markers (mark → Unix time).
#[derive(Clone)]
pub struct BearerCache {
    verified: moka::sync::Cache<[u8; 32], Arc<Verified>>,
    marks: moka::sync::Cache<String, u64>,
    /// Opaque tokens the IdP called inactive lately: the same token sent
    /// again does not cost another introspection.
    refused: moka::sync::Cache<[u8; 32], ()>,
}

struct UntilExpiry;

impl moka::Expiry<[u8; 32], Arc<Verified>> for UntilExpiry {
    fn expire_after_create(&self, _: &[u8; 32], v: &Arc<Verified>, _: std::time::Instant) -> Option<Duration> {
        Some(Duration::from_secs(v.until.saturating_sub(unix_now())))
    }
}

impl Default for BearerCache {
    fn default() -> Self {
        BearerCache {
            verified: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .expire_after(UntilExpiry)
                .build(),
            marks: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(MARK_TTL)
                .build(),
            refused: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(INTROSPECTION_CACHE))
                .build(),
        }
    }
}

/// The marker a revocation leaves.
pub fn mark_of(what: &Revoke) -> String {
    match what {
        Revoke::Sub(v) => format!("sub:{v}"),
        Revoke::Sid(v) => format!("sid:{v}"),
        Revoke::Email(v) => format!("email:{}", v.to_lowercase()),
    }
}

/// The marker for tokens of `sub` that name no IdP session: a logout of
/// one of the user's sessions refuses them too (they cannot be told apart).
pub fn sidless_mark(sub: &str) -> String {
    format!("nosid:{sub}")
}

/// Every marker that refuses a token of this identity.
pub fn marks_of(id: &Identity) -> Vec<String> {
    let mut marks = session_marks(&id.sub, id.sid.as_deref());
    if !id.email.is_empty() {
        marks.push(format!("email:{}", id.email.to_lowercase()));
    }
    marks
}

/// The markers of a user `sub` and KaseyaOne session `sid`, known from an
/// ID token alone (the email may come later, from UserInfo).
pub fn session_marks(sub: &str, sid: Option<&str>) -> Vec<String> {
    vec![
        format!("sub:{sub}"),
        match sid {
            Some(sid) => format!("sid:{sid}"),
            None => sidless_mark(sub),
        },
    ]
}

/// Whether a token issued at `iat` is refused by a marker set at
/// `marked`: issued at or before it (no `iat`: always).
pub fn revoked(iat: Option<u64>, marked: Option<u64>) -> bool {
    marked.is_some_and(|t| iat.is_none_or(|i| i <= t))
}

/// The identity a checked token stands for (no module account yet).
fn identity_of(c: AccessClaims) -> Identity {
    Identity::from_profile(&c.sub, c.sid.as_deref(), c.profile)
}

/// What a bearer token turned out to be.
enum Checked {
    Ok(Arc<Verified>),
    Invalid,
    /// The IdP could not be asked (introspection, discovery not loaded).
    Unavailable,
}

impl Gateway {
    /// Marks bearer tokens named by `mark` as revoked from now on, here
    /// and (shared store) for every replica. The time is pushed a leeway
    /// ahead: a token the IdP issued just before the revocation with a
    /// clock ahead of ours is refused too.
    pub async fn mark_bearer_revoked(&self, mark: &str) -> Result<(), crate::session::redis::StoreError> {
        let at = unix_now() + LEEWAY;
        let t = self.state.bearer.marks.get(mark).map_or(at, |t| t.max(at));
        self.state.bearer.marks.insert(mark.to_string(), t);
        if let Some(shared) = self.state.sessions.redis() {
            shared.mark_bearer_revoked(mark, at, MARK_TTL).await?;
        }
        Ok(())
    }

    /// The latest revocation time among `marks`: this process's markers,
    /// and with the shared store the other replicas' too.
    async fn bearer_revoked_at(&self, marks: &[String]) -> Result<Option<u64>, crate::session::redis::StoreError> {
        let local = marks.iter().filter_map(|m| self.state.bearer.marks.get(m)).max();
        let Some(shared) = self.state.sessions.redis() else {
            return Ok(local);
        };
        if !shared.healthy() {
            return Err(crate::session::redis::StoreError::Down("not connected".into()));
        }
        Ok(shared.bearer_revoked_at(marks).await?.max(local))
    }

    /// The latest revocation among `marks` (a Unix time a leeway ahead),
    /// for `ended_during_login`.
    pub(super) async fn revoked_at(&self, marks: &[String]) -> Result<Option<u64>, crate::session::redis::StoreError> {
        self.bearer_revoked_at(marks).await
    }

    /// Whether a login was ended by a logout or revocation while it
    /// finished, read once its session is stored:
    /// - a marker of its user or KaseyaOne session (`early`) set since
    ///   `before`, its reading right after the ID token was checked;
    /// - or any of its markers (`all`, the email's too) set after its ID
    ///   token was issued at `iat`. (Markers are set a leeway ahead, for
    ///   bearer tokens from a clock ahead of ours; the revocation itself
    ///   was that much earlier.)
    ///
    /// Logins after a revocation are not touched.
    pub(super) async fn ended_during_login(
        &self,
        early: &[String],
        before: Option<u64>,
        all: &[String],
        iat: u64,
    ) -> Result<bool, crate::session::redis::StoreError> {
        if self.bearer_revoked_at(early).await? != before {
            return Ok(true);
        }
        Ok(self
            .bearer_revoked_at(all)
            .await?
            .is_some_and(|marked| iat < marked.saturating_sub(LEEWAY)))
    }

    /// Checks a bearer token, or finds it checked in the cache.
    async fn check_bearer(&self, token: &str, now: u64) -> Checked {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(hit) = self.state.bearer.verified.get(&key)
            && hit.until > now
        {
            return Checked::Ok(hit);
        }
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Checked::Invalid;
        }
        let jwt = is_jwt_shaped(token);
        let checked = if jwt {
            self.state.oidc.validate_access_token(token, SystemTime::now()).await
        } else if self.state.bearer.refused.contains_key(&key) {
            return Checked::Invalid;
        } else if self.state.oidc.can_introspect() {
            self.state.oidc.introspect(token, SystemTime::now()).await
        } else {
            tracing::info!("bearer token refused: opaque, and the identity provider offers no introspection");
            return Checked::Invalid;
        };
        match checked {
            Ok(c) => {
                // A JWT stays valid within the leeway past its expiry; an
                // introspected token is the IdP's to judge after its `exp`.
                let (exp, cache_for) = match (c.exp, jwt) {
                    (Some(exp), true) => (exp + LEEWAY, JWT_CACHE),
                    (Some(exp), false) => (exp, INTROSPECTION_CACHE),
                    (None, _) => (u64::MAX, INTROSPECTION_CACHE),
                };
                let v = Arc::new(Verified {
                    iat: c.iat,
                    auth_time: c.auth_time,
                    until: exp.min(now + cache_for),
                    identity: identity_of(c),
                });
                if v.until > now {
                    self.state.bearer.verified.insert(key, v.clone());
                }
                Checked::Ok(v)
            }
            Err(e @ (OidcError::Unreachable(_) | OidcError::Refused { .. } | OidcError::NotReady)) => {
                tracing::warn!(error = %e, "bearer token cannot be checked now");
                Checked::Unavailable
            }
            Err(e) => {
                tracing::info!(error = %e, "bearer token refused");
                if !jwt {
                    self.state.bearer.refused.insert(key, ());
                }
                Checked::Invalid
            }
        }
    }
}

/// Answers a request to route `id` that carries `Authorization: Bearer`:
/// lets it through with the token's identity, or refuses it (401 for a
/// token that is not a valid, unrevoked access token for this API; 403
/// for a user this module does not admit; 503 when something needed for
/// the decision cannot be reached).
pub(super) async fn handle(g: &Gateway, session: &mut PSession, ctx: &mut Ctx, id: RouteId) -> Result<bool> {
    let Some(token) = bearer_token(session.req_header()) else {
        return g
            .reject(session, Some(id), Reject::InvalidBearer("no bearer token"))
            .await;
    };
    let facts = super::request::facts(session.req_header());
    let rule = g
        .route(id)
        .rule(facts.path, facts.method, facts.query, facts.headers)
        .cloned();
    match g.bearer_identity(id, token, rule.as_ref()).await {
        Ok(identity) => {
            ctx.identity = Some(Arc::new(identity));
            g.proceed(session, ctx, id).await
        }
        Err(r) => g.reject(session, Some(id), r).await,
    }
}

impl Gateway {
    /// The identity a bearer token stands for on route `id`, with every
    /// check a session gets (`rule`: the access rule the request falls
    /// under).
    async fn bearer_identity(
        &self,
        id: RouteId,
        token: &str,
        rule: Option<&crate::policy::rules::Rule>,
    ) -> std::result::Result<Identity, Reject> {
        let module = self.route(id);
        let v = match self.check_bearer(token, unix_now()).await {
            Checked::Ok(v) => v,
            Checked::Invalid => return Err(Reject::InvalidBearer("not a valid access token for this API")),
            Checked::Unavailable => return Err(Reject::BearerUnchecked),
        };
        let sub = &v.identity.sub;
        if revoked(
            v.iat,
            self.bearer_revoked_at(&marks_of(&v.identity)).await.map_err(down)?,
        ) {
            tracing::info!(module.name = %module.label(), user.sub = %sub, decision = "deny", "bearer token revoked");
            return Err(Reject::InvalidBearer("the token has been revoked"));
        }
        if let Some(refused) = refused_by(rule, module, &v.identity) {
            tracing::info!(module.name = %module.label(), user.sub = %sub, decision = "deny", "bearer access group check");
            return Err(refused);
        }
        if let Some(max_age) = rule.and_then(|r| r.max_login_age)
            && !fresh(v.auth_time, max_age.as_secs(), unix_now())
        {
            tracing::info!(module.name = %module.label(), user.sub = %sub, decision = "deny", "bearer token's login too old for this path");
            return Err(Reject::LoginTooOld {
                max_age: max_age.as_secs(),
            });
        }
        let mut identity = v.identity.clone();
        match self.module_account(id, &mut identity).await? {
            Account::Ready => Ok(identity),
            // Linking needs a browser.
            Account::LinkPending => {
                tracing::info!(module.name = %module.label(), user.sub = %sub, decision = "deny", "bearer without a linked module account");
                Err(Reject::LinkRequired)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(sid: Option<&str>, email: &str) -> Identity {
        Identity {
            sub: "u-1".into(),
            sid: sid.map(Into::into),
            email: email.into(),
            name: "".into(),
            username: "".into(),
            company: "".into(),
            groups: vec![],
            module_user: None,
        }
    }

    #[test]
    fn revocation_markers_table() {
        // (token iat, marker time, refused)
        for (iat, marked, want) in [
            (Some(100), None, false),
            (Some(100), Some(100), true),
            (Some(100), Some(160), true),
            (Some(161), Some(160), false),
            (None, Some(1), true),
            (None, None, false),
        ] {
            assert_eq!(revoked(iat, marked), want, "iat {iat:?}, marked {marked:?}");
        }
        // Which revocations reach which tokens.
        let with_sid = marks_of(&id(Some("s-1"), "Alice@Example.com"));
        let without_sid = marks_of(&id(None, ""));
        for (what, hits_with_sid, hits_without_sid) in [
            (Revoke::Sub("u-1".into()), true, true),
            (Revoke::Sub("u-2".into()), false, false),
            (Revoke::Email("ALICE@example.COM".into()), true, false),
            (Revoke::Sid("s-1".into()), true, false),
            (Revoke::Sid("s-2".into()), false, false),
        ] {
            let m = mark_of(&what);
            assert_eq!(with_sid.contains(&m), hits_with_sid, "{what:?}");
            assert_eq!(without_sid.contains(&m), hits_without_sid, "{what:?}");
        }
        // A back-channel logout of one of the user's sessions also reaches
        // tokens that name no session.
        assert!(without_sid.contains(&sidless_mark("u-1")));
        assert!(!with_sid.contains(&sidless_mark("u-1")));
    }
}
