//! Streaming the App Launcher into HTML: a 64 KiB page in 16 KiB chunks
//! through the lol_html injector, against passing the same chunks through.
//! `with_launcher` is every KaseyaOne page (placed after `<body>`, the rest
//! unparsed); `whole_page_rewrite` is a module login page, where the button
//! goes after the form and lol_html reads the whole page.

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use unigate::gateway::inject::Injector;

fn page() -> Vec<u8> {
    let row = "<tr><td class=\"c\">cell</td><td>some legacy table data</td></tr>\n";
    let mut p = String::from("<!doctype html><html><head><title>t</title></head><body><table>");
    while p.len() < 64 * 1024 - 40 {
        p.push_str(row);
    }
    p.push_str("</table></body></html>");
    p.into_bytes()
}

fn bench(c: &mut Criterion) {
    let page = page();
    let chunks: Vec<Bytes> = page.chunks(16 * 1024).map(Bytes::copy_from_slice).collect();
    use unigate::pages::{LauncherTile, TileKind};
    let tiles: Vec<LauncherTile> = ["portal", "bms", "itglue"]
        .iter()
        .zip([TileKind::Arrow, TileKind::File, TileKind::Lock])
        .map(|(n, tile)| LauncherTile {
            name: n.to_string(),
            display_name: n.to_uppercase(),
            url: format!("http://{n}.localhost:8080/"),
            tile,
            instances: 2,
        })
        .collect();
    let snippet: std::sync::Arc<str> = unigate::pages::launcher_snippet(&tiles).into();
    let mut g = c.benchmark_group("inject_64k_page");
    g.throughput(Throughput::Bytes(page.len() as u64));
    g.bench_function("pass_through", |b| {
        b.iter(|| {
            let mut n = 0;
            for ch in &chunks {
                let body = Some(ch.clone());
                n += body.map_or(0, |b| b.len());
            }
            n
        })
    });
    g.bench_function("with_launcher", |b| {
        b.iter(|| {
            let mut inj = Injector::new(snippet.clone());
            let mut n = 0;
            for (i, ch) in chunks.iter().enumerate() {
                let mut body = Some(ch.clone());
                inj.filter(&mut body, i == chunks.len() - 1);
                n += body.map_or(0, |b| b.len());
            }
            assert!(n > page.len());
            n
        })
    });
    let button: std::sync::Arc<str> = unigate::pages::login_button_snippet().into();
    g.bench_function("whole_page_rewrite", |b| {
        b.iter(|| {
            let mut inj = Injector::with(vec![
                ("body", unigate::gateway::inject::Place::Prepend, snippet.clone()),
                ("form", unigate::gateway::inject::Place::After, button.clone()),
            ]);
            let mut n = 0;
            for (i, ch) in chunks.iter().enumerate() {
                let mut body = Some(ch.clone());
                inj.filter(&mut body, i == chunks.len() - 1);
                n += body.map_or(0, |b| b.len());
            }
            assert!(n > page.len());
            n
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
