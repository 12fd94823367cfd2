//! What every end-user page of unigate's own has, read from the HTML a
//! browser gets: a language, a title, one `<main>` with one `<h1>` first
//! and no heading level skipped, and a label for every field.

/// Panics naming what `page` lacks.
pub fn assert_accessible_page(page: &str) {
    assert!(
        page.starts_with(r#"<!DOCTYPE html><html lang="en">"#),
        "no lang: {page}"
    );
    let title = page
        .split_once("<title>")
        .and_then(|(_, t)| t.split_once("</title>"))
        .map_or("", |(t, _)| t.trim());
    assert!(!title.is_empty(), "no title: {page}");
    assert_eq!(page.matches("<main>").count(), 1, "one <main>: {page}");
    let levels: Vec<u32> = page
        .match_indices("<h")
        .filter_map(|(i, _)| page[i + 2..].chars().next()?.to_digit(10))
        .collect();
    assert_eq!(levels.first(), Some(&1), "an <h1> first: {page}");
    assert_eq!(levels.iter().filter(|&&l| l == 1).count(), 1, "one <h1>: {page}");
    assert!(levels.windows(2).all(|w| w[1] <= w[0] + 1), "headings in order: {page}");
    for (i, _) in page.match_indices("<input ") {
        let tag = &page[i..i + page[i..].find('>').unwrap()];
        if tag.contains(r#"type="hidden""#) {
            continue;
        }
        let id = tag
            .split_once(r#" id=""#)
            .map(|(_, v)| &v[..v.find('"').unwrap()])
            .unwrap_or_else(|| panic!("an input without an id: {tag}"));
        assert!(
            page.contains(&format!(r#"<label for="{id}">"#)),
            "no label for {id}: {page}"
        );
    }
}

/// Asserts a refusal page's ways out: "Log out of KaseyaOne / use another
/// account" (a form posting this browser's logout token to unigate's
/// logout) and "Back to My Modules" at `issuer`; returns the token.
pub fn assert_ways_out(page: &str, issuer: &str) -> String {
    assert!(
        page.contains(
            r#"<form class="way-out" method="post" action="/_unigate/logout"><input type="hidden" name="token" value=""#
        ),
        "no logout form: {page}"
    );
    assert!(
        page.contains(r#"type="submit">Log out of KaseyaOne / use another account</button>"#),
        "{page}"
    );
    assert!(
        page.contains(&format!(r#"href="{issuer}/">Back to My Modules"#)),
        "{page}"
    );
    let at = page.find(r#"name="token" value=""#).unwrap() + 20;
    page[at..at + page[at..].find('"').unwrap()].to_string()
}
