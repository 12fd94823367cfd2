//! The canonical request path: the one form of a request's path that every
//! decision is made on (public paths, logout and login paths, local
//! exceptions, `/_unigate/`) and that the module is sent, so that unigate
//! and the module can never disagree about which resource was asked for.
//!
//! A path is either made canonical or refused. Made canonical:
//! percent-encoded unreserved characters (`%41`, `%2e`, `%7E`) are decoded,
//! other percent-escapes are written with upper-case hex, empty segments
//! (`//`) are dropped, and dot segments are resolved — also the ones that a
//! server would read as dot segments after decoding or after removing `;`
//! path parameters (`%2e%2e`, `..;x`, `.%2e%3b`), since Tomcat and Spring
//! treat `/static/..;/admin` as `/admin`. Other `;` parameters stay where
//! they are (`;jsessionid=…`). Refused, because servers disagree on what
//! they mean: an encoded `/` or `\` (`%2f`, `%5c`), a raw `\` (IIS and
//! some Java servers read it as `/`), a control character or NUL, an
//! escape that is not two hex digits, bytes that are not UTF-8 once
//! decoded, a double-encoded character (`%252e`, `%2541`), a segment
//! of only dots and spaces other than `.` and `..` (Windows trims them),
//! and `..` above the root.

use std::borrow::Cow;

/// Why a request path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathRefusal {
    #[error("the path does not start with `/`")]
    NotAbsolute,
    #[error("the path holds an encoded `/` (%2F)")]
    EncodedSlash,
    #[error("the path holds a backslash")]
    Backslash,
    #[error("the path holds a control character")]
    ControlCharacter,
    #[error("the path holds a `%` that is not followed by two hex digits")]
    BadEscape,
    #[error("the path is not UTF-8 once decoded")]
    NotUtf8,
    #[error("the path holds a double-encoded character (`%25` followed by two hex digits)")]
    DoubleEncoded,
    #[error("the path holds a segment of only dots and spaces")]
    DotsOnly,
    #[error("the path climbs above the root with `..`")]
    AboveRoot,
}

/// True for the bytes that never need a second look: nothing to decode,
/// no separator a server might read differently.
fn plain(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) && !matches!(b, b'%' | b'\\' | b';')
}

