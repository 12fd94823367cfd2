//! unigate: a reverse-proxy single sign-on sidecar that gives unmodified
//! module portals Log In with KaseyaOne. This crate also holds the embedded
//! KaseyaOne-compatible development identity provider ([`idp`]).
#![forbid(unsafe_code)]

pub mod accounts;
pub mod config;
pub mod demo_module;
pub mod gateway;
pub mod idp;
pub mod loadtest;
pub mod metrics;
pub mod oidc;
pub mod pages;
pub mod policy;
pub mod secret;
pub mod session;
