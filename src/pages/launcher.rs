//! What unigate puts into module pages (the App Launcher, the KaseyaOne
//! icon, the Log In with KaseyaOne button) and its own launcher pages (the
//! App Launcher page, Choose an Instance).

use maud::{Markup, PreEscaped, html};

use super::page;

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
    /// lock, the same on My Modules and in the App Launcher. Decorative
    /// (`aria-hidden`): whoever shows it names the tile in text beside it
    /// (`hint`), which is what a screen reader reads.
    pub fn icon(self) -> PreEscaped<&'static str> {
        PreEscaped(match self {
            TileKind::Arrow => {
                r#"<svg width="16" height="16" viewBox="0 0 16 16" aria-hidden="true" focusable="false" style="vertical-align:middle"><path d="M2 8h10M8 3l5 5-5 5" fill="none" stroke="currentColor" stroke-width="2"/></svg>"#
            }
            TileKind::File => {
                r#"<svg width="16" height="16" viewBox="0 0 16 16" aria-hidden="true" focusable="false" style="vertical-align:middle"><path d="M3 1h7l3 3v11H3z M10 1v3h3" fill="none" stroke="currentColor" stroke-width="1.5"/></svg>"#
            }
            TileKind::Lock => {
                r#"<svg width="16" height="16" viewBox="0 0 16 16" aria-hidden="true" focusable="false" style="vertical-align:middle"><rect x="3" y="7" width="10" height="8" rx="1" fill="currentColor"/><path d="M5 7V5a3 3 0 0 1 6 0v2" fill="none" stroke="currentColor" stroke-width="1.5"/></svg>"#
            }
        })
    }

    /// What the tile does, in words: shown with the tile (the icon's
    /// meaning, for everyone and for screen readers).
    pub fn hint(self) -> &'static str {
        match self {
            TileKind::Arrow => "Log In with KaseyaOne",
            TileKind::File => "Choose an instance",
            TileKind::Lock => "Log in with your module credentials",
        }
    }

    fn name(self) -> &'static str {
        match self {
            TileKind::Arrow => "arrow",
            TileKind::File => "file",
            TileKind::Lock => "lock",
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

/// The App Launcher icon: a grid of nine squares.
const GRID_ICON: &str = r#"<svg width="18" height="18" viewBox="0 0 18 18" aria-hidden="true" focusable="false"><path fill="currentColor" d="M1 1h4v4H1zM7 1h4v4H7zM13 1h4v4h-4zM1 7h4v4H1zM7 7h4v4H7zM13 7h4v4h-4zM1 13h4v4H1zM7 13h4v4H7zM13 13h4v4h-4z"/></svg>"#;

/// The launcher's own style, every selector under `#unigate-launcher`.
pub(super) const LAUNCHER_CSS: &str = include_str!("launcher.css");

/// The menu behaviour: an IIFE (no globals) that turns the `<details>`
/// into an ARIA menu button.
const LAUNCHER_JS: &str = include_str!("launcher.js");

/// A tile's text: its name, then what it does.
fn tile_text(t: &LauncherTile, class: &str) -> Markup {
    let hint = match t.tile {
        TileKind::File if t.instances > 1 => format!("{} ({} instances)", t.tile.hint(), t.instances),
        _ => t.tile.hint().to_string(),
    };
    html! {
        span class={ (class) "-text" } {
            span class={ (class) "-name" } { (t.display_name) } " "
            span class={ (class) "-hint" } { (hint) }
        }
    }
}

/// The App Launcher unigate puts at the start of KaseyaOne users' module
/// pages: an icon that opens a menu of the user's modules. One element,
/// everything in it named `unigate-…` so it meets nothing of the module's.
///
/// Without script (or where the module's Content-Security-Policy blocks
/// inline script) it is a `<details>` disclosure: the icon opens and
/// closes a list of links, Tab goes through them. The inline script turns
/// it into an ARIA menu button: `aria-haspopup="menu"`, `aria-expanded`,
/// `aria-controls`; `role="menu"` of `role="menuitem"` links; arrow keys,
/// Home, End and a first letter move focus; Escape closes and returns to
/// the button; Tab, a click or focus elsewhere closes it.
pub fn launcher_snippet(tiles: &[LauncherTile]) -> String {
    // In a landmark of its own: a module page's content is expected to be
    // in landmarks, and the launcher is navigation.
    html! {
        nav #unigate-launcher-region aria-label="KaseyaOne App Launcher" {
        details #unigate-launcher {
            summary #unigate-launcher-button title="App Launcher" aria-label="App Launcher" { (PreEscaped(GRID_ICON)) }
            nav #unigate-launcher-panel aria-labelledby="unigate-launcher-label" {
                div #unigate-launcher-label .unigate-launcher-title { "Kaseya" span { "One" } " modules" }
                @if tiles.is_empty() { p.unigate-launcher-empty { "No other modules." } }
                ul #unigate-launcher-menu {
                    @for t in tiles {
                        li {
                            a.unigate-tile href=(t.url) data-module=(t.name) data-tile=(t.tile.name()) {
                                (tile_text(t, "unigate-tile")) (t.tile.icon())
                            }
                        }
                    }
                    li { a.unigate-launcher-all href="/_unigate/launcher" { "All modules" } }
                }
            }
            style { (PreEscaped(LAUNCHER_CSS)) }
            script { (PreEscaped(LAUNCHER_JS)) }
        }
        }
    }
    .into_string()
}

/// The KaseyaOne icon unigate appends to the pages of users logged in with
/// module credentials: a link that logs in with KaseyaOne.
pub fn kaseyaone_icon_snippet() -> String {
    html! {
        nav #unigate-kaseyaone aria-label="KaseyaOne" style="position:fixed;top:6px;right:12px;z-index:2147483647;font:14px system-ui,sans-serif" {
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

/// The App Launcher as a page of its own (`/_unigate/launcher`).
pub fn launcher(user: &str, tiles: &[LauncherTile]) -> String {
    page(
        "App Launcher",
        html! {
            h1 { "App Launcher" }
            p.muted { "Logged in with KaseyaOne as " (user) }
            @if tiles.is_empty() { p { "You have no modules." } }
            ul #launcher-tiles .tiles {
                @for t in tiles {
                    li {
                        a.tile href=(t.url) data-module=(t.name) data-tile=(t.tile.name()) {
                            (t.tile.icon()) (tile_text(t, "tile"))
                        }
                    }
                }
            }
            p.muted { "Not seeing a module? It appears once Unified Login is enabled for it and you are in its access group; ask your KaseyaOne administrator." }
        },
    )
}

/// Choose an Instance: the tenants of one module the user may open, as
/// `(name, display name, url)`.
pub fn choose_instance(module: &str, instances: &[(String, String, String)]) -> String {
    page(
        "Choose an Instance",
        html! {
            h1 { "Choose an Instance" }
            p { (module) " has several instances you can access. Choose which one to open; your choice is remembered." }
            ul #instances .tiles {
                @for (name, display, url) in instances {
                    li { a.instance.tile href=(url) data-instance=(name) { (TileKind::File.icon()) span.tile-text { span.tile-name { (display) } } } }
                }
            }
        },
    )
}
