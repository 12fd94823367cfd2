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
    /// The account's email, when known.
    pub account: Option<&'a str>,
    /// Where "Log out of KaseyaOne" goes (unigate's logout, which ends the
    /// KaseyaOne session too).
    pub logout: &'a str,
    /// KaseyaOne's My Modules, when known.
    pub my_modules: Option<&'a str>,
}

fn ways_out(w: &WaysOut<'_>) -> Markup {
    html! {
        div.ways-out #ways-out {
            @if let Some(a) = w.account {
                p.muted { "You used the KaseyaOne account " b { (a) } "." }
            }
            p {
                a href=(w.logout) { "Log out of KaseyaOne / use another account" }
                @if let Some(m) = w.my_modules {
                    " · " a href=(m) { "Back to My Modules" }
                }
            }
        }
    }
}

pub fn forbidden(module: &str, groups: &[String], ways: &WaysOut<'_>) -> String {
    page(
        "No access",
        html! {
            h1 { "You do not have access to " (module) }
            p { "You are logged in with KaseyaOne, but your account is not a member of the access group assigned to this module"
                @if !groups.is_empty() { " (" (groups.join(", ")) ")" } "." }
            p { "Ask your KaseyaOne administrator to add you to that access group. If you are an administrator, see Access Groups (role-based access control)." }
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

/// The kind of an App Launcher tile, as on KaseyaOne's My Modules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TileKind {
    /// Unified Login on, one instance: straight in.
    Arrow,
    /// Several instances: Choose an Instance.
    File,
    /// Unified Login not enabled: the module's own login.
    Lock,
}

impl TileKind {
    /// A small inline SVG (no font needed): the seed's arrow, file and
    /// lock, the same on My Modules and in the App Launcher.
    pub fn icon(self) -> PreEscaped<&'static str> {
        PreEscaped(match self {
            TileKind::Arrow => {
                r#"<svg width="16" height="16" viewBox="0 0 16 16" aria-label="arrow" style="vertical-align:middle"><path d="M2 8h10M8 3l5 5-5 5" fill="none" stroke="currentColor" stroke-width="2"/></svg>"#
            }
            TileKind::File => {
                r#"<svg width="16" height="16" viewBox="0 0 16 16" aria-label="file" style="vertical-align:middle"><path d="M3 1h7l3 3v11H3z M10 1v3h3" fill="none" stroke="currentColor" stroke-width="1.5"/></svg>"#
            }
            TileKind::Lock => {
                r#"<svg width="16" height="16" viewBox="0 0 16 16" aria-label="lock" style="vertical-align:middle"><rect x="3" y="7" width="10" height="8" rx="1" fill="currentColor"/><path d="M5 7V5a3 3 0 0 1 6 0v2" fill="none" stroke="currentColor" stroke-width="1.5"/></svg>"#
            }
        })
    }

    fn hint(self) -> &'static str {
        match self {
            TileKind::Arrow => "Log in with KaseyaOne",
            TileKind::File => "Choose an instance",
            TileKind::Lock => {
                "Log In with KaseyaOne is not enabled for this module: log in with your module credentials"
            }
        }
    }
}

/// A module tile in unigate's App Launcher.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LauncherTile {
    pub name: String,
    pub display_name: String,
    pub url: String,
    pub tile: TileKind,
    /// Instances the user may choose from (file tiles).
    pub instances: usize,
}

/// The App Launcher unigate appends to KaseyaOne users' module pages: an
/// icon that opens a menu of the user's modules. Self-contained: inline
/// style, no script (`<details>` opens and closes it).
pub fn launcher_snippet(tiles: &[LauncherTile]) -> String {
    html! {
        details #unigate-launcher style="position:fixed;top:6px;right:12px;z-index:2147483647;font:14px system-ui,sans-serif;color:#1d2433" {
            summary title="App Launcher" aria-label="App Launcher"
              style="list-style:none;cursor:pointer;display:block;width:34px;height:34px;border-radius:17px;background:#0b1f3a;color:#fff;text-align:center;line-height:34px;font-size:18px;margin-left:auto" { "▦" }
            div #unigate-launcher-menu style="position:absolute;right:0;top:40px;width:250px;background:#fff;border:1px solid #d8dfeb;border-radius:6px;box-shadow:0 4px 14px rgba(0,0,0,.18);padding:8px" {
                div style="font-weight:700;padding:4px 8px 8px" { "Kaseya" span style="color:#1565c0" { "One" } " modules" }
                @if tiles.is_empty() { div style="padding:6px 8px;color:#5b6577" { "No other modules." } }
                @for t in tiles {
                    a.unigate-tile href=(t.url) data-module=(t.name) data-tile=(format!("{:?}", t.tile).to_lowercase()) title=(t.tile.hint())
                      style="display:flex;justify-content:space-between;padding:7px 8px;border-radius:4px;color:#1d2433;text-decoration:none" {
                        span { (t.display_name) } span { (t.tile.icon()) }
                    }
                }
                a href="/_unigate/launcher" style="display:block;padding:6px 8px 2px;font-size:12px;color:#1565c0" { "All modules" }
            }
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

pub fn launcher(user: &str, tiles: &[LauncherTile]) -> String {
    page(
        "App Launcher",
        html! {
            h1 { "App Launcher" }
            p.muted { "Logged in with KaseyaOne as " (user) }
            @if tiles.is_empty() { p { "You have no modules." } }
            ul #launcher-tiles style="list-style:none;padding:0" {
                @for t in tiles {
                    li style="margin:6px 0" {
                        a.tile href=(t.url) data-module=(t.name) data-tile=(format!("{:?}", t.tile).to_lowercase()) title=(t.tile.hint()) {
                            (t.tile.icon()) " " (t.display_name)
                        }
                        @if t.tile == TileKind::File { span.muted { " · " (t.instances) " instances" } }
                        @if t.tile == TileKind::Lock { span.muted { " · module credentials" } }
                    }
                }
            }
            p.muted { "Not seeing a module? It appears once Unified Login is enabled for it and you are in its access group; ask your KaseyaOne administrator." }
        },
    )
}

