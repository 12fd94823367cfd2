//! unigate's configuration as a value: the base every test gateway starts
//! from, small helpers to edit a `toml::Table`, writing one to a file
//! beside its secret (as in production), and starting unigate from it.

use std::path::{Path, PathBuf};

use toml::{Table, Value};
use unigate::gateway::config::GatewayConfig;
use unigate::gateway::server::GatewayServer;

use super::{API_AUDIENCE, CLIENT, SECRET};

/// Editing a configuration table in place:
/// `t.table("session").set("idle_timeout", "1s")`,
/// `t.module("portal").set("access_groups", vec!["auditors"])`.
pub trait TomlEdit {
    /// Sets `key` to `value` (a string, number, bool, `Vec` or `Table`).
    fn set(&mut self, key: &str, value: impl Into<Value>) -> &mut Self;
    /// The table under `key`, made empty when missing.
    fn table(&mut self, key: &str) -> &mut Table;
    /// The `[[module]]` named `name`; panics when there is none.
    fn module(&mut self, name: &str) -> &mut Table;
    /// The `[[module.instance]]` named `name` of the module `module`.
    fn instance(&mut self, module: &str, name: &str) -> &mut Table;
}

fn named<'t>(list: &'t mut Value, name: &str, what: &str) -> &'t mut Table {
    list.as_array_mut()
        .unwrap_or_else(|| panic!("{what}: not a list"))
        .iter_mut()
        .filter_map(Value::as_table_mut)
        .find(|t| t.get("name").and_then(Value::as_str) == Some(name))
        .unwrap_or_else(|| panic!("no {what} named {name}"))
}

impl TomlEdit for Table {
    fn set(&mut self, key: &str, value: impl Into<Value>) -> &mut Self {
        self.insert(key.to_string(), value.into());
        self
    }

    fn table(&mut self, key: &str) -> &mut Table {
        self.entry(key)
            .or_insert_with(|| Value::Table(Table::new()))
            .as_table_mut()
            .unwrap_or_else(|| panic!("{key} is not a table"))
    }

    fn module(&mut self, name: &str) -> &mut Table {
        named(self.get_mut("module").expect("no [[module]]"), name, "module")
    }

    fn instance(&mut self, module: &str, name: &str) -> &mut Table {
        let m = self.module(module);
        named(m.get_mut("instance").expect("no [[module.instance]]"), name, "instance")
    }
}

/// A table built by `f`: `table_of(|t| { t.set("source", "scim"); })`.
pub fn table_of(f: impl FnOnce(&mut Table)) -> Table {
    let mut t = Table::new();
    f(&mut t);
    t
}

/// What every test gateway starts from: `[listen]` on `port` (one thread)
/// and `[identity_provider]` at `issuer` as the test client, its secret in
/// the file `secret` next to the config.
pub fn gateway_table(port: u16, issuer: &str) -> Table {
    let mut t = Table::new();
    t.table("listen")
        .set("address", format!("127.0.0.1:{port}"))
        .set("public_url", format!("http://localhost:{port}"))
        .set("threads", 1)
        .set("work_stealing", true);
    t.table("identity_provider")
        .set("issuer", issuer)
        .set("client_id", CLIENT)
        .set("client_secret", "file:secret")
        .set("api_audience", API_AUDIENCE);
    t
}

/// The config file's text for `config`.
pub fn config_text(config: &Table) -> String {
    toml::to_string(config).expect("the config serialises")
}

/// unigate on `port` with the test client of `issuer`, its configuration
/// edited by `edit` (its `[session]`, `[[module]]`s…).
pub async fn start_gateway(port: u16, issuer: &str, edit: impl FnOnce(&mut Table)) -> GatewayServer {
    let mut config = gateway_table(port, issuer);
    edit(&mut config);
    start_gateway_config(&config).await.0
}

/// Starts unigate from `config`, written to a file next to its secret;
/// returns the server and the file, for reloads.
pub async fn start_gateway_config(config: &Table) -> (GatewayServer, PathBuf) {
    let path = write_config(&tempfile::tempdir().unwrap().keep(), config);
    let cfg = GatewayConfig::load(&path).unwrap_or_else(|e| panic!("gateway config: {e}\n{}", config_text(config)));
    (GatewayServer::start(cfg).await.expect("gateway starts"), path)
}

/// Writes `config` to `unigate.toml` in `dir`, beside the client secret
/// (files it names are read from `dir` too); returns the file's path.
pub fn write_config(dir: &Path, config: &Table) -> PathBuf {
    std::fs::write(dir.join("secret"), SECRET).unwrap();
    let path = dir.join("unigate.toml");
    std::fs::write(&path, config_text(config)).unwrap();
    path
}

/// A value written as TOML (`r#"{ source = "scim", match = "both" }"#`).
pub fn toml_value(text: &str) -> Value {
    let mut t: Table = toml::from_str(&format!("v = {text}")).unwrap_or_else(|e| panic!("{text}: {e}"));
    t.remove("v").unwrap()
}

/// Keys written as TOML (`"login = \"optional\""`), as a table to merge.
pub fn toml_table(text: &str) -> Table {
    toml::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}
