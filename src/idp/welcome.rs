//! New users: `unigate idp user add` (and `user list`), and the Welcome to
//! KaseyaOne mail. An added user has no password: the mail, from the
//! outbox's noreply address, names their username and company name and
//! links to the page where they create their password and set up their
//! authenticator app. The link works once, until `welcome_link_ttl`.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

use super::config::{IdpConfig, User};
use super::directory::{checked_entry, new_totp_secret, norm};
use super::mail::{MailError, Outbox};
use super::store::token_key;
use super::users_file::{self, StoredUser, UsersFileError, WelcomeLink};
use crate::crypto::random_token;

/// Longest username, company name, email or display name accepted.
const MAX_FIELD: usize = 256;

/// A user to add.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub company: String,
    pub username: String,
    pub email: String,
    /// Default: the username.
    pub display_name: Option<String>,
    pub groups: Vec<String>,
}

/// A user added, and where their welcome mail went.
#[derive(Debug)]
pub struct AddedUser {
    pub username: String,
    pub company: String,
    pub email: String,
    pub users_file: PathBuf,
    /// The set-password link in the mail.
    pub link: String,
    pub mail: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum AddUserError {
    #[error("the config has no users file (directory.users_file)")]
    NoUsersFile,
    #[error("company `{company}` is not a [[company]] of the config; known: {known}")]
    UnknownCompany { company: String, known: String },
    #[error("user `{username}` already exists in company `{company}`")]
    Duplicate { username: String, company: String },
    #[error("`{0}` is not an email address")]
    BadEmail(String),
    #[error("{0}")]
    BadField(String),
    #[error(
        "the welcome link needs the identity provider's address: give --base-url or set server.issuer (server.listen is {0})"
    )]
    NoLinkBase(String),
    #[error("--base-url `{0}` is not an http:// or https:// URL without query or fragment")]
    BadBaseUrl(String),
    #[error(transparent)]
    File(#[from] UsersFileError),
    #[error(
        "user `{username}` was added, but the welcome mail could not be written ({error}); \
         Forgot password on the login page sends a new one"
    )]
    Mail { username: String, error: MailError },
}

/// Where the identity provider is reached, for links in mail written
/// outside it: `given` (`--base-url`, for an IdP listening elsewhere than
/// its config says, as under `unigate demo --idp-port`), else
/// `server.issuer`, else `http://` + `server.listen`.
pub fn link_base(cfg: &IdpConfig, given: Option<&str>) -> Result<String, AddUserError> {
    if let Some(g) = given {
        let bad = || AddUserError::BadBaseUrl(g.to_string());
        let u = url::Url::parse(g.trim()).map_err(|_| bad())?;
        let ok = matches!(u.scheme(), "http" | "https")
            && u.has_host()
            && u.query().is_none()
            && u.fragment().is_none()
            && u.username().is_empty()
            && u.password().is_none();
        return ok.then(|| u.as_str().trim_end_matches('/').to_string()).ok_or_else(bad);
    }
    if let Some(i) = &cfg.issuer {
        return Ok(i.as_str().trim_end_matches('/').to_string());
    }
    let l = cfg.listen;
    if l.port() == 0 || l.ip().is_unspecified() {
        return Err(AddUserError::NoLinkBase(l.to_string()));
    }
    Ok(format!("http://{l}"))
}

fn check_field(name: &str, value: &str) -> Result<String, AddUserError> {
    let v = value.trim();
    if v.is_empty() {
        return Err(AddUserError::BadField(format!("the {name} must not be empty")));
    }
    if v.len() > MAX_FIELD || v.chars().any(char::is_control) {
        return Err(AddUserError::BadField(format!(
            "the {name} must be at most {MAX_FIELD} bytes, without control characters"
        )));
    }
    Ok(v.to_string())
}

