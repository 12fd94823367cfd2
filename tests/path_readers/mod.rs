//! How common servers read a request path, as models for tests: unigate
//! makes a decision on its canonical path and forwards that path, so each
//! server's reading of the forwarded path must land where unigate decided.
//! Shared by the property tests (`tests/hostile_input.rs`) and the
//! million-case run (`benches/path_fuzz.rs`).
#![allow(dead_code)]

use proptest::prelude::*;
use unigate::policy::path::{canonicalize, reaches, under};

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// Merges empty segments and resolves `.` and `..` (clamped at the root,
/// as most servers do).
fn resolve<'a>(segments: impl Iterator<Item = &'a str>) -> String {
    let mut kept: Vec<&str> = Vec::new();
    for s in segments {
        match s {
            "" | "." => {}
            ".." => {
                kept.pop();
            }
            s => kept.push(s),
        }
    }
    format!("/{}", kept.join("/"))
}

/// A browser or WHATWG URL parser (Node, Go's and Rust's `url`).
pub fn whatwg(p: &str) -> String {
    url::Url::parse(&format!("http://h{p}")).unwrap().path().to_string()
}

/// Tomcat: `;` parameters off each segment, then decoded, then resolved.
pub fn tomcat(p: &str) -> String {
    let segs: Vec<String> = p
        .split('/')
        .map(|s| decode(s.split(';').next().unwrap_or_default()))
        .collect();
    resolve(segs.iter().map(String::as_str))
}

/// Spring's path helper: decoded first, then `;` parameters off, resolved.
pub fn spring(p: &str) -> String {
    let d = decode(p);
    let segs: Vec<&str> = d.split('/').map(|s| s.split(';').next().unwrap_or_default()).collect();
    resolve(segs.into_iter())
}

/// nginx, Apache and Python's servers: decoded, slashes merged, resolved.
pub fn nginx(p: &str) -> String {
    let d = decode(p);
    resolve(d.split('/'))
}

/// IIS: decoded, `\` is `/`, trailing dots and spaces trimmed from each
/// segment, case ignored (lower-cased here).
pub fn iis(p: &str) -> String {
    let d = decode(p).replace('\\', "/");
    let segs: Vec<&str> = d
        .split('/')
        .map(|s| match s {
            "." | ".." => s,
            s => s.trim_end_matches(['.', ' ']),
        })
        .collect();
    resolve(segs.into_iter()).to_lowercase()
}

pub const PREFIXES: [&str; 3] = ["/static", "/static/css", "/"];

/// The properties of one raw path: canonicalizing it never panics; a
/// canonical path is a fixed point with no empty or dot segment; and no
/// server reads a canonical path as leaving a public prefix that unigate
/// found it under.
pub fn check(raw: &str) -> Result<(), String> {
    let Ok(c) = canonicalize(raw) else { return Ok(()) };
    let c = c.into_owned();
    if canonicalize(&c).as_deref() != Ok(c.as_str()) {
        return Err(format!("{raw:?} -> {c:?} is not a fixed point"));
    }
    if !c.starts_with('/') || c[1..].split('/').rev().skip(1).any(str::is_empty) {
        return Err(format!("{raw:?} -> {c:?} has an empty segment"));
    }
    for prefix in PREFIXES {
        if !under(prefix, &c) {
            continue;
        }
        for (name, read) in [
            ("whatwg", whatwg(&c)),
            ("tomcat", tomcat(&c)),
            ("spring", spring(&c)),
            ("nginx", nginx(&c)),
        ] {
            if !under(prefix, &read) {
                return Err(format!("{raw:?} -> {c:?} is under {prefix}, but {name} reads {read:?}"));
            }
        }
        let read = iis(&c);
        if !under(&prefix.to_lowercase(), &read) {
            return Err(format!("{raw:?} -> {c:?} is under {prefix}, but IIS reads {read:?}"));
        }
    }
    // A path a server dispatches to a logout or login handler is one
    // unigate takes over (for IIS, with case ignored).
    for taken in TAKEN_OVER {
        let dispatched = |read: &str| read == taken || read.starts_with(&format!("{taken}/"));
        for (name, read) in [
            ("whatwg", whatwg(&c)),
            ("tomcat", tomcat(&c)),
            ("spring", spring(&c)),
            ("nginx", nginx(&c)),
        ] {
            if dispatched(&read) && !reaches(taken, &c, false) {
                return Err(format!(
                    "{raw:?} -> {c:?}: {name} reaches {taken} ({read:?}), unigate does not"
                ));
            }
        }
        if dispatched(&iis(&c)) && !reaches(taken, &c, true) {
            return Err(format!("{raw:?} -> {c:?}: IIS reaches {taken}, unigate does not"));
        }
    }
    Ok(())
}

/// Paths unigate takes over in the checks above (configured lower-case).
pub const TAKEN_OVER: [&str; 2] = ["/logout", "/login.php"];

/// Paths built from the pieces attacks are made of.
pub fn attack_paths() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("static".to_string()),
        Just("css".to_string()),
        Just("admin".to_string()),
        Just(".".to_string()),
        Just("..".to_string()),
        Just("%2e".to_string()),
        Just("%2E%2e".to_string()),
        Just(".%2e".to_string()),
        Just("..;".to_string()),
        Just("..;x=1".to_string()),
        Just(";x".to_string()),
        Just("%3b".to_string()),
        Just(String::new()),
        Just("%2f".to_string()),
        Just("%5c".to_string()),
        Just("\\".to_string()),
        Just("%252e".to_string()),
        Just("...".to_string()),
        Just(".. ".to_string()),
        Just("%20".to_string()),
        Just("%00".to_string()),
        Just("%c3%a9".to_string()),
        Just("%ff".to_string()),
        Just("st%61tic".to_string()),
        Just("logout".to_string()),
        Just("LogOut".to_string()),
        Just("logout.".to_string()),
        Just("logout%20".to_string()),
        Just("logout;x".to_string()),
        Just("logout%3bx".to_string()),
        Just("login.php".to_string()),
        "[a-z.;%0-9A-F\\\\ ~]{0,6}",
    ];
    proptest::collection::vec(piece, 0..8).prop_map(|v| format!("/{}", v.join("/")))
}
