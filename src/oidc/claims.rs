//! Where a provider puts the user's attributes, and reading them: the
//! claim mapping of `[identity_provider.claims]` (dotted paths such as
//! `realm_access.roles`), applied alike to ID tokens, UserInfo answers and
//! bearer access tokens. Pure functions over JSON.

use serde_json::Value;

/// Longest claim value read (longer: the claim is refused).
const MAX_VALUE: usize = 1024;
/// Most groups read from one claim.
const MAX_GROUPS: usize = 1000;

/// One configured claim: a top-level name (`email`, `cognito:groups`, a
/// URL-named claim such as `https://example.com/roles`), or, when no
/// top-level claim has that whole name, a dotted path into nested objects
/// (`realm_access.roles`). Empty: the attribute is not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPath(String);

impl ClaimPath {
    pub fn new(path: &str) -> Result<ClaimPath, String> {
        if path.len() > 200 {
            return Err("a claim path is at most 200 characters".into());
        }
        if !path.is_empty() && path.split('.').any(str::is_empty) && !path.contains("://") {
            return Err(format!(
                "`{path}` has an empty segment; write names joined by single dots, e.g. `realm_access.roles`"
            ));
        }
        if path.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(format!("`{path}` contains spaces or control characters"));
        }
        Ok(ClaimPath(path.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_unused(&self) -> bool {
        self.0.is_empty()
    }

    /// The value at this path in `claims`, if any (JSON `null` is none).
    pub fn get<'a>(&self, claims: &'a Value) -> Option<&'a Value> {
        if self.0.is_empty() {
            return None;
        }
        let found = match claims.get(&self.0) {
            Some(v) => Some(v),
            None => self.0.split('.').try_fold(claims, |v, seg| v.get(seg)),
        };
        found.filter(|v| !v.is_null())
    }
}

/// `[identity_provider.claims]`: which claim holds each attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimMap {
    pub username: ClaimPath,
    pub email: ClaimPath,
    pub name: ClaimPath,
    pub company: ClaimPath,
    pub groups: ClaimPath,
}

impl Default for ClaimMap {
    /// KaseyaOne's (and the embedded IdP's) claims.
    fn default() -> Self {
        ClaimMap {
            username: ClaimPath("preferred_username".into()),
            email: ClaimPath("email".into()),
            name: ClaimPath("name".into()),
            company: ClaimPath("company".into()),
            groups: ClaimPath("groups".into()),
        }
    }
}

/// `[identity_provider] userinfo`: when the UserInfo endpoint is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UserinfoMode {
    /// When the ID token lacks a mapped claim (the default).
    #[default]
    Auto,
    /// At every login and refresh.
    Always,
    /// Never: the ID token says everything.
    Never,
}

impl UserinfoMode {
    pub fn parse(s: &str) -> Option<UserinfoMode> {
        match s {
            "auto" => Some(UserinfoMode::Auto),
            "always" => Some(UserinfoMode::Always),
            "never" => Some(UserinfoMode::Never),
            _ => None,
        }
    }

    /// Whether to ask UserInfo, given what the ID token lacks.
    pub fn ask(self, missing: &[&str]) -> bool {
        match self {
            UserinfoMode::Auto => !missing.is_empty(),
            UserinfoMode::Always => true,
            UserinfoMode::Never => false,
        }
    }
}

/// Why a claim could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("claim `{claim}` ({attribute}) {problem}")]
pub struct ClaimError {
    pub attribute: &'static str,
    pub claim: String,
    pub problem: &'static str,
}

/// The user's attributes as one source (an ID token, a UserInfo answer, an
/// access token) gives them; `None`: that source does not say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    pub username: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    pub company: Option<String>,
    pub groups: Option<Vec<String>>,
    /// `email_verified` (OIDC Core §5.1), when the source says.
    pub email_verified: Option<bool>,
}

