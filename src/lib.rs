//! unigate: a reverse-proxy single sign-on sidecar that gives unmodified
//! module portals Log In with KaseyaOne. This crate also holds the embedded
//! KaseyaOne-compatible development identity provider ([`idp`]).
#![forbid(unsafe_code)]

pub mod accounts;
pub mod cli;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod demo;
pub mod demo_module;
pub mod gateway;
pub mod idp;
pub mod loadtest;
pub mod metrics;
pub mod oidc;
pub mod pages;
pub mod policy;
pub mod rate;
pub mod secret;
pub mod session;

#[cfg(test)]
mod arrows {
    /// The cores (what the proxy and the IdP are built on) import none of
    /// the edges: arrows point inward, so a core can be read, tested and
    /// changed without the proxy, the IdP, the demo or the load tool.
    #[test]
    fn the_cores_import_no_edge() {
        const CORES: &[&str] = &[
            "accounts",
            "clock.rs",
            "config",
            "crypto",
            "metrics.rs",
            "oidc",
            "pages",
            "policy",
            "rate.rs",
            "secret.rs",
            "session",
        ];
        const EDGES: &[&str] = &[
            "crate::gateway",
            "crate::idp",
            "crate::demo",
            "crate::loadtest",
            "crate::cli",
        ];
        fn files(p: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            if p.is_dir() {
                for e in std::fs::read_dir(p).unwrap() {
                    files(&e.unwrap().path(), out);
                }
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push(p.to_path_buf());
            }
        }
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut all = Vec::new();
        for c in CORES {
            files(&src.join(c), &mut all);
        }
        assert!(all.len() > 20, "found the cores' files: {all:?}");
        let mut found = Vec::new();
        for f in &all {
            for (n, line) in std::fs::read_to_string(f).unwrap().lines().enumerate() {
                if EDGES.iter().any(|e| line.contains(e)) {
                    found.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
                }
            }
        }
        assert!(found.is_empty(), "a core imports an edge:\n{}", found.join("\n"));
    }
}
