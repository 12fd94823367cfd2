//! Token lifetimes and login limits: their defaults, and the bounds that
//! keep every timer and cache away from a zero or absurd span.

use std::time::Duration;

use super::{IdpFile, LoginConfig, TokenConfig};
use crate::config::ConfigErrors;

/// The `[tokens]` and `[login]` settings, checked; `rotation_grace` must
/// outlast the tokens it signs.
pub(super) fn lifetimes_and_limits(
    file: &IdpFile,
    rotation_grace: Duration,
    errs: &mut ConfigErrors,
) -> (TokenConfig, LoginConfig) {
    let t = &file.tokens;
    let tokens = TokenConfig {
        code_ttl: t.code_ttl.unwrap_or(Duration::from_secs(60)),
        access_token_ttl: t.access_token_ttl.unwrap_or(Duration::from_secs(600)),
        id_token_ttl: t.id_token_ttl.unwrap_or(Duration::from_secs(600)),
        refresh_token_ttl: t.refresh_token_ttl.unwrap_or(Duration::from_secs(8 * 3600)),
        session_ttl: t.session_ttl.unwrap_or(Duration::from_secs(12 * 3600)),
    };
    for (key, d) in [
        ("tokens.code_ttl", tokens.code_ttl),
        ("tokens.access_token_ttl", tokens.access_token_ttl),
        ("tokens.id_token_ttl", tokens.id_token_ttl),
        ("tokens.refresh_token_ttl", tokens.refresh_token_ttl),
        ("tokens.session_ttl", tokens.session_ttl),
    ] {
        if d.is_zero() {
            errs.push(key, "must be longer than zero");
        }
    }
    if tokens.code_ttl > Duration::from_secs(600) {
        errs.push("tokens.code_ttl", "must be at most 10m (RFC 6749 §4.1.2)");
    }
    if rotation_grace < tokens.id_token_ttl.max(tokens.access_token_ttl) {
        errs.push(
            "signing.rotation_grace",
            "must be at least the token lifetimes, or tokens signed just before a rotation fail to verify",
        );
    }

    let login = LoginConfig {
        max_failures_per_user: file.login.max_failures_per_user.unwrap_or(5),
        max_failures_per_ip: file.login.max_failures_per_ip.unwrap_or(20),
        failure_window: file.login.failure_window.unwrap_or(Duration::from_secs(900)),
        totp_replay_protection: file.login.totp_replay_protection.unwrap_or(true),
        reset_link_ttl: file.login.reset_link_ttl.unwrap_or(Duration::from_secs(1800)),
        welcome_link_ttl: file.login.welcome_link_ttl.unwrap_or(Duration::from_secs(7 * 86_400)),
        max_starts_per_minute_per_ip: file.login.max_starts_per_minute_per_ip.unwrap_or(300),
        max_password_checks_per_minute_per_ip: file.login.max_password_checks_per_minute_per_ip.unwrap_or(120),
    };
    for (key, n) in [
        ("login.max_failures_per_user", login.max_failures_per_user),
        ("login.max_failures_per_ip", login.max_failures_per_ip),
        ("login.max_starts_per_minute_per_ip", login.max_starts_per_minute_per_ip),
        (
            "login.max_password_checks_per_minute_per_ip",
            login.max_password_checks_per_minute_per_ip,
        ),
    ] {
        if n == 0 {
            errs.push(key, "must be at least 1");
        }
    }
    // Bounded, so no timer or cache is ever given a zero or absurd span.
    let day = Duration::from_secs(86_400);
    for (key, d, min, max) in [
        (
            "login.failure_window",
            Some(login.failure_window),
            Duration::from_secs(1),
            day,
        ),
        (
            "login.reset_link_ttl",
            Some(login.reset_link_ttl),
            Duration::from_secs(60),
            day,
        ),
        (
            "login.welcome_link_ttl",
            Some(login.welcome_link_ttl),
            Duration::from_secs(3600),
            day * 31,
        ),
        (
            "signing.rotation_interval",
            file.signing.rotation_interval,
            Duration::from_secs(60),
            day * 366,
        ),
        ("signing.rotation_grace", Some(rotation_grace), Duration::ZERO, day * 31),
        (
            "tokens.access_token_ttl",
            Some(tokens.access_token_ttl),
            Duration::ZERO,
            day,
        ),
        ("tokens.id_token_ttl", Some(tokens.id_token_ttl), Duration::ZERO, day),
        (
            "tokens.refresh_token_ttl",
            Some(tokens.refresh_token_ttl),
            Duration::ZERO,
            day * 366,
        ),
        (
            "tokens.session_ttl",
            Some(tokens.session_ttl),
            Duration::ZERO,
            day * 366,
        ),
    ] {
        if let Some(d) = d
            && (d < min || d > max)
        {
            errs.push(
                key,
                format!(
                    "must be between {} and {}",
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                ),
            );
        }
    }
    (tokens, login)
}