/// Adds a user without a password to the users file (under its lock; a
/// running identity provider picks it up) and writes their welcome mail to
/// the outbox. `base`: the identity provider's public URL, for the link.
pub async fn add_user(cfg: &IdpConfig, base: &str, new: NewUser, now: SystemTime) -> Result<AddedUser, AddUserError> {
    let path = cfg.users_file.clone().ok_or(AddUserError::NoUsersFile)?;
    let username = check_field("username", &new.username)?;
    let company_typed = check_field("company name", &new.company)?;
    let email = new.email.trim().to_string();
    if email.len() > MAX_FIELD || email.parse::<lettre::Address>().is_err() {
        return Err(AddUserError::BadEmail(new.email));
    }
    let display_name = match &new.display_name {
        Some(d) => check_field("display name", d)?,
        None => username.clone(),
    };
    let company = cfg
        .companies
        .iter()
        .find(|c| norm(c) == norm(&company_typed))
        .cloned()
        .ok_or_else(|| AddUserError::UnknownCompany {
            company: company_typed.clone(),
            known: cfg.companies.join(", "),
        })?;
    if cfg
        .users
        .iter()
        .any(|u| norm(&u.company) == norm(&company) && norm(&u.username) == norm(&username))
    {
        return Err(AddUserError::Duplicate { username, company });
    }
    let token = random_token();
    let unix = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let entry = StoredUser {
        username: username.clone(),
        company: company.clone(),
        email: email.clone(),
        display_name,
        groups: new
            .groups
            .iter()
            .map(|g| g.trim().to_string())
            .filter(|g| !g.is_empty())
            .collect(),
        totp_secret: new_totp_secret(),
        password_hash: None,
        added: unix(now),
        welcome: vec![WelcomeLink {
            key: token_key(&token),
            expires: unix(now + cfg.login.welcome_link_ttl),
        }],
    };
    let user = checked_entry(&entry, &cfg.companies).map_err(AddUserError::BadField)?;
    let file = path.clone();
    tokio::task::spawn_blocking(move || {
        users_file::update(&file, |doc| {
            if doc.users.iter().any(|e| e.is(&entry.company, &entry.username)) {
                return Err(AddUserError::Duplicate {
                    username: entry.username.clone(),
                    company: entry.company.clone(),
                });
            }
            doc.users.push(entry);
            Ok(())
        })
    })
    .await
    .map_err(|e| AddUserError::BadField(format!("adding the user failed: {e}")))??;
    tracing::info!(user = %username, company = %company, file = %path.display(), "user added");
    let link = format!("{base}/welcome?token={token}");
    let outbox = Outbox::new(cfg.outbox_dir.clone(), cfg.outbox_from.clone());
    let mail = send_welcome(&outbox, &user, &link, cfg.login.welcome_link_ttl)
        .await
        .map_err(|error| AddUserError::Mail {
            username: username.clone(),
            error,
        })?;
    Ok(AddedUser {
        username,
        company,
        email,
        users_file: path,
        link,
        mail,
    })
}

