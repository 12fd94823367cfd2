use super::*;

#[test]
fn the_quick_filter_lets_every_listed_name_through_and_few_others() {
    let lists = [
        IDENTITY_HEADERS,
        IDENTITY_PREFIXES,
        &FORWARDED_HEADERS[..],
        &KASEYAONE_HEADERS[..],
        super::super::forwarded::FORWARDING_HEADERS,
        super::super::forwarded::PATH_OVERRIDE_HEADERS,
    ];
    for name in lists.iter().flat_map(|l| l.iter()) {
        assert!(may_be_special(name.as_bytes()), "{name}");
        assert!(
            may_be_special(name.replace('-', "_").to_uppercase().as_bytes()),
            "{name}"
        );
    }
    for common in [
        "host",
        "accept",
        "accept-encoding",
        "cookie",
        "user-agent",
        "content-type",
        "authorization",
        "sec-fetch-mode",
        "connection",
    ] {
        assert!(!may_be_special(common.as_bytes()), "{common}");
    }
}

#[test]
fn every_spelling_is_an_identity_header() {
    for n in [
        "X-KaseyaOne-User",
        "x_kaseyaone_user",
        "X_KASEYAONE_EMAIL",
        "x-KaseyaOne-anything",
        "X-Forwarded-User",
        "x_forwarded_email",
        "X-Forwarded-Preferred_Username",
        "X-Unigate-Assertion",
        "x-auth-request-user",
        "Remote-User",
    ] {
        assert!(is_identity_header(n), "{n}");
    }
    for n in [
        "x-forwarded-for",
        "x-forwarded-proto",
        "cookie",
        "accept",
        "x-request-id",
    ] {
        assert!(!is_identity_header(n), "{n}");
    }
}

/// Each spelling a client (or a CGI-style framework) could use.
fn spellings(name: &str) -> Vec<String> {
    let mixed: String = name
        .chars()
        .enumerate()
        .map(|(i, c)| if i % 2 == 0 { c.to_ascii_uppercase() } else { c })
        .collect();
    let title: String = name
        .split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map_or(String::new(), |f| f.to_ascii_uppercase().to_string() + c.as_str())
        })
        .collect::<Vec<_>>()
        .join("-");
    vec![
        name.to_string(),
        name.to_ascii_uppercase(),
        name.replace('-', "_"),
        title.replace('-', "_"),
        mixed.clone(),
        mixed.replace('-', "_"),
        title,
    ]
}

#[test]
fn the_strip_list_in_every_spelling() {
    let named = [
        "remote-groups",
        "x-webauth-user",
        "x-webauth-groups",
        "x-webauth-email",
        "remote-email",
        "remote-name",
        "x-remote-group",
        "x-remote-groups",
        "x-authenticated-user",
        "x-auth-user",
        "x-ms-client-principal",
        "x-ms-client-principal-name",
        "x-ms-client-principal-id",
        "cf-access-jwt-assertion",
        "cf-access-authenticated-user-email",
        "x-goog-authenticated-user-email",
        "x-amzn-oidc-identity",
        "x-pomerium-jwt-assertion",
        "oidc-claim-email",
    ];
    let prefixed = IDENTITY_PREFIXES.iter().map(|p| format!("{p}anything"));
    let all: Vec<String> = IDENTITY_HEADERS
        .iter()
        .chain(FORWARDED_HEADERS.iter())
        .chain(KASEYAONE_HEADERS.iter())
        .chain(named.iter())
        .map(|s| s.to_string())
        .chain(prefixed)
        .collect();
    for name in &all {
        for n in spellings(name) {
            assert!(is_identity_header(&n), "{n}");
        }
    }
    // No length limit: a long name of a family is still one.
    let long = format!("x-kaseyaone-{}", "a".repeat(200));
    assert!(is_identity_header(&long));
    assert!(is_identity_header(&long.to_ascii_uppercase().replace('-', "_")));
    // Forwarding headers are `forwarded`'s, and ordinary headers pass.
    for n in [
        "x-forwarded-for",
        "x-forwarded-proto",
        "cookie",
        "accept",
        "x-request-id",
        "authorization",
        "x-auth-token",
        "user-agent",
        "x-use",
        "remote",
        "x-kaseyaone",
    ] {
        assert!(!is_identity_header(n), "{n}");
    }
}

