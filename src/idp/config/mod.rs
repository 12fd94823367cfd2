//! The embedded identity provider's configuration: `IdpConfig`, the
//! checked form the provider runs on, and its loader. Every problem in a
//! file is reported at once with its key path. The file's serde types are
//! in `file` (re-exported here); the checks, by concern, in `limits`
//! (lifetimes and login limits), `entries` (companies, users, modules,
//! clients) and `checks` (single values).

mod checks;
mod entries;
mod file;
mod limits;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::Algorithm;
use url::Url;

use crate::config::{ConfigErrors, parse_toml};
use crate::secret::Secret;
use checks::{load_secret, parse_alg};
pub use file::*;

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
    /// The users file (`unigate idp user add`): users added at run time and
    /// the passwords they set. `None`: no such users.
    pub users_file: Option<PathBuf>,
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
    pub welcome_link_ttl: Duration,
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
    /// Third-party-initiated login at this client (My Modules' tiles).
    pub initiate_login_uri: Option<Url>,
    pub id_token_alg: Algorithm,
    /// The `aud` of its access tokens; `None`: the issuer + `/api`.
    pub api_audience: Option<String>,
    /// Opaque access tokens (introspection) instead of RFC 9068 JWTs.
    pub opaque_access_tokens: bool,
}

impl IdpConfig {
    /// Reads and checks a config file. Relative `file:` secrets are taken
    /// from the file's folder. Without `directory.users_file`, the users file
    /// is the config file's name with `.users.toml`, beside it.
    pub fn load(path: &Path) -> Result<IdpConfig, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            let mut errs = ConfigErrors::default();
            errs.push("", format!("cannot read `{}`: {e}", path.display()));
            errs
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut cfg = Self::from_toml(&text, base)?;
        if cfg.users_file.is_none() {
            let stem = path.file_stem().map_or("idp".into(), |s| s.to_string_lossy());
            cfg.users_file = Some(base.join(format!("{stem}.users.toml")));
        }
        Ok(cfg)
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

        let (tokens, login) = limits::lifetimes_and_limits(&file, rotation_grace, &mut errs);
        let (companies, known_companies) = entries::companies(&file.companies, &mut errs);
        let users = entries::users(file.users, &known_companies, &mut errs);
        let modules = entries::modules(file.modules, &mut errs);
        let clients = entries::clients(file.clients, base, algorithm, &mut errs);

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
            users_file: file.directory.users_file.map(|f| base.join(f)),
            companies,
            users,
            modules,
            clients,
        })
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
