//! Pure decisions over plain data: what kind of client sent a request,
//! whether a user may use a module, the canonical request path, what to
//! do with a request (`request`), and why a request is refused (`reject`).

pub mod credentials;
pub mod module_cookies;
pub mod path;
pub mod reject;
pub mod request;
pub mod routes;
pub mod rules;

/// Who is asking: a person's browser navigating, or a script/XHR that must
/// get a 401 rather than a redirect it cannot follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    Navigation,
    Api,
}

/// Classifies a request from its `Accept`, `X-Requested-With` and
/// `Sec-Fetch-Mode` headers.
pub fn classify(accept: Option<&str>, x_requested_with: bool, sec_fetch_mode: Option<&str>) -> ClientKind {
    match sec_fetch_mode {
        Some(m) if m.eq_ignore_ascii_case("navigate") => return ClientKind::Navigation,
        Some(m) if m.eq_ignore_ascii_case("cors") || m.eq_ignore_ascii_case("same-origin") => return ClientKind::Api,
        _ => {}
    }
    if x_requested_with {
        return ClientKind::Api;
    }
    match accept {
        Some(a) if a.contains("application/json") && !a.contains("text/html") => ClientKind::Api,
        _ => ClientKind::Navigation,
    }
}

/// The group list that lets every signed-in user in: `access_groups = ["*"]`.
pub const EVERY_USER: &str = "*";

/// The user may use a module when one of their groups is one of its access
/// groups, or when its access groups are `["*"]` (every signed-in user). A
/// user group literally named `*` matches nothing.
pub fn may_access(user_groups: &[String], access_groups: &[String]) -> bool {
    if access_groups.len() == 1 && access_groups[0] == EVERY_USER {
        return true;
    }
    user_groups.iter().any(|g| g != EVERY_USER && access_groups.contains(g))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_table() {
        use ClientKind::*;
        let cases = [
            (Some("text/html,application/xhtml+xml"), false, None, Navigation),
            (Some("application/json"), false, None, Api),
            (Some("application/json, text/html"), false, None, Navigation),
            (Some("*/*"), true, None, Api),
            (None, false, Some("cors"), Api),
            (Some("application/json"), true, Some("navigate"), Navigation),
            (None, false, None, Navigation),
        ];
        for (accept, xrw, mode, want) in cases {
            assert_eq!(classify(accept, xrw, mode), want, "{accept:?} {xrw} {mode:?}");
        }
    }

    #[test]
    fn access_groups() {
        let g = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(may_access(&g(&["a", "b"]), &g(&["b"])));
        assert!(!may_access(&g(&["a"]), &g(&["b"])));
        assert!(!may_access(&g(&[]), &g(&["b"])));
        // `["*"]`: every signed-in user, with groups or none.
        assert!(may_access(&g(&[]), &g(&["*"])));
        assert!(may_access(&g(&["x"]), &g(&["*"])));
        // A user group named `*` opens nothing.
        assert!(!may_access(&g(&["*"]), &g(&["b"])));
    }
}
