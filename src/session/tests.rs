//! The session types and the in-memory store.

use super::memory::{By, Indexes};
use super::*;

#[test]
fn cookie_parsing() {
    let h = [b"a=1; unigate=abc; b=2".as_slice(), b"unigate=second".as_slice()];
    assert_eq!(cookie_value(h.iter().copied(), "unigate"), Some("abc"));
    assert_eq!(cookie_value(h.iter().copied(), "b"), Some("2"));
    assert_eq!(cookie_value(h.iter().copied(), "missing"), None);
    let twice: [&[u8]; 2] = [b"m=first; x=1", b"m=\"second\""];
    assert_eq!(
        cookie_values(twice.iter().copied(), "m").collect::<Vec<_>>(),
        ["first", "second"]
    );
    let q = [b"x=\"quoted\"".as_slice()];
    assert_eq!(cookie_value(q.iter().copied(), "x"), Some("quoted"));
    let odd = [b";;=;novalue; unigate =  spaced ;".as_slice()];
    assert_eq!(cookie_value(odd.iter().copied(), "unigate"), Some("spaced"));
    let bad = [b"unigate=\xff\xfe".as_slice()];
    assert_eq!(cookie_value(bad.iter().copied(), "unigate"), None);
    assert!(is_session_id(&"a".repeat(43)));
    assert!(!is_session_id(&"a".repeat(42)));
    assert!(!is_session_id(&format!("{}=", "a".repeat(42))));
}

#[test]
fn module_cookie_records_last_as_long_as_their_cookies_and_expire_where_set() {
    let now = 1_800_000_000;
    let day = Duration::from_secs(86_400);
    let parse = |v: &str| cookie::Cookie::parse(v.to_string()).unwrap();
    let o = CookieOwner::of(&parse("s=v; Max-Age=7200; Path=/app"), "alice", true, day, now);
    assert_eq!(o.until, now + 7200);
    assert_eq!(o.path.as_deref(), Some("/app"));
    let o = CookieOwner::of(
        &parse("s=v; Expires=Wed, 21 Oct 2037 07:28:00 GMT"),
        "a",
        true,
        day,
        now,
    );
    assert_eq!(o.until, 2_139_722_880.min(now + 400 * 86_400));
    let o = CookieOwner::of(&parse("s=v"), "a", true, day, now);
    assert_eq!(
        o.until,
        now + 86_400,
        "a browser-session cookie: the configured default"
    );
    let o = CookieOwner::of(&parse("s=v; Max-Age=5"), "a", true, day, now);
    assert_eq!(o.until, now + 60, "at least a minute");

    let plain = CookieOwner::expiry("s", Some(&CookieOwner::of(&parse("s=v"), "a", true, day, now)));
    assert_eq!(plain, ["s=; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT"]);
    let scoped = CookieOwner::of(&parse("s=v; Path=/app; Domain=example.com"), "a", true, day, now);
    let set = CookieOwner::expiry("s", Some(&scoped));
    assert_eq!(set.len(), 2);
    assert!(
        set[1].starts_with("s=; Path=/app; Domain=example.com; Max-Age=0"),
        "{set:?}"
    );
    let json = serde_json::to_string(&scoped).unwrap();
    assert_eq!(serde_json::from_str::<CookieOwner>(&json).unwrap(), scoped);

    // Set without Path at /app/login: the browser keeps it at /app.
    let o = CookieOwner::of(&parse("s=v"), "a", true, day, now).set_at("/app/login");
    assert_eq!(o.path.as_deref(), Some("/app"));
    for (at, dir) in [("/login", "/"), ("/", "/"), ("", "/"), ("/a/b/", "/a/b")] {
        let o = CookieOwner::of(&parse("s=v"), "a", true, day, now).set_at(at);
        assert_eq!(o.path.as_deref(), Some(dir), "{at}");
    }
    let o = CookieOwner::of(&parse("s=v; Path=/x"), "a", true, day, now).set_at("/app/login");
    assert_eq!(o.path.as_deref(), Some("/x"), "an explicit Path wins");
    // Secure cookies are expired with Secure; __Host- ones only at /.
    let o = CookieOwner::of(&parse("s=v; Secure; Path=/app"), "a", true, day, now);
    assert!(
        CookieOwner::expiry("s", Some(&o))
            .iter()
            .all(|c| c.contains("; Secure;"))
    );
    assert!(!plain[0].contains("Secure"));
    let host = CookieOwner::of(&parse("__Host-s=v; Secure; Path=/"), "a", true, day, now);
    assert_eq!(
        CookieOwner::expiry("__Host-s", Some(&host)),
        ["__Host-s=; Path=/; Secure; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT"]
    );
    assert!(CookieOwner::expiry("__Secure-s", None)[0].contains("; Secure;"));
    // The login it was issued under.
    let o = CookieOwner::of(&parse("s=v"), "a", true, day, now).in_login(Some("sid-1"));
    assert!(o.same_login(Some("sid-1")));
    assert!(!o.same_login(Some("sid-2")) && !o.same_login(None));
    let o = CookieOwner::of(&parse("s=v"), "a", true, day, now).in_login(None);
    assert!(o.same_login(Some("sid-2")), "no sid at issue: the user decides");
    let o = CookieOwner::of(&parse("s=v; Secure"), "a", true, day, now).in_login(Some("sid-1"));
    let json = serde_json::to_string(&o).unwrap();
    assert_eq!(serde_json::from_str::<CookieOwner>(&json).unwrap(), o);
}

