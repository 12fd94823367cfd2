//! unigate's own cookies: their names (with the `__Host-` prefix under
//! TLS: Secure, `Path=/`, no `Domain`, so that a sibling subdomain cannot
//! set or toss them), one `Set-Cookie` builder, and the one test of "is
//! this one of unigate's cookies" that keeps every one of them from ever
//! reaching a module.

/// The cookies unigate sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Own {
    /// The session id.
    Session,
    /// The remembered instance of a module with instances.
    Instance,
    /// Binds a logout confirmation form to the browser it was shown to.
    Logout,
    /// Why this browser's last login failed, for its stable error page.
    Error,
}

/// Every cookie name unigate uses, without prefix, but the login
/// transactions' (`unigate_login_<tag>`, see `logins`).
const BASE_NAMES: [&str; 4] = ["unigate", "unigate_instance", "unigate_logout", "unigate_error"];

impl Own {
    /// The cookie's name: `__Host-` prefixed under TLS.
    pub fn name(self, tls: bool) -> &'static str {
        match (self, tls) {
            (Own::Session, false) => "unigate",
            (Own::Session, true) => "__Host-unigate",
            (Own::Instance, false) => "unigate_instance",
            (Own::Instance, true) => "__Host-unigate_instance",
            (Own::Logout, false) => "unigate_logout",
            (Own::Logout, true) => "__Host-unigate_logout",
            (Own::Error, false) => "unigate_error",
            (Own::Error, true) => "__Host-unigate_error",
        }
    }

    /// SameSite: Lax for every one. Cookies a top-level navigation from
    /// elsewhere must carry (the IdP's redirect back, a launcher link), and
    /// the logout confirmation's nonce too: a refusal page reached by the
    /// IdP's redirect must find the nonce other tabs' pages were given, or
    /// it would replace it and their buttons would stop working. (The
    /// nonce proves nothing alone: a logout needs the token a page of this
    /// origin showed, posted with it.)
    fn same_site(self) -> &'static str {
        "Lax"
    }

    /// The `Set-Cookie` value (see `set_cookie`).
    pub fn set_cookie(self, tls: bool, value: &str, max_age: Option<u64>) -> String {
        set_cookie(self.name(tls), value, tls, self.same_site(), max_age)
    }
}

/// The `Set-Cookie` value of every cookie unigate sets: always `Path=/`,
/// HttpOnly, no `Domain`; Secure under TLS. `max_age` none: a
/// browser-session cookie; 0: removal.
pub fn set_cookie(name: &str, value: &str, tls: bool, same_site: &str, max_age: Option<u64>) -> String {
    let secure = if tls { "; Secure" } else { "" };
    match max_age {
        Some(a) => format!("{name}={value}; Path=/; HttpOnly; SameSite={same_site}{secure}; Max-Age={a}"),
        None => format!("{name}={value}; Path=/; HttpOnly; SameSite={same_site}{secure}"),
    }
}

/// True for any of unigate's cookies, in either spelling (with or without
/// `__Host-`/`__Secure-`, any letter case: a module's framework may fold
/// case). They never go to a module.
pub fn is_unigate_cookie(name: &str) -> bool {
    let name = name.trim();
    let bare = strip_prefix_ci(name, "__Host-")
        .or_else(|| strip_prefix_ci(name, "__Secure-"))
        .unwrap_or(name);
    // Login transaction cookies are `unigate_login_<tag>` (`logins`).
    let login = bare.get(..13).is_some_and(|h| h.eq_ignore_ascii_case("unigate_login"));
    login || BASE_NAMES.iter().any(|n| n.eq_ignore_ascii_case(bare))
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
}

/// Whether a module's `Set-Cookie` value sets one of unigate's cookies: a
/// module must not plant or toss a session or login cookie (`__Host-`
/// keeps out sibling hosts, not the origin itself).
pub fn sets_unigate_cookie(set_cookie: &[u8]) -> bool {
    may_hold_unigate_cookie(set_cookie) && {
        let name = set_cookie.split(|b| *b == b'=').next().unwrap_or_default();
        std::str::from_utf8(name).is_ok_and(is_unigate_cookie)
    }
}

