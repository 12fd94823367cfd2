//! The users file: users added with `unigate idp user add` and the
//! passwords they set, beside the config (whose own `[[user]]` entries stay
//! read-only). Both the command and the running provider change it, so every
//! change is a read-modify-write under an exclusive lock (`flock` on a
//! `.lock` file beside it) and lands whole: written to a fresh temporary
//! file (a random name, created exclusively, mode 0600), synced, then
//! renamed over the old one. The provider notices a change by the file's
//! identity (modification time, size, inode) and reads it again.

use std::fs::File;
use std::io::Write;
#[cfg(unix)]
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::config::parse_toml;

/// The file's contents.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct UsersDoc {
    #[serde(default, rename = "user", skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<StoredUser>,
}

/// One added user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredUser {
    pub username: String,
    pub company: String,
    pub email: String,
    pub display_name: String,
    #[serde(default)]
    pub groups: Vec<String>,
    /// Base32; shown once, on the page the welcome link opens.
    pub totp_secret: String,
    /// Argon2 PHC string; absent until the user creates a password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
    /// When the user was added (Unix seconds).
    #[serde(default)]
    pub added: u64,
    /// The welcome links mailed, until the user creates a password: the
    /// newest few, each working until it expires (read from one table or
    /// an array of them).
    #[serde(default, deserialize_with = "one_or_many", skip_serializing_if = "Vec::is_empty")]
    pub welcome: Vec<WelcomeLink>,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<WelcomeLink>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(WelcomeLink),
        Many(Vec<WelcomeLink>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(w) => vec![w],
        OneOrMany::Many(v) => v,
    })
}

/// A welcome link: the SHA-256 of its token (never the token) and when it
/// stops working.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WelcomeLink {
    pub key: String,
    /// Unix seconds.
    pub expires: u64,
}

impl StoredUser {
    /// Whether this entry names `company`/`username` (as people type them).
    pub fn is(&self, company: &str, username: &str) -> bool {
        super::directory::norm(&self.company) == super::directory::norm(company)
            && super::directory::norm(&self.username) == super::directory::norm(username)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UsersFileError {
    #[error("cannot read `{path}`: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("`{path}` has problems:\n{problems}")]
    Parse { path: PathBuf, problems: String },
    #[error("cannot write `{path}`: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot lock `{path}`: {source}")]
    Lock { path: PathBuf, source: std::io::Error },
}

/// What identifies one version of the file: a rename gives a new inode, a
/// write a new time or size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

/// The file's current stamp; `None` when it does not exist.
pub fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let inode = 0;
    Some(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
        inode,
    })
}

