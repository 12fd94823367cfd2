//! `validate` without files (a snippet of the file, the problems it has),
//! and `resolve` reading exactly what a validated file names.

use std::sync::Arc;

use super::*;
use crate::config::parse_toml;

/// A valid file naming secrets, keys and files that do not exist
/// (`validate` must not look), with `lines` added to `section`
/// (`listen`, `identity_provider`, `session`, `identity`, `module`: the
/// first `[[module]]`; `end`: after everything).
fn with(section: &str, lines: &str) -> String {
    let mut text = String::new();
    for (name, body) in [
        (
            "listen",
            "[listen]\naddress = \"127.0.0.1:8080\"\npublic_url = \"http://localhost:8080\"\nthreads = 2",
        ),
        (
            "identity_provider",
            "[identity_provider]\nissuer = \"https://idp.example\"\nclient_id = \"unigate\"\nclient_secret = \"env:UNIGATE_SURELY_UNSET_VAR\"",
        ),
        ("session", "[session]"),
        ("identity", "[identity]\nassertion_key = \"file:no-such-key.pem\""),
        (
            "module",
            "[[module]]\nname = \"portal\"\nhosts = [\"portal.localhost\"]\nupstream = \"127.0.0.1:8081\"\naccess_groups = [\"*\"]",
        ),
        ("end", ""),
    ] {
        text.push_str(body);
        text.push('\n');
        if name == section {
            text.push_str(lines);
            text.push('\n');
        }
    }
    text
}

fn validated(text: &str) -> Result<Validated, ConfigErrors> {
    let file: GatewayFile = parse_toml(text).unwrap_or_else(|e| panic!("parses: {e}\n{text}"));
    validate(&file)
}

#[test]
fn the_base_file_validates_without_reading_what_it_names() {
    let v = validated(&with("end", "")).unwrap();
    assert_eq!(v.config.idp.client_secret.expose(), "", "not read yet");
    assert!(v.config.identity.assertion_key.is_none());
    assert!(v.reads.assertion_key.is_some());
    assert_eq!(v.config.threads, 2);
    assert!(!v.reads.count_cpus);
}

