//! What a module could read as its session cookie. unigate decides on the
//! module session cookies a request carries (logout, user switch, local
//! exceptions), and the module's framework reads them its own way: PHP
//! percent-decodes names and values and turns `.`, space and a lone `[` in
//! names into `_`; Rack and Express percent-decode values (Rack also `+`);
//! Express, Go and Java strip a pair of quotes; Python's `http.cookies`
//! and Django unquote with backslash and octal escapes (`"\141"` is `a`);
//! Python and RFC 2109 parsers also split pairs on `,` and whitespace;
//! ASP.NET compares names without case. Duplicates are read first-wins by
//! some (PHP, Rack, Express) and last-wins by others (Django).
//!
//! So the rule is: every value of every cookie whose name any of those
//! frameworks could read as a configured name is a *reading*, and each
//! reading is checked in every form those frameworks decode it to. A
//! request with more than [`MAX_READINGS`] readings is refused rather than
//! partly checked. A cookie the module issues is recorded in every form
//! too, so that a value decoding to a recorded session is found whichever
//! way either side wrote it.

/// Readings of module session cookies one request may carry. A browser
/// sends one value per path and domain a cookie was set for: a handful.
pub const MAX_READINGS: usize = 16;

/// One value of a module session cookie, as frameworks may read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    /// Which configured name (index into `session_cookies`).
    pub name: usize,
    /// The name as the request spelled it (to expire it where it is).
    pub raw_name: String,
    /// Every value a framework may decode it to; the raw value first.
    pub forms: Vec<Vec<u8>>,
}

/// Decoded forms one value may have. Real session ids have one (or a
/// few); a value crafted to have more is refused rather than looked up
/// without end.
pub const MAX_FORMS: usize = 24;

/// The longest value of a module session cookie: a browser keeps at most
/// 4,096 bytes of name and value.
pub const MAX_VALUE: usize = 4096;

/// Forms looked up for one request, all readings together: each is a
/// store lookup, before any login.
pub const MAX_LOOKUPS: usize = 48;

/// More readings than [`MAX_READINGS`], a value longer than [`MAX_VALUE`]
/// or with more forms than [`MAX_FORMS`], or more than [`MAX_LOOKUPS`]
/// forms in all: the request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooMany;

/// Every reading of the configured `names` in these `Cookie` header values.
pub fn readings<'a>(
    headers: impl Iterator<Item = &'a [u8]>,
    names: &[String],
    max: usize,
) -> Result<Vec<Reading>, TooMany> {
    let mut out: Vec<Reading> = Vec::new();
    let mut seen: Vec<(usize, &[u8], &[u8])> = Vec::new();
    let mut lookups = 0;
    for h in headers {
        for chunk in h.split(|b| *b == b';') {
            for (n, v) in pairs(chunk) {
                if v.is_empty() {
                    continue;
                }
                let Some(i) = names.iter().position(|c| name_matches(n, c)) else {
                    continue;
                };
                if seen.iter().any(|&(si, sn, sv)| si == i && sn == n && sv == v) {
                    continue;
                }
                if seen.len() >= max || v.len() > MAX_VALUE {
                    return Err(TooMany);
                }
                seen.push((i, n, v));
                let forms = value_forms(v);
                lookups += forms.len();
                if forms.len() > MAX_FORMS || lookups > MAX_LOOKUPS {
                    return Err(TooMany);
                }
                out.push(Reading {
                    name: i,
                    raw_name: String::from_utf8_lossy(n).into_owned(),
                    forms,
                });
            }
        }
    }
    Ok(out)
}

/// Whether a `;`-separated piece of a `Cookie` header holds a cookie any
/// framework could read as `configured` (so that stripping it keeps that
/// cookie from the module whichever way the module splits the header).
pub fn chunk_has_name(chunk: &[u8], configured: &str) -> bool {
    pairs(chunk).any(|(n, _)| name_matches(n, configured))
}

fn is_sep(b: u8) -> bool {
    b == b',' || b.is_ascii_whitespace()
}

