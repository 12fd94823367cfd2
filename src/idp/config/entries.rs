//! The directory's entries: companies, users, modules and clients, each
//! checked, with duplicates and dangling references reported.

use std::collections::HashSet;
use std::path::Path;

use jsonwebtoken::Algorithm;

use super::checks::{check_redirect, load_secret, parse_alg, parse_url};
use super::{Client, ClientFile, CompanyFile, Instance, Module, ModuleFile, User, UserFile};
use crate::config::ConfigErrors;
use crate::secret::Secret;

/// The company names, and the set of them lowercased (what users name).
pub(super) fn companies(list: &[CompanyFile], errs: &mut ConfigErrors) -> (Vec<String>, HashSet<String>) {
    let mut companies = Vec::new();
    let mut seen = HashSet::new();
    for (i, c) in list.iter().enumerate() {
        let name = c.name.trim().to_string();
        if name.is_empty() {
            errs.push(format!("company[{i}].name"), "must not be empty");
        } else if !seen.insert(name.to_lowercase()) {
            errs.push(format!("company[{i}].name"), format!("`{name}` is listed twice"));
        }
        companies.push(name);
    }
    (companies, seen)
}

/// Users, each of a known company; passwords are Argon2 PHC strings.
pub(super) fn users(list: Vec<UserFile>, companies: &HashSet<String>, errs: &mut ConfigErrors) -> Vec<User> {
    let mut users = Vec::new();
    let mut seen_users = HashSet::new();
    for (i, u) in list.into_iter().enumerate() {
        let p = format!("user[{i}]");
        if u.username.trim().is_empty() {
            errs.push(format!("{p}.username"), "must not be empty");
        }
        if !companies.contains(&u.company.to_lowercase()) {
            errs.push(format!("{p}.company"), format!("`{}` is not a [[company]]", u.company));
        }
        if !seen_users.insert((u.company.to_lowercase(), u.username.to_lowercase())) {
            errs.push(
                format!("{p}.username"),
                format!("`{}` is listed twice for company `{}`", u.username, u.company),
            );
        }
        if !u.email.contains('@') {
            errs.push(format!("{p}.email"), "is not an email address");
        }
        if let Err(e) = argon2::PasswordHash::new(&u.password_hash) {
            errs.push(
                format!("{p}.password_hash"),
                format!("is not an Argon2 PHC string ({e}); make one with `unigate idp hash-password`"),
            );
        }
        let totp_secret = match totp_rs::Secret::Encoded(u.totp_secret.clone()).to_bytes() {
            Ok(b) if b.len() >= 16 => b,
            Ok(_) => {
                errs.push(
                    format!("{p}.totp_secret"),
                    "must be at least 128 bits (26 base32 characters)",
                );
                Vec::new()
            }
            Err(_) => {
                errs.push(format!("{p}.totp_secret"), "is not base32");
                Vec::new()
            }
        };
        users.push(User {
            username: u.username,
            company: u.company,
            email: u.email,
            display_name: u.display_name,
            password_hash: u.password_hash,
            totp_secret,
            groups: u.groups,
            admin: u.admin,
        });
    }
    users
}

pub(super) fn modules(list: Vec<ModuleFile>, errs: &mut ConfigErrors) -> Vec<Module> {
    let mut modules = Vec::new();
    let mut seen_modules = HashSet::new();
    for (i, m) in list.into_iter().enumerate() {
        let p = format!("module[{i}]");
        if !seen_modules.insert(m.name.clone()) {
            errs.push(format!("{p}.name"), format!("`{}` is listed twice", m.name));
        }
        let url = parse_url(&m.url, &format!("{p}.url"), errs);
        let login_url = match &m.login_url {
            Some(l) => parse_url(l, &format!("{p}.login_url"), errs),
            None => url.clone(),
        };
        let mut instances = Vec::new();
        for (j, inst) in m.instances.into_iter().enumerate() {
            let url = parse_url(&inst.url, &format!("{p}.instances[{j}].url"), errs);
            instances.push(Instance {
                display_name: inst.display_name.unwrap_or_else(|| inst.name.clone()),
                name: inst.name,
                url,
            });
        }
        modules.push(Module {
            name: m.name,
            display_name: m.display_name,
            url,
            login_url,
            instances,
            unified_login: m.unified_login,
            access_group: m.access_group,
        });
    }
    modules
}

/// Clients; `algorithm` is the server's, for those that name none.
pub(super) fn clients(
    list: Vec<ClientFile>,
    base: &Path,
    algorithm: Algorithm,
    errs: &mut ConfigErrors,
) -> Vec<Client> {
    let mut clients = Vec::new();
    let mut seen_clients = HashSet::new();
    for (i, c) in list.into_iter().enumerate() {
        let p = format!("client[{i}]");
        if !seen_clients.insert(c.client_id.clone()) {
            errs.push(format!("{p}.client_id"), format!("`{}` is listed twice", c.client_id));
        }
        let secret = load_secret(Some(&c.client_secret), base, &format!("{p}.client_secret"), errs);
        if c.redirect_uris.is_empty() {
            errs.push(format!("{p}.redirect_uris"), "needs at least one URI");
        }
        for (j, r) in c.redirect_uris.iter().enumerate() {
            check_redirect(r, &format!("{p}.redirect_uris[{j}]"), errs);
        }
        for (j, r) in c.post_logout_redirect_uris.iter().enumerate() {
            check_redirect(r, &format!("{p}.post_logout_redirect_uris[{j}]"), errs);
        }
        let backchannel_logout_uri = c
            .backchannel_logout_uri
            .as_deref()
            .map(|u| parse_url(u, &format!("{p}.backchannel_logout_uri"), errs));
        let frontchannel_logout_uri = c
            .frontchannel_logout_uri
            .as_deref()
            .map(|u| parse_url(u, &format!("{p}.frontchannel_logout_uri"), errs));
        let initiate_login_uri = c
            .initiate_login_uri
            .as_deref()
            .map(|u| parse_url(u, &format!("{p}.initiate_login_uri"), errs));
        let id_token_alg = parse_alg(
            c.id_token_signed_response_alg.as_deref(),
            algorithm,
            &format!("{p}.id_token_signed_response_alg"),
            errs,
        );
        if c.api_audience.as_deref().is_some_and(str::is_empty) {
            errs.push(format!("{p}.api_audience"), "must not be empty");
        }
        let opaque_access_tokens = match c.access_token_format.as_deref() {
            None | Some("jwt") => false,
            Some("opaque") => true,
            Some(_) => {
                errs.push(format!("{p}.access_token_format"), "must be `jwt` or `opaque`");
                false
            }
        };
        clients.push(Client {
            api_audience: c.api_audience,
            opaque_access_tokens,
            client_id: c.client_id,
            client_secret: secret.unwrap_or_else(|| Secret::new("")),
            redirect_uris: c.redirect_uris,
            post_logout_redirect_uris: c.post_logout_redirect_uris,
            backchannel_logout_uri,
            frontchannel_logout_uri,
            initiate_login_uri,
            id_token_alg,
        });
    }
    clients
}
