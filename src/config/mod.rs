//! Loading TOML configuration files: the shared mechanics every config file
//! of unigate uses. File types are serde structs mirroring the file; this
//! module turns text into them and gathers every problem at once, each with
//! its key path, so an operator fixes a file in one pass.

pub mod route;
pub mod settings;
pub mod tls;

use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;

/// One problem in a config file: where, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key path, e.g. `user[2].totp_secret`. Empty for the whole file.
    pub path: String,
    pub message: String,
}

/// Every problem found in a config file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(v)` when nothing was pushed.
    pub fn into_result<T>(self, v: T) -> Result<T, ConfigErrors> {
        if self.0.is_empty() { Ok(v) } else { Err(self) }
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if e.path.is_empty() {
                write!(f, "{}", e.message)?;
            } else {
                write!(f, "{}: {}", e.path, e.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Parses `text` into `T`. Unknown keys are all reported, with their paths,
/// rather than only the first; a syntax or type error is reported with its
/// line and column.
pub fn parse_toml<T: DeserializeOwned>(text: &str) -> Result<T, ConfigErrors> {
    let mut errors = ConfigErrors::default();
    let de = toml::Deserializer::parse(text).map_err(|e| toml_error(text, e))?;
    let mut unknown = Vec::new();
    let parsed: Result<T, _> = serde_ignored::deserialize(de, |path| {
        unknown.push(path.to_string());
    });
    unknown.sort();
    for path in unknown {
        errors.push(bracket_indices(&path), "unknown key");
    }
    match parsed {
        Ok(v) => errors.into_result(v),
        Err(e) => {
            let ConfigErrors(list) = toml_error(text, e);
            errors.0.extend(list);
            Err(errors)
        }
    }
}

/// `user.0.email` → `user[0].email`, the form validation messages use.
fn bracket_indices(path: &str) -> String {
    let mut out = String::new();
    for seg in path.split('.') {
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

fn toml_error(text: &str, e: toml::de::Error) -> ConfigErrors {
    let mut errors = ConfigErrors::default();
    let location = e.span().map(|span| {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        format!("line {line}, column {col}")
    });
    let message = e.message().trim().to_string();
    match location {
        Some(loc) => errors.push(loc, message),
        None => errors.push("", message),
    }
    errors
}

/// Parses a human duration (`90s`, `15m`, `8h`) for validation code that
/// reads durations from strings.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("`{s}` is not a duration ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    #[allow(dead_code)]
    struct File {
        a: u32,
        #[serde(default)]
        inner: Vec<Inner>,
    }
    #[derive(Deserialize, Debug)]
    #[allow(dead_code)]
    struct Inner {
        b: String,
    }

    #[test]
    fn reports_every_unknown_key_with_its_path() {
        let err = parse_toml::<File>("a = 1\nzz = 2\n[[inner]]\nb = 'x'\nc = 3\n").unwrap_err();
        let paths: Vec<_> = err.0.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, vec!["inner[0].c", "zz"]);
    }

    #[test]
    fn reports_type_errors_with_location() {
        let err = parse_toml::<File>("a = 'not a number'\n").unwrap_err();
        assert_eq!(err.0.len(), 1);
        assert!(err.0[0].path.starts_with("line 1"), "{err}");
    }
}
