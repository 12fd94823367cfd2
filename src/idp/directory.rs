//! The provider's directory: companies, users, modules and clients, looked up
//! case-insensitively the way people type them. The config's `[[user]]`
//! entries are fixed at start (a password reset changes theirs in memory);
//! users added with `unigate idp user add` live in the users file, which is
//! read again whenever it changed, so a running provider knows a user added
//! a moment ago, and the passwords those users set are written back to it.
//! A user keeps one `UserId` for the life of the process: ids index a list
//! that only grows, so a session or token naming an id can never come to
//! name someone else. A user taken out of the file stays in the list,
//! inactive, and is reported once by `take_removed` so the provider can
//! end what that user still holds.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use sha2::{Digest, Sha256};

use super::config::{Client, IdpConfig, Module, User};
use super::users_file::{self, Stamp, UsersFileError, WelcomeLink};

mod added;
pub use added::{checked_entry, new_totp_secret};

/// Index of a user in the directory's list of every user known since
/// start (never reused).
pub type UserId = usize;

pub struct Directory {
    pub companies: Vec<String>,
    users: RwLock<Users>,
    users_file: Option<PathBuf>,
    pub modules: Vec<Module>,
    clients: HashMap<String, Client>,
    /// A hash with the same parameters as real ones, checked against when no
    /// user matches, so an unknown user costs the same time as a known one.
    dummy_hash: String,
}

/// Every user known since start; a slot is never reused, so sessions and
/// tokens that name a `UserId` keep naming the same person.
#[derive(Default)]
struct Users {
    slots: Vec<Slot>,
    by_login: HashMap<(String, String), UserId>,
    by_sub: HashMap<String, UserId>,
    /// SHA-256 of an open welcome link's token → its user.
    by_welcome: HashMap<String, UserId>,
    /// The users file as last read.
    stamp: Option<Stamp>,
    /// Users taken out of the users file (or taken out and added again)
    /// since the provider last asked.
    removed: Vec<UserId>,
}

struct Slot {
    user: Arc<User>,
    sub: String,
    /// From the users file (its password is kept there), not the config.
    added: bool,
    /// Still in the directory: a user taken out of the users file is not.
    active: bool,
    /// When the users file says the user was added (Unix seconds): another
    /// value means the entry was removed and added again.
    added_at: u64,
    welcome: Vec<WelcomeLink>,
}

