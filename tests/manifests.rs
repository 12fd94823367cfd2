//! Every shipped deployment file is parsed and checked against the unigate
//! configuration it references: the Kubernetes examples (sidecar, and
//! several replicas with Redis), the Docker Compose example and the
//! Dockerfile. Ports, probe paths, mounts, secrets and grace periods must
//! agree, and the configuration must load with the secrets the manifests
//! provide.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use unigate::gateway::config::GatewayConfig;
use yaml_rust2::{Yaml, YamlLoader};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn to_json(y: &Yaml) -> Value {
    match y {
        Yaml::Real(r) => r.parse::<f64>().map_or(Value::Null, Value::from),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::String(s) => Value::from(s.clone()),
        Yaml::Boolean(b) => Value::from(*b),
        Yaml::Array(a) => Value::Array(a.iter().map(to_json).collect()),
        Yaml::Hash(h) => Value::Object(
            h.iter()
                .map(|(k, v)| {
                    let k = match k {
                        Yaml::String(s) => s.clone(),
                        Yaml::Integer(i) => i.to_string(),
                        other => panic!("unexpected key {other:?}"),
                    };
                    (k, to_json(v))
                })
                .collect(),
        ),
        Yaml::Null => Value::Null,
        other => panic!("unsupported YAML: {other:?}"),
    }
}

/// Every document of every `*.yaml` in `dir` (not below it).
fn documents(dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in {}", dir.display());
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let docs = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        out.extend(docs.iter().map(to_json));
    }
    out
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn duration(v: &str) -> Duration {
    humantime::parse_duration(v).unwrap()
}

/// The value after `flag` in an argument list.
fn arg_after<'a>(args: &'a [Value], flag: &str) -> Option<&'a str> {
    let i = args.iter().position(|a| a == flag)?;
    args.get(i + 1)?.as_str()
}

/// Loads a configuration, with `env:` and `file:` references replaced by
/// files holding the values the deployment provides (`provided`).
fn load_with(text: &str, provided: &BTreeMap<String, String>) -> GatewayConfig {
    let dir = tempfile::tempdir().unwrap();
    let mut text = text.to_string();
    for (i, (reference, value)) in provided.iter().enumerate() {
        let name = format!("provided-{i}");
        std::fs::write(dir.path().join(&name), value).unwrap();
        text = text.replace(&format!("\"{reference}\""), &format!("\"file:{name}\""));
    }
    for line in text.lines() {
        assert!(
            !line.contains("\"env:") && !line.contains("\"file:/"),
            "a secret reference the deployment does not provide: {line}"
        );
    }
    GatewayConfig::from_toml(&text, dir.path()).unwrap_or_else(|e| panic!("the shipped config does not load:\n{e}"))
}

