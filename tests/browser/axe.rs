//! axe-core (npm, pinned in tests/browser/package-lock.json) injected into
//! the page the browser is on and run there; what it finds with impact
//! serious or critical, as lines naming the rule and the offending nodes.

use std::path::PathBuf;

use fantoccini::Client;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// axe-core's browser bundle. Installs the package (`npm ci`, from its
/// lock file) when it is missing; fails saying how to get it otherwise.
pub fn source() -> String {
    let file = dir().join("node_modules/axe-core/axe.min.js");
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if file.exists() {
            return;
        }
        match std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(dir())
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "npm ci in tests/browser failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("npm does not run ({e})"),
        }
    });
    std::fs::read_to_string(&file).unwrap_or_else(|e| {
        panic!(
            "axe-core is missing ({}: {e}): the browser test checks every page with it. \
             Install Node.js and run `npm ci --prefix tests/browser` (scripts/test does), \
             or set UNIGATE_SKIP_BROWSER=1 to skip the browser test",
            file.display()
        )
    })
}

/// Runs axe-core on the current page (injecting it first when the page
/// does not have it yet); the serious and critical violations, each as
/// `rule (impact): node, node…`.
pub async fn run(c: &Client, axe: &str) -> Result<Vec<String>, String> {
    let loaded = c
        .execute("return typeof window.axe === 'object';", vec![])
        .await
        .map_err(|e| e.to_string())?;
    if loaded != serde_json::Value::Bool(true) {
        c.execute(axe, vec![])
            .await
            .map_err(|e| format!("injecting axe-core: {e}"))?;
    }
    const RUN: &str = r#"
        const done = arguments[arguments.length - 1];
        axe.run(document, { resultTypes: ['violations'] }).then(
            r => done(JSON.stringify(r.violations
                .filter(v => v.impact === 'serious' || v.impact === 'critical')
                .map(v => ({ id: v.id, impact: v.impact, help: v.help,
                             nodes: v.nodes.map(n => n.target.join(' ')) })))),
            e => done(JSON.stringify({ error: String(e) })));
    "#;
    let out = c.execute_async(RUN, vec![]).await.map_err(|e| e.to_string())?;
    let out: serde_json::Value = serde_json::from_str(out.as_str().unwrap_or("null")).map_err(|e| e.to_string())?;
    if let Some(e) = out.get("error") {
        return Err(format!("axe.run failed: {e}"));
    }
    let list = out.as_array().ok_or("axe.run returned no list")?;
    Ok(list
        .iter()
        .map(|v| {
            let nodes: Vec<&str> = v["nodes"]
                .as_array()
                .map(|n| n.iter().filter_map(|n| n.as_str()).collect())
                .unwrap_or_default();
            format!(
                "{} ({}): {} — {}",
                v["id"].as_str().unwrap_or("?"),
                v["impact"].as_str().unwrap_or("?"),
                nodes.join(", "),
                v["help"].as_str().unwrap_or("")
            )
        })
        .collect())
}
