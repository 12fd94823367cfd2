//! Module accounts: the seed's conditions for Log In with KaseyaOne. A
//! KaseyaOne user may use a module only with a module account whose email
//! and/or username match theirs (configurable), looked up by SCIM 2.0
//! (RFC 7644) at the module or in a static file, cached with a TTL; with
//! Automatic User Provisioning a missing account is created by SCIM.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::config::settings::{AccountSource, AccountsConfig, MatchOn};
use crate::session::Identity;

/// A module account, as the module's directory knows it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Account {
    pub username: String,
    #[serde(default)]
    pub email: String,
    /// False until the user finished the module's invitation (set a password).
    #[serde(default = "yes")]
    pub active: bool,
    #[serde(default)]
    pub role: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountsFileDoc {
    #[serde(default)]
    account: Vec<Account>,
}

/// Reads a static accounts file (`[[account]] username, email, active, role`).
pub fn load_file(path: &Path) -> Result<Vec<Account>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let doc: AccountsFileDoc = toml::from_str(&text).map_err(|e| format!("`{}`: {e}", path.display()))?;
    for (i, a) in doc.account.iter().enumerate() {
        if a.username.is_empty() {
            return Err(format!("`{}`: account[{i}] has no username", path.display()));
        }
    }
    Ok(doc.account)
}

/// Why a KaseyaOne user cannot use the module account (each has its own page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No module account with the user's email / username.
    NoAccount,
    /// An account with the user's username has another email.
    EmailMismatch { module_email: String },
    /// An account with the user's email has another username.
    UsernameMismatch { module_username: String },
    /// The account exists but its set-up (invitation) is not finished.
    NotActivated { username: String },
}

/// The seed's rule, as a pure function of what the directory returned for
/// the user's username and for their email.
pub fn decide(
    match_on: MatchOn,
    by_username: Option<&Account>,
    by_email: Option<&Account>,
    user: &Identity,
) -> Result<Account, Refusal> {
    let found = match match_on {
        MatchOn::Email => by_email.ok_or(Refusal::NoAccount)?,
        MatchOn::Username => by_username.ok_or(Refusal::NoAccount)?,
        MatchOn::Both => match (by_username, by_email) {
            (Some(a), _) if a.email.eq_ignore_ascii_case(&user.email) => a,
            (Some(a), _) => {
                return Err(Refusal::EmailMismatch {
                    module_email: a.email.clone(),
                });
            }
            (None, Some(b)) => {
                return Err(Refusal::UsernameMismatch {
                    module_username: b.username.clone(),
                });
            }
            (None, None) => return Err(Refusal::NoAccount),
        },
    };
    if !found.active {
        return Err(Refusal::NotActivated {
            username: found.username.clone(),
        });
    }
    Ok(found.clone())
}

#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("the module's account directory did not answer: {0}")]
    Unreachable(String),
    #[error("the module's account directory answered {0}")]
    Status(u16),
    #[error("the module's account directory sent something that is not SCIM: {0}")]
    Malformed(String),
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum Field {
    Username,
    Email,
}

/// A SCIM API's base URL and the client that reaches it.
type ScimBase<'a> = (&'a str, &'a reqwest::Client);

/// Account lookups for one module route, cached for `cache_ttl`.
pub struct Accounts {
    pub cfg: Arc<AccountsConfig>,
    cache: moka::future::Cache<(Field, String), Option<Account>>,
    http: reqwest::Client,
}

/// What the account check concluded.
pub enum Outcome {
    Ok(Account),
    Refused(Refusal),
    /// Created by Automatic User Provisioning.
    Provisioned(Account),
}

impl Accounts {
    pub fn new(cfg: Arc<AccountsConfig>, http: reqwest::Client) -> Self {
        let ttl = cfg.cache_ttl.max(Duration::from_millis(1));
        Accounts {
            cache: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                .build(),
            cfg,
            http,
        }
    }