/// The canonical form of a request path (the part before `?`): borrowed
/// when the path already is canonical, which is the common case.
pub fn canonicalize(raw: &str) -> Result<Cow<'_, str>, PathRefusal> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathRefusal::NotAbsolute);
    }
    let simple = bytes.iter().all(|&b| plain(b)) && !bytes.windows(2).any(|w| w == b"//" || w == b"/.");
    if simple {
        return Ok(Cow::Borrowed(raw));
    }
    slow(raw).map(Cow::Owned)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn slow(raw: &str) -> Result<String, PathRefusal> {
    let mut kept: Vec<String> = Vec::new();
    // Whether the path ends in `/` (or in a dot segment, which names the
    // directory it leads to).
    let mut trailing = false;
    for seg in raw[1..].split('/') {
        let (written, decoded) = segment(seg)?;
        let decoded = std::str::from_utf8(&decoded).map_err(|_| PathRefusal::NotUtf8)?;
        // Double encoding: a server that decodes twice would see
        // something else (`%252e` is `.` to it, `%25252e` to one that
        // decodes three times).
        let d = decoded.as_bytes();
        if d.windows(3)
            .any(|w| w[0] == b'%' && hex(w[1]).is_some() && hex(w[2]).is_some())
        {
            return Err(PathRefusal::DoubleEncoded);
        }
        // The segment's name without `;` parameters, as Tomcat reads it.
        let name = decoded.split(';').next().unwrap_or_default();
        match name {
            // An empty segment (`//`), or one of parameters only (`/;x/`),
            // which Tomcat reads as empty: dropped.
            "" | "." => trailing = true,
            ".." => {
                if kept.pop().is_none() {
                    return Err(PathRefusal::AboveRoot);
                }
                trailing = true;
            }
            _ if name.trim_end_matches(['.', ' ']).is_empty() => return Err(PathRefusal::DotsOnly),
            _ => {
                kept.push(written);
                trailing = false;
            }
        }
    }
    let mut out = String::with_capacity(raw.len());
    for s in &kept {
        out.push('/');
        out.push_str(s);
    }
    if trailing || kept.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// One segment: as it is forwarded (unreserved characters decoded, other
/// escapes upper-case) and fully decoded (for the checks).
fn segment(seg: &str) -> Result<(String, Vec<u8>), PathRefusal> {
    let b = seg.as_bytes();
    let mut written = String::with_capacity(b.len());
    let mut decoded = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            let (Some(h), Some(l)) = (b.get(i + 1).and_then(|&x| hex(x)), b.get(i + 2).and_then(|&x| hex(x))) else {
                return Err(PathRefusal::BadEscape);
            };
            let v = h << 4 | l;
            match v {
                b'/' => return Err(PathRefusal::EncodedSlash),
                b'\\' => return Err(PathRefusal::Backslash),
                0..=0x1f | 0x7f => return Err(PathRefusal::ControlCharacter),
                _ if unreserved(v) => written.push(v as char),
                _ => {
                    const HEX: &[u8; 16] = b"0123456789ABCDEF";
                    written.push('%');
                    written.push(HEX[usize::from(v >> 4)] as char);
                    written.push(HEX[usize::from(v & 15)] as char);
                }
            }
            decoded.push(v);
            i += 3;
            continue;
        }
        match c {
            b'\\' => return Err(PathRefusal::Backslash),
            0..=0x1f | 0x7f => return Err(PathRefusal::ControlCharacter),
            _ => {}
        }
        // Whole characters: `seg` is a `str`, and `%`-free runs stay UTF-8.
        let end = (i + 1..=b.len())
            .find(|&e| e == b.len() || b[e] == b'%' || seg.is_char_boundary(e))
            .unwrap_or(b.len());
        let run = &seg[i..end];
        if run.chars().any(char::is_control) {
            return Err(PathRefusal::ControlCharacter);
        }
        written.push_str(run);
        decoded.extend_from_slice(run.as_bytes());
        i = end;
    }
    Ok((written, decoded))
}

/// Whether canonical `path` lies under `prefix`, segment by segment:
/// `/static` and `/static/` both take `/static` and `/static/x`, and
/// neither takes `/staticX`, `/static-admin` or `/static;x/…`.
pub fn under(prefix: &str, path: &str) -> bool {
    let p = prefix.trim_end_matches('/');
    if p.is_empty() {
        return true;
    }
    match path.strip_prefix(p) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// A segment's name as servers read it: without `;` parameters (Tomcat)
/// or `%3B` ones (Spring decodes first); for servers that ignore case
/// (IIS), also without the trailing dots and spaces Windows trims.
fn segment_name(s: &str, case_insensitive: bool) -> &str {
    // One byte scan (this runs for every request): `;`, or `%3B`.
    let b = s.as_bytes();
    let cut = (0..b.len()).find(|&i| b[i] == b';' || (b[i] == b'%' && b.get(i + 1..i + 3) == Some(b"3B")));
    let name = cut.map_or(s, |i| &s[..i]);
    if !case_insensitive {
        return name;
    }
    let mut n = name;
    loop {
        let trimmed = n.trim_end_matches(['.', ' ']);
        match trimmed.strip_suffix("%20") {
            Some(t) => n = t,
            None => return trimmed,
        }
    }
}

/// Non-ASCII letters that a server matching paths by Unicode case rules
/// reads as an ASCII letter (Java's case-insensitive comparison: `ı` and
/// `İ` as `i`, `ſ` as `s`, the Kelvin sign as `k`), as a canonical path
/// writes them (percent-encoded, or as they came).
const ASCII_FOLDS: [(&str, char, char); 4] = [
    ("%C4%B0", '\u{130}', 'i'),
    ("%C4%B1", '\u{131}', 'i'),
    ("%C5%BF", '\u{17F}', 's'),
    ("%E2%84%AA", '\u{212A}', 'k'),
];

/// A path segment with the letters of `ASCII_FOLDS` read as ASCII
/// (borrowed when it is plain ASCII, the usual case).
fn fold_to_ascii(s: &str) -> Cow<'_, str> {
    if s.is_ascii() && !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    'next: while let Some(ch) = rest.chars().next() {
        for (written, letter, ascii) in ASCII_FOLDS {
            let encoded = ch == '%'
                && rest
                    .as_bytes()
                    .get(..written.len())
                    .is_some_and(|b| b.eq_ignore_ascii_case(written.as_bytes()));
            if ch == letter || encoded {
                out.push(ascii);
                rest = &rest[if ch == letter { ch.len_utf8() } else { written.len() }..];
                continue 'next;
            }
        }
        out.push(ch);
        rest = &rest[ch.len_utf8()..];
    }
    Cow::Owned(out)
}

