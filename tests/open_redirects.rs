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