    /// Checks the user's module account; `scim_base` is the SCIM API of the
    /// instance and `module_http` the client that reaches it (TLS when the
    /// module's upstream is), used when no `scim_url` is configured.
    pub async fn check(
        &self,
        user: &Identity,
        scim_base: &str,
        module_http: &reqwest::Client,
    ) -> Result<Outcome, LookupError> {
        let scim_base = (scim_base, module_http);
        let by_username = match self.cfg.match_on {
            MatchOn::Email => None,
            _ => self.find(Field::Username, &user.username, scim_base).await?,
        };
        let by_email = match (self.cfg.match_on, &by_username) {
            (MatchOn::Username, _) => None,
            // Both: the email lookup only explains a missing username.
            (MatchOn::Both, Some(_)) => None,
            _ => self.find(Field::Email, &user.email, scim_base).await?,
        };
        match decide(self.cfg.match_on, by_username.as_ref(), by_email.as_ref(), user) {
            Ok(a) => Ok(Outcome::Ok(a)),
            Err(Refusal::NoAccount) if self.cfg.provisioning => {
                let a = self.provision(user, scim_base).await?;
                Ok(Outcome::Provisioned(a))
            }
            Err(r) => Ok(Outcome::Refused(r)),
        }
    }

    /// The SCIM base URL and client: the configured `scim_url` with the
    /// shared client, else the module's own.
    fn scim<'a>(&'a self, url: &'a Option<String>, module: ScimBase<'a>) -> ScimBase<'a> {
        match url.as_deref() {
            Some(u) => (u, &self.http),
            None => module,
        }
    }

    async fn find(&self, field: Field, value: &str, scim_base: ScimBase<'_>) -> Result<Option<Account>, LookupError> {
        if value.is_empty() {
            return Ok(None);
        }
        let key = (field, value.to_lowercase());
        if let Some(hit) = self.cache.get(&key).await {
            return Ok(hit);
        }
        let found = match &self.cfg.source {
            AccountSource::File(list) => list
                .iter()
                .find(|a| match field {
                    Field::Username => a.username.eq_ignore_ascii_case(value),
                    Field::Email => a.email.eq_ignore_ascii_case(value),
                })
                .cloned(),
            AccountSource::Scim { url, token } => {
                let (base, http) = self.scim(url, scim_base);
                let attr = match field {
                    Field::Username => "userName",
                    Field::Email => "emails.value",
                };
                let filter = format!("{attr} eq \"{}\"", scim_escape(value));
                let query: String = form_urlencoded::Serializer::new(String::new())
                    .append_pair("filter", &filter)
                    .append_pair("count", "2")
                    .finish();
                let mut rb = http
                    .get(format!("{base}/Users?{query}"))
                    .header("accept", "application/scim+json");
                if let Some(t) = token {
                    rb = rb.bearer_auth(t.expose());
                }
                let resp = rb.send().await.map_err(|e| LookupError::Unreachable(e.to_string()))?;
                if !resp.status().is_success() {
                    return Err(LookupError::Status(resp.status().as_u16()));
                }
                let list: ScimList = resp.json().await.map_err(|e| LookupError::Malformed(e.to_string()))?;
                list.resources.into_iter().next().map(ScimUser::into_account)
            }
        };
        self.cache.insert(key, found.clone()).await;
        Ok(found)
    }

    /// Automatic User Provisioning: SCIM `POST /Users` with the default role.
    async fn provision(&self, user: &Identity, scim_base: ScimBase<'_>) -> Result<Account, LookupError> {
        let AccountSource::Scim { url, token } = &self.cfg.source else {
            return Err(LookupError::Malformed("provisioning needs SCIM".into()));
        };
        let (base, http) = self.scim(url, scim_base);
        let role = self.cfg.default_role.clone().unwrap_or_default();
        let body = serde_json::json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": user.username,
            "displayName": user.name,
            "name": {"formatted": user.name},
            "emails": [{"value": user.email, "primary": true, "type": "work"}],
            "active": true,
            "roles": [{"value": role, "primary": true}],
            "externalId": user.sub,
        });
        let mut rb = http
            .post(format!("{base}/Users"))
            .header("content-type", "application/scim+json")
            .header("accept", "application/scim+json")
            .body(body.to_string());
        if let Some(t) = token {
            rb = rb.bearer_auth(t.expose());
        }
        let resp = rb.send().await.map_err(|e| LookupError::Unreachable(e.to_string()))?;
        // 409: created meanwhile (another replica, another tab) — fine.
        if !(resp.status().is_success() || resp.status().as_u16() == 409) {
            return Err(LookupError::Status(resp.status().as_u16()));
        }
        self.cache
            .invalidate(&(Field::Username, user.username.to_lowercase()))
            .await;
        self.cache.invalidate(&(Field::Email, user.email.to_lowercase())).await;
        Ok(Account {
            username: user.username.to_string(),
            email: user.email.to_string(),
            active: true,
            role: Some(role),
        })
    }
}

