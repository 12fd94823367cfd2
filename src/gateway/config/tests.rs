//! The config loader's tests: every problem reported at once, the
//! documented keys matching the types, the identity provider's settings.

use super::*;

#[test]
fn every_problem_at_once() {
    let text = r#"
        [listen]
        address = "nope"
        public_url = "ftp://x"
        [identity_provider]
        issuer = "not a url"
        client_id = ""
        client_secret = "env:UNIGATE_SURELY_UNSET_VAR"
        scopes = ["email"]
        [session]
        store = "etcd"
        [identity]
        max_header_value = 65536
        [[module]]
        name = "a"
        hosts = ["a.example:80"]
        upstream = "x"
        logout_paths = ["logout"]
        bogus = 1
    "#;
    let err = GatewayConfig::from_toml(text, Path::new(".")).unwrap_err();
    let paths: Vec<&str> = err.0.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        vec!["module[0].bogus"],
        "unknown keys stop before checking: {err}"
    );
    let text = text.replace("bogus = 1", "");
    let err = GatewayConfig::from_toml(&text, Path::new(".")).unwrap_err();
    let paths: Vec<&str> = err.0.iter().map(|e| e.path.as_str()).collect();
    for want in [
        "listen.address",
        "listen.public_url",
        "identity_provider.issuer",
        "identity_provider.client_id",
        "identity_provider.client_secret",
        "identity_provider.scopes",
        "session.store",
        "identity.max_header_value",
        "module[0].hosts",
        "module[0].upstream",
        "module[0].logout_paths",
        "module[0].access_groups",
    ] {
        assert!(paths.contains(&want), "missing {want}: {err}");
    }
}