/// Where lines go, the lines, and the problems expected: key, words.
type Case = (&'static str, String, Vec<(&'static str, &'static str)>);

#[test]
fn validate_reports_each_rule_with_its_key() {
    let second = "[[module]]\nname = \"b\"\nhosts = [\"b.localhost\"]\naccess_groups = [\"*\"]";
    let cases: Vec<Case> = vec![
        (
            "session",
            "store = \"etcd\"".into(),
            vec![("session.store", "`etcd` is not a session store; use `memory` or `redis`")],
        ),
        (
            "session",
            "store = \"Redis\"".into(),
            vec![("session.store", "`Redis` is not a session store")],
        ),
        (
            "session",
            "store = \"redis\"".into(),
            vec![
                ("session.redis_url", "needs `redis_url` (or `redis_sentinels`, or `redis_cluster`)"),
                ("session.encryption_key", "needs `encryption_key`"),
            ],
        ),
        (
            "session",
            concat!(
                "store = \"redis\"\nencryption_key = \"env:K\"\nredis_url = \"env:U\"\n",
                "redis_sentinels = [\"redis://s:26379\"]\nredis_sentinel_master = \"m\"\nredis_prefix = \"{u}\"\n",
                "redis_cluster = [\"nope\", \"redis://:pw@n2:7000\", \"redis://n3:7000/2\", \"env:\", \"file:n5\"]",
            )
            .into(),
            vec![
                ("session.redis_cluster", "`redis_cluster` and `redis_url` exclude each other"),
                ("session.redis_cluster", "`redis_cluster` and `redis_sentinels` exclude each other"),
                ("session.redis_prefix", "a hash tag would put every key on one shard"),
                ("session.redis_cluster", "entry 1: not a Redis URL"),
                ("session.redis_cluster", "entry 2 holds a password: give that URL as a secret reference"),
                ("session.redis_cluster", "entry 3: Redis Cluster has only database 0"),
                ("session.redis_cluster", "entry 4: `env:` needs a variable name"),
            ],
        ),
        (
            "session",
            "store = \"redis\"\nredis_sentinels = [\"nope\"]\nencryption_key = \"env:K\"".into(),
            vec![
                ("session.redis_sentinels", "`nope` is not a Redis URL"),
                ("session.redis_sentinel_master", "name the master"),
            ],
        ),
        (
            "identity",
            "headers = \"Forwarded\"".into(),
            vec![(
                "identity.headers",
                "`Forwarded` is not a preset; use `kaseyaone` or `forwarded`",
            )],
        ),
        (
            "module",
            "headers = \"basic\"".into(),
            vec![("module[0].headers", "`basic` is not a preset")],
        ),
        (
            "identity_provider",
            "userinfo = \"sometimes\"".into(),
            vec![(
                "identity_provider.userinfo",
                "`sometimes` is not a choice; use `auto`, `always` or `never`",
            )],
        ),
        (
            "module",
            "[module.accounts]\nsource = \"ldap\"\nmatch = \"Email\"".into(),
            vec![
                ("module[0].accounts.match", "`Email` is not `email`, `username` or `both`"),
                ("module[0].accounts.source", "`ldap` is not `scim` or `file`"),
            ],
        ),
        (
            "module",
            "[module.accounts]\nsource = \"file\"".into(),
            vec![("module[0].accounts.file", "`source = \"file\"` needs `file`")],
        ),
        (
            "module",
            "[module.accounts]\nsource = \"file\"\nfile = \"none.toml\"\nprovisioning = true\ncache_ttl = \"2d\"".into(),
            vec![
                ("module[0].accounts.provisioning", "use `source = \"scim\"`"),
                ("module[0].accounts.default_role", "need a default role"),
                ("module[0].accounts.cache_ttl", "at most 1 day"),
            ],
        ),
        (
            "module",
            "[module.accounts]\nsource = \"scim\"\nscim_url = \"ftp://x\"".into(),
            vec![("module[0].accounts.scim_url", "http or https URL")],
        ),
        (
            "module",
            "unified_login = false\n[module.accounts]\nsource = \"scim\"".into(),
            vec![("module[0].accounts", "only used with Unified Login")],
        ),
        (
            "module",
            "upstream_ca = \"no-such-ca.pem\"\nupstream_verify = false".into(),
            vec![
                ("module[0].upstream_ca", "only used with `upstream_tls = true`"),
                ("module[0].upstream_verify", "only used with `upstream_tls = true`"),
            ],
        ),
        (
            "module",
            "upstream_tls = true\nupstream_sni = \"a:443\"".into(),
            vec![("module[0].upstream_sni", "without port")],
        ),
        (
            "listen",
            "tls_cert = \"no-such.crt\"\ntls_key = \"no-such.key\"".into(),
            vec![("listen.public_url", "browsers reach it with https://")],
        ),
        (
            "listen",
            "tls_cert = \"no-such.crt\"".into(),
            vec![("listen.tls_key", "needs its private key")],
        ),
        (
            "listen",
            "trusted_proxies = [\"10.0.0.0/8\", \"proxy\"]\ndrain_delay = \"11m\"".into(),
            vec![
                ("listen.trusted_proxies[1]", "`proxy` is not a network"),
                ("listen.drain_delay", "at most 10m"),
            ],
        ),
        (
            "end",
            "[admin]\naddress = \"nope\"\ntoken = \"env:UNIGATE_SURELY_UNSET_VAR\"".into(),
            vec![("admin.address", "not an address like 127.0.0.1:9090")],
        ),
        (
            "end",
            format!(
                "{second}\nupstream = \"127.0.0.1:1\"\n[[module.instance]]\nname = \"x\"\nhosts = [\"portal.localhost\"]\nupstream = \"127.0.0.1:2\"\nlink_required = true"
            ),
            vec![
                ("module[1].upstream", "has its upstreams in each [[module.instance]]"),
                ("module[1].instance[0].hosts", "`portal.localhost` belongs to another module too"),
                ("module[1].instance[0].link_required", "name it in the module's `login_paths`"),
            ],
        ),
        (
            "end",
            "[[module]]\nname = \"portal\"\nhosts = [\"Portal.localhost\"]\nupstream = \"127.0.0.1:1\"\naccess_groups = [\"*\"]".into(),
            vec![
                ("module[1].name", "`portal` names another module too"),
                ("module[1].hosts", "`portal.localhost` belongs to another module too"),
            ],
        ),
    ];
    for (section, lines, want) in cases {
        let err = validated(&with(section, &lines)).expect_err(&lines);
        let got: Vec<&str> = err.0.iter().map(|e| e.path.as_str()).collect();
        let keys: Vec<&str> = want.iter().map(|(k, _)| *k).collect();
        assert_eq!(got, keys, "{lines}\n{err}");
        for (e, (_, words)) in err.0.iter().zip(&want) {
            assert!(e.message.contains(words), "{lines}: {e:?} lacks {words:?}");
        }
    }
}

#[test]
fn unknown_words_are_reported_with_every_other_problem_in_one_run() {
    let text = r#"
        [listen]
        address = "nope"
        public_url = "http://localhost:8080"
        [identity_provider]
        issuer = "https://idp.example"
        client_id = "unigate"
        client_secret = "env:X"
        userinfo = "Always"
        [session]
        store = "etcd"
        [identity]
        headers = "basic"
        [[module]]
        name = "portal"
        hosts = ["portal.localhost"]
        upstream = "127.0.0.1:8081"
        access_groups = []
        headers = "none"
        [module.accounts]
        source = "ldap"
        match = "all"
    "#;
    let err = validated(text).unwrap_err();
    let got: Vec<&str> = err.0.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        got,
        [
            "listen.address",
            "identity_provider.userinfo",
            "session.store",
            "identity.headers",
            "module[0].access_groups",
            "module[0].accounts.match",
            "module[0].accounts.source",
            "module[0].headers",
        ],
        "{err}"
    );
    // A value that is not a word at all is the parser's: a type error.
    let err = parse_toml::<GatewayFile>(&text.replace("\"etcd\"", "3")).unwrap_err();
    assert!(err.0[0].path.starts_with("line 11"), "{err}");
}