/// How long a link lives, in words: "7 days", "12 hours".
fn lifetime(d: Duration) -> String {
    let (n, unit) = match d.as_secs() {
        s if s >= 86_400 && s % 86_400 == 0 => (s / 86_400, "day"),
        s if s >= 3600 => (s.div_ceil(3600), "hour"),
        s => (s.div_ceil(60).max(1), "minute"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// Writes the Welcome to KaseyaOne mail.
pub async fn send_welcome(outbox: &Outbox, user: &User, link: &str, ttl: Duration) -> Result<PathBuf, MailError> {
    let body = format!(
        "Hello {name},\n\n\
         Welcome to KaseyaOne. A KaseyaOne user account has been added for you.\n\n\
         \x20 Username:     {username}\n\
         \x20 Company Name: {company}\n\n\
         To access KaseyaOne, you need your company name, username, and password.\n\
         As you are logging in for the first time, create your password and set up\n\
         your authenticator app for verification codes here (the link works once,\n\
         for {ttl}):\n\n\
         {link}\n\n\
         If you've forgotten your username, company name, or password later, click\n\
         Can't Log In? on the KaseyaOne login page.\n",
        name = user.display_name,
        username = user.username,
        company = user.company,
        ttl = lifetime(ttl),
    );
    outbox.send(&user.email, "Welcome to KaseyaOne", body).await
}

/// The `otpauth://` URI an authenticator app reads (as a QR code or
/// typed): issuer KaseyaOne, SHA-1, 6 digits, 30 s.
pub fn otpauth_uri(user: &User) -> String {
    let secret = totp_rs::Secret::Raw(user.totp_secret.clone()).to_encoded().to_string();
    let label = format!("KaseyaOne:{} ({})", user.username, user.company);
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("secret", &secret)
        .append_pair("issuer", "KaseyaOne")
        .append_pair("algorithm", "SHA1")
        .append_pair("digits", "6")
        .append_pair("period", "30")
        .finish();
    format!(
        "otpauth://totp/{}?{query}",
        utf8_percent_encode(&label, NON_ALPHANUMERIC)
    )
}

/// The base32 secret in groups of four, easier to type.
pub fn grouped_secret(user: &User) -> String {
    let secret = totp_rs::Secret::Raw(user.totp_secret.clone()).to_encoded().to_string();
    let chars: Vec<char> = secret.chars().collect();
    chars
        .chunks(4)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join(" ")
}

/// One line per user, for `unigate idp user list`: the config's and the
/// users file's, with their state.
pub fn list_users(cfg: &IdpConfig, now: SystemTime) -> Result<Vec<String>, UsersFileError> {
    let unix = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut lines = vec!["COMPANY\tUSERNAME\tEMAIL\tGROUPS\tSTATE".to_string()];
    for u in &cfg.users {
        lines.push(format!(
            "{}\t{}\t{}\t{}\tin the config",
            u.company,
            u.username,
            u.email,
            u.groups.join(",")
        ));
    }
    let doc = match &cfg.users_file {
        Some(p) => users_file::read(p)?,
        None => Default::default(),
    };
    for e in &doc.users {
        let state = match &e.password_hash {
            Some(_) => "active",
            None if e.welcome.iter().any(|w| w.expires > unix) => "welcome mail sent; no password yet",
            None => "welcome link expired; no password yet",
        };
        lines.push(format!(
            "{}\t{}\t{}\t{}\t{state}",
            e.company,
            e.username,
            e.email,
            e.groups.join(",")
        ));
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_read_as_words() {
        assert_eq!(lifetime(Duration::from_secs(7 * 86_400)), "7 days");
        assert_eq!(lifetime(Duration::from_secs(86_400)), "1 day");
        assert_eq!(lifetime(Duration::from_secs(3600)), "1 hour");
        assert_eq!(lifetime(Duration::from_secs(90_000)), "25 hours");
        assert_eq!(lifetime(Duration::from_secs(1800)), "30 minutes");
    }

    #[test]
    fn the_link_base_is_the_given_url_else_the_issuer_else_the_listen_address() {
        let mut cfg = IdpConfig::from_toml("", std::path::Path::new(".")).unwrap();
        cfg.listen = "127.0.0.1:9000".parse().unwrap();
        cfg.issuer = None;
        assert_eq!(link_base(&cfg, None).unwrap(), "http://127.0.0.1:9000");
        cfg.issuer = Some("https://idp.example/".parse().unwrap());
        assert_eq!(link_base(&cfg, None).unwrap(), "https://idp.example");
        let given = |u: &str| link_base(&cfg, Some(u)).map_err(|e| e.to_string());
        assert_eq!(given("http://127.0.0.1:9100/").unwrap(), "http://127.0.0.1:9100");
        assert_eq!(given("https://sso.example/k1").unwrap(), "https://sso.example/k1");
        for bad in [
            "127.0.0.1:9100",
            "ftp://x",
            "http://h/?a=1",
            "http://h/#f",
            "http://u:p@h/",
        ] {
            assert!(given(bad).unwrap_err().contains("--base-url"), "{bad}");
        }
    }
}
