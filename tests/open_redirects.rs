//! Every string of oauth2-proxy's open-redirect corpus, used as a return
//! URL, is refused or stays a same-origin path.

use unigate::oidc::return_url::safe_return_path;
use url::Url;

#[test]
fn all_open_redirect_vectors_are_refused_or_same_origin() {
    let corpus = include_str!("data/openredirects.txt");
    let base = Url::parse("https://portal.example/app/").unwrap();
    let mut refused = 0;
    let mut kept = 0;
    for line in corpus.lines() {
        match safe_return_path(line) {
            None => refused += 1,
            Some(path) => {
                kept += 1;
                assert!(path.starts_with('/') && !path.starts_with("//"), "{line:?}");
                let joined = base.join(path).unwrap();
                assert_eq!(joined.origin(), base.origin(), "{line:?} leaves the origin as {joined}");
                assert!(!path.contains('\\') && !path.chars().any(char::is_control), "{line:?}");
            }
        }
    }
    assert_eq!(refused + kept, corpus.lines().count());
    assert!(corpus.lines().count() >= 559);
    // The corpus is attacks: almost all must be refused outright.
    assert!(refused > 500, "refused only {refused}");
    for must in [
        "//evil.example",
        "/\\evil.example",
        "/%09/evil.example",
        "https://evil.example",
        "/%2F%2Fevil.example",
        "/%5Cevil.example",
    ] {
        assert_eq!(safe_return_path(must), None, "{must}");
    }
}

/// The same corpus as `target_link_uri` of a third-party-initiated login
/// (My Modules' tiles): raw, and as the path of a URL on the module's own
/// origin. Nothing leads off the hosts unigate serves.
#[test]
fn initiated_logins_go_only_to_hosts_unigate_serves() {
    use unigate::policy::routes::{Initiated, Initiation, initiated_login};
    let corpus = include_str!("data/openredirects.txt");
    let origin_of = |h: &str| (h == "portal.example").then(|| "https://portal.example".to_string());
    let base = Url::parse("https://portal.example/").unwrap();
    let mut checked = 0;
    for line in corpus.lines() {
        for target in [line.to_string(), format!("https://portal.example{line}")] {
            let init = Initiation {
                iss: Some("https://idp.example"),
                target_link_uri: Some(&target),
                ..Initiation::default()
            };
            match initiated_login("https://idp.example", "portal.example", &init, origin_of) {
                Ok(Initiated::Here { return_path }) => {
                    assert!(
                        return_path.starts_with('/') && !return_path.starts_with("//"),
                        "{target:?} -> {return_path:?}"
                    );
                    let joined = base.join(&return_path).unwrap();
                    assert_eq!(joined.origin(), base.origin(), "{target:?} leaves as {joined}");
                }
                other => panic!("{target:?}: {other:?}"),
            }
            checked += 1;
        }
    }
    assert!(checked >= 2 * 559);
}
