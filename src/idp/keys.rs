//! The provider's signing keys: one ES256 key (the default) and one RS256
//! key in use at a time, each published in the JWKS under its RFC 7638
//! thumbprint as `kid`. A rotation makes new keys and keeps the replaced
//! public keys in the JWKS for a grace period, so tokens signed just before
//! a rotation still verify.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::JwkSet;

pub use crate::crypto::keys::{KeyError, SigningKey};

struct KeyState {
    es256: Arc<SigningKey>,
    rs256: Arc<SigningKey>,
    /// Replaced keys, when they leave the JWKS, and until when the provider
    /// still accepts its own tokens signed by them (`id_token_hint`).
    retired: Vec<(Arc<SigningKey>, SystemTime, SystemTime)>,
}

/// The provider's keys, current and recently retired.
pub struct KeyStore {
    state: RwLock<KeyState>,
    grace: Duration,
    accept_for: Duration,
}

impl KeyStore {
    /// `grace`: how long a replaced key stays published; `accept_for`: how
    /// long the provider still accepts its own tokens signed by it (at least
    /// `grace`; an ID token is an `id_token_hint` for a session's lifetime).
    pub fn new(es256: SigningKey, rs256: SigningKey, grace: Duration, accept_for: Duration) -> Self {
        KeyStore {
            state: RwLock::new(KeyState {
                es256: Arc::new(es256),
                rs256: Arc::new(rs256),
                retired: Vec::new(),
            }),
            grace,
            accept_for: accept_for.max(grace),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, KeyState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The key that signs with `alg` now.
    pub fn current(&self, alg: Algorithm) -> Arc<SigningKey> {
        let s = self.read();
        match alg {
            Algorithm::RS256 => s.rs256.clone(),
            _ => s.es256.clone(),
        }
    }

    /// Replaces both keys with new ones; the old public keys stay published
    /// until `now + grace`.
    pub fn rotate(&self, es256: SigningKey, rs256: SigningKey, now: SystemTime) {
        let mut s = self.state.write().unwrap_or_else(|p| p.into_inner());
        let (published, accepted) = (now + self.grace, now + self.accept_for);
        let old_es = std::mem::replace(&mut s.es256, Arc::new(es256));
        let old_rs = std::mem::replace(&mut s.rs256, Arc::new(rs256));
        s.retired.push((old_es, published, accepted));
        s.retired.push((old_rs, published, accepted));
        s.retired.retain(|(_, _, accepted)| *accepted > now);
    }

    /// The JWKS: current keys, then retired keys still in their grace period.
    pub fn jwks(&self, now: SystemTime) -> JwkSet {
        let s = self.read();
        let mut keys = vec![s.es256.jwk.clone(), s.rs256.jwk.clone()];
        keys.extend(
            s.retired
                .iter()
                .filter(|(_, published, _)| *published > now)
                .map(|(k, _, _)| k.jwk.clone()),
        );
        JwkSet { keys }
    }

    /// A published key by `kid`, for checking the provider's own tokens
    /// (`id_token_hint`, access tokens).
    pub fn find(&self, kid: &str, now: SystemTime) -> Option<Arc<SigningKey>> {
        let s = self.read();
        [&s.es256, &s.rs256]
            .into_iter()
            .find(|k| k.kid == kid)
            .cloned()
            .or_else(|| {
                s.retired
                    .iter()
                    .find(|(k, _, accepted)| k.kid == kid && *accepted > now)
                    .map(|(k, _, _)| k.clone())
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_old_key_for_grace_period_only() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let store = KeyStore::new(
            SigningKey::generate(Algorithm::ES256).unwrap(),
            SigningKey::generate(Algorithm::RS256).unwrap(),
            Duration::from_secs(600),
            Duration::from_secs(3600),
        );
        let old = store.current(Algorithm::ES256).kid.clone();
        assert_eq!(store.jwks(t0).keys.len(), 2);
        store.rotate(
            SigningKey::generate(Algorithm::ES256).unwrap(),
            SigningKey::generate(Algorithm::RS256).unwrap(),
            t0,
        );
        let new = store.current(Algorithm::ES256).kid.clone();
        assert_ne!(old, new);
        let kids = |t| -> Vec<String> {
            store
                .jwks(t)
                .keys
                .iter()
                .map(|k| k.common.key_id.clone().unwrap())
                .collect()
        };
        assert_eq!(kids(t0).len(), 4);
        assert!(kids(t0).contains(&old));
        assert!(store.find(&old, t0 + Duration::from_secs(599)).is_some());
        assert!(!kids(t0 + Duration::from_secs(600)).contains(&old));
        // Unpublished, but its own tokens are still accepted for a while.
        assert!(store.find(&old, t0 + Duration::from_secs(600)).is_some());
        assert!(store.find(&old, t0 + Duration::from_secs(3600)).is_none());
        assert!(store.find(&new, t0 + Duration::from_secs(600)).is_some());
    }
}