/// The `name=value` pairs of one `;`-separated piece: the piece itself
/// split at its first `=` (most frameworks), and, when it holds `,`,
/// whitespace or quotes, every `name=value` around each `=` with `,` and
/// whitespace as separators and quoted strings kept whole (Python's
/// `http.cookies`, RFC 2109 parsers).
fn pairs(chunk: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let chunk = chunk.trim_ascii();
    let primary = chunk
        .iter()
        .position(|b| *b == b'=')
        .map(|eq| (chunk[..eq].trim_ascii(), chunk[eq + 1..].trim_ascii()));
    let lenient = chunk.iter().any(|b| is_sep(*b) || *b == b'"');
    let mut extra = Vec::new();
    if lenient {
        // Where the separator run that ends an unquoted value starting at
        // each position begins: one pass, so that a piece of many `=`
        // costs linear time, not quadratic.
        let mut next_sep = vec![chunk.len(); chunk.len() + 1];
        for j in (0..chunk.len()).rev() {
            next_sep[j] = if is_sep(chunk[j]) { j } else { next_sep[j + 1] };
        }
        let mut i = 0;
        let mut quoted = false;
        while i < chunk.len() {
            let b = chunk[i];
            if quoted {
                if b == b'\\' {
                    i += 1;
                } else if b == b'"' {
                    quoted = false;
                }
            } else if b == b'"' {
                quoted = true;
            } else if b == b'=' {
                // The name: the run before `=` (spaces allowed before `=`).
                let mut end = i;
                while end > 0 && chunk[end - 1].is_ascii_whitespace() {
                    end -= 1;
                }
                let mut start = end;
                while start > 0 && !is_sep(chunk[start - 1]) && chunk[start - 1] != b'=' {
                    start -= 1;
                }
                // The value: a quoted string, or the run up to a separator.
                let mut vs = i + 1;
                while vs < chunk.len() && chunk[vs].is_ascii_whitespace() {
                    vs += 1;
                }
                let mut ve = vs;
                if ve < chunk.len() && chunk[ve] == b'"' {
                    ve += 1;
                    while ve < chunk.len() && chunk[ve] != b'"' {
                        ve += if chunk[ve] == b'\\' { 2 } else { 1 };
                    }
                    ve = (ve + 1).min(chunk.len());
                } else {
                    ve = next_sep[ve];
                }
                if start < end {
                    extra.push((&chunk[start..end], &chunk[vs..ve]));
                }
            }
            i += 1;
        }
    }
    primary
        .into_iter()
        .chain(extra.into_iter().filter(move |p| Some(*p) != primary))
}

/// Whether a framework could read the cookie name `raw` as `configured`:
/// as sent, percent-decoded (`+` as space, as PHP does), with PHP's
/// mangling (`.` and space become `_`, a `[` without `]` too, `a[b]` is
/// `a`), leading whitespace dropped; ASCII case ignored (ASP.NET).
pub fn name_matches(raw: &[u8], configured: &str) -> bool {
    let c = configured.as_bytes();
    if raw.eq_ignore_ascii_case(c) {
        return true;
    }
    if !raw
        .iter()
        .any(|b| matches!(b, b'%' | b'+' | b'.' | b' ' | b'[' | b'\t'))
    {
        return false;
    }
    let decoded = percent_decode(raw, true);
    [raw.to_vec(), decoded]
        .iter()
        .any(|n| php_name(n).eq_ignore_ascii_case(c))
}

/// PHP's variable name for a cookie name (`php_register_variable_ex`).
fn php_name(n: &[u8]) -> Vec<u8> {
    let n = n.trim_ascii_start();
    let mut out = Vec::with_capacity(n.len());
    for (i, &b) in n.iter().enumerate() {
        match b {
            b'[' if n[i + 1..].contains(&b']') => break,
            b'.' | b' ' | b'[' => out.push(b'_'),
            _ => out.push(b),
        }
    }
    out
}

/// Every value frameworks decode `raw` to: itself, without one pair of
/// quotes (or, as Express does, without the first and last character when
/// the first is a quote), with backslash and octal escapes undone, percent-decoded
/// (with and without `+` as space), and those combined, in two rounds.
pub fn value_forms(raw: &[u8]) -> Vec<Vec<u8>> {
    let mut forms = vec![raw.to_vec()];
    if !raw.iter().any(|b| matches!(b, b'"' | b'\\' | b'%' | b'+')) {
        return forms;
    }
    let mut frontier = forms.clone();
    for _ in 0..3 {
        let mut next = Vec::new();
        for f in &frontier {
            for g in [
                unquote(f),
                express_unquote(f),
                unescape(f),
                unescape(&unquote(f)),
                percent_decode(f, false),
                percent_decode(f, true),
            ] {
                if !forms.contains(&g) {
                    forms.push(g.clone());
                    next.push(g);
                    if forms.len() > MAX_FORMS {
                        // Refused by the caller: no need to go on.
                        return forms;
                    }
                }
            }
        }
        if next.is_empty() {
            break;
        }
        frontier = next;
    }
    forms
}

/// Express (`cookie`): a value starting with a quote loses its first and
/// last characters, whatever the last is.
fn express_unquote(v: &[u8]) -> Vec<u8> {
    match v {
        [b'"', inner @ .., _] => inner.to_vec(),
        _ => v.to_vec(),
    }
}