#[test]
fn every_accepted_word_is_read() {
    use crate::oidc::claims::UserinfoMode;
    let cfg = |section: &str, lines: &str| validated(&with(section, lines)).unwrap().config;
    assert!(cfg("session", "store = \"memory\"").session.redis.is_none());
    assert!(cfg("session", "").session.redis.is_none());
    let redis = cfg(
        "session",
        "store = \"redis\"\nredis_url = \"env:U\"\nencryption_key = \"env:K\"",
    );
    assert_eq!(redis.session.redis.unwrap().prefix, "unigate");
    let cluster = validated(&with(
        "session",
        "store = \"redis\"\nredis_cluster = [\"redis://n1:7000\", \"file:n2\"]\nencryption_key = \"env:K\"",
    ))
    .unwrap();
    assert_eq!(cluster.config.session.redis.as_ref().unwrap().wait_replicas, None);
    let waiting = cfg(
        "session",
        "store = \"redis\"\nredis_url = \"env:U\"\nencryption_key = \"env:K\"\nredis_wait_replicas = 2",
    );
    assert_eq!(waiting.session.redis.unwrap().wait_replicas, Some(2));
    let nodes = &cluster.reads.redis.as_ref().unwrap().cluster;
    assert!(
        matches!(&nodes[..], [(1, validate::ClusterNode::Url(u)), (2, validate::ClusterNode::Secret(_))] if u == "redis://n1:7000")
    );
    assert_eq!(cfg("end", "").modules[0].headers, HeaderPreset::KaseyaOne);
    assert_eq!(
        cfg("identity", "headers = \"forwarded\"").modules[0].headers,
        HeaderPreset::Forwarded
    );
    let mixed = with("module", "headers = \"kaseyaone\"").replace("[identity]", "[identity]\nheaders = \"forwarded\"");
    assert_eq!(
        validated(&mixed).unwrap().config.modules[0].headers,
        HeaderPreset::KaseyaOne
    );
    for (word, mode) in [
        ("auto", UserinfoMode::Auto),
        ("always", UserinfoMode::Always),
        ("never", UserinfoMode::Never),
    ] {
        let c = cfg("identity_provider", &format!("userinfo = \"{word}\""));
        assert_eq!(c.idp.userinfo, mode);
    }
    for (word, on) in [
        ("", MatchOn::Both),
        ("match = \"both\"", MatchOn::Both),
        ("match = \"email\"", MatchOn::Email),
        ("match = \"username\"", MatchOn::Username),
    ] {
        let v = validated(&with(
            "module",
            &format!("[module.accounts]\nsource = \"scim\"\n{word}"),
        ))
        .unwrap();
        let accounts = v.reads.modules[0].accounts.as_ref().unwrap();
        assert_eq!(accounts.match_on, on, "{word}");
    }
    let v = validated(&with(
        "module",
        "[module.accounts]\nsource = \"file\"\nfile = \"a.toml\"",
    ))
    .unwrap();
    let accounts = v.reads.modules[0].accounts.as_ref().unwrap();
    assert!(matches!(&accounts.source, validate::SourceReads::File(f) if f == "a.toml"));
}

