//! The provider's directory: companies, users, modules and clients, looked up
//! case-insensitively the way people type them. Passwords can change at run
//! time (password reset), so hashes sit behind a lock; the rest is fixed at
//! start.

use std::collections::HashMap;
use std::sync::RwLock;

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use sha2::{Digest, Sha256};

use super::config::{Client, IdpConfig, Module, User};

/// Index of a user in the directory.
pub type UserId = usize;

pub struct Directory {
    pub companies: Vec<String>,
    users: Vec<User>,
    subs: Vec<String>,
    by_login: HashMap<(String, String), UserId>,
    by_sub: HashMap<String, UserId>,
    password_hashes: RwLock<Vec<String>>,
    pub modules: Vec<Module>,
    clients: HashMap<String, Client>,
    /// A hash with the same parameters as real ones, checked against when no
    /// user matches, so an unknown user costs the same time as a known one.
    dummy_hash: String,
}

/// Normalises a username or company name for lookup.
pub fn norm(s: &str) -> String {
    s.trim().to_lowercase()
}

/// The stable subject identifier of a user: the same for the same company
/// and username, across restarts, and not the username itself.
pub fn subject_for(company: &str, username: &str) -> String {
    let digest = Sha256::digest(format!("unigate-idp/sub/{}/{}", norm(company), norm(username)));
    let h = hex::encode(&digest[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Hashes a password with Argon2id and the crate's default parameters
/// (19 MiB, 2 passes, 1 lane: the OWASP minimum).
pub fn hash_password(password: &str) -> String {
    let salt = argon2::password_hash::SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("Argon2 with default parameters and a fresh salt cannot fail")
        .to_string()
}

fn verify_hash(hash: &str, password: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

impl Directory {
    pub fn new(cfg: &IdpConfig) -> Self {
        let mut by_login = HashMap::new();
        let mut by_sub = HashMap::new();
        let mut subs = Vec::new();
        for (i, u) in cfg.users.iter().enumerate() {
            by_login.insert((norm(&u.company), norm(&u.username)), i);
            let sub = subject_for(&u.company, &u.username);
            by_sub.insert(sub.clone(), i);
            subs.push(sub);
        }
        let dummy_hash = cfg
            .users
            .first()
            .map(|u| {
                // Same parameters as the first real hash, random password.
                let params = PasswordHash::new(&u.password_hash)
                    .ok()
                    .and_then(|h| argon2::Params::try_from(&h).ok())
                    .unwrap_or_default();
                let salt = argon2::password_hash::SaltString::generate(&mut rand::rngs::OsRng);
                Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                    .hash_password(b"no user has this password", &salt)
                    .map(|h| h.to_string())
                    .unwrap_or_default()
            })
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| hash_password("no user has this password"));
        Directory {
            companies: cfg.companies.clone(),
            password_hashes: RwLock::new(cfg.users.iter().map(|u| u.password_hash.clone()).collect()),
            users: cfg.users.clone(),
            subs,
            by_login,
            by_sub,
            modules: cfg.modules.clone(),
            clients: cfg.clients.iter().map(|c| (c.client_id.clone(), c.clone())).collect(),
            dummy_hash,
        }
    }

    /// A secret no user has, for checking codes of unknown users.
    pub fn dummy_totp_secret(&self) -> &[u8] {
        &[0x5a; 20]
    }

    pub fn user(&self, id: UserId) -> &User {
        &self.users[id]
    }

    pub fn sub(&self, id: UserId) -> &str {
        &self.subs[id]
    }

    pub fn users(&self) -> impl Iterator<Item = (UserId, &User)> {
        self.users.iter().enumerate()
    }

    pub fn find(&self, company: &str, username: &str) -> Option<UserId> {
        self.by_login.get(&(norm(company), norm(username))).copied()
    }

    pub fn find_by_sub(&self, sub: &str) -> Option<UserId> {
        self.by_sub.get(sub).copied()
    }

    pub fn client(&self, client_id: &str) -> Option<&Client> {
        self.clients.get(client_id)
    }

    pub fn clients(&self) -> impl Iterator<Item = &Client> {
        self.clients.values()
    }

    /// Checks a password. Always does one Argon2 verification, whether or
    /// not the user exists, so timing does not tell which.
    pub fn check_password(&self, user: Option<UserId>, password: &str) -> bool {
        match user {
            Some(id) => {
                let hash = self.password_hashes.read().unwrap_or_else(|p| p.into_inner())[id].clone();
                verify_hash(&hash, password)
            }
            None => {
                let _ = verify_hash(&self.dummy_hash, password);
                false
            }
        }
    }

    pub fn set_password(&self, id: UserId, password: &str) {
        let hash = hash_password(password);
        self.password_hashes.write().unwrap_or_else(|p| p.into_inner())[id] = hash;
    }

    /// Modules the user's groups grant, in configuration order.
    pub fn modules_for(&self, id: UserId) -> Vec<&Module> {
        let groups = &self.users[id].groups;
        self.modules
            .iter()
            .filter(|m| groups.iter().any(|g| g == &m.access_group))
            .collect()
    }
}

/// The RFC 6238 code for `secret` at `unix_time` (30 s steps, 6 digits, SHA-1,
/// what authenticator apps use).
pub fn totp_code(secret: &[u8], unix_time: u64) -> String {
    totp(secret).generate(unix_time)
}

fn totp(secret: &[u8]) -> totp_rs::TOTP {
    // `new_unchecked`: secret length is checked once when the config loads.
    totp_rs::TOTP::new_unchecked(totp_rs::Algorithm::SHA1, 6, 1, 30, secret.to_vec())
}

/// Checks `code` against the steps `unix_time` ±1 and returns the matching
/// time step, so a caller can refuse a step already used.
pub fn totp_match(secret: &[u8], code: &str, unix_time: u64) -> Option<u64> {
    let code = code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let t = totp(secret);
    let step = unix_time / 30;
    [step.saturating_sub(1), step, step + 1].into_iter().find(|s| {
        use subtle::ConstantTimeEq;
        bool::from(t.generate(s * 30).as_bytes().ct_eq(code.as_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_sha1_vectors() {
        // RFC 6238 Appendix B, SHA-1 seed, truncated to 6 digits.
        let seed = b"12345678901234567890";
        assert_eq!(totp_code(seed, 59), "287082");
        assert_eq!(totp_code(seed, 1111111109), "081804");
        assert_eq!(totp_code(seed, 2000000000), "279037");
    }

    #[test]
    fn totp_accepts_one_step_either_side_only() {
        let seed = b"12345678901234567890";
        let t = 1111111109;
        let code = totp_code(seed, t);
        assert_eq!(totp_match(seed, &code, t), Some(t / 30));
        assert!(totp_match(seed, &code, t + 30).is_some());
        assert!(totp_match(seed, &code, t - 30).is_some());
        assert!(totp_match(seed, &code, t + 90).is_none());
        assert!(totp_match(seed, "12345", t).is_none());
        assert!(totp_match(seed, "abcdef", t).is_none());
    }

    #[test]
    fn subject_is_stable_and_case_insensitive() {
        assert_eq!(subject_for("Acme", "Alice"), subject_for(" acme", "alice "));
        assert_ne!(subject_for("Acme", "alice"), subject_for("Acme", "bob"));
        assert_eq!(subject_for("Acme", "alice").len(), 36);
    }
}
