//! Who the user is, as unigate passes it to modules.

/// Who the user is, as unigate passes it to modules.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    pub sub: Box<str>,
    /// (`Box<str>`, not `String`, here and below: every session holds one.)
    pub sid: Option<Box<str>>,
    pub email: Box<str>,
    pub name: Box<str>,
    pub username: Box<str>,
    pub company: Box<str>,
    pub groups: Vec<String>,
    /// The module account this user is, when account matching or linking
    /// found one (it may differ from the KaseyaOne username).
    pub module_user: Option<Box<str>>,
}

impl Identity {
    /// The identity of user `sub` with the attributes the provider gave
    /// (no module account yet).
    /// Alice of Acme, no groups: a user for unit tests.
    #[cfg(test)]
    pub(crate) fn alice() -> Identity {
        Identity {
            sub: "s".into(),
            sid: None,
            email: "alice@acme.example".into(),
            name: "Alice".into(),
            username: "alice".into(),
            company: "Acme".into(),
            groups: vec![],
            module_user: None,
        }
    }

    /// How the account is named to the person: its email, else its
    /// username; `None` when the provider gave neither.
    pub fn account(&self) -> Option<String> {
        [&self.email, &self.username]
            .into_iter()
            .find(|v| !v.is_empty())
            .map(|v| v.to_string())
    }

    pub fn from_profile(sub: &str, sid: Option<&str>, p: crate::oidc::claims::Profile) -> Identity {
        Identity {
            sub: sub.into(),
            sid: sid.map(Into::into),
            email: p.email.unwrap_or_default().into(),
            name: p.name.unwrap_or_default().into(),
            username: p.username.unwrap_or_default().into(),
            company: p.company.unwrap_or_default().into(),
            groups: p.groups.unwrap_or_default(),
            module_user: None,
        }
    }
}