/// Why the users file was not changed.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error(transparent)]
    File(#[from] UsersFileError),
    #[error("the link has expired or was used")]
    LinkExpired,
    #[error("the user is no longer in the users file")]
    Gone,
    #[error("the user has already created a password")]
    HasPassword,
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

impl Users {
    fn push(&mut self, user: User, added_at: Option<u64>, welcome: Vec<WelcomeLink>) -> UserId {
        let id = self.slots.len();
        let sub = subject_for(&user.company, &user.username);
        self.by_login.insert((norm(&user.company), norm(&user.username)), id);
        self.by_sub.insert(sub.clone(), id);
        self.slots.push(Slot {
            user: Arc::new(user),
            sub,
            added: added_at.is_some(),
            active: true,
            added_at: added_at.unwrap_or(0),
            welcome,
        });
        id
    }

    fn active(&self, id: Option<UserId>) -> Option<&Slot> {
        id.and_then(|id| self.slots.get(id)).filter(|s| s.active)
    }
}

impl Directory {
    pub fn new(cfg: &IdpConfig) -> Self {
        let mut users = Users::default();
        for u in &cfg.users {
            users.push(u.clone(), None, Vec::new());
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
        let dir = Directory {
            companies: cfg.companies.clone(),
            users: RwLock::new(users),
            users_file: cfg.users_file.clone(),
            modules: cfg.modules.clone(),
            clients: cfg.clients.iter().map(|c| (c.client_id.clone(), c.clone())).collect(),
            dummy_hash,
        };
        dir.refresh();
        dir
    }

    fn read(&self) -> RwLockReadGuard<'_, Users> {
        self.users.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Users> {
        self.users.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn users_file(&self) -> Option<&Path> {
        self.users_file.as_deref()
    }

    /// A secret no user has, for checking codes of unknown users.
    pub fn dummy_totp_secret(&self) -> &[u8] {
        &[0x5a; 20]
    }

    pub fn user(&self, id: UserId) -> Arc<User> {
        self.read().slots[id].user.clone()
    }

    pub fn sub(&self, id: UserId) -> String {
        self.read().slots[id].sub.clone()
    }

    /// Every user in the directory now.
    pub fn users(&self) -> Vec<(UserId, Arc<User>)> {
        self.refresh();
        let users = self.read();
        let list = users.slots.iter().enumerate().filter(|(_, s)| s.active);
        list.map(|(id, s)| (id, s.user.clone())).collect()
    }

    pub fn find(&self, company: &str, username: &str) -> Option<UserId> {
        self.refresh();
        let users = self.read();
        let id = users.by_login.get(&(norm(company), norm(username))).copied();
        users.active(id).and(id)
    }

    /// Whether the user is still in the directory (the users file is read
    /// again if it changed).
    pub fn is_active(&self, id: UserId) -> bool {
        self.refresh();
        self.read().active(Some(id)).is_some()
    }

    /// The users taken out of the directory since the last call (each
    /// reported once), after reading the users file again if it changed.
    pub fn take_removed(&self) -> Vec<UserId> {
        self.refresh();
        if self.read().removed.is_empty() {
            return Vec::new();
        }
        std::mem::take(&mut self.write().removed)
    }

    pub fn find_by_sub(&self, sub: &str) -> Option<UserId> {
        let users = self.read();
        let id = users.by_sub.get(sub).copied();
        users.active(id).and(id)
    }

    /// Whether `hint` (a `login_hint`) names this user: their username, or
    /// their email, as people type them.
    pub fn hint_names(&self, id: UserId, hint: &str) -> bool {
        let u = self.user(id);
        norm(hint) == norm(&u.username) || (hint.contains('@') && norm(hint) == norm(&u.email))
    }

    pub fn client(&self, client_id: &str) -> Option<&Client> {
        self.clients.get(client_id)
    }

    pub fn clients(&self) -> impl Iterator<Item = &Client> {
        self.clients.values()
    }

    /// Checks a password. Always does one Argon2 verification, whether or
    /// not the user exists or has a password yet, so timing does not tell.
    pub fn check_password(&self, user: Option<UserId>, password: &str) -> bool {
        let hash = {
            let users = self.read();
            users
                .active(user)
                .map(|s| s.user.password_hash.clone())
                .filter(|h| !h.is_empty())
        };
        match hash {
            Some(hash) => verify_hash(&hash, password),
            None => {
                let _ = verify_hash(&self.dummy_hash, password);
                false
            }
        }
    }

    /// Sets a user's password: in the users file for an added user (and so
    /// kept across restarts), in memory for one of the config.
    pub fn set_password(&self, id: UserId, password: &str) -> Result<(), UpdateError> {
        let hash = hash_password(password);
        let (added, user) = {
            let users = self.read();
            (users.slots[id].added, users.slots[id].user.clone())
        };
        if added {
            let path = self.users_file.as_deref().ok_or(UpdateError::Gone)?;
            users_file::update(path, |doc| {
                let e = doc
                    .users
                    .iter_mut()
                    .find(|e| e.is(&user.company, &user.username))
                    .ok_or(UpdateError::Gone)?;
                e.password_hash = Some(hash);
                e.welcome.clear();
                Ok::<_, UpdateError>(())
            })?;
            self.refresh();
        } else {
            let mut users = self.write();
            let mut changed = (*users.slots[id].user).clone();
            changed.password_hash = hash;
            users.slots[id].user = Arc::new(changed);
        }
        Ok(())
    }

    /// Modules the user's groups grant, in configuration order.
    pub fn modules_for(&self, id: UserId) -> Vec<&Module> {
        let groups = self.user(id).groups.clone();
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
