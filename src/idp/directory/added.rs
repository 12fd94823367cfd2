//! The directory's users from the users file (`unigate idp user add`):
//! reading the file again when it changed, and the welcome links with
//! which such a user creates their first password.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use argon2::PasswordHash;

use super::{Directory, UpdateError, UserId, Users, hash_password, norm};
use crate::idp::config::User;
use crate::idp::store::token_key;
use crate::idp::users_file::{self, StoredUser, UsersDoc, WelcomeLink};

/// Welcome links of one user that work at once: a new mail adds one and
/// drops the oldest beyond these.
pub const MAX_WELCOME_LINKS: usize = 3;

/// A fresh TOTP secret (160 bits, RFC 4226 §4), base32.
pub fn new_totp_secret() -> String {
    use rand::RngCore;
    let mut b = [0u8; 20];
    rand::rngs::OsRng.fill_bytes(&mut b);
    totp_rs::Secret::Raw(b.to_vec()).to_encoded().to_string()
}

/// A user of the users file as the directory holds it, or what is wrong
/// with the entry. `companies`: the config's, whose spelling wins.
pub fn checked_entry(e: &StoredUser, companies: &[String]) -> Result<User, String> {
    let company = companies
        .iter()
        .find(|c| norm(c) == norm(&e.company))
        .ok_or_else(|| format!("company `{}` is not a [[company]] of the config", e.company))?;
    if e.username.trim().is_empty() {
        return Err("username is empty".into());
    }
    if !e.email.contains('@') {
        return Err(format!("`{}` is not an email address", e.email));
    }
    let totp_secret = totp_rs::Secret::Encoded(e.totp_secret.clone())
        .to_bytes()
        .ok()
        .filter(|b| b.len() >= 16)
        .ok_or("totp_secret is not base32 of at least 128 bits")?;
    if let Some(h) = &e.password_hash
        && PasswordHash::new(h).is_err()
    {
        return Err("password_hash is not an Argon2 PHC string".into());
    }
    Ok(User {
        username: e.username.trim().to_string(),
        company: company.clone(),
        email: e.email.trim().to_string(),
        display_name: e.display_name.clone(),
        password_hash: e.password_hash.clone().unwrap_or_default(),
        totp_secret,
        groups: e.groups.clone(),
        admin: false,
    })
}

impl Directory {
    /// Reads the users file again if it changed since the last look (one
    /// `stat` when it did not). A file that cannot be read or parsed is
    /// logged, and the users known before stay.
    pub fn refresh(&self) {
        let Some(path) = &self.users_file else { return };
        let now = users_file::stamp(path);
        if self.read().stamp == now {
            return;
        }
        let doc = users_file::read(path);
        let mut users = self.write();
        if users.stamp == now {
            return;
        }
        users.stamp = now;
        match doc {
            Ok(doc) => self.apply(&mut users, doc, path),
            Err(e) => tracing::error!(error = %e, "users file not read; the users known before stay"),
        }
    }