/// Whether a Cookie header may hold one of unigate's cookies: every name
/// `is_unigate_cookie` accepts contains `unigate` (in some letter case).
pub fn may_hold_unigate_cookie(h: &[u8]) -> bool {
    h.windows(7).any(|w| w.eq_ignore_ascii_case(b"unigate"))
}

/// Cookie header values with unigate's cookies (and the `name=value`
/// pairs `also` picks) left out, joined into one header value; `None` when nothing is left.
pub fn without_unigate_cookies<'a>(
    values: impl Iterator<Item = &'a str>,
    also: impl Fn(&str) -> bool,
) -> Option<String> {
    let mut kept = String::new();
    let pairs = values
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|p| !p.is_empty());
    for pair in pairs {
        let name = pair.split_once('=').map_or(pair, |(n, _)| n).trim();
        if is_unigate_cookie(name) || also(pair) {
            continue;
        }
        if !kept.is_empty() {
            kept.push_str("; ");
        }
        kept.push_str(pair);
    }
    (!kept.is_empty()).then_some(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_every_unigate_cookie_is_ours() {
        for n in [
            "unigate",
            "__Host-unigate",
            "unigate_login",
            "__Host-unigate_login",
            "unigate_instance",
            "__Host-unigate_instance",
            "unigate_logout",
            "__Host-unigate_logout",
            "__Secure-unigate",
            "UNIGATE",
            "Unigate_Login",
            "unigate_login_3fA9",
            "__Host-unigate_login_3fA9",
            "__host-unigate_instance",
            " unigate ",
        ] {
            assert!(is_unigate_cookie(n), "{n}");
            assert!(may_hold_unigate_cookie(n.as_bytes()), "{n}");
        }
        for n in [
            "portal_session",
            "unigated",
            "my_unigate",
            "__Host-portal",
            "",
            "__Host-",
        ] {
            assert!(!is_unigate_cookie(n), "{n}");
        }
        for own in [Own::Session, Own::Instance, Own::Logout, Own::Error] {
            for tls in [false, true] {
                assert!(is_unigate_cookie(own.name(tls)), "{own:?} {tls}");
            }
        }
    }

    #[test]
    fn under_tls_every_cookie_is_host_prefixed() {
        for own in [Own::Session, Own::Instance, Own::Logout, Own::Error] {
            let c = own.set_cookie(true, "v", Some(60));
            assert!(c.starts_with("__Host-"), "{c}");
            assert!(
                c.contains("; Secure") && c.contains("; Path=/;") && !c.contains("Domain"),
                "{c}"
            );
            let c = own.set_cookie(false, "v", None);
            assert!(!c.starts_with("__Host-") && !c.contains("Secure"), "{c}");
        }
        assert!(Own::Logout.set_cookie(true, "v", Some(1)).contains("SameSite=Lax"));
        assert!(Own::Instance.set_cookie(true, "v", Some(1)).contains("SameSite=Lax"));
    }

    #[test]
    fn a_module_cannot_set_unigates_cookies() {
        for ours in [
            "unigate=x; Path=/",
            "__Host-unigate=x; Secure; Path=/",
            "__Host-unigate_login_ab12=x",
            " Unigate_Instance=east",
        ] {
            assert!(sets_unigate_cookie(ours.as_bytes()), "{ours}");
        }
        for theirs in ["portal_session=1; Path=/", "x=unigate", "my_unigate=1"] {
            assert!(!sets_unigate_cookie(theirs.as_bytes()), "{theirs}");
        }
    }

    #[test]
    fn stripping_keeps_the_module_cookies_only() {
        let h = [
            "unigate=abc; portal_session=1; __Host-unigate_login=x",
            "UNIGATE_INSTANCE=east;other=2",
        ];
        assert_eq!(
            without_unigate_cookies(h.iter().copied(), |_| false).as_deref(),
            Some("portal_session=1; other=2")
        );
        assert_eq!(
            without_unigate_cookies(h.iter().copied(), |pair| pair.starts_with("other=")).as_deref(),
            Some("portal_session=1")
        );
        assert_eq!(without_unigate_cookies(["unigate=1"].into_iter(), |_| false), None);
    }
}