impl ClaimMap {
    /// Reads every mapped attribute of `claims`. A claim that is present
    /// but not what it should be (a number for an email, a list of objects
    /// for groups) is an error, never silently dropped. A group claim that
    /// is one string is one group.
    pub fn profile(&self, claims: &Value) -> Result<Profile, ClaimError> {
        let text = |attribute: &'static str, path: &ClaimPath| -> Result<Option<String>, ClaimError> {
            let err = |problem| ClaimError {
                attribute,
                claim: path.0.clone(),
                problem,
            };
            match path.get(claims) {
                None => Ok(None),
                Some(Value::String(s)) if s.len() <= MAX_VALUE => Ok(Some(s.clone())),
                Some(Value::String(_)) => Err(err("is longer than 1024 bytes")),
                Some(_) => Err(err("is not a string")),
            }
        };
        let groups = {
            let err = |problem| ClaimError {
                attribute: "groups",
                claim: self.groups.0.clone(),
                problem,
            };
            match self.groups.get(claims) {
                None => None,
                Some(Value::String(s)) if s.len() <= MAX_VALUE => Some(vec![s.clone()]),
                Some(Value::Array(items)) if items.len() <= MAX_GROUPS => Some(
                    items
                        .iter()
                        .map(|g| match g {
                            Value::String(s) if s.len() <= MAX_VALUE => Ok(s.clone()),
                            _ => Err(err("holds something other than names")),
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                ),
                Some(Value::Array(_)) => return Err(err("holds more than 1000 groups")),
                Some(_) => return Err(err("is neither a list of names nor one name")),
            }
        };
        // Cognito sends the string "true".
        let email_verified = match claims.get("email_verified") {
            Some(Value::Bool(b)) => Some(*b),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Some(true),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Some(false),
            _ => None,
        };
        Ok(Profile {
            email_verified,
            username: text("username", &self.username)?,
            email: text("email", &self.email)?,
            name: text("name", &self.name)?,
            company: text("company", &self.company)?,
            groups,
        })
    }

    /// The mapped attributes `p` does not give: what UserInfo is asked for.
    pub fn missing(&self, p: &Profile) -> Vec<&'static str> {
        [
            ("username", &self.username, p.username.is_none()),
            ("email", &self.email, p.email.is_none()),
            ("name", &self.name, p.name.is_none()),
            ("company", &self.company, p.company.is_none()),
            ("groups", &self.groups, p.groups.is_none()),
        ]
        .into_iter()
        .filter(|(_, path, absent)| !path.is_unused() && *absent)
        .map(|(name, _, _)| name)
        .collect()
    }
}

impl Profile {
    /// `self`, with what `fresher` says taking precedence (UserInfo over
    /// the ID token: it is what the provider says about the user now).
    pub fn updated_by(self, fresher: Profile) -> Profile {
        Profile {
            username: fresher.username.or(self.username),
            email: fresher.email.or(self.email),
            name: fresher.name.or(self.name),
            company: fresher.company.or(self.company),
            groups: fresher.groups.or(self.groups),
            email_verified: fresher.email_verified.or(self.email_verified),
        }
    }
}