#[tokio::test]
async fn a_revocation_wakes_the_waiters_of_its_sessions() {
    let sessions: Vec<Arc<Session>> = (0..3).map(|i| bare_session(&format!("u-{i}"), "s", "e")).collect();
    let waiters: Vec<_> = sessions
        .iter()
        .map(|s| {
            let s = s.clone();
            tokio::spawn(async move { s.revoked().await })
        })
        .collect();
    let mut waiters = waiters.into_iter();
    let first = waiters.next().unwrap();
    tokio::task::yield_now().await;
    sessions[0].revoke();
    tokio::time::timeout(Duration::from_secs(1), first)
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        waiters.as_slice().iter().all(|w| !w.is_finished()),
        "only its own waiter"
    );
    assert_eq!(Session::revoke_all(sessions.iter().map(|s| &**s)), 2);
    for w in waiters {
        tokio::time::timeout(Duration::from_secs(1), w).await.unwrap().unwrap();
    }
}

#[test]
fn a_replacement_never_brings_an_ended_session_back() {
    let store = MemoryStore::new(&small_store());
    let old = bare_session("u-1", "s-1", "a@example.com");
    store.insert("a".into(), old.clone());
    let linked = bare_session("u-1", "s-1", "a@example.com");
    assert!(store.replace("a", &old, linked.clone()));
    assert!(old.is_revoked(), "whatever held the old object stops");
    assert!(Arc::ptr_eq(&store.get("a").unwrap(), &linked));
    // A stale predecessor replaces nothing.
    assert!(!store.replace("a", &old, bare_session("u-1", "s-1", "a@example.com")));
    assert!(Arc::ptr_eq(&store.get("a").unwrap(), &linked));
    // Ended (a logout) before the replacement lands: nothing is stored.
    assert_eq!(store.revoke(&Revoke::Sid("s-1".into())), 1);
    assert!(!store.replace("a", &linked, bare_session("u-1", "s-1", "a@example.com")));
    assert!(store.get("a").is_none());
    assert_eq!(store.revoke(&Revoke::Sub("u-1".into())), 0);
}

#[test]
fn the_indexes_follow_the_sessions() {
    let store = MemoryStore::new(&small_store());
    let session = |sid: &str| bare_session("u-1", sid, "Alice@Example.com");
    store.insert("a".into(), session("s-1"));
    store.insert("b".into(), session("s-2"));
    assert_eq!(store.subs(), ["u-1"]);
    let mut sids = store.sids();
    sids.sort();
    assert_eq!(sids, ["s-1", "s-2"]);
    // A logout of one session takes its id out of every index.
    assert!(store.remove("a").is_some());
    store.housekeeping();
    assert_eq!(store.sids(), ["s-2"]);
    assert_eq!(store.subs(), ["u-1"], "the user still has a session");
    // Revoking by email (any case) ends the rest and empties the indexes.
    assert_eq!(store.revoke(&Revoke::Email("ALICE@example.com".into())), 1);
    store.housekeeping();
    assert!(store.sids().is_empty() && store.subs().is_empty());
    assert!(store.is_empty());
    assert_eq!(store.index.len(), 0, "the indexes are emptied");
}

