use super::*;
use crate::accounts::Refusal;

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

const MODULE: &str = "BMS · Acme West";

fn ways() -> WaysOut<'static> {
    WaysOut {
        account: Some("alice@acme.example"),
        logout: "/_unigate/logout",
        logout_token: None,
        my_modules: Some("https://one.example/"),
    }
}

fn tiles() -> Vec<LauncherTile> {
    [
        ("portal", "Demo Portal", TileKind::Arrow, 0),
        ("bms", "BMS", TileKind::File, 2),
        ("itglue", "IT Glue", TileKind::Lock, 0),
    ]
    .into_iter()
    .map(|(name, display, tile, instances)| LauncherTile {
        name: name.into(),
        display_name: display.into(),
        url: format!("https://{name}.example/"),
        tile,
        instances,
    })
    .collect()
}

fn link(username: &'static str, error: Option<&'static str>) -> String {
    link_form(&LinkForm {
        module: MODULE,
        username,
        error,
        return_to: "/reports",
        csrf: "t",
        ways: ways(),
    })
}

/// Each refusal page that has ways out, by name.
fn refusals() -> Vec<(&'static str, String)> {
    let id = crate::session::Identity::alice();
    let refused = |r: &Refusal| {
        account_refused(
            MODULE,
            &id,
            r,
            &WaysOut {
                account: None,
                ..ways()
            },
        )
    };
    let groups = vec!["bms-users".to_string()];
    vec![
        ("forbidden", forbidden(MODULE, &groups, &ways())),
        ("no_account", refused(&Refusal::NoAccount)),
        (
            "email_mismatch",
            refused(&Refusal::EmailMismatch {
                module_email: "old@acme.example".into(),
            }),
        ),
        (
            "username_mismatch",
            refused(&Refusal::UsernameMismatch {
                module_username: "a.admin".into(),
            }),
        ),
        (
            "not_activated",
            refused(&Refusal::NotActivated {
                username: "alice".into(),
            }),
        ),
        ("link_forged", link_refused(MODULE, "/_unigate/link", &ways())),
    ]
}

/// Every end-user page unigate draws.
fn all_pages() -> Vec<String> {
    let tiles = tiles();
    let choices = vec![("east".to_string(), "Acme East".to_string(), "/x".to_string())];
    let mut pages = vec![
        unknown_host("x.example"),
        bad_path("a reason"),
        idp_error("access_denied", Some("no"), "/retry"),
        login_expired("/retry"),
        unavailable("The Unified Login session store cannot be reached."),
        logged_out("/login"),
        upstream_down("Portal"),
        launcher("alice@acme.example", &tiles),
        launcher("alice@acme.example", &[]),
        choose_instance("BMS", &choices),
        accounts_unavailable("Portal"),
        link("", None),
        link("a.admin", Some("Invalid username/password.")),
        unified_login_off("Legacy"),
        kaseyaone_required("Portal", "/login"),
        no_healthy_upstream("Portal"),
        too_many_cookies("Portal"),
        module_login_beside_kaseyaone("Portal", "alice@acme.example", "/logout"),
        bad_module_login("Portal", "Log in with the login form."),
    ];
    pages.extend(refusals().into_iter().map(|(_, p)| p));
    pages
}

#[test]
fn end_user_pages_speak_of_kaseyaone_and_the_module_never_of_unigate() {
    for p in &all_pages() {
        let text = visible(p);
        assert!(!text.to_lowercase().contains("unigate"), "{text}");
        assert!(!text.trim().is_empty());
    }
}

/// The values of `attr` on the tags of `html`.
fn attrs<'a>(html: &'a str, tag: &str, attr: &str) -> Vec<Option<&'a str>> {
    let open = format!("<{tag}");
    let needle = format!(" {attr}=\"");
    html.match_indices(&open)
        .filter(|(i, _)| html[i + open.len()..].starts_with([' ', '>', '/']))
        .map(|(i, _)| {
            let tag_text = &html[i..i + html[i..].find('>').unwrap()];
            tag_text
                .find(&needle)
                .map(|at| &tag_text[at + needle.len()..])
                .map(|v| &v[..v.find('"').unwrap()])
        })
        .collect()
}

