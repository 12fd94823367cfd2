//! The authorization response at unigate's callback (RFC 6749 §4.1.2,
//! OIDC Core §3.1.2.5, RFC 9207), read as a pure function of its query
//! string and of what the provider's discovery promises. Everything here
//! is decided before any token request.

/// What the provider answered, once the parameters are known to be sound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A code to redeem.
    Code(String),
    /// An error (RFC 6749 §4.1.2.1), cut to a length safe to show.
    Error { error: String, description: Option<String> },
    /// Neither a code nor an error.
    Nothing,
}

/// A sound authorization response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Empty when absent (the login transaction check then fails).
    pub state: String,
    pub answer: Answer,
}

/// Why a callback was refused before anything was redeemed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("`{0}` appears more than once")]
    Repeated(&'static str),
    #[error("`{0}` has no place in a code flow response")]
    Unexpected(&'static str),
    #[error("the provider names itself in every response (RFC 9207), but `iss` is missing")]
    IssuerMissing,
    #[error("`iss` names another identity provider (mix-up attack?)")]
    WrongIssuer,
}

/// Parameters that may appear once at most.
const SINGLE: &[&str] = &[
    "code",
    "state",
    "iss",
    "error",
    "error_description",
    "error_uri",
    "session_state",
];
/// Parameters of implicit and hybrid responses, which unigate never asks for.
const UNEXPECTED: &[&str] = &["id_token", "access_token", "token_type", "expires_in", "refresh_token"];

/// Reads the callback's query string. `issuer` is the configured issuer;
/// `iss_required` is discovery's
/// `authorization_response_iss_parameter_supported`.
pub fn read(query: &str, issuer: &str, iss_required: bool) -> Result<Response, Refused> {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    for name in SINGLE {
        if pairs.iter().filter(|(k, _)| k == name).count() > 1 {
            return Err(Refused::Repeated(name));
        }
    }
    if let Some(name) = UNEXPECTED.iter().find(|n| pairs.iter().any(|(k, _)| k == *n)) {
        return Err(Refused::Unexpected(name));
    }
    let get = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    match get("iss") {
        Some(iss) if iss != issuer => return Err(Refused::WrongIssuer),
        None if iss_required => return Err(Refused::IssuerMissing),
        _ => {}
    }
    let answer = match (get("error"), get("code")) {
        (Some(error), _) => Answer::Error {
            error: error.chars().take(64).collect(),
            description: get("error_description").map(|d| d.chars().take(300).collect()),
        },
        (None, Some(code)) if !code.is_empty() => Answer::Code(code.to_string()),
        _ => Answer::Nothing,
    };
    Ok(Response {
        state: get("state").unwrap_or_default().to_string(),
        answer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISS: &str = "https://idp.example";

    #[test]
    fn sound_responses_are_read() {
        let r = read("code=c1&state=s1&iss=https%3A%2F%2Fidp.example", ISS, true).unwrap();
        assert_eq!(r.state, "s1");
        assert_eq!(r.answer, Answer::Code("c1".into()));
        // A provider that does not promise `iss` may leave it out.
        let r = read("code=c1&state=s1", ISS, false).unwrap();
        assert_eq!(r.answer, Answer::Code("c1".into()));
        let r = read(
            "error=access_denied&error_description=no&state=s1&iss=https://idp.example",
            ISS,
            true,
        )
        .unwrap();
        assert_eq!(
            r.answer,
            Answer::Error {
                error: "access_denied".into(),
                description: Some("no".into())
            }
        );
        assert_eq!(read("state=s1", ISS, false).unwrap().answer, Answer::Nothing);
        assert_eq!(read("code=&state=s1", ISS, false).unwrap().answer, Answer::Nothing);
    }

    #[test]
    fn refusal_table() {
        let cases = [
            (
                "code=a&code=b&state=s&iss=https://idp.example",
                Refused::Repeated("code"),
            ),
            (
                "code=a&state=s&state=t&iss=https://idp.example",
                Refused::Repeated("state"),
            ),
            (
                "code=a&state=s&iss=https://idp.example&iss=https://evil.example",
                Refused::Repeated("iss"),
            ),
            (
                "code=a&state=s&iss=https://idp.example&iss=https://idp.example",
                Refused::Repeated("iss"),
            ),
            (
                "code=a&state=s&iss=https://idp.example&id_token=x.y.z",
                Refused::Unexpected("id_token"),
            ),
            (
                "code=a&state=s&iss=https://idp.example&access_token=t",
                Refused::Unexpected("access_token"),
            ),
            (
                "code=a&state=s&iss=https://idp.example&token_type=Bearer",
                Refused::Unexpected("token_type"),
            ),
            ("code=a&state=s", Refused::IssuerMissing),
            ("error=access_denied&state=s", Refused::IssuerMissing),
            ("code=a&state=s&iss=https://evil.example", Refused::WrongIssuer),
            ("code=a&state=s&iss=https://idp.example/", Refused::WrongIssuer),
            ("code=a&state=s&iss=", Refused::WrongIssuer),
        ];
        for (query, want) in cases {
            assert_eq!(read(query, ISS, true), Err(want.clone()), "{query}");
        }
        // A wrong `iss` is refused even from a provider that does not
        // promise one.
        assert_eq!(
            read("code=a&state=s&iss=https://evil.example", ISS, false),
            Err(Refused::WrongIssuer)
        );
    }
}
