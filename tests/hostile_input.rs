//! Property tests: the parsers that see attacker input never panic, and the
//! return-path check never lets a path leave the origin. (cargo-fuzz needs a
//! nightly toolchain this project does not have; these run everywhere.)

use std::path::Path;
use std::time::SystemTime;

use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::JwkSet;
use proptest::prelude::*;
use unigate::idp::keys::SigningKey;
use unigate::oidc::id_token::{Expected, ProviderKeys, validate_id_token, verify_signature};
use unigate::oidc::return_url::safe_return_path;
use unigate::session::cookie_value;

mod path_readers;

fn keys() -> ProviderKeys {
    static KEYS: std::sync::OnceLock<ProviderKeys> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let k = SigningKey::generate(Algorithm::ES256).unwrap();
        ProviderKeys::from_jwks(&JwkSet {
            keys: vec![k.jwk.clone()],
        })
    })
    .clone()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn cookie_parsing_never_panics(h in proptest::collection::vec(any::<u8>(), 0..300), name in "[a-z_]{1,10}") {
        let _ = cookie_value(std::iter::once(h.as_slice()), &name);
    }

    #[test]
    fn return_paths_stay_on_the_origin(raw in "(/|//|/\\\\|%2f|%5c|%09|\\\\|[a-z.:@?#&=%0-9]){0,40}") {
        if let Some(p) = safe_return_path(&raw) {
            let base = url::Url::parse("https://portal.example/").unwrap();
            let joined = base.join(p).unwrap();
            prop_assert_eq!(joined.origin(), base.origin(), "{} -> {}", raw, joined);
        }
    }

    #[test]
    fn any_string_as_return_path_never_panics(raw in any::<String>()) {
        let _ = safe_return_path(&raw);
    }

    #[test]
    fn tokens_of_any_shape_are_refused_without_panic(
        a in "[A-Za-z0-9_=-]{0,60}",
        b in "[A-Za-z0-9_=-]{0,60}",
        c in "[A-Za-z0-9_=-]{0,60}",
        raw in any::<String>(),
    ) {
        let expected = Expected {
            nonce: Some("n"),
            ..Expected::new("https://idp.example", "c", &[Algorithm::ES256, Algorithm::RS256], 60)
        };
        let k = keys();
        let dotted = [a, b, c].join(".");
        prop_assert!(validate_id_token(&dotted, &k, &expected, SystemTime::now()).is_err());
        prop_assert!(validate_id_token(&raw, &k, &expected, SystemTime::now()).is_err());
        prop_assert!(verify_signature(&raw, &k, &[Algorithm::ES256]).is_err());
    }

    #[test]
    fn no_server_reads_a_canonical_path_as_leaving_its_public_prefix(raw in path_readers::attack_paths()) {
        prop_assert_eq!(path_readers::check(&raw), Ok(()));
    }

    #[test]
    fn any_string_as_a_request_path_never_panics(raw in any::<String>()) {
        prop_assert_eq!(path_readers::check(&format!("/{raw}")), Ok(()));
    }

    #[test]
    fn config_text_never_panics(text in any::<String>()) {
        let _ = unigate::gateway::config::GatewayConfig::from_toml(&text, Path::new("."));
        let _ = unigate::idp::IdpConfig::from_toml(&text, Path::new("."));
    }

    #[test]
    fn authorize_parameters_never_panic(pairs in proptest::collection::vec(("[a-z_]{1,20}", any::<String>()), 0..12)) {
        let cfg = unigate::idp::IdpConfig::from_toml("", Path::new(".")).unwrap();
        let dir = unigate::idp::directory::Directory::new(&cfg);
        let _ = unigate::idp::oauth::check_authorize(&dir, pairs);
    }
}

#[test]
fn the_open_redirect_corpus_as_request_paths() {
    let corpus = include_str!("data/openredirects.txt");
    let mut canonical = 0;
    for line in corpus.lines() {
        for raw in [line.to_string(), format!("/{line}"), format!("/static/{line}")] {
            assert_eq!(path_readers::check(&raw), Ok(()));
            if let Ok(c) = unigate::policy::path::canonicalize(&raw) {
                canonical += 1;
                assert!(!c.starts_with("//") && !c.contains('\\'), "{raw:?} -> {c:?}");
            }
        }
    }
    // Some are plain enough to be paths; most hold something refused.
    assert!(canonical > 100, "{canonical}");
}

#[test]
fn the_server_models_read_the_attacks_as_those_servers_do() {
    use path_readers::*;
    assert_eq!(tomcat("/static/..;/admin"), "/admin");
    assert_eq!(spring("/static/..%3b/admin"), "/admin");
    assert_eq!(nginx("/static/%2e%2e/admin"), "/admin");
    assert_eq!(nginx("/static//../admin"), "/admin");
    assert_eq!(iis("/static/..\\admin"), "/admin");
    assert_eq!(iis("/Static./x"), "/static/x");
    assert_eq!(whatwg("/static/%2e%2e/admin"), "/admin");
    // And `check` flags a path that would escape if forwarded raw.
    for escape in ["/static/..;/admin", "/static/%2e%2e/admin"] {
        let c = unigate::policy::path::canonicalize(escape).unwrap();
        assert!(!unigate::policy::path::under("/static", &c), "{escape} -> {c}");
    }
}
