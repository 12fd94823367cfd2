use super::*;

fn rule(paths: &[&str], methods: &[&str], access: RuleAccess) -> Rule {
    Rule {
        paths: paths.iter().map(|p| RulePath::parse(p)).collect(),
        methods: methods.iter().map(|m| m.to_string()).collect(),
        access,
        max_login_age: None,
    }
}

fn groups(g: &[&str]) -> Vec<String> {
    g.iter().map(|s| s.to_string()).collect()
}

/// Which rule (by index) takes each request, or none.
#[test]
fn the_first_rule_that_takes_a_request_decides() {
    let rules = vec![
        rule(&["=/admin/health"], &[], RuleAccess::Public),
        rule(&["/admin/"], &[], RuleAccess::AlsoModule(groups(&["admins"]))),
        rule(&["/api/"], &["GET"], RuleAccess::Instead(groups(&["readers"]))),
        rule(&["/api/"], &[], RuleAccess::Deny),
        rule(&["=/billing"], &[], RuleAccess::Module),
        rule(&["/static/"], &[], RuleAccess::Public),
    ];
    let none = http::HeaderMap::new();
    let mut overridden = http::HeaderMap::new();
    overridden.insert("x-http-method-override", "DELETE".parse().unwrap());
    let cases: &[(&str, &str, &http::HeaderMap, bool, Option<usize>)] = &[
        ("/admin/health", "GET", &none, false, Some(0)),
        ("/admin/health/x", "GET", &none, false, Some(1)),
        ("/admin/", "GET", &none, false, Some(1)),
        ("/admin", "GET", &none, false, Some(1)),
        ("/admin/users/7", "POST", &none, false, Some(1)),
        // The traps: a `;` parameter, case where the module ignores it,
        // trailing dots IIS trims; none is under `/administrator`.
        ("/admin;jsessionid=1/users", "GET", &none, false, Some(1)),
        ("/ADMIN/users", "GET", &none, true, Some(1)),
        ("/ADMIN/users", "GET", &none, false, None),
        ("/admin./users", "GET", &none, true, Some(1)),
        ("/administrator", "GET", &none, false, None),
        // A public exact path matches only as written.
        ("/admin/health;x", "GET", &none, false, Some(1)),
        ("/ADMIN/health", "GET", &none, true, Some(1)),
        ("/api/things", "GET", &none, false, Some(2)),
        ("/api/things", "HEAD", &none, false, Some(2)),
        ("/api/things", "DELETE", &none, false, Some(3)),
        // A method override header counts for restricting rules: this GET
        // that a framework runs as DELETE is denied, not read.
        ("/api/things", "GET", &overridden, false, Some(2)),
        ("/api/things", "POST", &overridden, false, Some(3)),
        ("/billing", "GET", &none, false, Some(4)),
        ("/billing/", "GET", &none, false, Some(4)),
        ("/billing;x", "GET", &none, false, Some(4)),
        ("/billing/invoices", "GET", &none, false, None),
        ("/static/app.js", "GET", &none, false, Some(5)),
        ("/static;x/app.js", "GET", &none, false, None),
        ("/STATIC/app.js", "GET", &none, true, None),
        ("/", "GET", &none, false, None),
    ];
    for (path, method, headers, ci, want) in cases {
        let got = first(&rules, path, method, headers, *ci).map(|r| rules.iter().position(|x| x == r).unwrap());
        assert_eq!(got, *want, "{method} {path} (case-insensitive: {ci})");
    }
    // A restricting GET rule is not undone by an override naming another
    // method: the real method still counts.
    let get_only = vec![rule(&["/x/"], &["GET"], RuleAccess::Deny)];
    let mut post = http::HeaderMap::new();
    post.insert("x-http-method", "POST".parse().unwrap());
    assert!(first(&get_only, "/x/1", "GET", &post, false).is_some());
    // An override does not open a public rule.
    let public_get = vec![rule(&["/p/"], &["GET"], RuleAccess::Public)];
    let mut get = http::HeaderMap::new();
    get.insert("x-http-method-override", "GET".parse().unwrap());
    assert!(first(&public_get, "/p/1", "POST", &get, false).is_none());
}

