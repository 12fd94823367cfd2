//! The time, in one place.

use std::time::SystemTime;

/// Unix seconds now.
pub fn unix_now() -> u64 {
    unix(SystemTime::now())
}

/// Unix seconds at `t` (0 before 1970).
pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
