//! The relying-party side of OpenID Connect, as pure functions: ID token
//! validation, the callback's parameters, claim mapping and return-URL
//! safety. The proxy (`unigate run`) builds on
//! these; time and keys are parameters so every rule is tested by table.

pub mod access_token;
pub mod callback;
pub mod claims;
pub mod client;
pub mod id_token;
pub mod logout_token;
pub mod return_url;
#[cfg(test)]
mod test_support;

pub use crate::clock::unix;

/// Appends query parameters to a redirect URI that may already have some.
pub fn with_params(base: &str, params: &[(&str, &str)]) -> String {
    QueryBase::new(base).map_or_else(|| base.to_string(), |q| q.with(params))
}

/// A URL parsed once, to which query parameters are then appended as often
/// as needed: `with_params` without parsing the URL each time (the IdP's
/// authorization endpoint, at every login start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryBase {
    /// The URL without its fragment, up to and including `?` and the
    /// query it already has.
    head: String,
    /// Where that query starts in `head`.
    query_start: usize,
    fragment: Option<String>,
}

impl QueryBase {
    /// None when `base` is not a URL.
    pub fn new(base: &str) -> Option<QueryBase> {
        let u = url::Url::parse(base).ok()?;
        // Sliced, not edited: editing a URL may tidy its path.
        let mut head = u[..url::Position::AfterQuery].to_string();
        let query_start = match u.query() {
            Some(q) => head.len() - q.len(),
            None => {
                head.push('?');
                head.len()
            }
        };
        let fragment = u.fragment().map(str::to_string);
        Some(QueryBase {
            head,
            query_start,
            fragment,
        })
    }

    /// The URL with `params` appended, form-encoded, after any query it has.
    pub fn with(&self, params: &[(&str, &str)]) -> String {
        let room: usize = params.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
        let mut s = String::with_capacity(self.head.len() + room * 3 / 2 + 16);
        s.push_str(&self.head);
        form_urlencoded::Serializer::for_suffix(&mut s, self.query_start)
            .extend_pairs(params)
            .finish();
        if let Some(f) = &self.fragment {
            s.push('#');
            s.push_str(f);
        }
        s
    }
}

#[cfg(test)]
mod query_base_tests {
    use super::*;

    /// What `url` itself makes of each: the same string, parsed once.
    #[test]
    fn appending_to_a_url_parsed_once_is_what_url_does() {
        let params = [
            ("state", "a b&c=d"),
            ("redirect_uri", "https://x.example/cb?y=1"),
            ("é", "ü/+"),
        ];
        for base in [
            "https://idp.example/authorize",
            "https://IDP.example",
            "https://idp.example/authorize?",
            "https://idp.example/authorize?tenant=acme&x",
            "https://idp.example/a%20b/authorize#frag",
            "https://idp.example/authorize?t=1#frag",
            "http://127.0.0.1:8080/./x/../authorize",
            "mailto:a ?x",
            "data:text/plain,hi#f",
        ] {
            let mut u = url::Url::parse(base).unwrap();
            u.query_pairs_mut().extend_pairs(params);
            assert_eq!(QueryBase::new(base).unwrap().with(&params), u.to_string(), "{base}");
            assert_eq!(with_params(base, &params), u.to_string(), "{base}");
        }
        assert_eq!(with_params("not a url", &params), "not a url");
        assert!(QueryBase::new("/relative").is_none());
    }
}
