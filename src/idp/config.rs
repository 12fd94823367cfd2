//! The embedded identity provider's configuration: the file's serde types
//! (`IdpFile` and friends), and `IdpConfig`, the checked form the provider
//! runs on. Every problem in a file is reported at once with its key path.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde::Deserialize;
use url::Url;

use crate::config::{ConfigErrors, parse_toml};
use crate::secret::{Secret, SecretRef};

// ---------------------------------------------------------------- file types

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
    /// `ES256` or `RS256`; default the server's algorithm.
    pub id_token_signed_response_alg: Option<String>,
    /// The `aud` of this client's access tokens (RFC 9068): the API they
    /// are for; default the issuer + `/api`.
    pub api_audience: Option<String>,
    /// `jwt` (RFC 9068, default) or `opaque` (a random string, checked by
    /// introspection, RFC 7662).
    pub access_token_format: Option<String>,
}

// ------------------------------------------------------------ checked config

#[derive(Debug, Clone)]
pub struct IdpConfig {
    pub listen: SocketAddr,
    pub issuer: Option<Url>,
    pub max_body_bytes: usize,
    pub signing: SigningConfig,
    pub tokens: TokenConfig,
    pub login: LoginConfig,
    pub outbox_dir: PathBuf,
    pub outbox_from: String,
    pub companies: Vec<String>,
    pub users: Vec<User>,
    pub modules: Vec<Module>,
    pub clients: Vec<Client>,
}

#[derive(Debug, Clone)]
pub struct SigningConfig {
    pub algorithm: Algorithm,
    pub es256_key: Option<Secret>,
    pub rs256_key: Option<Secret>,
    pub rotation_interval: Option<Duration>,
    pub rotation_grace: Duration,
}

#[derive(Debug, Clone)]
pub struct TokenConfig {
    pub code_ttl: Duration,
    pub access_token_ttl: Duration,
    pub id_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub session_ttl: Duration,
}

#[derive(Debug, Clone)]
pub struct LoginConfig {
    pub max_failures_per_user: u32,
    pub max_failures_per_ip: u32,
    pub failure_window: Duration,
    pub totp_replay_protection: bool,
    pub reset_link_ttl: Duration,
    pub max_starts_per_minute_per_ip: u32,
    pub max_password_checks_per_minute_per_ip: u32,
}

#[derive(Debug, Clone)]
pub struct User {
    pub username: String,
    pub company: String,
    pub email: String,
    pub display_name: String,
    pub password_hash: String,
    pub totp_secret: Vec<u8>,
    pub groups: Vec<String>,
    pub admin: bool,
}

#[derive(Debug, Clone)]
pub struct Module {
    pub name: String,
    pub display_name: String,
    pub url: Url,
    pub login_url: Url,
    pub instances: Vec<Instance>,
    pub unified_login: bool,
    pub access_group: String,
}

#[derive(Debug, Clone)]
pub struct Instance {
    pub name: String,
    pub display_name: String,
    pub url: Url,
}

#[derive(Debug, Clone)]
pub struct Client {
    pub client_id: String,
    pub client_secret: Secret,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub backchannel_logout_uri: Option<Url>,
    pub frontchannel_logout_uri: Option<Url>,
    pub id_token_alg: Algorithm,
    /// The `aud` of its access tokens; `None`: the issuer + `/api`.
    pub api_audience: Option<String>,
    /// Opaque access tokens (introspection) instead of RFC 9068 JWTs.
    pub opaque_access_tokens: bool,
}