#[test]
fn every_page_has_a_language_a_title_a_main_ordered_headings_and_labelled_fields() {
    for p in &all_pages() {
        assert!(p.starts_with(r#"<!DOCTYPE html><html lang="en">"#), "{p}");
        let title = p
            .split_once("<title>")
            .and_then(|(_, t)| t.split_once("</title>"))
            .unwrap()
            .0;
        assert!(
            title.len() > "KaseyaOne".len() + 3 && title.ends_with("KaseyaOne"),
            "{title}"
        );
        assert_eq!(
            (p.matches("<main>").count(), p.matches("</main>").count()),
            (1, 1),
            "{p}"
        );
        // Headings: one h1, first, and no level skipped.
        let levels: Vec<usize> = p
            .match_indices("<h")
            .filter_map(|(i, _)| p[i + 2..].chars().next()?.to_digit(10))
            .map(|d| d as usize)
            .collect();
        assert_eq!(levels.first(), Some(&1), "{p}");
        assert_eq!(levels.iter().filter(|&&l| l == 1).count(), 1, "{p}");
        assert!(levels.windows(2).all(|w| w[1] <= w[0] + 1), "{levels:?}: {p}");
        // Every field a person fills in has a label.
        let types = attrs(p, "input", "type");
        let ids = attrs(p, "input", "id");
        let labels = attrs(p, "label", "for");
        for (t, id) in types.iter().zip(&ids) {
            if *t == Some("hidden") {
                continue;
            }
            assert!(id.is_some() && labels.contains(id), "an input without a label: {p}");
        }
    }
}

/// WCAG 2 contrast ratio of two `#rrggbb` colours.
fn contrast(a: &str, b: &str) -> f64 {
    let lum = |h: &str| {
        let c = |i: usize| {
            let v = f64::from(u8::from_str_radix(&h[1 + 2 * i..3 + 2 * i], 16).unwrap()) / 255.0;
            if v <= 0.03928 {
                v / 12.92
            } else {
                ((v + 0.055) / 1.055).powf(2.4)
            }
        };
        0.2126 * c(0) + 0.7152 * c(1) + 0.0722 * c(2)
    };
    let (x, y) = (lum(a), lum(b));
    (x.max(y) + 0.05) / (x.min(y) + 0.05)
}

#[test]
fn text_colours_meet_wcag_aa_contrast() {
    // Text colour, background: every pair the pages and the launcher use.
    let text_on = [
        ("#1d2433", "#eef1f6"), // body text on the page
        ("#1d2433", "#ffffff"), // text in main and in the launcher
        ("#1d2433", "#f1f3f7"), // code
        ("#1d2433", "#e8f0fb"), // a launcher tile under the pointer or focus
        ("#5b6577", "#ffffff"), // .muted, hints
        ("#4a5568", "#ffffff"), // launcher hints
        ("#4a5568", "#e8f0fb"),
        ("#1565c0", "#ffffff"), // links, "One"
        ("#1565c0", "#e8f0fb"),
        ("#ffffff", "#0b1f3a"), // the header, the launcher icon
        ("#4fb3ff", "#0b1f3a"), // "One" in the header
        ("#ffffff", "#1565c0"), // buttons
        ("#b3261e", "#fdf0ef"), // the link form's error
    ];
    for (fg, bg) in text_on {
        let r = contrast(fg, bg);
        assert!(r >= 4.5, "{fg} on {bg}: {r:.2}");
    }
    // Every colour in the style sheets is one of those (or a border or a
    // shadow): a new one needs its pair above.
    let known: Vec<&str> = text_on.iter().flat_map(|(a, b)| [*a, *b]).collect();
    let borders = ["#d8dfeb", "#e3e7ee", "#6b7588", "#fff"];
    for css in [CSS, launcher::LAUNCHER_CSS] {
        for (i, _) in css.match_indices('#') {
            let hex: String = css[i..]
                .chars()
                .take_while(|c| *c == '#' || c.is_ascii_hexdigit())
                .collect();
            if hex.len() == 7 || hex.len() == 4 {
                let hex = hex.to_ascii_lowercase();
                assert!(
                    known.contains(&hex.as_str()) || borders.contains(&hex.as_str()),
                    "{hex} has no contrast check"
                );
            }
        }
    }
}

#[test]
fn tile_icons_are_inline_svg_not_characters_a_font_must_have() {
    for t in [TileKind::Arrow, TileKind::File, TileKind::Lock] {
        let svg = t.icon().0;
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"), "{svg}");
        assert!(svg.is_ascii(), "{svg}");
        // Decorative: the tile's text says what it does.
        assert!(
            svg.contains(r#"aria-hidden="true""#) && svg.contains(r#"focusable="false""#),
            "{svg}"
        );
        assert!(!svg.contains("aria-label"), "{svg}");
    }
}

#[test]
fn the_app_launcher_is_one_namespaced_element_with_a_menu_a_screen_reader_can_use() {
    let html = launcher_snippet(&tiles());
    // One element, a navigation landmark, which the module's page gets
    // at the start of <body>.
    assert!(
        html.starts_with(
            r#"<nav id="unigate-launcher-region" aria-label="KaseyaOne App Launcher"><details id="unigate-launcher">"#
        ),
        "{html}"
    );
    assert!(
        html.ends_with("</details></nav>") && html.matches("<details").count() == 1,
        "{html}"
    );
    // Nothing in it can meet an id or class of the module's.
    let mut names: Vec<&str> = Vec::new();
    for a in ["id", "class"] {
        let needle = format!(" {a}=\"");
        for (i, _) in html.match_indices(&needle) {
            let v = &html[i + needle.len()..];
            names.extend(v[..v.find('"').unwrap()].split_whitespace());
        }
    }
    assert!(names.len() > 10, "{names:?}");
    for n in &names {
        assert!(n.starts_with("unigate-"), "{n} is not namespaced");
    }
    // Without script: a <details> whose summary is named, and a list of links.
    assert!(
        html.contains(r#"<summary id="unigate-launcher-button" title="App Launcher" aria-label="App Launcher">"#),
        "{html}"
    );
    assert!(html.contains(r#"<ul id="unigate-launcher-menu">"#), "{html}");
    assert_eq!(html.matches("<a ").count(), 4, "three tiles and All modules");
    // Each tile's link names the module and what it does (the icon is
    // decorative).
    for (name, hint) in [
        ("Demo Portal", "Log In with KaseyaOne"),
        ("BMS", "Choose an instance (2 instances)"),
        ("IT Glue", "Log in with your module credentials"),
    ] {
        let text =
            format!(r#"<span class="unigate-tile-name">{name}</span> <span class="unigate-tile-hint">{hint}</span>"#);
        assert!(html.contains(&text), "{text}: {html}");
    }
    // The enhancement: an IIFE that leaves no globals, gives the ARIA menu
    // button its roles and states, and its keys.
    let script = html
        .split_once("<script>")
        .unwrap()
        .1
        .split_once("</script>")
        .unwrap()
        .0;
    let script = script.trim();
    assert!(
        script.starts_with("(function () {") && script.ends_with("})();"),
        "{script}"
    );
    for needed in [
        "'aria-haspopup', 'menu'",
        "'aria-controls'",
        "'aria-expanded'",
        "'role', 'menu'",
        "'role', 'menuitem'",
        "'role', 'none'",
        "'ArrowDown'",
        "'ArrowUp'",
        "'Home'",
        "'End'",
        "'Escape'",
        "'Tab'",
        "b.focus()",
        "addEventListener('click', outside, true)",
        "addEventListener('focusin', outside, true)",
    ] {
        assert!(script.contains(needed), "{needed} in {script}");
    }
    // Its style: every rule under the launcher's id; a menu that fits a
    // narrow window and scrolls in a short one.
    let css = html.split_once("<style>").unwrap().1.split_once("</style>").unwrap().0;
    for rule in css.split('}').map(str::trim).filter(|r| !r.is_empty()) {
        let selectors = rule.split_once('{').unwrap().0;
        for s in selectors.split(',') {
            assert!(s.trim().starts_with("#unigate-launcher"), "{s} is not namespaced");
        }
    }
    for needed in [
        "max-width:calc(100vw - 24px)",
        "max-height:calc(100vh - 56px)",
        "overflow-y:auto",
    ] {
        assert!(css.contains(needed), "{needed}");
    }
    // No modules: a note, and still a menu with an item.
    let empty = launcher_snippet(&[]);
    assert!(empty.contains("No other modules.") && empty.contains(r#"class="unigate-launcher-all""#));
}

#[test]
fn the_app_launcher_page_names_each_tile_and_what_it_does() {
    let html = launcher("alice@acme.example", &tiles());
    assert!(html.contains("<h1>App Launcher</h1>"), "{html}");
    for (module, tile, hint) in [
        ("portal", "arrow", "Log In with KaseyaOne"),
        ("bms", "file", "Choose an instance (2 instances)"),
        ("itglue", "lock", "Log in with your module credentials"),
    ] {
        let a = format!(r#"data-module="{module}" data-tile="{tile}">"#);
        let at = html.find(&a).unwrap_or_else(|| panic!("{a}: {html}"));
        let link = &html[at..at + html[at..].find("</a>").unwrap()];
        assert!(link.contains(hint), "{link}");
    }
}

#[test]
fn the_link_page_keeps_the_username_and_asks_for_the_password_again() {
    let first = link("", None);
    assert!(first.contains("<h1>Link your BMS · Acme West account</h1>"), "{first}");
    assert!(
        first.contains("<b>alice@acme.example</b>"),
        "names the KaseyaOne account: {first}"
    );
    // First visit: focus on the (empty) username.
    let username = tag(&first, r#"id="module_username""#);
    assert!(
        username.contains(r#"value="""#) && username.contains("autofocus"),
        "{username}"
    );
    assert!(!tag(&first, r#"id="module_password""#).contains("autofocus"));
    assert!(!first.contains("link-error"));

    let again = link("a.admin", Some("Invalid username/password."));
    let username = tag(&again, r#"id="module_username""#);
    let password = tag(&again, r#"id="module_password""#);
    assert!(
        username.contains(r#"value="a.admin""#) && !username.contains("autofocus"),
        "{username}"
    );
    assert!(
        password.contains("autofocus") && !password.contains("value="),
        "empty, focused: {password}"
    );
    // The error is announced and tied to both fields alike.
    assert!(
        again.contains(r#"<p class="error" id="link-error" role="alert">Invalid username/password.</p>"#),
        "{again}"
    );
    for field in [username, password] {
        assert!(field.contains(r#"aria-describedby="link-error""#), "{field}");
    }
    // Like the refusal pages: the ways out.
    assert!(again.contains(r#"href="/_unigate/logout">Log out of KaseyaOne / use another account"#));
    assert!(again.contains(r#"href="https://one.example/">Back to My Modules"#));
}

/// The tag of `html` that contains `marker`.
fn tag<'a>(html: &'a str, marker: &str) -> &'a str {
    let at = html.find(marker).unwrap_or_else(|| panic!("{marker}: {html}"));
    let start = html[..at].rfind('<').unwrap();
    &html[start..at + html[at..].find('>').unwrap() + 1]
}

#[test]
fn every_refusal_names_the_module_the_instance_and_the_account_and_offers_ways_out() {
    for (reason, p) in refusals() {
        assert!(p.contains(&format!(r#"data-reason="{reason}""#)), "{reason}: {p}");
        assert!(p.contains(MODULE), "{reason}: {p}");
        assert!(
            p.contains("You used the KaseyaOne account <b>alice@acme.example</b>"),
            "{reason}: {p}"
        );
        assert!(
            p.contains(r#"href="/_unigate/logout">Log out of KaseyaOne / use another account"#),
            "{reason}: {p}"
        );
        assert!(
            p.contains(r#"href="https://one.example/">Back to My Modules"#),
            "{reason}: {p}"
        );
    }
}

#[test]
fn a_route_is_named_by_its_module_and_instance() {
    use crate::config::route::{InstanceRef, Route};
    let bms = Route {
        display_name: "BMS".into(),
        ..Route::default()
    };
    assert_eq!(module_name(&bms), "BMS");
    let west = Route {
        instance: Some(InstanceRef {
            name: "west".into(),
            display_name: "Acme West".into(),
        }),
        ..bms
    };
    assert_eq!(module_name(&west), "BMS · Acme West");
}