#[test]
fn identity_provider_claims_and_access_group_rules() {
    let base = |idp: &str, groups: &str, module: &str| {
        format!(
            r#"
            [listen]
            address = "127.0.0.1:8080"
            public_url = "http://localhost:8080"
            [identity_provider]
            issuer = "https://idp.example"
            client_id = "unigate"
            client_secret = "env:PATH"
            {idp}
            [[module]]
            name = "portal"
            hosts = ["portal.localhost"]
            upstream = "127.0.0.1:8081"
            access_groups = {groups}
            {module}
            "#
        )
    };
    let cases = [
        ("", r#"["*", "admins"]"#, "", "module[0].access_groups", "list it alone"),
        ("", r#"[" "]"#, "", "module[0].access_groups", "empty"),
        ("", "[]", "", "module[0].access_groups", "[\"*\"]"),
        (
            "userinfo = \"sometimes\"",
            r#"["a"]"#,
            "",
            "identity_provider.userinfo",
            "auto",
        ),
        (
            "max_id_token_age = \"1s\"",
            r#"["a"]"#,
            "",
            "identity_provider.max_id_token_age",
            "10s",
        ),
        (
            "[identity_provider.claims]\ngroups = \"realm_access..roles\"",
            r#"["a"]"#,
            "",
            "identity_provider.claims.groups",
            "empty segment",
        ),
        (
            "[identity_provider.claims]\ngroups = \"\"",
            r#"["a"]"#,
            "",
            "identity_provider.claims.groups",
            "nobody could use it",
        ),
        ("", r#"["a"]"#, "max_age = \"5s\"", "module[0].max_age", "1m"),
    ];
    for (idp, groups, module, key, words) in cases {
        let err = GatewayConfig::from_toml(&base(idp, groups, module), Path::new(".")).unwrap_err();
        let e = err
            .0
            .iter()
            .find(|e| e.path == key)
            .unwrap_or_else(|| panic!("{key}: {err}"));
        assert!(e.message.contains(words), "{key}: {e:?}");
    }
    // No groups mapped is fine where every module is open to every user.
    let ok = base(
        "[identity_provider.claims]\ngroups = \"\"",
        r#"["*"]"#,
        "max_age = \"15m\"",
    );
    let cfg = GatewayConfig::from_toml(&ok, Path::new(".")).unwrap();
    assert!(cfg.idp.claims.groups.is_unused());
    assert_eq!(cfg.modules[0].max_age, Some(Duration::from_secs(900)));
}

/// Every `(section, key)` of the file format, from the types: a section
/// is `[name]`, `[[name]]` for arrays of tables, `[a.b]` when nested.
fn schema_keys() -> std::collections::BTreeSet<(String, String)> {
    use serde_json::Value;
    let schema = serde_json::to_value(schemars::schema_for!(GatewayFile)).unwrap();
    let defs = schema["$defs"].clone();
    // The object schema behind refs, options and arrays; and whether it
    // came through an array.
    fn object(v: &Value, defs: &Value, array: bool) -> Option<(Value, bool)> {
        if let Some(r) = v.get("$ref").and_then(Value::as_str) {
            return object(&defs[r.trim_start_matches("#/$defs/")], defs, array);
        }
        if v.get("properties").is_some() {
            return Some((v.clone(), array));
        }
        if let Some(items) = v.get("items") {
            return object(items, defs, true);
        }
        for k in ["anyOf", "oneOf", "allOf"] {
            if let Some(alts) = v.get(k).and_then(Value::as_array) {
                for a in alts {
                    if let Some(o) = object(a, defs, array) {
                        return Some(o);
                    }
                }
            }
        }
        None
    }
    fn walk(section: &str, v: &Value, defs: &Value, out: &mut std::collections::BTreeSet<(String, String)>) {
        for (k, p) in v["properties"].as_object().unwrap() {
            match object(p, defs, false) {
                Some((inner, array)) => {
                    let name = if section.is_empty() {
                        k.clone()
                    } else {
                        format!("{section}.{k}")
                    };
                    let header = if array {
                        format!("[[{name}]]")
                    } else {
                        format!("[{name}]")
                    };
                    walk(&header, &inner, defs, out);
                }
                None => {
                    out.insert((section.to_string(), k.clone()));
                }
            }
        }
    }
    let mut out = std::collections::BTreeSet::new();
    // Top-level tables are named plainly; nested ones by their path.
    for (k, p) in schema["properties"].as_object().unwrap() {
        let (inner, array) = object(p, &defs, false).expect("top-level keys are tables");
        let header = if array { format!("[[{k}]]") } else { format!("[{k}]") };
        walk(&header, &inner, &defs, &mut out);
    }
    // `[[module]] accounts` is documented as `[module.accounts]`,
    // `[[module]] instance` as `[[module.instance]]`.
    out.into_iter()
        .map(|(s, k)| {
            let s = s
                .replace("[[[[module]].instance]]", "[[module.instance]]")
                .replace("[[[[module]].rule]]", "[[module.rule]]")
                .replace("[[[module]].accounts]", "[module.accounts]")
                .replace("[[[module]].link_success]", "[module.link_success]")
                .replace("[[identity_provider].claims]", "[identity_provider.claims]");
            (s, k)
        })
        .collect()
}

/// `(section, key)` pairs named in the key table of docs/configuration.md.
fn readme_keys() -> std::collections::BTreeSet<(String, String)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md")).unwrap();
    let start = readme
        .find("| key | meaning |")
        .expect("the key table of docs/configuration.md");
    let mut out = std::collections::BTreeSet::new();
    for line in readme[start..].lines().skip(2).take_while(|l| l.starts_with('|')) {
        let cell = line.split('|').nth(1).unwrap().replace('`', "");
        let cell = cell.trim();
        let end = cell.rfind(']').expect("a section in the first cell") + 1;
        let section = cell[..end].trim().to_string();
        // Quoted values ("memory") are not keys.
        let mut rest = String::new();
        let mut quoted = false;
        for c in cell[end..].chars() {
            if c == '"' {
                quoted = !quoted;
            } else if !quoted {
                rest.push(c);
            }
        }
        for word in rest.split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')) {
            if !word.is_empty() {
                out.insert((section.clone(), word.to_string()));
            }
        }
    }
    out
}

#[test]
fn the_readme_key_table_and_the_example_config_match_the_types() {
    let types = schema_keys();
    let readme = readme_keys();
    assert!(types.len() > 50, "the schema walk found the keys: {types:?}");
    let undocumented: Vec<_> = types.difference(&readme).collect();
    assert!(
        undocumented.is_empty(),
        "keys missing from the table in docs/configuration.md: {undocumented:?}"
    );
    let stale: Vec<_> = readme.difference(&types).collect();
    assert!(
        stale.is_empty(),
        "keys in docs/configuration.md that do not exist: {stale:?}"
    );
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/unigate.example.toml")).unwrap();
    let mentioned = |key: &str| {
        example.lines().any(|l| {
            let l = l.trim_start_matches(['#', ' ']);
            l.starts_with(&format!("{key} ="))
                || l.contains(&format!("{key} = "))
                || l.contains(&format!("{key}="))
                || l.contains(&format!("\"{key}\""))
        })
    };
    let missing: Vec<_> = types.iter().filter(|(_, k)| !mentioned(k)).collect();
    assert!(
        missing.is_empty(),
        "keys config/unigate.example.toml does not show: {missing:?}"
    );
}
