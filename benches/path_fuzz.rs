//! The canonical path under a million generated attack paths and a million
//! arbitrary strings (`cargo bench --bench path_fuzz`; 20,000 each when run
//! as a test): no panic, no path that a common server reads as leaving the
//! public prefix unigate found it under. Then the cost of canonicalizing a
//! plain path (the hot path) and an attack path.
//!
//! A stand-in for `cargo fuzz`, which needs a nightly toolchain.

use criterion::{Criterion, criterion_group};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::hint::black_box;
use unigate::policy::path::canonicalize;

#[path = "../tests/path_readers/mod.rs"]
mod path_readers;

fn fuzz(cases: u32) {
    let started = std::time::Instant::now();
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config.clone());
    runner
        .run(&path_readers::attack_paths(), |raw| {
            prop_assert_eq!(path_readers::check(&raw), Ok(()));
            Ok(())
        })
        .expect("attack paths");
    let mut runner = TestRunner::new(config);
    runner
        .run(&any::<String>(), |raw| {
            prop_assert_eq!(path_readers::check(&format!("/{raw}")), Ok(()));
            Ok(())
        })
        .expect("arbitrary strings");
    println!(
        "path_fuzz: {cases} attack paths and {cases} arbitrary strings: no panic, no escape ({:.1?})",
        started.elapsed()
    );
}

fn canonical(c: &mut Criterion) {
    c.bench_function("canonical_path/plain", |b| {
        b.iter(|| canonicalize(black_box("/api/v1/items/42")))
    });
    c.bench_function("canonical_path/attack", |b| {
        b.iter(|| canonicalize(black_box("/static/./css//..;x/%2e%2e/%7Eadmin/x")))
    });
}

criterion_group!(benches, canonical);

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not.
    let full = std::env::args().any(|a| a == "--bench");
    fuzz(if full { 1_000_000 } else { 20_000 });
    benches();
    Criterion::default().configure_from_args().final_summary();
}