/// Reads the file; a missing file is an empty one.
pub fn read(path: &Path) -> Result<UsersDoc, UsersFileError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(UsersDoc::default()),
        Err(source) => {
            return Err(UsersFileError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    parse_toml(&text).map_err(|e| UsersFileError::Parse {
        path: path.to_path_buf(),
        problems: e.to_string(),
    })
}

const HEADER: &str = "# KaseyaOne users added with `unigate idp user add`, and the passwords they\n\
# set. Written by the identity provider and that command (under a lock, whole\n\
# files only); the running provider reads it again when it changes.\n\n";

/// Changes the file under its lock: reads it, lets `change` edit it, and
/// writes it back (whole) when `change` succeeds. The lock is held only for
/// this call, never across an `await`.
pub fn update<T, E>(path: &Path, change: impl FnOnce(&mut UsersDoc) -> Result<T, E>) -> Result<T, E>
where
    E: From<UsersFileError>,
{
    let _lock = lock(path)?;
    let mut doc = read(path)?;
    let out = change(&mut doc)?;
    write_whole(path, &doc)?;
    Ok(out)
}

fn lock(path: &Path) -> Result<nix::fcntl::Flock<File>, UsersFileError> {
    let lock_path = with_suffix(path, ".lock");
    let err = |source: std::io::Error| UsersFileError::Lock {
        path: lock_path.clone(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.create(true).truncate(false).write(true);
    // Never through a symbolic link someone left at the lock's name.
    #[cfg(unix)]
    options.mode(0o600).custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits());
    let file = options.open(&lock_path).map_err(err)?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, errno)| err(std::io::Error::from(errno)))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn write_whole(path: &Path, doc: &UsersDoc) -> Result<(), UsersFileError> {
    let err = |source: std::io::Error| UsersFileError::Write {
        path: path.to_path_buf(),
        source,
    };
    let text = toml::to_string(doc).map_err(|e| err(std::io::Error::other(e)))?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A random name created exclusively (never an existing file or a
    // symbolic link), for the owner only from the start: the file holds
    // password hashes and TOTP secrets. Removed if anything fails.
    let prefix = format!(".{name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    #[cfg(unix)]
    builder.permissions(std::fs::Permissions::from_mode(0o600));
    let mut tmp = builder.tempfile_in(dir).map_err(err)?;
    tmp.write_all(HEADER.as_bytes()).map_err(err)?;
    tmp.write_all(text.as_bytes()).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> StoredUser {
        StoredUser {
            username: name.into(),
            company: "Acme".into(),
            email: format!("{name}@acme.example"),
            display_name: name.into(),
            groups: vec!["g".into()],
            totp_secret: "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP".into(),
            password_hash: None,
            added: 1,
            welcome: vec![WelcomeLink {
                key: "k".into(),
                expires: 2,
            }],
        }
    }

    #[test]
    fn updates_round_trip_and_change_the_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("users.toml");
        assert!(stamp(&path).is_none());
        assert!(read(&path).unwrap().users.is_empty(), "a missing file is empty");
        update::<_, UsersFileError>(&path, |d| {
            d.users.push(user("erin"));
            Ok(())
        })
        .unwrap();
        let first = stamp(&path).unwrap();
        let doc = read(&path).unwrap();
        assert_eq!(doc.users.len(), 1);
        assert_eq!(doc.users[0].welcome, user("erin").welcome);
        assert!(doc.users[0].is(" ACME", "Erin"));
        update::<_, UsersFileError>(&path, |d| {
            d.users[0].password_hash = Some("$argon2id$x".into());
            d.users[0].welcome.clear();
            Ok(())
        })
        .unwrap();
        assert_ne!(stamp(&path).unwrap(), first);
        let doc = read(&path).unwrap();
        assert_eq!(doc.users[0].password_hash.as_deref(), Some("$argon2id$x"));
        assert!(doc.users[0].welcome.is_empty());
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    }

    #[test]
    fn one_welcome_link_or_several_are_read_and_several_written() {
        let one = "[[user]]\nusername = \"erin\"\ncompany = \"Acme\"\nemail = \"e@acme.example\"\n\
                   display_name = \"Erin\"\ntotp_secret = \"JBSWY3DPEHPK3PXP\"\n\
                   [user.welcome]\nkey = \"k1\"\nexpires = 5\n";
        let doc: UsersDoc = parse_toml(one).unwrap();
        assert_eq!(
            doc.users[0].welcome,
            vec![WelcomeLink {
                key: "k1".into(),
                expires: 5
            }]
        );
        let mut doc = doc;
        doc.users[0].welcome.push(WelcomeLink {
            key: "k2".into(),
            expires: 6,
        });
        let text = toml::to_string(&doc).unwrap();
        assert_eq!(text.matches("[[user.welcome]]").count(), 2, "{text}");
        let again: UsersDoc = parse_toml(&text).unwrap();
        assert_eq!(again.users[0].welcome, doc.users[0].welcome);
    }

    #[test]
    fn a_failed_change_writes_nothing_and_bad_files_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        let r: Result<(), UsersFileError> = update(&path, |d| {
            d.users.push(user("x"));
            Err(UsersFileError::Write {
                path: path.clone(),
                source: std::io::Error::other("no"),
            })
        });
        assert!(r.is_err());
        assert!(stamp(&path).is_none());
        std::fs::write(&path, "[[user]]\nusername = 1\n").unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert!(e.contains("users.toml"), "{e}");
    }
}
