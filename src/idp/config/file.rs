//! The config file's serde mirror (`IdpFile` and friends): what an
//! operator writes, key by key. `super` checks it into `IdpConfig`.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::secret::SecretRef;

#[derive(Debug, Default, Deserialize)]
pub struct IdpFile {
    #[serde(default)]
    pub server: ServerFile,
    #[serde(default)]
    pub signing: SigningFile,
    #[serde(default)]
    pub tokens: TokensFile,
    #[serde(default)]
    pub login: LoginFile,
    #[serde(default)]
    pub outbox: OutboxFile,
    #[serde(default)]
    pub directory: DirectoryFile,
    #[serde(default, rename = "company")]
    pub companies: Vec<CompanyFile>,
    #[serde(default, rename = "user")]
    pub users: Vec<UserFile>,
    #[serde(default, rename = "module")]
    pub modules: Vec<ModuleFile>,
    #[serde(default, rename = "client")]
    pub clients: Vec<ClientFile>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ServerFile {
    /// Address to listen on; default `127.0.0.1:9000`.
    pub listen: Option<String>,
    /// The issuer identifier and public base URL. Default: `http://` + the
    /// bound address.
    pub issuer: Option<String>,
    /// Largest accepted request body, in bytes; default 16384.
    pub max_body_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
pub struct SigningFile {
    /// Default algorithm for ID tokens: `ES256` (default) or `RS256`.
    pub algorithm: Option<String>,
    /// PKCS#8 PEM P-256 private key; generated at start when absent.
    pub es256_key: Option<SecretRef>,
    /// PKCS#1 or PKCS#8 PEM RSA private key; generated at start when absent.
    pub rs256_key: Option<SecretRef>,
    /// Rotate generated keys this often (e.g. `24h`); off when absent.
    #[serde(default, with = "humantime_serde")]
    pub rotation_interval: Option<Duration>,
    /// How long a replaced public key stays in the JWKS; default `1h`.
    #[serde(default, with = "humantime_serde")]
    pub rotation_grace: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
pub struct TokensFile {
    #[serde(default, with = "humantime_serde")]
    pub code_ttl: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub access_token_ttl: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub id_token_ttl: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub refresh_token_ttl: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub session_ttl: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
pub struct LoginFile {
    /// Failed logins per username+company within `failure_window` before
    /// that account is throttled; default 5.
    pub max_failures_per_user: Option<u32>,
    /// Failed logins per client address within `failure_window`; default 20.
    pub max_failures_per_ip: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    pub failure_window: Option<Duration>,
    /// Refuse a TOTP code already used once (RFC 6238 §5.2); default true.
    /// Load tests that log one user in many times a second turn it off.
    pub totp_replay_protection: Option<bool>,
    /// Password-reset links expire after this; default `30m`.
    #[serde(default, with = "humantime_serde")]
    pub reset_link_ttl: Option<Duration>,
    /// The links of welcome mails (a new user creates a password) expire
    /// after this; default `7d`.
    #[serde(default, with = "humantime_serde")]
    pub welcome_link_ttl: Option<Duration>,
    /// Logins a client address may start per minute; default 300.
    pub max_starts_per_minute_per_ip: Option<u32>,
    /// Password checks (each an Argon2 hash) per client address per minute; default 120.
    pub max_password_checks_per_minute_per_ip: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
pub struct OutboxFile {
    /// Folder the .eml files go to; default `outbox` in the working folder.
    pub dir: Option<PathBuf>,
    /// The From address; default `noreply@kaseya.invalid`.
    pub from: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct DirectoryFile {
    /// The users `unigate idp user add` adds, and the passwords they set,
    /// relative to the config file's folder; created when the first user is
    /// added. Default: the config file's name with `.users.toml` (for
    /// `idp.toml`, `idp.users.toml`).
    pub users_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
pub struct CompanyFile {
    pub name: String,
}

#[derive(Debug, Deserialize)]
pub struct UserFile {
    pub username: String,
    pub company: String,
    pub email: String,
    pub display_name: String,
    /// An Argon2 PHC string (`unigate idp hash-password` makes one).
    pub password_hash: String,
    /// Base32 TOTP secret, at least 128 bits.
    pub totp_secret: String,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub admin: bool,
}

#[derive(Debug, Deserialize)]
pub struct ModuleFile {
    pub name: String,
    pub display_name: String,
    /// Where an arrow tile goes (through unigate this starts the login).
    pub url: String,
    /// The module's own login page, for a lock tile; default `url`.
    pub login_url: Option<String>,
    #[serde(default)]
    pub instances: Vec<InstanceFile>,
    #[serde(default = "yes")]
    pub unified_login: bool,
    pub access_group: String,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
pub struct InstanceFile {
    pub name: String,
    pub display_name: Option<String>,
    pub url: String,
}

#[derive(Debug, Deserialize)]
pub struct ClientFile {
    pub client_id: String,
    pub client_secret: SecretRef,
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<String>,
    pub backchannel_logout_uri: Option<String>,
    pub frontchannel_logout_uri: Option<String>,
    /// Where My Modules starts a login at this client (OpenID Connect
    /// third-party-initiated login: `iss`, `target_link_uri`,
    /// `login_hint`); the tiles of modules on the origins of its
    /// `redirect_uris` go through it. Unset: tiles link to the module.
    pub initiate_login_uri: Option<String>,
    /// `ES256` or `RS256`; default the server's algorithm.
    pub id_token_signed_response_alg: Option<String>,
    /// The `aud` of this client's access tokens (RFC 9068): the API they
    /// are for; default the issuer + `/api`.
    pub api_audience: Option<String>,
    /// `jwt` (RFC 9068, default) or `opaque` (a random string, checked by
    /// introspection, RFC 7662).
    pub access_token_format: Option<String>,
}
