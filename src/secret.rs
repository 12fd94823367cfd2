//! Secret references (`env:NAME`, `file:PATH`) and the type that holds a
//! loaded secret. A config file never holds a secret itself, only where to
//! find it, and a loaded secret never prints: its `Debug` is `[redacted]`.

use std::fmt;
use std::path::Path;

use serde::Deserialize;

/// Where a secret lives, as written in a config file.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
#[cfg_attr(test, derive(schemars::JsonSchema), schemars(with = "String"))]
pub enum SecretRef {
    /// `env:NAME`: the value of an environment variable.
    Env(String),
    /// `file:PATH`: a file's content, trailing newline removed. A relative
    /// path is taken from the config file's folder.
    File(String),
}

impl TryFrom<String> for SecretRef {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        if let Some(name) = s.strip_prefix("env:") {
            if name.is_empty() {
                return Err("`env:` needs a variable name, e.g. `env:CLIENT_SECRET`".into());
            }
            Ok(SecretRef::Env(name.to_string()))
        } else if let Some(path) = s.strip_prefix("file:") {
            if path.is_empty() {
                return Err("`file:` needs a path, e.g. `file:/run/secrets/client`".into());
            }
            Ok(SecretRef::File(path.to_string()))
        } else {
            Err("a secret must be a reference, `env:NAME` or `file:PATH`, never the value itself".into())
        }
    }
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(n) => write!(f, "env:{n}"),
            SecretRef::File(p) => write!(f, "file:{p}"),
        }
    }
}

impl SecretRef {
    /// Reads the secret. `base` is the folder relative `file:` paths start from.
    pub fn load(&self, base: &Path) -> Result<Secret, String> {
        let value = match self {
            SecretRef::Env(name) => {
                std::env::var(name).map_err(|_| format!("environment variable `{name}` is not set"))?
            }
            SecretRef::File(path) => {
                let p = base.join(path);
                let raw = std::fs::read_to_string(&p)
                    .map_err(|e| format!("cannot read secret file `{}`: {e}", p.display()))?;
                raw.trim_end_matches(['\r', '\n']).to_string()
            }
        };
        if value.is_empty() {
            return Err(format!("secret {self:?} is empty"));
        }
        Ok(Secret(value))
    }
}

/// A loaded secret. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value that came from somewhere other than a config file
    /// (a generated key, a test).
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret's value. Callers must not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison with a presented value.
    pub fn matches(&self, presented: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        self.0.as_bytes().ct_eq(presented).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_references_and_rejects_literals() {
        assert_eq!(SecretRef::try_from("env:X".to_string()), Ok(SecretRef::Env("X".into())));
        assert_eq!(
            SecretRef::try_from("file:a/b".to_string()),
            Ok(SecretRef::File("a/b".into()))
        );
        assert!(SecretRef::try_from("hunter2".to_string()).is_err());
        assert!(SecretRef::try_from("env:".to_string()).is_err());
    }

    #[test]
    fn loads_file_relative_to_base_and_redacts() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s"), "topsecret\n").unwrap();
        let s = SecretRef::File("s".into()).load(dir.path()).unwrap();
        assert_eq!(s.expose(), "topsecret");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert!(s.matches(b"topsecret"));
        assert!(!s.matches(b"topsecre"));
        assert!(SecretRef::File("missing".into()).load(dir.path()).is_err());
    }
}
