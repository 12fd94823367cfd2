//! unigate's own HTML pages (errors, denials, logout). maud escapes every
//! interpolated value.

use maud::{DOCTYPE, Markup, PreEscaped, html};

const CSS: &str = r#"
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:#eef1f6;color:#1d2433}
header{background:#0b1f3a;color:#fff;padding:12px 24px;font-weight:700}header span{color:#4fb3ff}
main{max-width:560px;margin:48px auto;background:#fff;border-radius:8px;box-shadow:0 1px 4px rgba(0,0,0,.12);padding:28px}
h1{font-size:21px;margin:0 0 14px}a{color:#1565c0}.muted{color:#5b6577;font-size:13px}code{background:#f1f3f7;padding:1px 4px}
"#;

pub fn page(title: &str, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
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

pub fn unknown_host(host: &str) -> String {
    page(
        "Not found",
        html! {
            h1 { "There is no module here" }
            p { "unigate does not serve a module at " code { (host) } ". Check the address." }
        },
    )
}

pub fn forbidden(module: &str, groups: &[String]) -> String {
    page(
        "No access",
        html! {
            h1 { "You do not have access to " (module) }
            p { "You are logged in with KaseyaOne, but your account is not a member of the access group assigned to this module"
                @if !groups.is_empty() { " (" (groups.join(", ")) ")" } "." }
            p { "Ask your KaseyaOne administrator to add you to that access group. If you are an administrator, see Access Groups (role-based access control)." }
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
            p { "unigate could not reach the module. Try again in a minute; if it persists, tell the module's administrator." }
        },
    )
}

/// The App Launcher icon unigate appends to KaseyaOne users' module pages.
/// Self-contained: inline style, no script, one link.
pub fn launcher_snippet() -> String {
    html! {
        div #unigate-launcher style="position:fixed;top:6px;right:12px;z-index:2147483647;font:14px system-ui,sans-serif" {
            a href="/_unigate/launcher" title="App Launcher" aria-label="App Launcher"
              style="display:inline-block;width:34px;height:34px;border-radius:17px;background:#0b1f3a;color:#fff;text-align:center;line-height:34px;text-decoration:none;font-size:18px" { "▦" }
        }
    }
    .into_string()
}

/// The KaseyaOne icon unigate appends to the pages of users logged in with
/// module credentials: a link that logs in with KaseyaOne.
pub fn kaseyaone_icon_snippet() -> String {
    html! {
        div #unigate-kaseyaone style="position:fixed;top:6px;right:12px;z-index:2147483647;font:14px system-ui,sans-serif" {
            a href="/_unigate/login" title="Log In with KaseyaOne" aria-label="Log In with KaseyaOne"
              style="display:inline-block;padding:0 12px;height:34px;border-radius:17px;background:#0b1f3a;color:#fff;line-height:34px;text-decoration:none;font-weight:700" {
                "Kaseya" span style="color:#4fb3ff" { "One" }
            }
        }
    }
    .into_string()
}

/// "Log In with KaseyaOne", placed after the module's login form. A small
/// script passes a username typed into the form as `login_hint`; without
/// script (or under a strict CSP) the link still logs in.
pub fn login_button_snippet() -> String {
    html! {
        div #unigate-login-button style="margin:14px 0;font:15px system-ui,sans-serif" {
            a #unigate-kaseyaone-login href="/_unigate/login"
              style="display:inline-block;padding:9px 16px;border-radius:4px;background:#1565c0;color:#fff;text-decoration:none;font-weight:600" {
                "Log In with KaseyaOne"
            }
            script {
                (PreEscaped(r#"(function(){var a=document.getElementById('unigate-kaseyaone-login');a.addEventListener('click',function(e){var u=document.querySelector('input[name=username],input[name=user],input[type=email],input[name=email]');if(u&&u.value){e.preventDefault();location.href=a.getAttribute('href')+'?login_hint='+encodeURIComponent(u.value);}});})();"#))
            }
        }
    }
    .into_string()
}

/// A module tile in unigate's App Launcher.
pub struct LauncherTile {
    pub name: String,
    pub url: String,
}

pub fn launcher(user: &str, tiles: &[LauncherTile]) -> String {
    page(
        "App Launcher",
        html! {
            h1 { "App Launcher" }
            p.muted { "Logged in with KaseyaOne as " (user) }
            @if tiles.is_empty() { p { "You have no modules." } }
            ul #launcher-tiles {
                @for t in tiles {
                    li { a.tile.arrow href=(t.url) data-module=(t.name) { "➜ " (t.name) } }
                }
            }
            p.muted { "Not seeing a module? It appears once Unified Login is enabled for it and you are in its access group; ask your KaseyaOne administrator." }
        },
    )
}