#[test]
fn groups_narrow_replace_or_close() {
    let module = groups(&["portal-users"]);
    let also = rule(&["/admin/"], &[], RuleAccess::AlsoModule(groups(&["admins"])));
    let instead = rule(&["/api/"], &[], RuleAccess::Instead(groups(&["readers"])));
    let deny = rule(&["/old/"], &[], RuleAccess::Deny);
    let step_up = rule(&["=/billing"], &[], RuleAccess::Module);
    let everyone = rule(&["/x/"], &[], RuleAccess::Instead(groups(&["*"])));
    let (user, admin, reader, outsider) = (
        groups(&["portal-users"]),
        groups(&["portal-users", "admins"]),
        groups(&["readers"]),
        groups(&["admins"]),
    );
    assert_eq!(also.admits(&admin, &module), Ok(()));
    assert_eq!(also.admits(&user, &module), Err(&groups(&["admins"])[..]));
    assert_eq!(
        also.admits(&outsider, &module),
        Err(&module[..]),
        "the module's groups first"
    );
    assert_eq!(
        instead.admits(&reader, &module),
        Ok(()),
        "the module's groups do not count"
    );
    assert_eq!(instead.admits(&user, &module), Err(&groups(&["readers"])[..]));
    assert!(deny.admits(&admin, &module).is_err_and(|need| need.is_empty()));
    assert_eq!(step_up.admits(&user, &module), Ok(()));
    assert!(step_up.admits(&reader, &module).is_err());
    assert_eq!(everyone.admits(&reader, &module), Ok(()));
    assert_eq!(everyone.admits(&[], &module), Ok(()));
}

#[test]
fn a_rule_an_earlier_one_covers_is_shadowed() {
    let admin = rule(&["/admin/"], &[], RuleAccess::AlsoModule(groups(&["admins"])));
    let users = rule(&["/admin/users/"], &["GET"], RuleAccess::Deny);
    let get_api = rule(&["/api/"], &["GET"], RuleAccess::Deny);
    let api = rule(&["/api/", "/v2/"], &[], RuleAccess::Deny);
    let exact = rule(&["=/admin/x"], &[], RuleAccess::Deny);
    let public_static = rule(&["/static/"], &[], RuleAccess::Public);
    let deny_static = rule(&["/static/secret/"], &[], RuleAccess::Deny);
    assert!(users.shadowed_by(&admin));
    assert!(exact.shadowed_by(&admin));
    assert!(!admin.shadowed_by(&users));
    assert!(!api.shadowed_by(&get_api), "/v2/ and other methods are not covered");
    assert!(get_api.shadowed_by(&api));
    // A public rule matches strictly, a restricting one loosely: a deny
    // under a public prefix still takes `/static;x/secret/…`.
    assert!(!deny_static.shadowed_by(&public_static));
    assert!(!rule(&["=/admin"], &[], RuleAccess::Deny).shadowed_by(&exact));
}

#[test]
fn rules_are_described_for_check() {
    let module = groups(&["portal-users"]);
    let mut r = rule(
        &["/admin/", "=/root"],
        &["GET", "POST"],
        RuleAccess::AlsoModule(groups(&["admins"])),
    );
    assert_eq!(
        r.describe(&module),
        "/admin/, =/root GET/POST: members of admins who are also members of portal-users"
    );
    r.access = RuleAccess::Instead(groups(&["readers"]));
    r.max_login_age = Some(Duration::from_secs(300));
    assert_eq!(
        r.describe(&module),
        "/admin/, =/root GET/POST: members of readers (instead of the module's groups), with a login at most 5m old"
    );
}
