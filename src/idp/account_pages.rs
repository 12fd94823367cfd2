//! The pages about which account a person uses: the page a welcome link
//! opens (create a password, set up the authenticator app) and "You are
//! logged in as carol" when a login hint names someone else. maud escapes
//! every interpolated value.

use maud::{Markup, html};

use super::pages::{layout, message};

/// What the welcome page shows of the new user.
pub struct WelcomeView<'a> {
    pub token: &'a str,
    pub username: &'a str,
    pub company: &'a str,
    /// The TOTP secret in groups of four.
    pub secret: &'a str,
    pub otpauth_uri: &'a str,
}

pub fn welcome_form(v: &WelcomeView<'_>, error: Option<&str>) -> Markup {
    layout(
        "Create your password",
        None,
        html! {
            div.card {
                h1 { "Welcome to KaseyaOne" }
                (message(error, None))
                p { "You are logging in for the first time: create your password and set up your authenticator app." }
                p.muted { "Username: " strong { (v.username) } " · Company Name: " strong { (v.company) } }
                form method="post" action="/welcome" {
                    input type="hidden" name="token" value=(v.token);
                    label for="password" { "Password" }
                    input #password type="password" name="password" autocomplete="new-password" minlength="12" required autofocus;
                    label for="confirm" { "Confirm password" }
                    input #confirm type="password" name="confirm" autocomplete="new-password" minlength="12" required;
                    p.muted { "At least 12 characters." }
                    label { "Authenticator app" }
                    p.muted { "KaseyaOne asks for a verification code each time you log in. Add this key to your authenticator app (time-based, 6 digits):" }
                    code.secret #totp-secret { (v.secret) }
                    p.muted { "Or open this setup address with it: " a #otpauth href=(v.otpauth_uri) { (v.otpauth_uri) } }
                    label for="code" { "Verification code" }
                    input #code type="text" name="code" inputmode="numeric" pattern="[0-9]{6}" maxlength="6" autocomplete="one-time-code" required;
                    p.muted { "Enter the 6-digit code your app now shows for KaseyaOne." }
                    button.primary type="submit" { "Create password" }
                }
            }
        },
    )
}

pub fn welcome_done(username: &str, company: &str) -> Markup {
    layout(
        "Password created",
        None,
        html! {
            div.card {
                h1 { "Your password is created" }
                p { "Your KaseyaOne account is set up. Log in with your username, company name and password, then the verification code from your authenticator app." }
                p.muted { "Username: " strong { (username) } " · Company Name: " strong { (company) } }
                p { a href="/login" { "Log in to KaseyaOne" } }
            }
        },
    )
}

/// The longest `login_hint` a page shows.
const MAX_SHOWN_HINT: usize = 64;

/// A `login_hint` as a page may show it: only what looks like a username or
/// an email address (ASCII letters and digits, `.`, `_`, `-`, `@`, `+`; at
/// most 64 characters). Anything else is the application's (or an
/// attacker's) free text, which the page must not speak: `None`.
pub fn shown_hint(hint: &str) -> Option<&str> {
    let h = hint.trim();
    let plausible = !h.is_empty()
        && h.len() <= MAX_SHOWN_HINT
        && h.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-@+".contains(&b));
    plausible.then_some(h)
}

/// `current`: the session's username; `hint`: whom the application asked
/// for, if it may be shown (`shown_hint`); `choice`: the form's CSRF token.
pub fn choose_account(current: &str, current_company: &str, hint: Option<&str>, choice: &str) -> Markup {
    let other = match hint {
        Some(h) => h.to_string(),
        None => "another user".to_string(),
    };
    layout(
        "Choose an account",
        None,
        html! {
            div.card {
                h1 { "Choose an account" }
                p { "You are logged in as " strong { (current) } ". Continue as " (current) ", or log in as " (other) "." }
                p.muted { (current) " · " (current_company) }
                form method="post" action="/authorize/choose" {
                    input type="hidden" name="choice" value=(choice);
                    input type="hidden" name="action" value="continue";
                    button.primary type="submit" { "Continue as " (current) }
                }
                form method="post" action="/authorize/choose" {
                    input type="hidden" name="choice" value=(choice);
                    input type="hidden" name="action" value="switch";
                    button.secondary type="submit" { "Log in as " (other) }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::shown_hint;

    #[test]
    fn only_usernames_and_emails_are_shown() {
        assert_eq!(shown_hint(" alice "), Some("alice"));
        assert_eq!(shown_hint("alice.o'neil"), None);
        assert_eq!(shown_hint("a+b_c-d@acme-msp.example"), Some("a+b_c-d@acme-msp.example"));
        assert_eq!(shown_hint(&"a".repeat(64)).map(str::len), Some(64));
        assert_eq!(shown_hint(&"a".repeat(65)), None);
        assert_eq!(shown_hint("alice. Your account is locked, call 555"), None);
        assert_eq!(shown_hint("ålice"), None);
        assert_eq!(shown_hint(""), None);
    }
}