fn unquote(v: &[u8]) -> Vec<u8> {
    match v {
        [b'"', inner @ .., b'"'] => inner.to_vec(),
        _ => v.to_vec(),
    }
}

/// Python's `http.cookies._unquote` escapes: `\ooo` (octal, first digit
/// 0-3) is that byte, `\c` is `c`.
fn unescape(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'\\' && i + 1 < v.len() {
            let oct = |b: u8| (b'0'..=b'7').contains(&b);
            if i + 3 < v.len() && (b'0'..=b'3').contains(&v[i + 1]) && oct(v[i + 2]) && oct(v[i + 3]) {
                out.push((v[i + 1] - b'0') * 64 + (v[i + 2] - b'0') * 8 + (v[i + 3] - b'0'));
                i += 4;
            } else {
                out.push(v[i + 1]);
                i += 2;
            }
        } else {
            out.push(v[i]);
            i += 1;
        }
    }
    out
}

/// `%XX` decoded (and `+` as a space when `plus`); a stray `%` stays.
pub fn percent_decode(v: &[u8], plus: bool) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        match v[i] {
            b'%' if i + 2 < v.len() => match (hex(v[i + 1]), hex(v[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_cookie_headers_cost_linear_time_and_are_bounded() {
        // A piece of many `=` and no `;`: every `=` is a lenient pair.
        let mut h = b"a,".to_vec();
        h.extend(std::iter::repeat_n(b"x=".as_slice(), 200_000).flatten());
        let started = std::time::Instant::now();
        let names = ["portal_session".to_string()];
        assert!(readings(std::iter::once(h.as_slice()), &names, MAX_READINGS).is_ok());
        // Quadratic was minutes; linear is milliseconds, even unoptimised.
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        // A value longer than a browser keeps is refused.
        let long = format!("portal_session={}", "%41".repeat(MAX_VALUE));
        assert_eq!(
            readings(std::iter::once(long.as_bytes()), &names, MAX_READINGS),
            Err(TooMany)
        );
        // So are more forms in all than the lookups allowed.
        let many: String = (0..MAX_READINGS - 1)
            .map(|i| format!("portal_session=\"%25{i:02}\\141+b\""))
            .collect::<Vec<_>>()
            .join("; ");
        assert_eq!(
            readings(std::iter::once(many.as_bytes()), &names, MAX_READINGS),
            Err(TooMany)
        );
    }

    fn read(header: &str) -> Result<Vec<Reading>, TooMany> {
        readings(
            [header.as_bytes()].into_iter(),
            &["portal_session".to_string()],
            MAX_READINGS,
        )
    }

    /// Whether some framework could read `header`'s portal_session as `want`.
    fn readable(header: &str, want: &str) -> bool {
        read(header)
            .unwrap()
            .iter()
            .any(|r| r.forms.iter().any(|f| f == want.as_bytes()))
    }

    #[test]
    fn each_frameworks_decoding_is_a_form_that_is_checked() {
        // (framework, the Cookie header it reads, the session id it sees)
        let cases = [
            ("any", "portal_session=abc", "abc"),
            ("Go, Java, Express: quotes stripped", r#"portal_session="abc""#, "abc"),
            (
                "Python http.cookies, Django: octal escape",
                r#"portal_session="\141bc""#,
                "abc",
            ),
            (
                "Python http.cookies: backslash escape",
                r#"portal_session="a\bc""#,
                "abc",
            ),
            ("octal escape without quotes", r"portal_session=\141bc", "abc"),
            ("PHP, Rack, Express: percent-encoding", "portal_session=%61bc", "abc"),
            ("PHP, Rack: + is a space", "portal_session=a+bc", "a bc"),
            ("Rack: %2B is +", "portal_session=a%2Bbc", "a+bc"),
            (
                "Express: a leading quote drops the last character",
                r#"portal_session="abc!"#,
                "abc",
            ),
            (
                "Express: quoted then percent-decoded",
                r#"portal_session="%61bc""#,
                "abc",
            ),
            ("percent-encoded quotes", "portal_session=%22abc%22", "abc"),
            ("PHP: name percent-decoded", "portal%5fsession=abc", "abc"),
            ("PHP: name with . mangled", "portal.session=abc", "abc"),
            ("PHP: name with a space mangled", "portal session=abc", "abc"),
            ("PHP: name with + (space) mangled", "portal+session=abc", "abc"),
            ("PHP: lone [ mangled", "portal[session=abc", "abc"),
            ("PHP: array cookie", "portal_session[x]=abc", "abc"),
            ("ASP.NET: names without case", "PORTAL_SESSION=abc", "abc"),
            (
                "Django: last of duplicates",
                "portal_session=d1; portal_session=d2; portal_session=abc",
                "abc",
            ),
            (
                "Python http.cookies: whitespace splits",
                "x=1 portal_session=abc",
                "abc",
            ),
            ("RFC 2109: comma splits", "x=1, portal_session=abc", "abc"),
            (
                "Python http.cookies: spaces around =",
                "x=1 portal_session = abc",
                "abc",
            ),
            ("Python: after a quoted value", r#"x="a b" portal_session=abc"#, "abc"),
            ("second Cookie header line", "x=1;portal_session=abc;y=2", "abc"),
        ];
        for (framework, header, want) in cases {
            assert!(readable(header, want), "{framework}: {header} -> {want}");
        }
    }

    #[test]
    fn other_names_and_plain_values_stay_what_they_are() {
        for header in [
            "portal_sessionx=abc",
            "xportal_session=abc",
            "portal=abc",
            "session=abc",
            "portal_session=",
        ] {
            assert_eq!(read(header).unwrap(), vec![], "{header}");
        }
        let r = read("a=1; portal_session=Zm9vYmFy-_; b=2").unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].forms, vec![b"Zm9vYmFy-_".to_vec()], "a plain value has one form");
        assert_eq!(r[0].raw_name, "portal_session");
        assert_eq!(r[0].name, 0);
        assert_eq!(
            read("portal%5Fsession=x").unwrap()[0].raw_name,
            "portal%5Fsession",
            "the name as sent, to expire it"
        );
    }

    #[test]
    fn more_than_the_bound_is_refused_not_cut() {
        let many = |n: usize| {
            (0..n)
                .map(|i| format!("portal_session=v{i}"))
                .collect::<Vec<_>>()
                .join("; ")
        };
        assert_eq!(read(&many(MAX_READINGS)).unwrap().len(), MAX_READINGS);
        assert_eq!(read(&many(MAX_READINGS + 1)), Err(TooMany));
        // The same pair twice counts once; other cookies do not count.
        let same = vec!["portal_session=v"; 40].join("; ");
        assert_eq!(read(&same).unwrap().len(), 1);
        let others = (0..100).map(|i| format!("c{i}=v")).collect::<Vec<_>>().join("; ");
        assert_eq!(read(&others).unwrap().len(), 0);
        // Variant names count too.
        let variants = (0..=MAX_READINGS)
            .map(|i| format!("portal.session=v{i}"))
            .collect::<Vec<_>>()
            .join("; ");
        assert_eq!(read(&variants), Err(TooMany));
    }

    #[test]
    fn stripping_finds_the_name_in_any_piece() {
        for chunk in [
            "portal_session=a",
            " portal.session=a",
            "x=1, portal_session=a",
            "PORTAL_SESSION=a",
        ] {
            assert!(chunk_has_name(chunk.as_bytes(), "portal_session"), "{chunk}");
        }
        for chunk in ["x=1", "portal_sessions=a", "x=portal_session"] {
            assert!(!chunk_has_name(chunk.as_bytes(), "portal_session"), "{chunk}");
        }
    }

    #[test]
    fn hostile_values_do_not_panic() {
        for v in [
            "\"",
            "\\",
            "%",
            "%4",
            "%zz",
            "\\3",
            "\\777",
            "\"\\\"",
            "\u{ff}%ff\\0",
            "=",
            "= =",
            "\"a=b",
        ] {
            let _ = value_forms(v.as_bytes());
            let _ = read(&format!("portal_session={v}"));
            let _ = read(v);
            let _ = name_matches(v.as_bytes(), "portal_session");
        }
        assert!(value_forms(b"%25%25%25%25%25").len() < 64, "bounded");
        // A value crafted for many decodings is refused, not looked up.
        let mut worst = 0;
        let alphabet = [b'"', b'\\', b'%', b'+', b'2', b'5', b'B', b'a', b'0'];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2000 {
            let v: Vec<u8> = (0..12)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    alphabet[(x % alphabet.len() as u64) as usize]
                })
                .collect();
            let n = value_forms(&v).len();
            worst = worst.max(n);
            let header = format!("portal_session={}", String::from_utf8_lossy(&v));
            assert_eq!(read(&header).is_err(), n > MAX_FORMS, "{header}");
        }
        assert!(worst < 500, "value_forms stays small: {worst}");
        // Plain session ids of common frameworks have one form.
        for id in ["0123abcd", "Zm9v-_", "s%3Aabc.def", "a+b"] {
            assert!(read(&format!("portal_session={id}")).is_ok(), "{id}");
        }
    }
}