#[test]
fn resolve_reads_what_the_file_names_and_reports_each_problem() {
    let text = with(
        "module",
        "upstream_tls = true\nupstream_ca = \"ca.pem\"\n[module.accounts]\nsource = \"file\"\nfile = \"accounts.toml\"",
    )
    .replace("threads = 2", "tls_cert = \"tls.crt\"\ntls_key = \"tls.key\"")
    .replace("http://localhost:8080", "https://localhost:8443")
    .replace("env:UNIGATE_SURELY_UNSET_VAR", "file:client-secret")
    .replace("no-such-key.pem", "assertion.pem")
        + "[admin]\naddress = \"127.0.0.1:9090\"\ntoken = \"file:admin-token\"\n";
    let dir = tempfile::tempdir().unwrap();
    let err = resolve(validated(&text).unwrap(), dir.path()).unwrap_err();
    let got: Vec<&str> = err.0.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        got,
        [
            "identity_provider.client_secret",
            "identity.assertion_key",
            "module[0].accounts.file",
            "module[0].upstream_ca",
            "admin.token",
            "listen.tls_cert",
        ],
        "{err}"
    );
    // Each there, and usable: a start would find what `resolve` found.
    let d = dir.path();
    let tls = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(d.join("tls.crt"), tls.cert.pem()).unwrap();
    std::fs::write(d.join("tls.key"), tls.signing_key.serialize_pem()).unwrap();
    std::fs::write(d.join("ca.pem"), tls.cert.pem()).unwrap();
    std::fs::write(
        d.join("assertion.pem"),
        rcgen::KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    std::fs::write(d.join("client-secret"), "s3cret\n").unwrap();
    std::fs::write(d.join("admin-token"), "short").unwrap();
    std::fs::write(d.join("accounts.toml"), "[[account]]\nusername = \"ann\"\n").unwrap();
    let err = resolve(validated(&text).unwrap(), d).unwrap_err();
    assert_eq!(err.0.len(), 1, "{err}");
    assert_eq!(err.0[0].path, "admin.token");
    assert!(err.0[0].message.contains("at least 16"), "{err}");
    std::fs::write(d.join("admin-token"), "a-long-enough-admin-token").unwrap();
    let cfg = resolve(validated(&text).unwrap(), d).unwrap();
    assert_eq!(cfg.idp.client_secret.expose(), "s3cret");
    assert!(cfg.identity.assertion_key.is_some());
    assert_eq!(cfg.admin.unwrap().token.expose(), "a-long-enough-admin-token");
    assert_eq!(cfg.tls_files.unwrap().cert, d.join("tls.crt"));
    let route = &cfg.modules[0];
    assert!(route.upstream_tls.as_ref().unwrap().ca.is_some());
    match &route.accounts.as_ref().unwrap().source {
        AccountSource::File(list) => assert_eq!(list[0].username, "ann"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_module_with_instances_shares_its_accounts_and_ca_with_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tls = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(d.join("ca.pem"), tls.cert.pem()).unwrap();
    std::fs::write(d.join("accounts.toml"), "[[account]]\nusername = \"ann\"\n").unwrap();
    std::fs::write(d.join("client-secret"), "s3cret").unwrap();
    let text = with(
        "end",
        "[[module]]\nname = \"bms\"\nhosts = [\"bms.localhost\"]\naccess_groups = [\"*\"]\nupstream_tls = true\nupstream_ca = \"ca.pem\"\n\
         [module.accounts]\nsource = \"file\"\nfile = \"accounts.toml\"\n\
         [[module.instance]]\nname = \"east\"\nhosts = [\"east.localhost\"]\nupstream = \"127.0.0.1:2\"\n\
         [[module.instance]]\nname = \"west\"\nhosts = [\"west.localhost\"]\nupstream = \"127.0.0.1:3\"",
    )
    .replace("env:UNIGATE_SURELY_UNSET_VAR", "file:client-secret")
    .replace("assertion_key = \"file:no-such-key.pem\"", "");
    let v = validated(&text).unwrap();
    assert_eq!(v.reads.modules[1].routes, 1..4);
    let cfg = resolve(v, d).unwrap();
    let labels: Vec<&str> = cfg.modules.iter().map(|r| r.label()).collect();
    assert_eq!(labels, ["portal", "bms", "bms/east", "bms/west"]);
    assert!(cfg.modules[0].accounts.is_none());
    let first = cfg.modules[1].accounts.clone().unwrap();
    for r in &cfg.modules[1..] {
        assert!(Arc::ptr_eq(r.accounts.as_ref().unwrap(), &first), "{}", r.label());
        assert!(r.upstream_tls.as_ref().unwrap().ca.is_some(), "{}", r.label());
    }
    assert_eq!(cfg.modules[2].upstream_tls.as_ref().unwrap().sni, "east.localhost");
}

#[test]
fn the_login_mode_is_one_word_and_the_old_keys_still_work_with_a_warning() {
    use crate::config::route::LoginMode;
    let mode = |lines: &str| {
        let v = validated(&with("module", lines)).unwrap_or_else(|e| panic!("{lines}: {e}"));
        (v.config.modules[0].login, v.config.warnings.join("\n"))
    };
    // The seed's default: Log In with KaseyaOne is optional. Without a
    // login page to put the button on, the operator is told.
    // Not set: optional, and the operator is told (module credentials
    // reach the module), and told that there is no page for the button.
    let (m, w) = mode("");
    assert_eq!(m, LoginMode::Optional);
    assert!(
        w.contains("module[0].login: not set, so Log In with KaseyaOne is optional here"),
        "{w}"
    );
    assert!(w.contains("no `login_paths`"), "{w}");
    let (m, w) = mode("login = \"optional\"\nlogin_paths = [\"/login\"]");
    assert_eq!((m, w.as_str()), (LoginMode::Optional, ""));
    // A mode where Unified Login is off does nothing: said so.
    let (_, w) = mode("login = \"automatic\"\nunified_login = false");
    assert!(w.contains("not used where `unified_login = false`"), "{w}");
    assert_eq!(mode("unified_login = false").1, "");
    assert_eq!(mode("login = \"automatic\"").0, LoginMode::Automatic);
    assert_eq!(
        mode("login = \"required\"\nlogin_paths = [\"/login\"]").0,
        LoginMode::Required
    );
    for (old, want) in [
        ("local_login = true\nlogin_paths = [\"/login\"]", LoginMode::Optional),
        ("local_login = false", LoginMode::Automatic),
        ("require_kaseyaone = false", LoginMode::Automatic),
        ("require_kaseyaone = true", LoginMode::Required),
        ("require_kaseyaone = true\nlocal_login = false", LoginMode::Required),
    ] {
        let (m, w) = mode(old);
        assert_eq!(m, want, "{old}");
        assert!(
            w.contains("is deprecated") && w.contains(&format!("login = \"{}\"", want.as_str())),
            "{old}: {w}"
        );
    }
    for (lines, key, words) in [
        (
            "login = \"sometimes\"",
            "module[0].login",
            "`sometimes` is not a login mode",
        ),
        (
            "login = \"optional\"\nlocal_login = true",
            "module[0].login",
            "replaces `local_login`",
        ),
        (
            "login = \"required\"\nunified_login = false",
            "module[0].login",
            "unified_login = false",
        ),
        (
            "require_kaseyaone = true\nlocal_login = true",
            "module[0].local_login",
            "contradicts",
        ),
    ] {
        let errs = validated(&with("module", lines))
            .err()
            .unwrap_or_else(|| panic!("{lines}: accepted"));
        let text = errs.to_string();
        assert!(text.contains(key) && text.contains(words), "{lines}: {text}");
    }
}

#[test]
fn resolve_reads_the_cluster_nodes_given_as_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let text = with(
        "session",
        "store = \"redis\"\nencryption_key = \"file:key\"\nredis_cluster = [\"redis://n1:7000\", \"file:n2\", \"file:n3\"]",
    )
    .replace("env:UNIGATE_SURELY_UNSET_VAR", "file:client-secret")
    .replace("assertion_key = \"file:no-such-key.pem\"", "");
    std::fs::write(d.join("client-secret"), "s3cret").unwrap();
    std::fs::write(d.join("key"), "a-session-key-of-more-than-32-characters").unwrap();
    std::fs::write(d.join("n2"), "redis://:pw@n2:7000\n").unwrap();
    std::fs::write(d.join("n3"), "redis://:pw@n3:7000/1").unwrap();
    // The third in another database; the second and third with a password
    // the first does not have.
    let err = resolve(validated(&text).unwrap(), d).unwrap_err();
    let got: Vec<(&str, &str)> = err.0.iter().map(|e| (e.path.as_str(), e.message.as_str())).collect();
    assert_eq!(
        got,
        [
            (
                "session.redis_cluster",
                "entry 2: every node is reached with the first usable entry's user, password and TLS setting"
            ),
            (
                "session.redis_cluster",
                "entry 3: Redis Cluster has only database 0: leave the database out of the URL"
            ),
        ]
    );
    assert!(!err.to_string().contains("pw"), "a password is never repeated: {err}");
    std::fs::write(d.join("n3"), "redis://:pw@n3:7000").unwrap();
    let text = text.replace("\"redis://n1:7000\", ", "");
    let cfg = resolve(validated(&text).unwrap(), d).unwrap();
    let nodes: Vec<String> = cfg
        .session
        .redis
        .unwrap()
        .cluster
        .iter()
        .map(|n| n.expose().to_string())
        .collect();
    assert_eq!(nodes, ["redis://:pw@n2:7000", "redis://:pw@n3:7000"]);
    // An unusable first entry is reported as itself, with its own number,
    // and the others are compared with the first usable one.
    std::fs::write(d.join("n1"), "redis://:pw@n1:7000/2").unwrap();
    let text = text.replace("redis_cluster = [", "redis_cluster = [\"file:n1\", ");
    let err = resolve(validated(&text).unwrap(), d).unwrap_err();
    let got: Vec<(&str, &str)> = err.0.iter().map(|e| (e.path.as_str(), e.message.as_str())).collect();
    assert_eq!(
        got,
        [(
            "session.redis_cluster",
            "entry 1: Redis Cluster has only database 0: leave the database out of the URL"
        )]
    );
}

#[test]
fn a_ca_for_redis_needs_tls_and_is_not_for_sentinel() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let text = |lines: &str| {
        with(
            "session",
            &format!("store = \"redis\"\nencryption_key = \"file:key\"\n{lines}"),
        )
        .replace("env:UNIGATE_SURELY_UNSET_VAR", "file:client-secret")
        .replace("assertion_key = \"file:no-such-key.pem\"", "")
    };
    std::fs::write(d.join("client-secret"), "s3cret").unwrap();
    std::fs::write(d.join("key"), "a-session-key-of-more-than-32-characters").unwrap();
    std::fs::write(d.join("plain"), "redis://r:6379").unwrap();
    std::fs::write(d.join("tls"), "rediss://r:6379").unwrap();
    std::fs::write(d.join("not-a-ca.pem"), "hello").unwrap();
    let ca = rcgen::generate_simple_self_signed(vec!["r".to_string()])
        .unwrap()
        .cert
        .pem();
    std::fs::write(d.join("ca.pem"), ca).unwrap();
    let errors = |lines: &str| match resolve(validated(&text(lines)).unwrap(), d) {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    };
    assert_eq!(errors("redis_url = \"file:tls\"\nredis_tls_ca = \"ca.pem\""), "");
    assert!(
        errors("redis_url = \"file:plain\"\nredis_tls_ca = \"ca.pem\"").contains("write the Redis URLs as `rediss://`")
    );
    assert!(errors("redis_url = \"file:tls\"\nredis_tls_ca = \"not-a-ca.pem\"").contains("session.redis_tls_ca"));
    let sentinel = validated(&text(
        "redis_sentinels = [\"redis://s:26379\"]\nredis_sentinel_master = \"m\"\nredis_tls_ca = \"ca.pem\"",
    ))
    .map(|_| ())
    .expect_err("refused")
    .to_string();
    assert!(sentinel.contains("SSL_CERT_FILE"), "{sentinel}");
}

