//! What the token checks' tests share: one issuer, client and clock, and a
//! claim editor.

use std::time::{Duration, SystemTime};

use serde_json::Value;

pub const ISS: &str = "https://idp.example";
pub const CLIENT: &str = "unigate";
pub const NOW: u64 = 1_800_000_000;

pub fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(NOW)
}

/// `v` with claim `k` set to `x`, or removed when `x` is null.
pub fn with(mut v: Value, k: &str, x: Value) -> Value {
    if x.is_null() {
        v.as_object_mut().unwrap().remove(k);
    } else {
        v[k] = x;
    }
    v
}
