//! The token endpoint's work without HTTP: redeeming an authorization code
//! (PKCE check, grant, access and ID token signing, refresh token) with ES256
//! and RS256 keys, and a refresh-token rotation.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use jsonwebtoken::Algorithm;
use unigate::idp::config::Client;
use unigate::idp::oauth::{AuthRequest, ClientAuth, pkce_s256};
use unigate::idp::store::IdpSession;
use unigate::idp::{IdpConfig, Provider};
use unigate::secret::Secret;

const VERIFIER: &str = "bench-verifier-0123456789-0123456789-0123456789";

fn provider() -> Provider {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/idp.demo.toml");
    let mut cfg = IdpConfig::load(&root).expect("demo config");
    for (id, alg) in [("bench-es", Algorithm::ES256), ("bench-rs", Algorithm::RS256)] {
        cfg.clients.push(Client {
            client_id: id.into(),
            client_secret: Secret::new("bench-secret"),
            redirect_uris: vec!["http://127.0.0.1/cb".into()],
            post_logout_redirect_uris: vec![],
            backchannel_logout_uri: None,
            frontchannel_logout_uri: None,
            initiate_login_uri: None,
            id_token_alg: alg,
            api_audience: None,
            opaque_access_tokens: false,
        });
    }
    Provider::new(cfg, "http://127.0.0.1:9000").expect("provider")
}

fn session(p: &Provider) -> Arc<IdpSession> {
    let s = Arc::new(IdpSession::new("bench-sid".into(), 0, 1_700_000_000));
    p.stores.sid_index.insert(s.sid.clone(), "bench-session".into());
    p.stores.sessions.insert("bench-session".into(), s.clone());
    s
}

fn request(client: &str) -> Arc<AuthRequest> {
    Arc::new(AuthRequest {
        client_id: client.into(),
        redirect_uri: "http://127.0.0.1/cb".into(),
        scope: "openid email profile".into(),
        state: Some("state".into()),
        nonce: Some("nonce".into()),
        code_challenge: pkce_s256(VERIFIER),
        prompt_none: false,
        prompt_login: false,
        max_age: None,
        login_hint: None,
    })
}

fn bench(c: &mut Criterion) {
    let p = provider();
    let s = session(&p);
    let mut g = c.benchmark_group("token_endpoint");
    for client in ["bench-es", "bench-rs"] {
        let auth = ClientAuth::Basic {
            id: client.into(),
            secret: "bench-secret".into(),
        };
        let req = request(client);
        g.bench_function(format!("authorization_code/{client}"), |b| {
            b.iter_batched(
                || {
                    let code = p.issue_code(req.clone(), &s);
                    let mut form = HashMap::new();
                    form.insert("grant_type".to_string(), "authorization_code".to_string());
                    form.insert("code".to_string(), code);
                    form.insert("redirect_uri".to_string(), "http://127.0.0.1/cb".to_string());
                    form.insert("code_verifier".to_string(), VERIFIER.to_string());
                    form
                },
                |form| p.token(&auth, &form, SystemTime::now()).expect("exchange"),
                BatchSize::SmallInput,
            )
        });
    }
    let auth = ClientAuth::Post {
        id: "bench-es".into(),
        secret: "bench-secret".into(),
    };
    let mut form = HashMap::new();
    form.insert("grant_type".to_string(), "authorization_code".to_string());
    form.insert("code".to_string(), p.issue_code(request("bench-es"), &s));
    form.insert("redirect_uri".to_string(), "http://127.0.0.1/cb".to_string());
    form.insert("code_verifier".to_string(), VERIFIER.to_string());
    let first = p.token(&auth, &form, SystemTime::now()).expect("exchange");
    let mut current = first.refresh_token;
    g.bench_function("refresh_token/bench-es", |b| {
        b.iter(|| {
            let mut form = HashMap::new();
            form.insert("grant_type".to_string(), "refresh_token".to_string());
            form.insert("refresh_token".to_string(), std::mem::take(&mut current));
            let t = p.token(&auth, &form, SystemTime::now()).expect("refresh");
            current = t.refresh_token;
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
