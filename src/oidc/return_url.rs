//! Return URLs: where a user goes after logging in or out. Only same-origin
//! relative paths pass. Everything a browser could read as another origin
//! (`//x`, `/\x`, schemes, encoded slashes, backslashes or whitespace,
//! control characters) is refused, in every layer of percent-encoding.

/// Longest return path kept.
pub const MAX_RETURN_PATH: usize = 2048;

/// `raw` if it is a safe same-origin path (with optional query), else `None`.
pub fn safe_return_path(raw: &str) -> Option<&str> {
    if raw.len() > MAX_RETURN_PATH || !raw.starts_with('/') {
        return None;
    }
    // Check the text as given and as each decoding layer reveals it, so an
    // encoded `//` or `\` cannot slip past a check of the undecoded form.
    let mut layer = raw.to_string();
    for _ in 0..4 {
        if !layer_is_safe(&layer) {
            return None;
        }
        let decoded = percent_decode(&layer)?;
        if decoded == layer {
            return Some(raw);
        }
        layer = decoded;
    }
    // Still changing after four decodings: nobody needs that.
    None
}

fn layer_is_safe(s: &str) -> bool {
    // Backslashes become slashes in browsers; control characters (tab, CR,
    // LF) are dropped by URL parsers or split headers.
    if s.chars().any(|c| c == '\\' || c.is_control()) {
        return false;
    }
    // With whitespace removed, as a lenient parser might, it must still be
    // one slash and then not another.
    let mut chars = s.chars().filter(|c| !c.is_whitespace() && *c != '\u{feff}');
    chars.next() == Some('/') && !matches!(chars.next(), Some('/'))
}

fn percent_decode(s: &str) -> Option<String> {
    // Not form decoding: in a path `+` stays `+`.
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        for ok in [
            "/",
            "/a",
            "/a/b?c=d&e=%2F",
            "/path%20with%20space?x=1",
            "/a+b",
            "/a/./b",
        ] {
            assert_eq!(safe_return_path(ok), Some(ok), "{ok}");
        }
        for bad in [
            "",
            "a",
            "//evil.example",
            "/\\evil.example",
            "/%09/evil.example",
            "https://evil.example",
            "/%2f%2fevil.example",
            "/%5cevil.example",
            "%2f%2fevil.example",
            "/%252f%252fevil.example",
            "/\t/evil.example",
            "/a\\b",
            "/%0d%0aSet-Cookie:x",
            " /a",
        ] {
            assert_eq!(safe_return_path(bad), None, "{bad:?}");
        }
    }
}
