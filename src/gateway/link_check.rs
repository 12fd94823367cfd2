//! Whether a module accepted credentials at its login page, for account
//! linking. A failed login often looks like a good one: a PHP-style module
//! starts a session (sets its cookie) and redirects on every attempt, so
//! "a cookie was set" or "a redirect came back" proves nothing. The rule
//! is `[[module]] link_success` (every condition given must hold) or, by
//! default, a redirect whose target is not a login page and that then
//! answers 200 to the cookies the login set (a probe).

use super::config::LinkSuccessFile;

/// What the module answered to the login POST.
#[derive(Debug, Clone, Default)]
pub struct LoginAnswer {
    pub status: u16,
    pub location: Option<String>,
    /// `(name, value, expired)` of each `Set-Cookie`.
    pub set_cookies: Vec<(String, String, bool)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Refused,
    Accepted,
    /// Accepted if a GET of this path (and query) with the cookies answers 200.
    Probe(String),
}

/// The path (and query) a redirect's `Location` points to, when it stays
/// on the module (a relative reference, or an absolute one: only its path
/// is asked of the module).
fn target(location: &str) -> Option<String> {
    let base = url::Url::parse("http://module.invalid/").ok()?;
    let u = base.join(location).ok()?;
    Some(match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_string(),
    })
}

/// A path compared the way a login page is recognised: case, trailing
/// slash and `;` parameters aside.
fn canon(path: &str) -> String {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let decoded = crate::session::cookie_forms::percent_decode(path.as_bytes(), false);
    let mut out = String::new();
    for seg in String::from_utf8_lossy(&decoded).split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        out.push_str(&seg.split(';').next().unwrap_or("").to_ascii_lowercase());
    }
    if out.is_empty() { "/".into() } else { out }
}

/// The verdict on a login answer. `before`: the cookies the login page
/// set before the POST (a pre-login session), sent with it.
pub fn judge(
    rule: &LinkSuccessFile,
    login_pages: &[&str],
    before: &[(String, String)],
    answer: &LoginAnswer,
) -> Verdict {
    let redirect = (300..400).contains(&answer.status);
    let to = answer.location.as_deref().filter(|_| redirect).and_then(target);
    if *rule == LinkSuccessFile::default() {
        return match to {
            Some(t) if !login_pages.iter().any(|p| canon(p) == canon(&t)) => Verdict::Probe(t),
            _ => Verdict::Refused,
        };
    }
    if let Some(not_to) = &rule.redirect_not_to
        && to.as_deref().is_none_or(|t| canon(t) == canon(not_to))
    {
        return Verdict::Refused;
    }
    if let Some(name) = &rule.new_cookie {
        let old = before.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        let new = answer
            .set_cookies
            .iter()
            .rev()
            .find(|(n, _, _)| n == name)
            .filter(|(_, v, expired)| !v.is_empty() && !expired && Some(v.as_str()) != old);
        if new.is_none() {
            return Verdict::Refused;
        }
    }
    match &rule.probe {
        Some(p) => Verdict::Probe(p.clone()),
        None => Verdict::Accepted,
    }
}

/// The cookies to send after the login: those from before, replaced or
/// removed by what the login set.
pub fn jar_after(before: &[(String, String)], answer: &LoginAnswer) -> Vec<(String, String)> {
    let mut jar: Vec<(String, String)> = before.to_vec();
    for (n, v, expired) in &answer.set_cookies {
        jar.retain(|(k, _)| k != n);
        if !expired && !v.is_empty() {
            jar.push((n.clone(), v.clone()));
        }
    }
    jar
}

/// Whether the login's answer set a cookie the browser did not have
/// before (a new name, or a new value): a module that opened a session.
pub fn login_set_cookie(before: &[(String, String)], answer: &LoginAnswer) -> bool {
    answer
        .set_cookies
        .iter()
        .any(|(n, v, expired)| !expired && !v.is_empty() && !before.iter().any(|(bn, bv)| bn == n && bv == v))
}