/// Whether canonical `path` names exactly the resource `configured`
/// names: `;` parameters and a trailing `/` do not count, and with
/// `case_insensitive` neither does case.
pub fn names(configured: &str, path: &str, case_insensitive: bool) -> bool {
    let same = |x: &str, y: &str| x == y || (case_insensitive && x.eq_ignore_ascii_case(y));
    let mut b = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| segment_name(s, case_insensitive));
    for x in configured.split('/').filter(|s| !s.is_empty()) {
        match b.next() {
            Some(y) if same(x, y) => {}
            _ => return false,
        }
    }
    b.next().is_none()
}

/// Whether a request for canonical `path` may reach the code behind the
/// configured path `configured`, the way common servers dispatch: as
/// `names`, and also with more segments after it (PHP and ASP.NET path
/// info: `/login.php/x`), with an extension added to its last segment
/// (Spring's suffix match: `/login.json`), and, for Tomcat's form login
/// (`…/j_security_check`), under any path. For paths unigate takes over
/// (logout, module login forms), where matching more is the safe side.
pub fn reaches<'a>(configured: &str, path: &'a str, case_insensitive: bool) -> bool {
    let same = |x: &str, y: &str| x == y || (case_insensitive && x.eq_ignore_ascii_case(y));
    let mut b = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| segment_name(s, case_insensitive));
    let c = configured.trim_end_matches('/').as_bytes();
    let tomcat = c.len() >= 17
        && c[c.len() - 17] == b'/'
        && (c.ends_with(b"j_security_check")
            || (case_insensitive && c[c.len() - 16..].eq_ignore_ascii_case(b"j_security_check")));
    // Quick reject, as this runs for every request: the first letters of
    // the first segments differ.
    // (A first letter that may be folded from another is not told.)
    let (p1, c1) = (path.as_bytes().get(1), c.get(1));
    let folded_first = case_insensitive && p1.is_some_and(|p| *p == b'%' || !p.is_ascii());
    let first_may_match = tomcat
        || folded_first
        || c1.is_none()
        || p1 == c1
        || (case_insensitive && p1.zip(c1).is_some_and(|(a, b)| a.eq_ignore_ascii_case(b)));
    if !first_may_match {
        return false;
    }
    let fold = |y: &'a str| {
        if case_insensitive {
            fold_to_ascii(y)
        } else {
            Cow::Borrowed(y)
        }
    };
    if tomcat {
        return path
            .split('/')
            .rfind(|s| !s.is_empty())
            .is_some_and(|l| same(&fold(segment_name(l, case_insensitive)), "j_security_check"));
    }
    // No allocation for plain ASCII paths: this runs for every request,
    // per configured path.
    let mut want = configured.split('/').filter(|s| !s.is_empty()).peekable();
    while let Some(x) = want.next() {
        let Some(y) = b.next() else { return false };
        let y = &*fold(y);
        let last = want.peek().is_none();
        let extended = last
            && y.len() > x.len()
            && y.is_char_boundary(x.len())
            && same(x, &y[..x.len()])
            && y.as_bytes()[x.len()] == b'.';
        if !(same(x, y) || extended) {
            return false;
        }
    }
    true
}