#[test]
fn rules_are_checked_and_shadowed_ones_warned_about() {
    use crate::policy::rules::{RuleAccess, RulePath};
    let good = concat!(
        "login = \"automatic\"\n",
        "[[module.rule]]\npaths = [\"/admin/\"]\naccess_groups = [\"portal-admins\"]\n",
        "[[module.rule]]\npaths = [\"/api/\"]\nmethods = [\"get\"]\naccess_groups = [\"readers\"]\nreplace_module_groups = true\n",
        "[[module.rule]]\npaths = [\"=/billing\"]\nmax_login_age = \"5m\"\n",
        "[[module.rule]]\npaths = [\"/admin/users/\"]\ndeny = true\n",
        "[[module.rule]]\npaths = [\"/pub/\"]\npublic = true\n",
    );
    let v = validated(&with("module", good)).unwrap();
    let rules = &v.config.modules[0].rules;
    assert_eq!(rules.len(), 5);
    assert_eq!(rules[0].access, RuleAccess::AlsoModule(vec!["portal-admins".into()]));
    assert_eq!(rules[1].access, RuleAccess::Instead(vec!["readers".into()]));
    assert_eq!(rules[1].methods, ["GET"], "methods upper-cased");
    assert_eq!(rules[2].paths, [RulePath::Exact("/billing".into())]);
    assert_eq!(rules[2].access, RuleAccess::Module);
    assert_eq!(rules[2].max_login_age, Some(std::time::Duration::from_secs(300)));
    assert_eq!(rules[4].access, RuleAccess::Public);
    let warnings = v.config.warnings.join("\n");
    assert!(
        warnings.contains("module[0].rule[3]: never applies: rule[0] before it takes every request it would"),
        "{warnings}"
    );
    assert_eq!(v.config.warnings.len(), 1, "{warnings}");
    // A public prefix before a narrower guarded path; an unknown method.
    let late = concat!(
        "login = \"automatic\"\n",
        "[[module.rule]]\npaths = [\"/api/\"]\npublic = true\n",
        "[[module.rule]]\npaths = [\"/api/admin/\"]\nmethods = [\"DELET\"]\naccess_groups = [\"admins\"]\n",
    );
    let warnings = validated(&with("module", late)).unwrap().config.warnings.join("\n");
    assert!(
        warnings.contains("module[0].rule[1]: rule[0] before it lets in requests for its paths first"),
        "{warnings}"
    );
    assert!(warnings.contains("`DELET` is not a method"), "{warnings}");
    // Readers' GET first, then writers for everything else on the same
    // paths: as meant, no warning; a narrower path's GET is opened first.
    let split = concat!(
        "login = \"automatic\"\n",
        "[[module.rule]]\npaths = [\"/api/reports/\"]\nmethods = [\"GET\"]\naccess_groups = [\"readers\"]\nreplace_module_groups = true\n",
        "[[module.rule]]\npaths = [\"/api/reports/\"]\naccess_groups = [\"writers\"]\n",
    );
    assert_eq!(
        validated(&with("module", split)).unwrap().config.warnings,
        [] as [&str; 0]
    );
    let split = concat!(
        "login = \"automatic\"\n",
        "[[module.rule]]\npaths = [\"/api/reports/\"]\nmethods = [\"GET\"]\naccess_groups = [\"readers\"]\nreplace_module_groups = true\n",
        "[[module.rule]]\npaths = [\"/api/reports/\"]\nmethods = [\"POST\"]\naccess_groups = [\"writers\"]\n",
        "[[module.rule]]\npaths = [\"/api/reports/private/\"]\ndeny = true\n",
    );
    let warnings = validated(&with("module", split)).unwrap().config.warnings;
    assert_eq!(
        warnings,
        [
            "module[0].rule[2]: rule[0] before it lets in requests for its paths first, for the methods both name: put it before rule[0]"
        ]
    );
    // A catch-all step-up rule over the public paths and the login page.
    let everything = concat!(
        "login = \"optional\"\nlogin_paths = [\"/login\"]\npublic_paths = [\"/static/\"]\n",
        "[[module.rule]]\npaths = [\"/\"]\nmax_login_age = \"15m\"\n",
    );
    let warnings = validated(&with("module", everything))
        .unwrap()
        .config
        .warnings
        .join("\n");
    assert!(
        warnings.contains("module[0].rule[0]: it takes the public path `/static/` too"),
        "{warnings}"
    );
    assert!(
        warnings.contains("module[0].rule[0]: it takes the login page `/login`"),
        "{warnings}"
    );

    let bad = |lines: &str| {
        validated(&with(
            "module",
            &format!("login = \"automatic\"\n[[module.rule]]\n{lines}"),
        ))
        .map(|_| String::new())
        .unwrap_or_else(|e| e.to_string())
    };
    for (lines, words) in [
        ("paths = []\ndeny = true", "name at least one path"),
        ("paths = [\"admin/\"]\ndeny = true", "must start with `/`"),
        ("paths = [\"/_unigate/x\"]\ndeny = true", "not be under /_unigate/"),
        (
            "paths = [\"/a/../admin/\"]\ndeny = true",
            "is not canonical: write it as `/admin/`",
        ),
        ("paths = [\"//admin/\"]\ndeny = true", "is not canonical"),
        ("paths = [\"/admin;x/\"]\ndeny = true", "holds a `;` path parameter"),
        ("paths = [\"/a/\"]\naccess_groups = []", "name at least one group"),
        (
            "paths = [\"/a/\"]\naccess_groups = [\"x\"]\npublic = true",
            "give one of `access_groups`, `public = true` or `deny = true`",
        ),
        (
            "paths = [\"/a/\"]\npublic = true\nmax_login_age = \"5m\"",
            "a login age means nothing",
        ),
        ("paths = [\"/a/\"]", "a rule decides nothing"),
        (
            "paths = [\"/a/\"]\nreplace_module_groups = true\ndeny = true",
            "only used with the rule's `access_groups`",
        ),
        (
            "paths = [\"/a/\"]\nmax_login_age = \"10s\"",
            "must be between 1m and 30 days",
        ),
        (
            "paths = [\"/a/\"]\nmethods = [\"GET /\"]\ndeny = true",
            "is not an HTTP method",
        ),
        ("paths = [\"/admin/*\"]\ndeny = true", "`*` never matches as meant"),
        ("paths = [\"/caf\u{00e9}/\"]\ndeny = true", "never matches as meant"),
        ("paths = [\"/a%3Ab/\"]\ndeny = true", "`%` never matches as meant"),
    ] {
        let text = bad(lines);
        assert!(
            text.contains(words) && text.contains("module[0].rule"),
            "{lines}: {text}"
        );
    }
    // A public rule may not open the module's login page.
    for paths in [
        "\"/login\"",
        "\"=/login\"",
        "\"=/login/\"",
        "\"=/LOGIN\"",
        // Spellings that reach the login form (IIS trims the dot; path
        // info; Spring's suffix match) are the login page too.
        "\"=/login.\"",
        "\"=/login.json\"",
        "\"=/login/x\"",
        "\"/login.do/\"",
    ] {
        let e = validated(&with(
            "module",
            &format!(
                "login = \"automatic\"\nlogin_paths = [\"/login\"]\n[[module.rule]]\npaths = [{paths}]\npublic = true"
            ),
        ))
        .map(|_| String::new())
        .unwrap_or_else(|e| e.to_string());
        assert!(e.contains("login page `/login`"), "{paths}: {e}");
    }
    // Tomcat's form login is reached under any path.
    let tomcat = validated(&with(
        "module",
        "login = \"automatic\"\nlogin_paths = [\"/app/j_security_check\"]\npublic_paths = [\"/static/\"]",
    ))
    .map(|_| String::new())
    .unwrap_or_else(|e| e.to_string());
    assert!(tomcat.contains("`/static/` covers the login page"), "{tomcat}");
    // A public prefix in other case (or with a trailing dot) above a
    // deeper login page.
    for public in ["/APP/", "/app./"] {
        let e = validated(&with(
            "module",
            &format!("login = \"automatic\"\nlogin_paths = [\"/app/auth/login\"]\npublic_paths = [\"{public}\"]"),
        ))
        .map(|_| String::new())
        .unwrap_or_else(|e| e.to_string());
        assert!(e.contains("covers the login page `/app/auth/login`"), "{public}: {e}");
    }
    assert!(
        validated(&with(
            "module",
            "login = \"automatic\"\nlogin_paths = [\"/app/auth/login\"]\npublic_paths = [\"/app/static/\"]",
        ))
        .is_ok(),
        "a public path beside the login page"
    );
    let off = validated(&with(
        "module",
        "unified_login = false\n[[module.rule]]\npaths = [\"/a/\"]\ndeny = true",
    ))
    .map(|_| ())
    .expect_err("refused")
    .to_string();
    assert!(off.contains("rules need Log In with KaseyaOne"), "{off}");
}