/// Whether a probe proves a login: the page answers 200 with the login's
/// cookies and not with the cookies the browser had before it (a page
/// anyone may see proves nothing).
pub fn probe_proves(with_login: u16, before_login: u16) -> bool {
    with_login == 200 && before_login != 200
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_proves_a_login_only_against_the_anonymous_answer() {
        let before = vec![("PHPSESSID".to_string(), "pre".to_string())];
        let same = answer(302, Some("/"), &[("PHPSESSID", "pre")]);
        let renewed = answer(302, Some("/"), &[("PHPSESSID", "post")]);
        let added = answer(302, Some("/"), &[("remember", "1")]);
        assert!(!login_set_cookie(&before, &same), "the same session again");
        assert!(login_set_cookie(&before, &renewed));
        assert!(login_set_cookie(&before, &added));
        assert!(!login_set_cookie(&before, &answer(302, Some("/"), &[])));
        assert!(probe_proves(200, 302));
        assert!(probe_proves(200, 403));
        assert!(!probe_proves(200, 200), "a page anyone may see");
        assert!(!probe_proves(302, 302));
    }

    fn answer(status: u16, location: Option<&str>, cookies: &[(&str, &str)]) -> LoginAnswer {
        LoginAnswer {
            status,
            location: location.map(str::to_string),
            set_cookies: cookies
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string(), false))
                .collect(),
        }
    }

    #[test]
    fn php_style_failures_are_not_successes() {
        let logins = ["/login"];
        let before = vec![("sid".to_string(), "anon".to_string())];
        let default = LinkSuccessFile::default();
        let not_login = LinkSuccessFile {
            redirect_not_to: Some("/login".into()),
            ..Default::default()
        };
        let new_cookie = LinkSuccessFile {
            new_cookie: Some("sid".into()),
            ..Default::default()
        };
        let probe = LinkSuccessFile {
            probe: Some("/account".into()),
            ..Default::default()
        };
        // A failed PHP-style login: the session cookie (again) and a redirect back.
        let failed = answer(302, Some("/login?error=1"), &[("sid", "anon")]);
        let failed_abs = answer(302, Some("http://portal.example/LOGIN/"), &[("sid", "fresh")]);
        let ok = answer(302, Some("/"), &[("sid", "new")]);
        let unauthorized = answer(401, None, &[]);
        let page_with_cookie = answer(200, None, &[("sid", "x")]);
        let no_cookie = answer(302, Some("/"), &[]);
        let cases: Vec<(&str, &LinkSuccessFile, &LoginAnswer, Verdict)> = vec![
            ("default, failure", &default, &failed, Verdict::Refused),
            (
                "default, failure to another spelling",
                &default,
                &failed_abs,
                Verdict::Refused,
            ),
            ("default, 401", &default, &unauthorized, Verdict::Refused),
            (
                "default, 200 with a cookie",
                &default,
                &page_with_cookie,
                Verdict::Refused,
            ),
            ("default, success", &default, &ok, Verdict::Probe("/".into())),
            ("redirect_not_to, failure", &not_login, &failed, Verdict::Refused),
            ("redirect_not_to, success", &not_login, &ok, Verdict::Accepted),
            (
                "new_cookie, the same value again",
                &new_cookie,
                &failed,
                Verdict::Refused,
            ),
            ("new_cookie, none", &new_cookie, &no_cookie, Verdict::Refused),
            ("new_cookie, success", &new_cookie, &ok, Verdict::Accepted),
            ("probe, anything", &probe, &failed, Verdict::Probe("/account".into())),
        ];
        for (what, rule, a, want) in cases {
            assert_eq!(judge(rule, &logins, &before, a), want, "{what}");
        }
        let expired = LoginAnswer {
            set_cookies: vec![("sid".into(), "gone".into(), true)],
            ..answer(302, Some("/"), &[])
        };
        assert_eq!(judge(&new_cookie, &logins, &before, &expired), Verdict::Refused);
        assert_eq!(jar_after(&before, &ok), vec![("sid".to_string(), "new".to_string())]);
        assert_eq!(jar_after(&before, &expired), vec![]);
    }
}