/// A SCIM filter string literal's content (RFC 7644 §3.4.2.2: JSON string rules).
fn scim_escape(v: &str) -> String {
    let quoted = serde_json::to_string(v).unwrap_or_default();
    quoted[1..quoted.len() - 1].to_string()
}

#[derive(Deserialize)]
struct ScimList {
    #[serde(rename = "Resources", default)]
    resources: Vec<ScimUser>,
}

#[derive(Deserialize)]
struct ScimUser {
    #[serde(rename = "userName")]
    user_name: String,
    #[serde(default)]
    emails: Vec<ScimValue>,
    #[serde(default = "yes")]
    active: bool,
    #[serde(default)]
    roles: Vec<ScimValue>,
}

#[derive(Deserialize)]
struct ScimValue {
    value: String,
    #[serde(default)]
    primary: bool,
}

impl ScimUser {
    fn into_account(self) -> Account {
        let pick = |v: &[ScimValue]| {
            v.iter()
                .find(|e| e.primary)
                .or_else(|| v.first())
                .map(|e| e.value.clone())
        };
        Account {
            email: pick(&self.emails).unwrap_or_default(),
            role: pick(&self.roles),
            username: self.user_name,
            active: self.active,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> Identity {
        Identity::alice()
    }

    fn acct(u: &str, e: &str, active: bool) -> Account {
        Account {
            username: u.into(),
            email: e.into(),
            active,
            role: None,
        }
    }

    #[test]
    fn the_seed_conditions() {
        let u = user();
        let good = acct("alice", "ALICE@acme.example", true);
        let other_email = acct("alice", "a@elsewhere.example", true);
        let other_name = acct("al", "alice@acme.example", true);
        let inactive = acct("alice", "alice@acme.example", false);
        use MatchOn::*;
        assert_eq!(decide(Both, Some(&good), None, &u), Ok(good.clone()));
        assert_eq!(
            decide(Both, Some(&other_email), None, &u),
            Err(Refusal::EmailMismatch {
                module_email: "a@elsewhere.example".into()
            })
        );
        assert_eq!(
            decide(Both, None, Some(&other_name), &u),
            Err(Refusal::UsernameMismatch {
                module_username: "al".into()
            })
        );
        assert_eq!(decide(Both, None, None, &u), Err(Refusal::NoAccount));
        assert_eq!(
            decide(Both, Some(&inactive), None, &u),
            Err(Refusal::NotActivated {
                username: "alice".into()
            })
        );
        // Email only: the username may differ.
        assert_eq!(decide(Email, None, Some(&other_name), &u), Ok(other_name.clone()));
        assert_eq!(decide(Email, Some(&good), None, &u), Err(Refusal::NoAccount));
        // Username only: the email may differ.
        assert_eq!(decide(Username, Some(&other_email), None, &u), Ok(other_email));
        assert_eq!(decide(Username, None, Some(&good), &u), Err(Refusal::NoAccount));
    }

    #[test]
    fn scim_filter_values_are_escaped() {
        assert_eq!(scim_escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(scim_escape("plain"), "plain");
    }
}