/// Choose an Instance: the tenants of one module the user may open.
pub fn choose_instance(module: &str, instances: &[(String, String, String)]) -> String {
    page(
        "Choose an Instance",
        html! {
            h1 { "Choose an Instance" }
            p { (module) " has several instances you can access. Choose which one to open; your choice is remembered." }
            ul #instances style="list-style:none;padding:0" {
                @for (name, display, url) in instances {
                    li style="margin:8px 0" { a.instance href=(url) data-instance=(name) { (TileKind::File.icon()) " " (display) } }
                }
            }
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
pub fn link_form(module: &str, user: &str, error: Option<&str>, return_to: &str, csrf: &str) -> String {
    page(
        "Link your module account",
        html! {
            h1 { "Link your " (module) " account" }
            p { "This is your first login to " (module) " from KaseyaOne. Log in once with your module credentials to link your module account with your KaseyaOne account " b { (user) } "." }
            @if let Some(e) = error { p #link-error style="color:#b3261e" { (e) } }
            form method="post" action="/_unigate/link" {
                input type="hidden" name="return_to" value=(return_to);
                input type="hidden" name="csrf_token" value=(csrf);
                label for="module_username" { "Module username" }
                input #module_username name="module_username" autocomplete="username" required style="width:100%;padding:8px";
                label for="module_password" { "Module password" }
                input #module_password type="password" name="module_password" autocomplete="current-password" required style="width:100%;padding:8px";
                p { button type="submit" style="padding:9px 16px" { "Link account" } }
            }
            p.muted { "Unified Login checks these credentials with the module once and keeps only the link, never the password." }
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
mod tests {
    use super::*;

    /// A page's visible text: its body without markup (tags, attributes,
    /// URLs), and its title.
    fn visible(html: &str) -> String {
        let title = html.split_once("<title>").and_then(|(_, t)| t.split_once("</title>"));
        let body = html.split_once("<body>").map_or(html, |(_, b)| b);
        let mut out = title.map(|(t, _)| t.to_string()).unwrap_or_default();
        let mut in_tag = false;
        for c in body.chars() {
            match c {
                '<' => in_tag = true,
                '>' => in_tag = false,
                _ if !in_tag => out.push(c),
                _ => {}
            }
        }
        out
    }

    #[test]
    fn end_user_pages_speak_of_kaseyaone_and_the_module_never_of_unigate() {
        let id = crate::session::Identity::alice();
        let tile = LauncherTile {
            name: "portal".into(),
            display_name: "Portal".into(),
            url: "https://portal.example/".into(),
            tile: TileKind::Arrow,
            instances: 0,
        };
        let groups = vec!["portal-users".to_string()];
        let choices = vec![("east".to_string(), "East".to_string(), "/x".to_string())];
        let pages = [
            unknown_host("x.example"),
            bad_path("a reason"),
            forbidden("Portal", &groups, &WaysOut::default()),
            idp_error("access_denied", Some("no"), "/retry"),
            login_expired("/retry"),
            unavailable("The Unified Login session store cannot be reached."),
            logged_out("/login"),
            upstream_down("Portal"),
            launcher("alice@acme.example", std::slice::from_ref(&tile)),
            choose_instance("BMS", &choices),
            account_refused("Portal", &id, &crate::accounts::Refusal::NoAccount, &WaysOut::default()),
            accounts_unavailable("Portal"),
            link_form("BMS", "alice@acme.example", Some("Wrong."), "/", "t"),
            unified_login_off("Legacy"),
            kaseyaone_required("Portal", "/login"),
            no_healthy_upstream("Portal"),
            too_many_cookies("Portal"),
            module_login_beside_kaseyaone("Portal", "alice@acme.example", "/logout"),
            bad_module_login("Portal", "Log in with the login form."),
        ];
        for p in &pages {
            let text = visible(p);
            assert!(!text.to_lowercase().contains("unigate"), "{text}");
            assert!(!text.trim().is_empty());
        }
    }

    #[test]
    fn tile_icons_are_inline_svg_not_characters_a_font_must_have() {
        for t in [TileKind::Arrow, TileKind::File, TileKind::Lock] {
            let svg = t.icon().0;
            assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"), "{svg}");
            assert!(svg.is_ascii(), "{svg}");
        }
    }
}
