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
    match url::Url::parse(base) {
        Ok(mut u) => {
            {
                let mut q = u.query_pairs_mut();
                for (k, v) in params {
                    q.append_pair(k, v);
                }
            }
            u.to_string()
        }
        Err(_) => base.to_string(),
    }
}