impl IdpConfig {
    /// Reads and checks a config file. Relative `file:` secrets are taken
    /// from the file's folder.
    pub fn load(path: &Path) -> Result<IdpConfig, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            let mut errs = ConfigErrors::default();
            errs.push("", format!("cannot read `{}`: {e}", path.display()));
            errs
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_toml(&text, base)
    }

    /// Parses and checks config text; `base` is where relative secret files are.
    pub fn from_toml(text: &str, base: &Path) -> Result<IdpConfig, ConfigErrors> {
        let file: IdpFile = parse_toml(text)?;
        Self::from_file(file, base)
    }

    pub fn from_file(file: IdpFile, base: &Path) -> Result<IdpConfig, ConfigErrors> {
        let mut errs = ConfigErrors::default();

        let listen = file
            .server
            .listen
            .as_deref()
            .unwrap_or("127.0.0.1:9000")
            .parse::<SocketAddr>()
            .unwrap_or_else(|e| {
                errs.push("server.listen", format!("not an address like 127.0.0.1:9000 ({e})"));
                SocketAddr::from(([127, 0, 0, 1], 9000))
            });
        let issuer = file.server.issuer.as_deref().and_then(|s| match Url::parse(s) {
            Ok(u) if !matches!(u.scheme(), "http" | "https") => {
                errs.push("server.issuer", "must be an http or https URL");
                None
            }
            Ok(u) if u.query().is_some() || u.fragment().is_some() => {
                errs.push("server.issuer", "must have no query or fragment (OIDC Discovery §3)");
                None
            }
            Ok(u) => Some(u),
            Err(e) => {
                errs.push("server.issuer", format!("not a URL ({e})"));
                None
            }
        });

        let algorithm = parse_alg(
            file.signing.algorithm.as_deref(),
            Algorithm::ES256,
            "signing.algorithm",
            &mut errs,
        );
        let es256_key = load_secret(file.signing.es256_key.as_ref(), base, "signing.es256_key", &mut errs);
        let rs256_key = load_secret(file.signing.rs256_key.as_ref(), base, "signing.rs256_key", &mut errs);
        let rotation_grace = file.signing.rotation_grace.unwrap_or(Duration::from_secs(3600));

        let t = &file.tokens;
        let tokens = TokenConfig {
            code_ttl: t.code_ttl.unwrap_or(Duration::from_secs(60)),
            access_token_ttl: t.access_token_ttl.unwrap_or(Duration::from_secs(600)),
            id_token_ttl: t.id_token_ttl.unwrap_or(Duration::from_secs(600)),
            refresh_token_ttl: t.refresh_token_ttl.unwrap_or(Duration::from_secs(8 * 3600)),
            session_ttl: t.session_ttl.unwrap_or(Duration::from_secs(12 * 3600)),
        };
        for (key, d) in [
            ("tokens.code_ttl", tokens.code_ttl),
            ("tokens.access_token_ttl", tokens.access_token_ttl),
            ("tokens.id_token_ttl", tokens.id_token_ttl),
            ("tokens.refresh_token_ttl", tokens.refresh_token_ttl),
            ("tokens.session_ttl", tokens.session_ttl),
        ] {
            if d.is_zero() {
                errs.push(key, "must be longer than zero");
            }
        }
        if tokens.code_ttl > Duration::from_secs(600) {
            errs.push("tokens.code_ttl", "must be at most 10m (RFC 6749 §4.1.2)");
        }
        if rotation_grace < tokens.id_token_ttl.max(tokens.access_token_ttl) {
            errs.push(
                "signing.rotation_grace",
                "must be at least the token lifetimes, or tokens signed just before a rotation fail to verify",
            );
        }

        let login = LoginConfig {
            max_failures_per_user: file.login.max_failures_per_user.unwrap_or(5),
            max_failures_per_ip: file.login.max_failures_per_ip.unwrap_or(20),
            failure_window: file.login.failure_window.unwrap_or(Duration::from_secs(900)),
            totp_replay_protection: file.login.totp_replay_protection.unwrap_or(true),
            reset_link_ttl: file.login.reset_link_ttl.unwrap_or(Duration::from_secs(1800)),
            max_starts_per_minute_per_ip: file.login.max_starts_per_minute_per_ip.unwrap_or(300),
            max_password_checks_per_minute_per_ip: file.login.max_password_checks_per_minute_per_ip.unwrap_or(120),
        };
        for (key, n) in [
            ("login.max_failures_per_user", login.max_failures_per_user),
            ("login.max_failures_per_ip", login.max_failures_per_ip),
            ("login.max_starts_per_minute_per_ip", login.max_starts_per_minute_per_ip),
            (
                "login.max_password_checks_per_minute_per_ip",
                login.max_password_checks_per_minute_per_ip,
            ),
        ] {
            if n == 0 {
                errs.push(key, "must be at least 1");
            }
        }
        // Bounded, so no timer or cache is ever given a zero or absurd span.
        let day = Duration::from_secs(86_400);
        for (key, d, min, max) in [
            (
                "login.failure_window",
                Some(login.failure_window),
                Duration::from_secs(1),
                day,
            ),
            (
                "login.reset_link_ttl",
                Some(login.reset_link_ttl),
                Duration::from_secs(60),
                day,
            ),
            (
                "signing.rotation_interval",
                file.signing.rotation_interval,
                Duration::from_secs(60),
                day * 366,
            ),
            ("signing.rotation_grace", Some(rotation_grace), Duration::ZERO, day * 31),
            (
                "tokens.access_token_ttl",
                Some(tokens.access_token_ttl),
                Duration::ZERO,
                day,
            ),
            ("tokens.id_token_ttl", Some(tokens.id_token_ttl), Duration::ZERO, day),
            (
                "tokens.refresh_token_ttl",
                Some(tokens.refresh_token_ttl),
                Duration::ZERO,
                day * 366,
            ),
            (
                "tokens.session_ttl",
                Some(tokens.session_ttl),
                Duration::ZERO,
                day * 366,
            ),
        ] {
            if let Some(d) = d
                && (d < min || d > max)
            {
                errs.push(
                    key,
                    format!(
                        "must be between {} and {}",
                        humantime::format_duration(min),
                        humantime::format_duration(max)
                    ),
                );
            }
        }

        let mut companies = Vec::new();
        let mut seen = HashSet::new();
        for (i, c) in file.companies.iter().enumerate() {
            let name = c.name.trim().to_string();
            if name.is_empty() {
                errs.push(format!("company[{i}].name"), "must not be empty");
            } else if !seen.insert(name.to_lowercase()) {
                errs.push(format!("company[{i}].name"), format!("`{name}` is listed twice"));
            }
            companies.push(name);
        }

        let mut users = Vec::new();
        let mut seen_users = HashSet::new();
        for (i, u) in file.users.into_iter().enumerate() {
            let p = format!("user[{i}]");
            if u.username.trim().is_empty() {
                errs.push(format!("{p}.username"), "must not be empty");
            }
            if !seen.contains(&u.company.to_lowercase()) {
                errs.push(format!("{p}.company"), format!("`{}` is not a [[company]]", u.company));
            }
            if !seen_users.insert((u.company.to_lowercase(), u.username.to_lowercase())) {
                errs.push(
                    format!("{p}.username"),
                    format!("`{}` is listed twice for company `{}`", u.username, u.company),
                );
            }
            if !u.email.contains('@') {
                errs.push(format!("{p}.email"), "is not an email address");
            }
            if let Err(e) = argon2::PasswordHash::new(&u.password_hash) {
                errs.push(
                    format!("{p}.password_hash"),
                    format!("is not an Argon2 PHC string ({e}); make one with `unigate idp hash-password`"),
                );
            }
            let totp_secret = match totp_rs::Secret::Encoded(u.totp_secret.clone()).to_bytes() {
                Ok(b) if b.len() >= 16 => b,
                Ok(_) => {
                    errs.push(
                        format!("{p}.totp_secret"),
                        "must be at least 128 bits (26 base32 characters)",
                    );
                    Vec::new()
                }
                Err(_) => {
                    errs.push(format!("{p}.totp_secret"), "is not base32");
                    Vec::new()
                }
            };
            users.push(User {
                username: u.username,
                company: u.company,
                email: u.email,
                display_name: u.display_name,
                password_hash: u.password_hash,
                totp_secret,
                groups: u.groups,
                admin: u.admin,
            });
        }

        let mut modules = Vec::new();
        let mut seen_modules = HashSet::new();
        for (i, m) in file.modules.into_iter().enumerate() {
            let p = format!("module[{i}]");
            if !seen_modules.insert(m.name.clone()) {
                errs.push(format!("{p}.name"), format!("`{}` is listed twice", m.name));
            }
            let url = parse_url(&m.url, &format!("{p}.url"), &mut errs);
            let login_url = match &m.login_url {
                Some(l) => parse_url(l, &format!("{p}.login_url"), &mut errs),
                None => url.clone(),
            };
            let mut instances = Vec::new();
            for (j, inst) in m.instances.into_iter().enumerate() {
                let url = parse_url(&inst.url, &format!("{p}.instances[{j}].url"), &mut errs);
                instances.push(Instance {
                    display_name: inst.display_name.unwrap_or_else(|| inst.name.clone()),
                    name: inst.name,
                    url,
                });
            }
            modules.push(Module {
                name: m.name,
                display_name: m.display_name,
                url,
                login_url,
                instances,
                unified_login: m.unified_login,
                access_group: m.access_group,
            });
        }

        let mut clients = Vec::new();
        let mut seen_clients = HashSet::new();
        for (i, c) in file.clients.into_iter().enumerate() {
            let p = format!("client[{i}]");
            if !seen_clients.insert(c.client_id.clone()) {
                errs.push(format!("{p}.client_id"), format!("`{}` is listed twice", c.client_id));
            }
            let secret = load_secret(Some(&c.client_secret), base, &format!("{p}.client_secret"), &mut errs);
            if c.redirect_uris.is_empty() {
                errs.push(format!("{p}.redirect_uris"), "needs at least one URI");
            }
            for (j, r) in c.redirect_uris.iter().enumerate() {
                check_redirect(r, &format!("{p}.redirect_uris[{j}]"), &mut errs);
            }
            for (j, r) in c.post_logout_redirect_uris.iter().enumerate() {
                check_redirect(r, &format!("{p}.post_logout_redirect_uris[{j}]"), &mut errs);
            }
            let backchannel_logout_uri = c
                .backchannel_logout_uri
                .as_deref()
                .map(|u| parse_url(u, &format!("{p}.backchannel_logout_uri"), &mut errs));
            let frontchannel_logout_uri = c
                .frontchannel_logout_uri
                .as_deref()
                .map(|u| parse_url(u, &format!("{p}.frontchannel_logout_uri"), &mut errs));
            let id_token_alg = parse_alg(
                c.id_token_signed_response_alg.as_deref(),
                algorithm,
                &format!("{p}.id_token_signed_response_alg"),
                &mut errs,
            );
            if c.api_audience.as_deref().is_some_and(str::is_empty) {
                errs.push(format!("{p}.api_audience"), "must not be empty");
            }
            let opaque_access_tokens = match c.access_token_format.as_deref() {
                None | Some("jwt") => false,
                Some("opaque") => true,
                Some(_) => {
                    errs.push(format!("{p}.access_token_format"), "must be `jwt` or `opaque`");
                    false
                }
            };
            clients.push(Client {
                api_audience: c.api_audience,
                opaque_access_tokens,
                client_id: c.client_id,
                client_secret: secret.unwrap_or_else(|| Secret::new("")),
                redirect_uris: c.redirect_uris,
                post_logout_redirect_uris: c.post_logout_redirect_uris,
                backchannel_logout_uri,
                frontchannel_logout_uri,
                id_token_alg,
            });
        }

        errs.into_result(IdpConfig {
            listen,
            issuer,
            max_body_bytes: file.server.max_body_bytes.unwrap_or(16 * 1024),
            signing: SigningConfig {
                algorithm,
                es256_key,
                rs256_key,
                rotation_interval: file.signing.rotation_interval,
                rotation_grace,
            },
            tokens,
            login,
            outbox_dir: file.outbox.dir.unwrap_or_else(|| PathBuf::from("outbox")),
            outbox_from: file
                .outbox
                .from
                .unwrap_or_else(|| "KaseyaOne <noreply@kaseya.invalid>".to_string()),
            companies,
            users,
            modules,
            clients,
        })
    }
}