#[test]
fn presets() {
    let id = Identity {
        sub: "s-1".into(),
        sid: Some("sid".into()),
        email: "a@x.example".into(),
        name: "A\r\nB".into(),
        username: "a".into(),
        company: "Acme".into(),
        groups: vec!["g1".into(), "g2".into()],
        module_user: None,
    };
    let k: Vec<_> = headers(&id, HeaderPreset::KaseyaOne, 100, "handle");
    assert_eq!(
        k,
        vec![
            ("x-kaseyaone-user", "a".to_string()),
            ("x-kaseyaone-email", "a@x.example".to_string()),
            ("x-kaseyaone-name", "AB".to_string()),
            ("x-kaseyaone-groups", "g1,g2".to_string()),
            ("x-kaseyaone-company", "Acme".to_string()),
            ("x-kaseyaone-session", "handle".to_string()),
        ]
    );
    assert!(k.iter().all(|(_, v)| v != "sid"), "the sid itself never goes");
    let f: Vec<_> = headers(&id, HeaderPreset::Forwarded, 100, "handle");
    assert_eq!(
        f,
        vec![
            ("x-forwarded-user", "s-1".to_string()),
            ("x-forwarded-email", "a@x.example".to_string()),
            ("x-forwarded-groups", "g1,g2".to_string()),
            ("x-forwarded-preferred-username", "a".to_string()),
        ]
    );
    let set: Vec<_> = header_set(&id, HeaderPreset::Forwarded, 100, "handle").iter().collect();
    assert_eq!(set.len(), 4);
    assert_eq!(set[1].0, "x-forwarded-email");
    assert_eq!(set[1].1, "a@x.example");
    assert_eq!(set[3].1, "a");
}

#[test]
fn neither_the_headers_nor_the_assertion_carry_the_sid() {
    let sid = "idp-session-id-0123456789";
    let id = Identity {
        sub: "s-1".into(),
        sid: Some(sid.into()),
        email: "a@x.example".into(),
        name: "A".into(),
        username: "a".into(),
        company: "Acme".into(),
        groups: vec!["g".into()],
        module_user: Some("m".into()),
    };
    let key = SigningKey::generate(jsonwebtoken::Algorithm::ES256).unwrap();
    let signer = AssertionSigner::new(key, "unigate", Duration::from_secs(60), 10);
    let handle = signer.session_handle("portal", &id);
    assert!(!handle.is_empty() && handle != sid);
    assert_ne!(handle, signer.session_handle("crm", &id), "per module");
    for preset in [HeaderPreset::KaseyaOne, HeaderPreset::Forwarded] {
        for (n, v) in headers(&id, preset, 4096, &handle) {
            assert!(!v.contains(sid), "{n}: {v}");
        }
    }
    let jwt = signer.sign(&id, "portal", SystemTime::now()).unwrap();
    use base64::Engine;
    for part in jwt.split('.').take(2) {
        let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(!text.contains(sid) && !text.contains("\"sid\""), "{text}");
    }
    let none = Identity { sid: None, ..id };
    assert_eq!(signer.session_handle("portal", &none), "");
}

#[test]
fn values_are_sanitised() {
    assert_eq!(sanitize("a\r\nSet-Cookie: x", 100), "aSet-Cookie: x");
    assert_eq!(sanitize("äöü", 4), "äö");
    assert_eq!(sanitize("abc\0", 10), "abc");
}

#[test]
fn a_comma_in_a_group_name_never_splits_it() {
    let g = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(groups_header(&g(&["a", "b"]), 4096), "a,b");
    assert_eq!(groups_header(&g(&["x,admins"]), 4096), "x%2Cadmins");
    assert_eq!(
        groups_header(&g(&["CN=Admins,OU=IT", "100%"]), 4096),
        "CN=Admins%2COU=IT,100%25"
    );
    assert_eq!(
        groups_header(&g(&["adm\u{7f}ins", "a\r\nb"]), 4096),
        "adm%7Fins,a%0D%0Ab"
    );
    assert_eq!(groups_header(&[], 4096), "");
    // Never cut inside a name: `admins-readonly` is not `admins`.
    assert_eq!(groups_header(&g(&["staff", "admins-readonly", "x"]), 12), "staff,x");
    assert_eq!(groups_header(&g(&["a%b"]), 4), "");
}
