//! Module credentials that pass through unigate: a local exception's
//! login where Log In with KaseyaOne is required, and module logins
//! attempted beside a KaseyaOne session. The rule is "no second reading":
//! unigate decides on the username the module will read, so a login whose
//! username the module could read differently (several values, one in the
//! query string, a body encoding unigate does not parse) is refused.

use crate::config::route::Route;
use crate::policy::request::RequestFacts;
use crate::session::cookie_forms::name_matches;

/// Whether a form or query key could be read as `field` by a framework
/// (PHP's `user.name` and `username[]`, ASP.NET's case-insensitive names).
pub fn is_field(key: &str, field: &str) -> bool {
    name_matches(key.as_bytes(), field)
}

/// Why a module login posted through unigate is refused before the module
/// sees it, if it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadLogin {
    /// A body encoding other than `application/x-www-form-urlencoded`.
    Encoding,
    /// The username more than once, or in the query string.
    Ambiguous,
    /// Anything but a POSTed form to a login page where credentials are
    /// checked.
    NotAForm,
}

impl BadLogin {
    /// What the person is told.
    pub fn explain(self) -> &'static str {
        match self {
            BadLogin::Encoding => {
                "Send the login form as application/x-www-form-urlencoded (UTF-8); other encodings are not accepted here."
            }
            BadLogin::Ambiguous => "The username must be sent once, in the form body only.",
            BadLogin::NotAForm => "Log in with the login form.",
        }
    }
}

/// The content type of a login form unigate reads exactly as the module
/// does: `application/x-www-form-urlencoded`, in UTF-8 if a charset is named.
pub fn form_encoded(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else { return false };
    let mut parts = ct.split(';').map(str::trim);
    if !parts
        .next()
        .is_some_and(|m| m.eq_ignore_ascii_case("application/x-www-form-urlencoded"))
    {
        return false;
    }
    parts.all(|p| match p.split_once('=') {
        Some((k, v)) if k.trim().eq_ignore_ascii_case("charset") => {
            let v = v.trim().trim_matches('"');
            v.eq_ignore_ascii_case("utf-8") || v.eq_ignore_ascii_case("utf8")
        }
        _ => p.is_empty(),
    })
}

/// The one username of a login form: every body value and query value a
/// framework could read as `field` counts; more than one, or any in the
/// query string, is ambiguous. `Ok("")` when there is none.
pub fn the_username<'a>(form: &'a [(String, String)], query: Option<&str>, field: &str) -> Result<&'a str, BadLogin> {
    if let Some(q) = query
        && form_urlencoded::parse(q.as_bytes()).any(|(k, _)| is_field(&k, field))
    {
        return Err(BadLogin::Ambiguous);
    }
    let mut values = form.iter().filter(|(k, _)| is_field(k, field)).map(|(_, v)| v.as_str());
    match (values.next(), values.next()) {
        (None, _) => Ok(""),
        (Some(v), None) => Ok(v),
        (Some(_), Some(_)) => Err(BadLogin::Ambiguous),
    }
}

/// Whether a request for canonical `path` may reach one of the module's
/// login pages (or, when KaseyaOne is required, its exception path), in
/// any spelling a server dispatches there (`policy::path::reaches`), and
/// in any case: refusing a login beside a session is the safe side.
pub fn login_page(module: &Route, path: &str) -> bool {
    module
        .login_paths
        .iter()
        .chain(module.requires_kaseyaone().then_some(&module.exception_path))
        .any(|p| crate::policy::path::reaches(p, path, true))
}

/// Whether a request beside a KaseyaOne session tries module credentials:
/// anything but a plain read of a login page, or a read that carries a
/// username in its query string.
pub fn beside_session(facts: &RequestFacts<'_>, module: &Route) -> bool {
    // The path first: most requests are for other pages, and a login
    // page is ruled out on the first letter (`policy::path::reaches`).
    login_page(module, facts.path)
        && (writes(facts.method) || facts.has_body() || the_username(&[], facts.query, &module.username_field).is_err())
}

/// A method that may carry credentials (anything but a plain read).
pub fn writes(method: &http::Method) -> bool {
    !matches!(*method, http::Method::GET | http::Method::HEAD | http::Method::OPTIONS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A form's pairs and a query string.
    type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>);

    fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn one_username_in_the_body_or_none() {
        let u = "username";
        // PHP reads `user.name` as `user_name`: another field.
        assert_eq!(
            the_username(&form(&[("username", "a"), ("user.name", "b")]), None, "user_name"),
            Ok("b")
        );
        assert_eq!(
            the_username(&form(&[("username", "a"), ("user.name", "b")]), None, u),
            Ok("a")
        );
        assert_eq!(
            the_username(&form(&[("username", "admin"), ("password", "x")]), None, u),
            Ok("admin")
        );
        assert_eq!(the_username(&form(&[("password", "x")]), None, u), Ok(""));
        assert_eq!(
            the_username(&form(&[("username", "admin")]), Some("next=/"), u),
            Ok("admin")
        );
        let ambiguous: [Case; 8] = [
            (&[("username", "admin"), ("username", "root")], None),
            (&[("username", "admin")], Some("username=root")),
            (&[("username", "admin")], Some("username%5B%5D=root")),
            (&[], Some("username=root")),
            (&[("username", "admin"), (" username", "root")], None),
            (&[("username", "admin"), ("USERNAME", "root")], None),
            (&[("username", "admin"), ("username[]", "root")], None),
            (&[("username", "admin"), ("%75sername", "root")], None),
        ];
        for (f, q) in ambiguous {
            assert_eq!(the_username(&form(f), q, u), Err(BadLogin::Ambiguous), "{f:?} {q:?}");
        }
    }

    #[test]
    fn only_urlencoded_utf8_forms_are_read() {
        for ok in [
            "application/x-www-form-urlencoded",
            "Application/X-WWW-Form-Urlencoded; charset=UTF-8",
            "application/x-www-form-urlencoded;charset=\"utf-8\"",
        ] {
            assert!(form_encoded(Some(ok)), "{ok}");
        }
        for bad in [
            "multipart/form-data; boundary=x",
            "application/json",
            "text/plain",
            "application/x-www-form-urlencoded; charset=utf-16",
            "application/x-www-form-urlencodedx",
        ] {
            assert!(!form_encoded(Some(bad)), "{bad}");
        }
        assert!(!form_encoded(None));
    }

    #[test]
    fn credential_methods() {
        assert!(writes(&http::Method::POST));
        assert!(writes(&http::Method::PUT));
        assert!(!writes(&http::Method::GET));
        assert!(!writes(&http::Method::HEAD));
    }
}