fn parse_alg(v: Option<&str>, default: Algorithm, key: &str, errs: &mut ConfigErrors) -> Algorithm {
    match v {
        None => default,
        Some("ES256") => Algorithm::ES256,
        Some("RS256") => Algorithm::RS256,
        Some(other) => {
            errs.push(key, format!("`{other}` is not supported; use ES256 or RS256"));
            default
        }
    }
}

fn load_secret(r: Option<&SecretRef>, base: &Path, key: &str, errs: &mut ConfigErrors) -> Option<Secret> {
    r.and_then(|r| r.load(base).map_err(|e| errs.push(key, e)).ok())
}

fn parse_url(s: &str, key: &str, errs: &mut ConfigErrors) -> Url {
    match Url::parse(s) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => u,
        Ok(_) => {
            errs.push(key, "must be an http or https URL");
            Url::parse("http://invalid.invalid/").expect("constant URL")
        }
        Err(e) => {
            errs.push(key, format!("`{s}` is not a URL ({e})"));
            Url::parse("http://invalid.invalid/").expect("constant URL")
        }
    }
}

fn check_redirect(s: &str, key: &str, errs: &mut ConfigErrors) {
    let u = parse_url(s, key, errs);
    if u.fragment().is_some() {
        errs.push(key, "must not have a fragment (RFC 6749 §3.1.2)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_every_problem_at_once() {
        let text = r#"
            [server]
            listen = "nonsense"
            [[company]]
            name = "Acme"
            [[user]]
            username = "a"
            company = "Nowhere"
            email = "no-at-sign"
            display_name = "A"
            password_hash = "plain"
            totp_secret = "JBSWY3DPEHPK3PXP"
            [[client]]
            client_id = "c"
            client_secret = "env:UNIGATE_TEST_SURELY_UNSET"
            redirect_uris = ["ftp://x/cb"]
        "#;
        let err = IdpConfig::from_toml(text, Path::new(".")).unwrap_err();
        let paths: Vec<&str> = err.0.iter().map(|e| e.path.as_str()).collect();
        for expected in [
            "server.listen",
            "user[0].company",
            "user[0].email",
            "user[0].password_hash",
            "user[0].totp_secret",
            "client[0].client_secret",
            "client[0].redirect_uris[0]",
        ] {
            assert!(paths.contains(&expected), "missing {expected} in {err}");
        }
    }

    #[test]
    fn literal_secret_is_refused() {
        let text = r#"
            [[client]]
            client_id = "c"
            client_secret = "hunter2"
            redirect_uris = ["http://127.0.0.1/cb"]
        "#;
        let err = IdpConfig::from_toml(text, Path::new(".")).unwrap_err();
        assert!(err.to_string().contains("reference"), "{err}");
    }
}
