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
        rule(&["=/billing.php"], &[], RuleAccess::Module),
        rule(&["/static/"], &[], RuleAccess::Public),
        rule(&["/ops/"], &["DELETE"], RuleAccess::AlsoModule(groups(&["admins"]))),
    ];
    let h = |pairs: &[(&'static str, &'static str)]| {
        let mut m = http::HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, v.parse().unwrap());
        }
        m
    };
    let none = h(&[]);
    let as_delete = h(&[("x-http-method-override", "DELETE")]);
    let as_get = h(&[("x-http-method-override", "GET")]);
    let listed = h(&[("x-http-method-override", "GET, DELETE")]);
    let twice = h(&[("x-http-method", "GET"), ("x-http-method", "DELETE")]);
    let underscored = h(&[("x_http_method_override", "DELETE")]);
    /// Path, method, query, headers: the rule that takes it.
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, &'a http::HeaderMap, Option<usize>);
    let cases: &[Case] = &[
        ("/admin/health", "GET", None, &none, Some(0)),
        ("/admin/health/x", "GET", None, &none, Some(1)),
        ("/admin/", "GET", None, &none, Some(1)),
        ("/admin", "GET", None, &none, Some(1)),
        ("/admin/users/7", "POST", None, &none, Some(1)),
        // The spellings a server dispatches to the same place: a `;`
        // parameter, case, trailing dots, an extension; none of these is
        // under `/administrator`.
        ("/admin;jsessionid=1/users", "GET", None, &none, Some(1)),
        ("/ADMIN/users", "GET", None, &none, Some(1)),
        ("/admin./users", "GET", None, &none, Some(1)),
        ("/admin.json", "GET", None, &none, Some(1)),
        ("/administrator", "GET", None, &none, None),
        // Letters a Unicode case match reads as ASCII (Java's
        // case-insensitive matching): a dotless ı, a dotted İ.
        ("/adm%C4%B1n/users", "GET", None, &none, Some(1)),
        ("/ADM%C4%B0N/users", "GET", None, &none, Some(1)),
        ("/adm\u{131}n/users", "GET", None, &none, Some(1)),
        ("/adm%C4%B2n/users", "GET", None, &none, None),
        // A public exact path opens only as written.
        ("/admin/health;x", "GET", None, &none, Some(1)),
        ("/ADMIN/health", "GET", None, &none, Some(1)),
        ("/api/things", "GET", None, &none, Some(2)),
        ("/api/things", "HEAD", None, &none, Some(2)),
        ("/api/things", "DELETE", None, &none, Some(3)),
        // A rule that lets other people in takes a request only when its
        // method and every override it carries are among its methods: this
        // GET that a framework runs as DELETE is not the readers'.
        ("/api/things", "GET", None, &as_delete, Some(3)),
        ("/api/things", "DELETE", None, &as_get, Some(3)),
        ("/api/things", "GET", Some("_method=DELETE"), &none, Some(3)),
        ("/api/things", "GET", Some("x=1&_method=GET"), &none, Some(2)),
        ("/API/things", "GET", None, &none, Some(3)),
        // The exact page: path info and extensions too.
        ("/billing.php", "GET", None, &none, Some(4)),
        ("/billing.php/x", "GET", None, &none, Some(4)),
        ("/billing.php;x", "GET", None, &none, Some(4)),
        ("/billing", "GET", None, &none, None),
        ("/static/app.js", "GET", None, &none, Some(5)),
        ("/static;x/app.js", "GET", None, &none, None),
        ("/STATIC/app.js", "GET", None, &none, None),
        ("/%C5%BFtatic/app.js", "GET", None, &none, None),
        // A narrowing rule for DELETE takes a request that names DELETE
        // any way a framework reads it.
        ("/ops/x", "DELETE", None, &none, Some(6)),
        ("/ops/x", "POST", None, &as_delete, Some(6)),
        ("/ops/x", "POST", None, &listed, Some(6)),
        ("/ops/x", "POST", None, &twice, Some(6)),
        ("/ops/x", "POST", Some("_method=delete"), &none, Some(6)),
        ("/ops/x", "POST", Some("_method=%44ELETE"), &none, Some(6)),
        ("/ops/x", "POST", None, &none, None),
        // `_method` however the query spells it: percent-encoded, in
        // capitals, or as PHP reads `.method` and `[method` (and, to be
        // safe, with leading spaces, which PHP drops); override
        // headers with underscores (CGI reads `X_HTTP_Method` as
        // `X-HTTP-Method`).
        ("/ops/x", "POST", Some("%5Fmethod=DELETE"), &none, Some(6)),
        ("/ops/x", "POST", Some("_METHOD=DELETE"), &none, Some(6)),
        ("/ops/x", "POST", Some("a=1&.method=DELETE"), &none, Some(6)),
        ("/ops/x", "POST", Some("+method=DELETE"), &none, Some(6)),
        ("/ops/x", "POST", Some("%20method=DELETE"), &none, Some(6)),
        ("/ops/x", "POST", Some("%5Bmethod=DELETE"), &none, Some(6)),
        ("/ops/x", "POST", Some("_method%00x=DELETE"), &none, Some(6)),
        ("/ops/x", "POST", Some("_%6Dethod=DELETE"), &none, Some(6)),
        ("/ops/x", "POST", None, &underscored, Some(6)),
        ("/api/things", "GET", Some("%5Fmethod=DELETE"), &none, Some(3)),
        ("/api/things", "GET", Some("_Method=DELETE"), &none, Some(3)),
        ("/api/things", "GET", None, &underscored, Some(3)),
        ("/api/things", "GET", Some("method=DELETE"), &none, Some(2)),
        ("/", "GET", None, &none, None),
    ];
    for (path, method, query, headers, want) in cases {
        let got = first(&rules, path, method, *query, headers).map(|r| rules.iter().position(|x| x == r).unwrap());
        assert_eq!(got, *want, "{method} {path} {query:?} {headers:?}");
    }
    // An override does not open a public rule.
    let public_get = vec![rule(&["/p/"], &["GET"], RuleAccess::Public)];
    assert!(first(&public_get, "/p/1", "POST", None, &as_get).is_none());
    assert!(first(&public_get, "/p/1", "GET", None, &as_delete).is_none());
    assert!(first(&public_get, "/p/1", "GET", None, &none).is_some());
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
    // under a public prefix still takes `/static;x/secret/…`, but it comes
    // too late for the plain spelling, which `opens_before` tells.
    assert!(!deny_static.shadowed_by(&public_static));
    assert!(public_static.opens_before(&deny_static));
    assert!(!deny_static.opens_before(&public_static));
    assert!(!public_static.opens_before(&admin));
    // Readers' GET, then writers for the rest of the same paths: the later
    // rule guards every other method, nothing to warn about. Under a
    // narrower path, the methods both name are opened first.
    let readers = rule(&["/api/reports/"], &["GET"], RuleAccess::Instead(groups(&["readers"])));
    let writers = rule(&["/api/reports/"], &[], RuleAccess::AlsoModule(groups(&["writers"])));
    let private = rule(&["/api/reports/private/"], &[], RuleAccess::Deny);
    let posts = rule(&["/api/reports/private/"], &["POST"], RuleAccess::Deny);
    let heads = rule(&["/api/reports/"], &["HEAD"], RuleAccess::Deny);
    assert!(!readers.opens_before(&writers));
    assert!(
        readers.opens_before(&private),
        "GET /api/reports/private/ is the readers'"
    );
    assert!(!private.methods_within(&readers));
    assert!(!readers.opens_before(&posts), "no method in common");
    assert!(readers.opens_before(&heads) && heads.methods_within(&readers));
    // A later rule that names GET on the same paths: its GET part never
    // applies. A HEAD-only opening before a GET guard takes HEAD first.
    let get_delete = rule(&["/api/reports/"], &["GET", "DELETE"], RuleAccess::Deny);
    assert!(readers.opens_before(&get_delete) && !get_delete.methods_within(&readers));
    let public_head = rule(&["/api/reports/"], &["HEAD"], RuleAccess::Public);
    let guarded_get = rule(&["/api/reports/"], &["GET"], RuleAccess::Deny);
    assert!(public_head.opens_before(&guarded_get));
    assert!(!rule(&["=/admin"], &[], RuleAccess::Deny).shadowed_by(&exact));
    // Public exact paths are compared as written: `=/x/` is not `=/x`.
    let (x, x_slash) = (
        rule(&["=/x"], &[], RuleAccess::Public),
        rule(&["=/x/"], &[], RuleAccess::Public),
    );
    assert!(!x_slash.shadowed_by(&x));
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
