//! unigate's own HTML pages (errors, denials, logout, the link page) and
//! what it puts into module pages (`launcher`). maud escapes every
//! interpolated value.
//!
//! Every page has `lang`, a `<title>`, a `<main>` with one `<h1>`, labelled
//! form fields, and colours of at least 4.5:1 contrast (WCAG AA).

use maud::{DOCTYPE, Markup, PreEscaped, html};

mod launcher;

pub use launcher::{
    LauncherTile, TileKind, choose_instance, kaseyaone_icon_snippet, launcher, launcher_snippet, login_button_snippet,
};

const CSS: &str = r#"
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:#eef1f6;color:#1d2433}
header{background:#0b1f3a;color:#fff;padding:12px 24px;font-weight:700}header span{color:#4fb3ff}
main{max-width:560px;margin:48px auto;background:#fff;border-radius:8px;box-shadow:0 1px 4px rgba(0,0,0,.12);padding:28px}
@media (max-width:600px){main{margin:16px 8px;padding:20px}}
h1{font-size:21px;margin:0 0 14px}a{color:#1565c0}.muted{color:#5b6577;font-size:13px}code{background:#f1f3f7;padding:1px 4px;overflow-wrap:anywhere}
a:focus-visible,button:focus-visible,input:focus-visible{outline:3px solid #1565c0;outline-offset:2px}
label{display:block;font-weight:600;margin:14px 0 4px}
input:not([type=hidden]){display:block;width:100%;box-sizing:border-box;padding:8px 10px;border:1px solid #6b7588;border-radius:4px;font:inherit;color:inherit;background:#fff}
button{padding:9px 18px;border:0;border-radius:4px;background:#1565c0;color:#fff;font:inherit;font-weight:600;cursor:pointer}
.error{color:#b3261e;background:#fdf0ef;border-left:4px solid #b3261e;padding:8px 12px}
.ways-out{margin-top:22px;border-top:1px solid #e3e7ee;padding-top:8px}
form.way-out{margin:1em 0}button.link{background:none;color:#1565c0;padding:0;font-weight:400;text-decoration:underline}
ul.tiles{list-style:none;padding:0}ul.tiles li{margin:8px 0}
a.tile{display:inline-flex;align-items:center;gap:8px}.tile-name{font-weight:600}.tile-hint{color:#5b6577;font-size:13px}
.tile-text{display:inline-flex;flex-direction:column}
"#;

/// A page in KaseyaOne's look: `title` in the tab, `body` in `<main>`.
pub fn page(title: &str, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · KaseyaOne" }
                style { (PreEscaped(CSS)) }
            }
            body {
                header { "Kaseya" span { "One" } " · Unified Login" }
                main { (body) }
            }
        }
    }
    .into_string()
}

/// How a page names a route: the module's display name, with the
/// instance's when the route is one ("BMS · Acme West"), as Choose an
/// Instance names them.
pub fn module_name(route: &crate::config::route::Route) -> String {
    match &route.instance {
        Some(i) => format!("{} · {}", route.display_name, i.display_name),
        None => route.display_name.clone(),
    }
}

pub fn unknown_host(host: &str) -> String {
    page(
        "Not found",
        html! {
            h1 { "There is no module here" }
            p { "No module is served at " code { (host) } ". Check the address." }
        },
    )
}

/// A request path that could mean two different pages: refused, not guessed.
pub fn bad_path(why: &str) -> String {
    page(
        "Bad address",
        html! {
            h1 { "This address cannot be opened" }
            p { "Its path could be read in more than one way (" (why) "), so it was refused. Check the link, or go to the " a href="/" { "start page" } "." }
        },
    )
}

/// The ways out of a refusal page: the KaseyaOne account that was used,
/// logging out of it to use another, and KaseyaOne's My Modules.
#[derive(Debug, Clone, Copy, Default)]
pub struct WaysOut<'a> {
    /// The KaseyaOne account used (its email, else its username), when known.
    pub account: Option<&'a str>,
    /// Where "Log out of KaseyaOne" goes (unigate's logout, which ends the
    /// KaseyaOne session too).
    pub logout: &'a str,
    /// The logout confirmation token for this browser, when the page can
    /// carry it: the way out is then a form that logs out at once (the
    /// person asked for it here), rather than a link to a confirmation.
    pub logout_token: Option<&'a str>,
    /// KaseyaOne's My Modules, when known.
    pub my_modules: Option<&'a str>,
}

fn ways_out(w: &WaysOut<'_>) -> Markup {
    html! {
        div.ways-out #ways-out {
            @if let Some(a) = w.account {
                p.muted { "You used the KaseyaOne account " b { (a) } "." }
            }
            @if let Some(token) = w.logout_token {
                form.way-out method="post" action=(w.logout) {
                    input type="hidden" name="token" value=(token);
                    button.link type="submit" { "Log out of KaseyaOne / use another account" }
                    @if let Some(m) = w.my_modules {
                        " · " a href=(m) { "Back to My Modules" }
                    }
                }
            } @else {
                p {
                    a href=(w.logout) { "Log out of KaseyaOne / use another account" }
                    @if let Some(m) = w.my_modules {
                        " · " a href=(m) { "Back to My Modules" }
                    }
                }
            }
        }
    }
}

/// A user outside the module's access groups. `module`: as `module_name`
/// names it.
pub fn forbidden(module: &str, groups: &[String], ways: &WaysOut<'_>) -> String {
    page(
        "No access",
        html! {
            h1 #refusal data-reason="forbidden" { "You do not have access to " (module) }
            p { "You are logged in with KaseyaOne, but your account is not a member of the access group assigned to this module"
                @if !groups.is_empty() { " (" (groups.join(", ")) ")" } "." }
            p { "Ask your KaseyaOne administrator to add you to that access group. If you are an administrator, see Access Groups (role-based access control)." }
            (ways_out(ways))
        },
    )
}

/// A part of a module a rule keeps for some groups (`need`), or for no
/// one (`need` empty).
pub fn area_forbidden(module: &str, need: &[String], ways: &WaysOut<'_>) -> String {
    page(
        "No access",
        html! {
            h1 #refusal data-reason="area-forbidden" { "You do not have access to this part of " (module) }
            @if need.is_empty() {
                p { "This part of " (module) " is closed to everyone." }
            } @else {
                p { "You are logged in with KaseyaOne and may use " (module) ", but this part of it is only for members of "
                    @if need.len() == 1 { "the access group " strong { (need[0]) } } @else { "one of the access groups " strong { (need.join(", ")) } }
                    ", and your account is not." }
                p { "Ask your KaseyaOne administrator to add you to that access group." }
            }
            (ways_out(ways))
        },
    )
}

pub fn idp_error(error: &str, description: Option<&str>, retry: &str) -> String {
    page(
        "Login failed",
        html! {
            h1 { "KaseyaOne did not log you in" }
            p { "The identity provider answered: " code { (error) } }
            @if let Some(d) = description { p.muted { (d) } }
            p { a href=(retry) { "Try logging in again" } }
        },
    )
}

pub fn login_expired(retry: &str) -> String {
    page(
        "Login expired",
        html! {
            h1 { "This login has expired" }
            p { "The login took too long, was already used, or was started in another browser." }
            p { a href=(retry) { "Log in again" } }
        },
    )
}

pub fn unavailable(what: &str) -> String {
    page(
        "Temporarily unavailable",
        html! {
            h1 { "Logging in is unavailable right now" }
            p { (what) " Try again in a minute. If you are already logged in, your session keeps working." }
        },
    )
}

pub fn logged_out(login: &str) -> String {
    page(
        "Logged out",
        html! {
            h1 { "You are logged out" }
            p { a href=(login) { "Log in again" } }
        },
    )
}

pub fn upstream_down(module: &str) -> String {
    page(
        "Module unavailable",
        html! {
            h1 { (module) " is not answering" }
            p { "The module could not be reached. Try again in a minute; if it persists, tell the module's administrator." }
        },
    )
}

/// Why the module account does not fit, and what to fix.
pub fn account_refused(
    module: &str,
    user: &crate::session::Identity,
    refusal: &crate::accounts::Refusal,
    ways: &WaysOut<'_>,
) -> String {
    use crate::accounts::Refusal;
    let (title, body) = match refusal {
        Refusal::NoAccount => (
            "No module account",
            html! {
                h1 #refusal data-reason="no_account" { "You have no " (module) " account" }
                p { "You are logged in with KaseyaOne as " b { (user.username) } " (" (user.email) "), but " (module)
                    " has no user account with that email and username." }
                p { "Ask the module's administrator to create your account (or to enable Automatic User Provisioning for the module), then accept its invitation and try again." }
            },
        ),
        Refusal::EmailMismatch { module_email } => (
            "Email does not match",
            html! {
                h1 #refusal data-reason="email_mismatch" { "Your " (module) " email does not match KaseyaOne" }
                p { "Your " (module) " account " b { (user.username) } " has the email " code { (module_email) }
                    ", but your KaseyaOne account has " code { (user.email) } "." }
                p { "Make the email and username of your module account match those of your KaseyaOne account, then try again." }
            },
        ),
        Refusal::UsernameMismatch { module_username } => (
            "Username does not match",
            html! {
                h1 #refusal data-reason="username_mismatch" { "Your " (module) " username does not match KaseyaOne" }
                p { "The " (module) " account with your email " code { (user.email) } " has the username " code { (module_username) }
                    ", but your KaseyaOne username is " code { (user.username) } "." }
                p { "Make the email and username of your module account match those of your KaseyaOne account, then try again." }
            },
        ),
        Refusal::NotActivated { username } => (
            "Account not set up",
            html! {
                h1 #refusal data-reason="not_activated" { "Your " (module) " account is not set up yet" }
                p { "The account " b { (username) } " exists but has not been completely set up." }
                p { "Click the activation link in the module's invitation email and create a password for the account, then try Log In with KaseyaOne again." }
            },
        ),
    };
    let shown = user.account();
    let ways = WaysOut {
        account: ways.account.or(shown.as_deref()),
        ..*ways
    };
    page(title, html! { (body) (ways_out(&ways)) })
}

pub fn accounts_unavailable(module: &str) -> String {
    page(
        "Temporarily unavailable",
        html! {
            h1 { "Your " (module) " account cannot be checked right now" }
            p { "The module's account directory could not be reached. Try again in a minute; if it persists, tell the module's administrator." }
        },
    )
}

/// The link page: module credentials, asked once per instance.
#[derive(Debug, Clone, Copy)]
pub struct LinkForm<'a> {
    /// The module (and instance), as `module_name` names it.
    pub module: &'a str,
    /// The username to show filled in: what was typed before a refused
    /// attempt (the password never is).
    pub username: &'a str,
    /// Why the last attempt was refused (never which field was wrong).
    pub error: Option<&'a str>,
    pub return_to: &'a str,
    pub csrf: &'a str,
    /// The KaseyaOne account, and the ways out of the page.
    pub ways: WaysOut<'a>,
}

pub fn link_form(f: &LinkForm<'_>) -> String {
    let module = f.module;
    // After a refused attempt the username stays and the password is asked
    // again: focus goes to the password.
    let again = f.error.is_some() && !f.username.is_empty();
    let described = f.error.map(|_| "link-error");
    page(
        "Link your module account",
        html! {
            h1 { "Link your " (module) " account" }
            p { "This is your first login to " (module) " from KaseyaOne. Log in once with your module credentials to link your module account with your KaseyaOne account"
                @if let Some(a) = f.ways.account { " " b { (a) } } "." }
            @if let Some(e) = f.error { p #link-error .error role="alert" { (e) } }
            form method="post" action="/_unigate/link" {
                input type="hidden" name="return_to" value=(f.return_to);
                input type="hidden" name="csrf_token" value=(f.csrf);
                label for="module_username" { "Module username" }
                input #module_username type="text" name="module_username" value=(f.username) autocomplete="username"
                    autocapitalize="none" spellcheck="false" required autofocus[!again] aria-describedby=[described];
                label for="module_password" { "Module password" }
                input #module_password type="password" name="module_password" autocomplete="current-password"
                    required autofocus[again] aria-describedby=[described];
                p { button type="submit" { "Link account" } }
            }
            p.muted { "Unified Login checks these credentials with the module once and keeps only the link, never the password." }
            // (The account is named above.)
            (ways_out(&WaysOut { account: None, ..f.ways }))
        },
    )
}

/// A link form that did not come from this session's link page.
pub fn link_refused(module: &str, link_page: &str, ways: &WaysOut<'_>) -> String {
    page(
        "Link refused",
        html! {
            h1 #refusal data-reason="link_forged" { "This request to link your " (module) " account was refused" }
            p { "It did not come from your link page, so nothing was sent to " (module) "." }
            p { a href=(link_page) { "Open the link page again" } }
            (ways_out(ways))
        },
    )
}

pub fn unified_login_off(module: &str) -> String {
    page(
        "Unified Login not enabled",
        html! {
            h1 { "Log In with KaseyaOne is not enabled for " (module) }
            p { "Log in with your module credentials. An administrator of both KaseyaOne and the module can enable Log In with KaseyaOne for it." }
            p { a href="/" { "Go to " (module) } }
        },
    )
}

pub fn kaseyaone_required(module: &str, login: &str) -> String {
    page(
        "Log In with KaseyaOne required",
        html! {
            h1 { (module) " requires Log In with KaseyaOne" }
            p { "Module credentials are turned off for your account. Log in with your KaseyaOne account instead." }
            p { a #kaseyaone-login href=(login) { "Log In with KaseyaOne" } }
        },
    )
}

pub fn no_healthy_upstream(module: &str) -> String {
    page(
        "Module unavailable",
        html! {
            h1 { (module) " is unavailable" }
            p { "Every server of this module is failing its health checks. You will get through as soon as one recovers; try again in a minute." }
        },
    )
}

/// A request with more values of a module's session cookies than a
/// browser sends.
pub fn too_many_cookies(module: &str) -> String {
    page(
        "Too many cookies",
        html! {
            h1 { "Too many " (module) " session cookies" }
            p { "Your browser sent more copies of " (module) "''s session cookie than are accepted. Clear this site's cookies in your browser, then open " (module) " again." }
        },
    )
}

/// Module credentials posted while a KaseyaOne session is live.
pub fn module_login_beside_kaseyaone(module: &str, user: &str, logout: &str) -> String {
    page(
        "Already logged in with KaseyaOne",
        html! {
            h1 { "You are logged in to " (module) " with KaseyaOne" }
            p { "You are logged in as " b { (user) } " with KaseyaOne, so module credentials cannot be used in this browser now. To sign in with module credentials, log out first." }
            p { a #kaseyaone-logout href=(logout) { "Log out" } " · " a href="/" { "Back to " (module) } }
        },
    )
}

/// A module login unigate cannot read exactly as the module would.
pub fn bad_module_login(module: &str, why: &str) -> String {
    page(
        "Login not accepted",
        html! {
            h1 { "This login to " (module) " was not accepted" }
            p { (why) }
        },
    )
}

#[cfg(test)]
mod tests;