impl ClaimMap {
    /// `p` with an email the provider says it has not verified
    /// (`email_verified: false`) left out: anyone could have typed it, and
    /// modules and account matching take an email for the person. Every
    /// attribute read from the same claim as the email goes with it
    /// (`username = "email"`).
    pub fn trusted(&self, mut p: Profile) -> Profile {
        if p.email_verified != Some(false) || self.email.is_unused() {
            return p;
        }
        let e = &self.email;
        for (path, value) in [
            (e, &mut p.email),
            (&self.username, &mut p.username),
            (&self.name, &mut p.name),
            (&self.company, &mut p.company),
        ] {
            if path == e {
                *value = None;
            }
        }
        tracing::debug!("the provider says the user's email is not verified: it is not used");
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(groups: &str) -> ClaimMap {
        ClaimMap {
            groups: ClaimPath::new(groups).unwrap(),
            ..ClaimMap::default()
        }
    }

    #[test]
    fn group_claims_of_the_common_providers_are_read() {
        let cases: Vec<(&str, Value, Option<Vec<&str>>)> = vec![
            ("groups", json!({"groups": ["a", "b"]}), Some(vec!["a", "b"])),
            // One group as a string.
            ("groups", json!({"groups": "admins"}), Some(vec!["admins"])),
            // Keycloak realm roles.
            (
                "realm_access.roles",
                json!({"realm_access": {"roles": ["portal-users"]}}),
                Some(vec!["portal-users"]),
            ),
            // Keycloak client roles, a client id with a dash.
            (
                "resource_access.my-app.roles",
                json!({"resource_access": {"my-app": {"roles": ["r"]}}}),
                Some(vec!["r"]),
            ),
            // Cognito: a colon is part of the name.
            ("cognito:groups", json!({"cognito:groups": ["g"]}), Some(vec!["g"])),
            // Auth0: a namespaced claim, dots and all, is one name.
            (
                "https://example.com/roles",
                json!({"https://example.com/roles": ["x"]}),
                Some(vec!["x"]),
            ),
            // Entra ID / Okta: `roles`.
            ("roles", json!({"roles": ["Portal.User"]}), Some(vec!["Portal.User"])),
            ("groups", json!({"groups": []}), Some(vec![])),
            ("groups", json!({"email": "a@x"}), None),
            ("groups", json!({"groups": null}), None),
            ("realm_access.roles", json!({"realm_access": "roles"}), None),
        ];
        for (path, claims, want) in cases {
            let got = map(path).profile(&claims).unwrap().groups;
            let want = want.map(|v| v.into_iter().map(String::from).collect::<Vec<_>>());
            assert_eq!(got, want, "{path} in {claims}");
        }
    }

    #[test]
    fn mistyped_claims_are_errors_not_silence() {
        let cases = [
            json!({"groups": [1, 2]}),
            json!({"groups": {"a": 1}}),
            json!({"groups": 7}),
            json!({"email": 7}),
            json!({"name": ["x"]}),
            json!({"preferred_username": "x".repeat(2000)}),
        ];
        for claims in cases {
            assert!(ClaimMap::default().profile(&claims).is_err(), "{claims}");
        }
        let e = ClaimMap::default().profile(&json!({"email": 7})).unwrap_err();
        assert_eq!(e.to_string(), "claim `email` (email) is not a string");
    }

    #[test]
    fn missing_lists_what_userinfo_must_give_and_unused_claims_are_never_missing() {
        let m = ClaimMap::default();
        let p = m
            .profile(&json!({"sub": "s", "email": "a@x", "groups": ["g"]}))
            .unwrap();
        assert_eq!(m.missing(&p), vec!["username", "name", "company"]);
        let no_company = ClaimMap {
            company: ClaimPath::new("").unwrap(),
            ..ClaimMap::default()
        };
        let p = no_company
            .profile(&json!({"preferred_username": "a", "email": "a@x", "name": "A", "groups": [], "company": "c"}))
            .unwrap();
        assert_eq!(no_company.missing(&p), Vec::<&str>::new());
        assert_eq!(p.company, None);
    }

    #[test]
    fn userinfo_takes_precedence_where_it_speaks() {
        let id = Profile {
            email: Some("old@x".into()),
            name: Some("Old".into()),
            groups: Some(vec!["a".into()]),
            ..Profile::default()
        };
        let ui = Profile {
            email: Some("new@x".into()),
            groups: Some(vec![]),
            ..Profile::default()
        };
        let p = id.updated_by(ui);
        assert_eq!(p.email.as_deref(), Some("new@x"));
        assert_eq!(p.name.as_deref(), Some("Old"));
        assert_eq!(p.groups, Some(vec![]));
    }

    #[test]
    fn an_unverified_email_is_not_used() {
        let m = ClaimMap::default();
        let p = |c: Value| m.trusted(m.profile(&c).unwrap()).email;
        assert_eq!(
            p(json!({"email": "a@x", "email_verified": true})).as_deref(),
            Some("a@x")
        );
        assert_eq!(p(json!({"email": "a@x"})).as_deref(), Some("a@x"), "not said: kept");
        assert_eq!(p(json!({"email": "a@x", "email_verified": false})), None);
        assert_eq!(
            p(json!({"email": "a@x", "email_verified": "false"})),
            None,
            "Cognito's string"
        );
        // UserInfo saying "not verified" about the ID token's email wins.
        let id = m.profile(&json!({"email": "a@x"})).unwrap();
        let ui = m.profile(&json!({"email_verified": false})).unwrap();
        assert_eq!(m.trusted(id.updated_by(ui)).email, None);
        // A username read from the email claim goes with it.
        let by_email = ClaimMap {
            username: ClaimPath::new("email").unwrap(),
            ..ClaimMap::default()
        };
        let p = by_email.trusted(
            by_email
                .profile(&json!({"email": "a@x", "email_verified": false}))
                .unwrap(),
        );
        assert_eq!((p.email, p.username), (None, None));
        let p = by_email.trusted(
            by_email
                .profile(&json!({"email": "a@x", "email_verified": true}))
                .unwrap(),
        );
        assert_eq!(p.username.as_deref(), Some("a@x"));
    }

    #[test]
    fn claim_paths_are_checked() {
        assert!(ClaimPath::new("a..b").is_err());
        assert!(ClaimPath::new(".a").is_err());
        assert!(ClaimPath::new("a b").is_err());
        assert!(ClaimPath::new("https://x.example/roles").is_ok());
        assert!(ClaimPath::new("").unwrap().is_unused());
    }
}