/// Whether a configured path (`public_paths`, `logout_paths`, …) is
/// written canonically, so that it can match requests at all.
pub fn check_configured(p: &str) -> Result<(), String> {
    match canonicalize(p) {
        Ok(c) if c == p && !p.contains(';') && !p.contains("%3B") => Ok(()),
        Ok(c) if !p.contains(';') && !p.contains("%3B") => Err(format!("`{p}` is not canonical: write it as `{c}`")),
        Ok(_) => Err(format!("`{p}` holds a `;` path parameter")),
        Err(e) => Err(format!("`{p}`: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PathRefusal::*;

    #[test]
    fn canonical_forms() {
        let ok = [
            ("/", "/"),
            ("/ping", "/ping"),
            ("/a/b/", "/a/b/"),
            ("/static/../admin", "/admin"),
            ("/static/%2e%2e/admin", "/admin"),
            ("/static/%2E%2E/admin", "/admin"),
            ("/static/.%2e/admin", "/admin"),
            ("/static/..;/admin", "/admin"),
            ("/static/..;x=1/admin", "/admin"),
            ("/static/..%3b/admin", "/admin"),
            ("/static/.;/admin", "/static/admin"),
            ("/static;x/../admin", "/admin"),
            ("/static/./file.css", "/static/file.css"),
            ("//logout", "/logout"),
            ("/a//b///c", "/a/b/c"),
            ("/a/;x/b", "/a/b"),
            ("/;x", "/"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/a/./", "/a/"),
            ("/..a/b", "/..a/b"),
            ("/a/.b", "/a/.b"),
            ("/.well-known/x", "/.well-known/x"),
            ("/%7Euser/%41", "/~user/A"),
            ("/a%20b/%c3%a9", "/a%20b/%C3%A9"),
            ("/a%3fb", "/a%3Fb"),
            ("/x;jsessionid=1/y", "/x;jsessionid=1/y"),
            ("/logout;x", "/logout;x"),
            ("/caf\u{e9}", "/caf\u{e9}"),
            ("/_unigate/../admin", "/admin"),
            ("/x/../_unigate/healthz", "/_unigate/healthz"),
        ];
        for (raw, want) in ok {
            assert_eq!(canonicalize(raw).as_deref(), Ok(want), "{raw}");
            // Canonical is a fixed point.
            assert_eq!(canonicalize(want).as_deref(), Ok(want), "{want} again");
        }
        assert!(
            matches!(canonicalize("/ping"), Ok(Cow::Borrowed(_))),
            "no copy when canonical"
        );
        let refused = [
            ("", NotAbsolute),
            ("*", NotAbsolute),
            ("static/x", NotAbsolute),
            ("/static/..%2fadmin", EncodedSlash),
            ("/static/..%2Fadmin", EncodedSlash),
            ("/static/..\\admin", Backslash),
            ("/static/..%5cadmin", Backslash),
            ("/a%00b", ControlCharacter),
            ("/a%0d%0aSet-Cookie:x", ControlCharacter),
            ("/a\u{7f}", ControlCharacter),
            ("/a%zz", BadEscape),
            ("/a%2", BadEscape),
            ("/a%", BadEscape),
            ("/a%ff", NotUtf8),
            ("/a%c3", NotUtf8),
            ("/static/%252e%252e/admin", DoubleEncoded),
            ("/static/%25252e%25252e/admin", DoubleEncoded),
            ("/static/..%252fadmin", DoubleEncoded),
            ("/a%2541", DoubleEncoded),
            ("/static/.../admin", DotsOnly),
            ("/static/..%20/admin", DotsOnly),
            ("/static/. ./admin", DotsOnly),
            ("/..", AboveRoot),
            ("/../admin", AboveRoot),
            ("/static/../../admin", AboveRoot),
            ("/%2e%2e/admin", AboveRoot),
        ];
        for (raw, want) in refused {
            assert_eq!(canonicalize(raw), Err(want), "{raw}");
        }
    }

    #[test]
    fn prefixes_are_whole_segments() {
        for (prefix, path, want) in [
            ("/static/", "/static/x.css", true),
            ("/static/", "/static/", true),
            ("/static/", "/static", true),
            ("/static/", "/staticX", false),
            ("/static/", "/staticX/y", false),
            ("/static", "/static/a/b", true),
            ("/static", "/static", true),
            ("/static", "/static-admin", false),
            ("/static", "/static;x/admin", false),
            ("/static", "/Static/x", false),
            ("/", "/anything", true),
            ("/a/b", "/a/b/c", true),
            ("/a/b", "/a/bc", false),
            ("/a/b", "/a", false),
        ] {
            assert_eq!(under(prefix, path), want, "{prefix} {path}");
        }
    }

    #[test]
    fn taken_over_paths_match_as_the_module_reads_them() {
        // (configured, path, case-insensitive, names, reaches)
        for (configured, path, ci, exact, reach) in [
            ("/logout", "/logout", false, true, true),
            ("/logout", "/logout/", false, true, true),
            ("/logout", "/logout;x", false, true, true),
            ("/logout", "/logout;x/", false, true, true),
            ("/logout", "/logout%3Bx", false, true, true),
            ("/logout", "/LOGOUT", false, false, false),
            ("/logout", "/LOGOUT", true, true, true),
            ("/logout", "/Logout;a=b", true, true, true),
            ("/logout", "/logout.", false, false, true),
            ("/logout", "/logout.", true, true, true),
            ("/logout", "/logout%20", true, true, true),
            ("/logout", "/logout%20.%20", true, true, true),
            ("/logout", "/logout%20", false, false, false),
            ("/logout", "/logout/x", false, false, true),
            ("/logout", "/logout.json", false, false, true),
            ("/logout", "/logoutx", false, false, false),
            ("/logout", "/", false, false, false),
            ("/login.php", "/login.php/x", false, false, true),
            ("/login.php", "/login.php", false, true, true),
            ("/login.php", "/login", false, false, false),
            ("/Login.aspx", "/login.aspx/x", true, false, true),
            ("/j_security_check", "/app/j_security_check", false, false, true),
            ("/j_security_check", "/app/j_security_check;x", false, false, true),
            ("/j_security_check", "/app/j_security_checkx", false, false, false),
            ("/account/logout", "/account;s=1/logout", false, true, true),
            ("/account/logout", "/account/other", false, false, false),
            ("/", "/", false, true, true),
            // Letters Java's case-insensitive match reads as ASCII.
            ("/signout", "/%C5%BFignout", true, false, true),
            ("/signout", "/\u{17F}ignout", true, false, true),
            ("/signout", "/%C5%BFignout", false, false, false),
            ("/kill", "/%E2%84%AAill", true, false, true),
            ("/link", "/l%C4%B1nk", true, false, true),
            ("/link", "/l%C4%B1", true, false, false),
            ("/link", "/l%C4", true, false, false),
            ("/link", "/l%C4\u{e9}nk", true, false, false),
            ("/j_security_check", "/a/j_%C5%BFecurity_check", true, false, true),
        ] {
            assert_eq!(names(configured, path, ci), exact, "names {configured} {path} {ci}");
            assert_eq!(reaches(configured, path, ci), reach, "reaches {configured} {path} {ci}");
        }
    }

    #[test]
    fn configured_paths_must_be_canonical() {
        assert!(check_configured("/static/").is_ok());
        assert!(check_configured("/logout").is_ok());
        for bad in ["/static/../x", "//x", "/a%2fb", "/x;y", "/a/./b", "/%7Ex"] {
            assert!(check_configured(bad).is_err(), "{bad}");
        }
    }
}
