//! Checks of single values (algorithms, secrets, URLs), each reporting
//! into the list of every problem.

use std::path::Path;

use jsonwebtoken::Algorithm;
use url::Url;

use crate::config::ConfigErrors;
use crate::secret::{Secret, SecretRef};

pub(super) fn parse_alg(v: Option<&str>, default: Algorithm, key: &str, errs: &mut ConfigErrors) -> Algorithm {
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

pub(super) fn load_secret(r: Option<&SecretRef>, base: &Path, key: &str, errs: &mut ConfigErrors) -> Option<Secret> {
    r.and_then(|r| r.load(base).map_err(|e| errs.push(key, e)).ok())
}

pub(super) fn parse_url(s: &str, key: &str, errs: &mut ConfigErrors) -> Url {
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

pub(super) fn check_redirect(s: &str, key: &str, errs: &mut ConfigErrors) {
    let u = parse_url(s, key, errs);
    if u.fragment().is_some() {
        errs.push(key, "must not have a fragment (RFC 6749 §3.1.2)");
    }
}