/// A session with only a user, an IdP session and an email.
fn bare_session(sub: &str, sid: &str, email: &str) -> Arc<Session> {
    let id = Identity {
        sub: sub.into(),
        sid: Some(sid.into()),
        email: email.into(),
        name: "".into(),
        username: "".into(),
        company: "".into(),
        groups: Vec::new(),
        module_user: None,
    };
    let tokens = Tokens {
        id_token: None,
        refresh_token: None,
        access_exp: 0,
        generation: 0,
    };
    Arc::new(Session::new("m".into(), id, HeaderSet::default(), tokens))
}

fn small_store() -> SessionSettings {
    SessionSettings {
        redis: None,
        idle_timeout: Duration::from_secs(60),
        absolute_timeout: Duration::from_secs(600),
        max_sessions: 100,
        refresh_before: Duration::from_secs(60),
        login_starts_per_minute: 10,
        module_cookie_ttl: Duration::from_secs(60),
    }
}

#[test]
fn a_revoke_ends_only_the_sessions_it_names_even_when_hashes_meet() {
    let store = MemoryStore::new(&small_store());
    let session = |sub: &str, sid: &str| bare_session(sub, sid, &format!("{sub}@example.com"));
    store.insert("a".into(), session("u-1", "s-1"));
    store.insert("b".into(), session("u-2", "s-2"));
    // Pretend u-2's session sits under u-1's key too (a hash collision).
    let k = store.index.key(By::Sub, "u-1");
    Indexes::put(&mut store.index.lock(), k, &Arc::from("b"));
    assert_eq!(store.revoke(&Revoke::Sub("u-1".into())), 1);
    assert!(store.get("a").is_none());
    assert!(store.get("b").is_some(), "the other user's session lives on");
    // It stays findable under its own keys.
    assert_eq!(store.revoke(&Revoke::Sid("s-2".into())), 1);
    assert!(store.get("b").is_none());
}

#[test]
fn a_header_set_gives_back_each_valid_value_under_its_name() {
    static NAMES: [&str; 4] = ["x-a", "x-b", "x-c", "x-d"];
    let set = HeaderSet::new(
        &NAMES,
        vec!["one".into(), "bad\u{7f}".into(), String::new(), "zwei ü".into()],
    );
    let got: Vec<_> = set.iter().map(|(n, v)| (n, v.as_bytes().to_vec())).collect();
    assert_eq!(
        got,
        [
            ("x-a", b"one".to_vec()),
            ("x-c", Vec::new()),
            ("x-d", "zwei ü".as_bytes().to_vec())
        ]
    );
    assert_eq!(set.len(), 3);
    assert!(HeaderSet::default().is_empty());
}

#[test]
fn an_id_token_is_kept_decoded_and_given_back_byte_for_byte() {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    let jwt = format!(
        "{}.{}.{}",
        B64.encode(r#"{"alg":"ES256","kid":"k1"}"#),
        B64.encode(r#"{"iss":"https://idp.example","sub":"u-1","aud":"c","exp":1800000000}"#),
        B64.encode([7u8; 64])
    );
    let t = IdToken::new(&jwt);
    assert!(t.is_decoded(), "a canonical token is decoded");
    assert_eq!(t.jwt(), jwt);
    // Anything that would not come back the same is kept as it came.
    for odd in [
        format!("{jwt}="),
        "a.b".into(),
        "not a token".into(),
        format!("{jwt}.x"),
        "a.b.c.".into(),
    ] {
        let t = IdToken::new(&odd);
        assert!(!t.is_decoded(), "{odd}");
        assert_eq!(t.jwt(), odd);
    }
    // A last base64 character with stray low bits decodes, but would
    // not re-encode to the same text.
    let stray = format!("{}.e30.AB", B64.encode("{}"));
    assert_eq!(IdToken::new(&stray).jwt(), stray);
    assert_eq!(format!("{:?}", IdToken::new(&jwt)), "IdToken(..)");
}

#[test]
fn an_account_is_named_by_its_email_else_its_username() {
    let mut id = bare_session("u-1", "s-1", "alice@example.com").identity.clone();
    id.username = "alice".into();
    assert_eq!(id.account().as_deref(), Some("alice@example.com"));
    id.email = "".into();
    assert_eq!(id.account().as_deref(), Some("alice"));
    id.username = "".into();
    assert_eq!(id.account(), None);
}