fn check_kubernetes(dir: &Path) {
    let docs = documents(dir);
    let [cm] = of_kind(&docs, "ConfigMap")[..] else {
        panic!("one ConfigMap in {}", dir.display())
    };
    let [secret] = of_kind(&docs, "Secret")[..] else {
        panic!("one Secret")
    };
    let deployments: Vec<&Value> = of_kind(&docs, "Deployment")
        .into_iter()
        .filter(|d| {
            d["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["name"] == "unigate")
        })
        .collect();
    let [deploy] = deployments[..] else {
        panic!("one Deployment with a unigate container")
    };
    let pod = &deploy["spec"]["template"]["spec"];
    let containers = pod["containers"].as_array().unwrap();
    let unigate = containers.iter().find(|c| c["name"] == "unigate").unwrap();
    let module = containers
        .iter()
        .find(|c| c["name"] == "module")
        .expect("the module container");

    // The config file: a ConfigMap key, at the path the args name.
    let args = unigate["args"].as_array().unwrap();
    assert_eq!(args[0], "run");
    let config_path = arg_after(args, "--config").expect("--config");
    let mounts = unigate["volumeMounts"].as_array().unwrap();
    let volumes = pod["volumes"].as_array().unwrap();
    let volume_of = |mount: &Value| {
        volumes
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap_or_else(|| panic!("volume {} declared", mount["name"]))
    };
    let config_mount = mounts
        .iter()
        .find(|m| config_path.starts_with(&format!("{}/", m["mountPath"].as_str().unwrap())))
        .expect("the config file is in a mounted volume");
    assert!(
        config_mount.get("subPath").is_none(),
        "a subPath mount never sees ConfigMap edits (no reload)"
    );
    let config_volume = volume_of(config_mount);
    assert_eq!(config_volume["configMap"]["name"], cm["metadata"]["name"]);
    let key = config_path.rsplit('/').next().unwrap();
    let text = cm["data"][key].as_str().expect("the ConfigMap holds the config file");

    // Secrets: each reference of the config is provided by the pod.
    let secret_data = secret["stringData"].as_object().expect("stringData");
    let mut provided = BTreeMap::new();
    for env in unigate["env"].as_array().unwrap() {
        if let Some(r) = env["valueFrom"].get("secretKeyRef") {
            assert_eq!(r["name"], secret["metadata"]["name"], "env from the Secret");
            let k = r["key"].as_str().unwrap();
            let v = secret_data.get(k).unwrap_or_else(|| panic!("the Secret has {k}"));
            provided.insert(
                format!("env:{}", env["name"].as_str().unwrap()),
                v.as_str().unwrap().to_string(),
            );
        }
    }
    for m in mounts {
        let v = volume_of(m);
        let Some(s) = v.get("secret") else { continue };
        assert_eq!(s["secretName"], secret["metadata"]["name"]);
        let mount_path = m["mountPath"].as_str().unwrap();
        for item in s["items"].as_array().unwrap() {
            let k = item["key"].as_str().unwrap();
            let v = secret_data.get(k).unwrap_or_else(|| panic!("the Secret has {k}"));
            provided.insert(
                format!("file:{mount_path}/{}", item["path"].as_str().unwrap()),
                v.as_str().unwrap().to_string(),
            );
        }
    }
    let cfg = load_with(text, &provided);

    // Ports: the config's, the container's, the probes', the Service's.
    let port_named = |name: &str| {
        unigate["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("a container port named {name}"))["containerPort"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(port_named("http"), u64::from(cfg.listen.port()));
    let admin = cfg.admin.as_ref().expect("an admin listener for /metrics");
    assert_eq!(port_named("admin"), u64::from(admin.address.port()));
    let annotations = &deploy["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/port"], admin.address.port().to_string());
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
    for (probe, path) in [
        ("readinessProbe", "/_unigate/readyz"),
        ("livenessProbe", "/_unigate/healthz"),
    ] {
        let get = &unigate[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(get["port"], "http", "{probe} on the proxy port");
    }
    for svc in of_kind(&docs, "Service")
        .into_iter()
        .filter(|s| s["spec"]["selector"] == deploy["spec"]["selector"]["matchLabels"])
    {
        for p in svc["spec"]["ports"].as_array().unwrap() {
            assert_eq!(p["targetPort"], "http", "the Service targets unigate, never the module");
        }
    }
    assert_eq!(
        deploy["spec"]["selector"]["matchLabels"],
        deploy["spec"]["template"]["metadata"]["labels"]
    );

    // The module: on loopback, where the config's upstream points.
    let listen = arg_after(module["args"].as_array().unwrap(), "--listen").expect("--listen");
    let listen: std::net::SocketAddr = listen.parse().unwrap();
    assert!(listen.ip().is_loopback(), "the module listens on localhost only");
    assert_eq!(cfg.modules[0].upstreams, vec![listen]);
    assert!(module.get("ports").is_none(), "the module exposes no port");

    // Lifecycle: the pod waits for unigate's drain and grace.
    let grace = pod["terminationGracePeriodSeconds"].as_u64().expect("a grace period");
    let pre_stop = unigate["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .unwrap_or(0);
    let needed = pre_stop + (cfg.drain_delay + cfg.shutdown_grace).as_secs();
    assert!(grace > needed, "terminationGracePeriodSeconds {grace} ≤ {needed}");
    for c in containers {
        assert!(
            c["resources"]["requests"].is_object(),
            "{} has resource requests",
            c["name"]
        );
        assert!(
            c["resources"]["limits"]["memory"].is_string(),
            "{} has a memory limit",
            c["name"]
        );
    }
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
}

#[test]
fn the_kubernetes_sidecar_example_agrees_with_its_config() {
    check_kubernetes(&root().join("examples/kubernetes"));
}

#[test]
fn the_kubernetes_multi_replica_example_agrees_with_its_config() {
    let dir = root().join("examples/kubernetes/multi-replica");
    check_kubernetes(&dir);
    let docs = documents(&dir);
    let [cm] = of_kind(&docs, "ConfigMap")[..] else {
        panic!()
    };
    assert!(
        cm["data"]["unigate.toml"]
            .as_str()
            .unwrap()
            .contains("store = \"redis\"")
    );
    let deploy = of_kind(&docs, "Deployment")
        .into_iter()
        .find(|d| d["metadata"]["name"] == "portal")
        .unwrap();
    assert!(deploy["spec"]["replicas"].as_u64().unwrap() > 1);
    // The Redis URL the Secret gives names the Redis Service and its port.
    let [secret] = of_kind(&docs, "Secret")[..] else {
        panic!()
    };
    let url = url::Url::parse(secret["stringData"]["redis-url"].as_str().unwrap()).unwrap();
    let redis_svc = of_kind(&docs, "Service")
        .into_iter()
        .find(|s| s["metadata"]["name"] == url.host_str().unwrap())
        .expect("the Redis Service the URL names");
    assert_eq!(
        redis_svc["spec"]["ports"][0]["port"].as_u64(),
        url.port().map(u64::from)
    );
}

#[test]
fn the_compose_example_agrees_with_its_config() {
    let dir = root().join("examples");
    let text = std::fs::read_to_string(dir.join("docker-compose.yml")).unwrap();
    let doc = to_json(&YamlLoader::load_from_str(&text).unwrap()[0]);
    let unigate = &doc["services"]["unigate"];
    let module = &doc["services"]["module"];
    let command = unigate["command"].as_array().unwrap();
    let config_path = arg_after(command, "--config").unwrap();
    let mount = unigate["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .find(|v| v.split(':').nth(1) == Some(config_path))
        .expect("the config file is mounted");
    let source = dir.join(mount.split(':').next().unwrap());
    let config_text = std::fs::read_to_string(&source).unwrap();
    let mut provided = BTreeMap::new();
    for (name, _) in unigate["environment"].as_object().unwrap() {
        provided.insert(format!("env:{name}"), "a-value-long-enough-for-any-check".to_string());
    }
    let cfg = load_with(&config_text, &provided);
    let published: Vec<&str> = unigate["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    let container_port = |p: &str| p.rsplit(':').next().unwrap().parse::<u16>().unwrap();
    assert!(published.iter().any(|p| container_port(p) == cfg.listen.port()));
    let admin = cfg.admin.as_ref().unwrap().address.port();
    let admin_pub = published
        .iter()
        .find(|p| container_port(p) == admin)
        .expect("the admin port published");
    assert!(admin_pub.starts_with("127.0.0.1:"), "the admin API only on this host");
    assert_eq!(
        module["network_mode"], "service:unigate",
        "the module shares unigate's network"
    );
    assert!(module.get("ports").is_none());
    let listen: std::net::SocketAddr = arg_after(module["command"].as_array().unwrap(), "--listen")
        .unwrap()
        .parse()
        .unwrap();
    assert!(listen.ip().is_loopback());
    assert_eq!(cfg.modules[0].upstreams, vec![listen]);
    let stop = duration(unigate["stop_grace_period"].as_str().unwrap());
    assert!(stop > cfg.drain_delay + cfg.shutdown_grace);
    assert_eq!(unigate["build"], "..", "built from the repository's Dockerfile");
}

#[test]
fn the_dockerfile_is_multi_stage_small_and_unprivileged() {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim_start().starts_with('#')).collect();
    let froms: Vec<&str> = lines.iter().filter(|l| l.starts_with("FROM ")).copied().collect();
    assert!(froms.len() >= 2, "multi-stage");
    assert!(froms.last().unwrap().contains("distroless"), "a small runtime image");
    let user = lines.iter().rev().find_map(|l| l.strip_prefix("USER ")).expect("USER");
    assert!(!user.starts_with('0') && !user.starts_with("root"), "non-root: {user}");
    let health = text.split("HEALTHCHECK").nth(1).expect("HEALTHCHECK");
    assert!(health.contains("/_unigate/healthz") && health.contains("healthcheck"));
    let expose = lines.iter().find_map(|l| l.strip_prefix("EXPOSE ")).unwrap();
    let default = GatewayConfig::load(&root().join("config/unigate.demo.toml")).unwrap();
    assert!(
        expose
            .split_whitespace()
            .any(|p| p == default.listen.port().to_string())
    );
    assert!(expose.split_whitespace().any(|p| p == "9090"));
    assert!(text.contains("--locked"), "the image builds what Cargo.lock pins");
}