    fn apply(&self, users: &mut Users, doc: UsersDoc, path: &Path) {
        let mut seen = HashSet::new();
        for (i, e) in doc.users.iter().enumerate() {
            let user = match checked_entry(e, &self.companies) {
                Ok(u) => u,
                Err(why) => {
                    tracing::error!(file = %path.display(), entry = i, problem = %why, "users file entry skipped");
                    continue;
                }
            };
            let key = (norm(&user.company), norm(&user.username));
            if !seen.insert(key.clone()) {
                tracing::error!(file = %path.display(), entry = i, "users file names this user twice; the first entry is used");
                continue;
            }
            match users.by_login.get(&key).copied() {
                Some(id) if !users.slots[id].added => {
                    tracing::error!(file = %path.display(), entry = i, "users file entry skipped: the config has this user");
                }
                Some(id) => {
                    let slot = &mut users.slots[id];
                    // Taken out and added again between two looks: what the
                    // earlier entry held ends as for a removal.
                    let replaced = slot.active && slot.added_at != e.added;
                    slot.user = Arc::new(user);
                    slot.active = true;
                    slot.added_at = e.added;
                    slot.welcome = e.welcome.clone();
                    if replaced {
                        users.removed.push(id);
                    }
                }
                None => {
                    users.push(user, Some(e.added), e.welcome.clone());
                }
            }
        }
        let Users { slots, removed, .. } = users;
        for (id, s) in slots.iter_mut().enumerate().filter(|(_, s)| s.added) {
            let still = seen.contains(&(norm(&s.user.company), norm(&s.user.username)));
            if s.active && !still {
                tracing::info!(user.sub = %s.sub, file = %path.display(), "user taken out of the users file");
                removed.push(id);
            }
            s.active = still;
        }
        let by_welcome = users
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.active)
            .flat_map(|(id, s)| s.welcome.iter().map(move |w| (w.key.clone(), id)))
            .collect();
        users.by_welcome = by_welcome;
    }

    /// Whether the user was added with `unigate idp user add` and has not
    /// created a password yet.
    pub fn awaits_password(&self, id: UserId) -> bool {
        let users = self.read();
        users
            .active(Some(id))
            .is_some_and(|s| s.added && s.user.password_hash.is_empty())
    }

    /// The user an open welcome link (its token) is for, if it still works
    /// at `now` (Unix seconds).
    pub fn welcome(&self, token: &str, now: u64) -> Option<(UserId, Arc<User>)> {
        self.refresh();
        let key = token_key(token);
        let users = self.read();
        let id = users.by_welcome.get(&key).copied()?;
        let slot = users.active(Some(id))?;
        let open = slot.welcome.iter().any(|w| w.key == key && w.expires > now);
        open.then(|| (id, slot.user.clone()))
    }

    /// Creates the password of the user a welcome link is for, and closes
    /// the user's links: checked again under the users file's lock, so a
    /// link works once even across processes.
    pub fn complete_welcome(&self, token: &str, password: &str, now: u64) -> Result<UserId, UpdateError> {
        let hash = hash_password(password);
        let key = token_key(token);
        let path = self.users_file.as_deref().ok_or(UpdateError::LinkExpired)?;
        let (company, username) = users_file::update(path, |doc| {
            let e = doc
                .users
                .iter_mut()
                .find(|e| e.welcome.iter().any(|w| w.key == key && w.expires > now))
                .ok_or(UpdateError::LinkExpired)?;
            e.password_hash = Some(hash);
            e.welcome.clear();
            Ok::<_, UpdateError>((e.company.clone(), e.username.clone()))
        })?;
        self.find(&company, &username).ok_or(UpdateError::Gone)
    }

    /// A new welcome link, working from `now` (Unix seconds) for `ttl`
    /// seconds, for an added user who has not created a password yet. The
    /// links mailed before keep working until they expire (only the oldest
    /// beyond `MAX_WELCOME_LINKS` is dropped) and the TOTP key stays, so
    /// whoever asks for a new mail cannot spoil the one the user is using.
    /// Returns the link's token.
    pub fn renew_welcome(&self, id: UserId, now: u64, ttl: u64) -> Result<(String, Arc<User>), UpdateError> {
        let user = self.user(id);
        let path = self.users_file.as_deref().ok_or(UpdateError::Gone)?;
        let token = crate::crypto::random_token();
        users_file::update(path, |doc| {
            let e = doc
                .users
                .iter_mut()
                .find(|e| e.is(&user.company, &user.username))
                .ok_or(UpdateError::Gone)?;
            if e.password_hash.is_some() {
                return Err(UpdateError::HasPassword);
            }
            e.welcome.retain(|w| w.expires > now);
            e.welcome.push(WelcomeLink {
                key: token_key(&token),
                expires: now.saturating_add(ttl),
            });
            let extra = e.welcome.len().saturating_sub(MAX_WELCOME_LINKS);
            e.welcome.drain(..extra);
            Ok(())
        })?;
        self.refresh();
        Ok((token, self.user(id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idp::config::IdpConfig;
    use crate::idp::users_file::UsersFileError;

    /// A config with alice (in the config itself) and a users file.
    fn config(path: &Path) -> IdpConfig {
        let mut cfg = IdpConfig::from_toml(
            r#"
            [[company]]
            name = "Acme"
            [[user]]
            username = "alice"
            company = "Acme"
            email = "alice@acme.example"
            display_name = "Alice"
            password_hash = "$argon2id$v=19$m=19456,t=2,p=1$jAtOV2M9l/ZCfg8800twFg$LuBwYYAN/OrLcRI4lGovMDkvmDJc3yZ1NepthaaelU4"
            totp_secret = "NBUJVNXAXKZEYDONQERB3FE5HWGFZFMX"
            "#,
            Path::new("."),
        )
        .unwrap();
        cfg.users_file = Some(path.to_path_buf());
        cfg
    }

    fn entry(name: &str, company: &str) -> StoredUser {
        StoredUser {
            username: name.into(),
            company: company.into(),
            email: format!("{name}@acme.example"),
            display_name: name.into(),
            groups: vec![],
            totp_secret: new_totp_secret(),
            password_hash: None,
            added: 0,
            welcome: vec![WelcomeLink {
                key: token_key("tok"),
                expires: 100,
            }],
        }
    }

    fn set_users(path: &Path, users: Vec<StoredUser>) {
        users_file::update::<_, UsersFileError>(path, |doc| {
            doc.users = users;
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn the_users_file_is_read_again_when_it_changes_and_ids_stay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        let cfg = config(&path);
        let d = Directory::new(&cfg);
        assert!(d.find("acme", "erin").is_none());
        users_file::update::<_, UsersFileError>(&path, |doc| {
            // alice is the config's: her entry here is ignored; Initech is unknown.
            doc.users = vec![entry("erin", "ACME"), entry("alice", "Acme"), entry("x", "Initech")];
            Ok(())
        })
        .unwrap();
        let erin = d.find("Acme", "ERIN").expect("seen without a restart");
        assert_eq!(d.user(erin).company, "Acme", "the config's spelling");
        assert_eq!(d.find("acme", "alice"), Some(0));
        assert!(d.find("Initech", "x").is_none());
        assert!(d.awaits_password(erin) && !d.awaits_password(0));
        assert!(!d.check_password(Some(erin), ""), "no password: no login");
        assert_eq!(d.welcome("tok", 99).map(|(id, _)| id), Some(erin));
        assert!(d.welcome("tok", 100).is_none(), "expired");
        assert!(d.welcome("other", 99).is_none());
        // Taken out of the file: unknown; put back: the same id.
        users_file::update::<_, UsersFileError>(&path, |doc| {
            doc.users.clear();
            Ok(())
        })
        .unwrap();
        assert!(d.find("acme", "erin").is_none());
        users_file::update::<_, UsersFileError>(&path, |doc| {
            doc.users = vec![entry("erin", "Acme")];
            Ok(())
        })
        .unwrap();
        assert_eq!(d.find("acme", "erin"), Some(erin));
        // The password a user creates is kept in the file.
        assert_eq!(d.complete_welcome("tok", "a-long-password", 99).unwrap(), erin);
        assert!(d.check_password(Some(erin), "a-long-password"));
        assert!(matches!(
            d.complete_welcome("tok", "again-a-password", 99),
            Err(UpdateError::LinkExpired)
        ));
        let reread = Directory::new(&cfg);
        assert!(reread.check_password(reread.find("Acme", "erin"), "a-long-password"));
    }

    #[test]
    fn removals_are_reported_once_and_an_id_never_names_someone_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        let d = Directory::new(&config(&path));
        set_users(&path, vec![entry("erin", "Acme")]);
        let erin = d.find("acme", "erin").unwrap();
        assert!(d.is_active(erin));
        assert!(d.take_removed().is_empty());
        // erin is taken out, frank added: erin's id stays erin's, inactive.
        set_users(&path, vec![entry("frank", "Acme")]);
        assert!(!d.is_active(erin));
        assert_eq!(d.take_removed(), vec![erin]);
        assert!(d.take_removed().is_empty(), "reported once");
        let frank = d.find("acme", "frank").unwrap();
        assert_ne!(frank, erin);
        assert_eq!(d.user(erin).username, "erin");
        assert!(d.find_by_sub(&d.sub(erin)).is_none());
        // Taken out and added again between two looks (a new `added`): the
        // earlier entry's sessions must end, though the user is back.
        let mut again = entry("frank", "Acme");
        again.added = 42;
        set_users(&path, vec![again]);
        assert!(d.is_active(frank));
        assert_eq!(d.take_removed(), vec![frank]);
    }

    #[test]
    fn a_new_welcome_link_keeps_the_key_and_the_links_mailed_before() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        let d = Directory::new(&config(&path));
        set_users(&path, vec![entry("erin", "Acme")]);
        let erin = d.find("acme", "erin").unwrap();
        let key = d.user(erin).totp_secret.clone();
        let (second, user) = d.renew_welcome(erin, 10, 100).unwrap();
        assert_eq!(user.totp_secret, key, "the key stays until the password is set");
        assert_eq!(
            d.welcome("tok", 50).map(|(id, _)| id),
            Some(erin),
            "the first link still works"
        );
        assert_eq!(d.welcome(&second, 50).map(|(id, _)| id), Some(erin));
        assert_eq!(d.welcome(&second, 109).map(|(id, _)| id), Some(erin));
        assert!(d.welcome(&second, 110).is_none(), "expires after its ttl");
        // Beyond MAX_WELCOME_LINKS, the oldest goes.
        let newer: Vec<String> = (0..MAX_WELCOME_LINKS - 1)
            .map(|i| d.renew_welcome(erin, 20 + i as u64, 100).unwrap().0)
            .collect();
        assert!(d.welcome("tok", 50).is_none(), "the oldest link was dropped");
        for t in newer.iter().chain([&second]) {
            assert!(d.welcome(t, 50).is_some());
        }
        // Any of them creates the password, and then none works.
        assert_eq!(d.complete_welcome(&second, "a-long-password", 50).unwrap(), erin);
        assert!(newer.iter().all(|t| d.welcome(t, 50).is_none()));
        assert!(matches!(d.renew_welcome(erin, 60, 100), Err(UpdateError::HasPassword)));
    }
}
