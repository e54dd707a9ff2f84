//! The deployment's security settings, checked in the compose files and the nginx
//! configuration (no Docker engine runs here): monitoring on this host only, no default
//! passwords, secrets as files, /metrics internal, limits at the edge and on every
//! container, and a gateway without root.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::support::deployment_files::{compose, environment, healthcheck, read, scalar, service, yaml};

fn cluster() -> Value {
    yaml("docker-compose.cluster.yml")
}

/// The networks a service joins (list or map form).
fn networks(service: &Value) -> BTreeSet<String> {
    match &service["networks"] {
        Value::Array(names) => names.iter().map(scalar).collect(),
        Value::Object(map) => map.keys().cloned().collect(),
        _ => BTreeSet::new(),
    }
}

/// A service's entrypoint and command as one string.
fn start_command(service: &Value) -> String {
    let mut parts = Vec::new();
    for key in ["entrypoint", "command"] {
        match &service[key] {
            Value::Array(items) => parts.extend(items.iter().map(scalar)),
            other => parts.push(scalar(other)),
        }
    }
    parts.join(" ")
}

#[test]
fn only_the_gateway_is_public_and_monitoring_is_on_this_host_only() {
    // Goal: the gateway is the one port published on every interface; Prometheus and Grafana are published on
    // 127.0.0.1 only; the api, the worker and the stores publish nothing and join only internal networks.
    let compose = compose();
    for (name, definition) in compose["services"].as_object().unwrap() {
        for entry in definition["ports"].as_array().into_iter().flatten() {
            let entry = scalar(entry);
            if name == "gateway" {
                continue;
            }
            assert!(entry.starts_with("127.0.0.1:"), "{name} publishes {entry} beyond this host");
        }
    }
    for monitoring in ["prometheus", "grafana"] {
        assert!(service(&compose, monitoring)["ports"].as_array().is_some_and(|ports| !ports.is_empty()));
    }
    assert!(cluster()["services"].as_object().unwrap().values().all(|node| node.get("ports").is_none()));
    let internal: BTreeSet<String> = compose["networks"]
        .as_object()
        .expect("networks")
        .iter()
        .filter(|(_, network)| network["internal"].as_bool() == Some(true))
        .map(|(name, _)| name.clone())
        .collect();
    for backend in ["api", "worker", "redis", "kafka", "postgres"] {
        let joined = networks(service(&compose, backend));
        assert!(
            !joined.is_empty() && joined.is_subset(&internal),
            "{backend} joins {joined:?}; internal: {internal:?}"
        );
        assert!(service(&compose, backend).get("ports").is_none(), "{backend} publishes nothing");
    }
}

#[test]
fn no_secret_has_a_default_and_the_stores_take_them_as_files() {
    // Goal: every password and secret in both compose files is a required variable (`${VAR:?message}`), never a
    // literal or a `${VAR:-default}`; Postgres reads its password from a secret file, and Grafana has no default admin.
    for file in ["docker-compose.yml", "docker-compose.cluster.yml"] {
        let text = read(file);
        for (index, _) in text.match_indices("${") {
            let reference = &text[index..text[index..].find('}').map_or(text.len(), |end| index + end + 1)];
            let sensitive = ["PASSWORD", "SECRET"].iter().any(|word| reference.contains(word));
            assert!(!sensitive || reference.contains(":?"), "{file}: {reference} must be required, without a default");
        }
    }
    let compose = compose();
    let mut checked = 0;
    for (name, definition) in compose["services"].as_object().unwrap() {
        for (key, value) in environment(definition) {
            if (key.contains("PASSWORD") || key.contains("SECRET")) && !key.ends_with("_FILE") {
                assert!(value.starts_with("${") && value.contains(":?"), "{name} {key} = {value}");
                checked += 1;
            }
            if let Some((_, userinfo)) = value.split_once("://").filter(|(_, rest)| rest.contains('@')) {
                let password = userinfo.split('@').next().unwrap().split_once(':').map(|(_, password)| password);
                assert!(
                    password.is_some_and(|password| password.starts_with("${") && password.contains(":?")),
                    "{name} {key}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 6, "JWT_SECRET, the Grafana password and the api's and worker's store URLs: {checked}");
    let postgres = environment(service(&compose, "postgres"));
    assert!(!postgres.contains_key("POSTGRES_PASSWORD"), "no password in the Postgres environment");
    assert_eq!(postgres["POSTGRES_PASSWORD_FILE"], "/run/secrets/postgres_password");
    let declared = compose["secrets"].as_object().expect("top-level secrets");
    for (store, secret) in [("postgres", "postgres_password"), ("redis", "redis_password")] {
        assert!(declared.contains_key(secret), "{secret} is declared");
        let used: Vec<String> = service(&compose, store)["secrets"].as_array().unwrap().iter().map(scalar).collect();
        assert!(used.contains(&secret.to_owned()), "{store} mounts {secret}");
    }
}

#[test]
fn every_redis_requires_a_password_that_never_reaches_a_command_line() {
    // Goal: the single Redis and every cluster node set requirepass (and masterauth) from the secret file through
    // a config file, run the image's entrypoint (so not as root), check health with the password, and every
    // client's REDIS_URL carries the required password.
    let compose = compose();
    let cluster = cluster();
    let mut nodes = vec![("redis".to_owned(), service(&compose, "redis").clone())];
    for (name, definition) in cluster["services"].as_object().unwrap() {
        if name.starts_with("redis-") && name != "redis-cluster-init" {
            nodes.push((name.clone(), definition.clone()));
        }
    }
    assert_eq!(nodes.len(), 7);
    for (name, node) in &nodes {
        let start = start_command(node);
        for needed in ["/run/secrets/redis_password", "requirepass", "masterauth", "docker-entrypoint.sh redis-server"]
        {
            assert!(start.contains(needed), "{name} start lacks {needed}: {start}");
        }
        assert!(!start.contains("--requirepass"), "{name}: the password must not be an argument");
        assert!(healthcheck(node).contains("REDISCLI_AUTH"), "{name} health check authenticates");
        assert!(node["secrets"].to_string().contains("redis_password"), "{name} mounts the secret");
    }
    let init = start_command(&cluster["services"]["redis-cluster-init"]);
    assert!(init.contains("REDISCLI_AUTH") && init.contains("/run/secrets/redis_password"), "{init}");
    for file in [&compose, &cluster] {
        for binary in ["api", "worker"] {
            let Some(definition) = file["services"].get(binary) else { continue };
            let Some(url) = environment(definition).get("REDIS_URL").cloned() else { continue };
            for seed in url.split(",redis") {
                assert!(seed.contains(":${REDIS_PASSWORD:?") && seed.contains('@'), "{binary} seed {seed}");
            }
        }
    }
}

#[test]
fn every_container_has_memory_cpu_and_process_limits() {
    // Goal: each service of both compose files (the override's api and worker keep the base's) has
    // deploy.resources.limits with cpus, memory and pids.
    let base = compose();
    for (file, document) in [("docker-compose.yml", &base), ("docker-compose.cluster.yml", &cluster())] {
        for (name, definition) in document["services"].as_object().unwrap() {
            let limits = match &definition["deploy"]["resources"]["limits"] {
                Value::Null if file != "docker-compose.yml" && base["services"].get(name).is_some() => {
                    &base["services"][name]["deploy"]["resources"]["limits"]
                }
                limits => limits,
            };
            for limit in ["cpus", "memory", "pids"] {
                assert!(!limits[limit].is_null(), "{file}: {name} has no {limit} limit");
            }
        }
    }
}

#[test]
fn the_gateway_runs_without_root_limits_each_client_and_keeps_metrics_inside() {
    // Goal: nginx runs unprivileged on an unprivileged port, limits requests and connections per client address
    // (429 problem+json with Retry-After), forwards X-Forwarded-For on every proxied location, refuses /metrics,
    // and the api trusts exactly the network it shares with the gateway alone.
    let compose = compose();
    let gateway = service(&compose, "gateway");
    assert!(scalar(&gateway["image"]).starts_with("nginxinc/nginx-unprivileged:"), "an unprivileged nginx");
    let user = scalar(&gateway["user"]);
    assert!(!user.is_empty() && !user.starts_with('0') && !user.starts_with("root"), "user {user}");
    assert_eq!(gateway["read_only"].as_bool(), Some(true));
    let nginx = read("nginx/nginx.conf");
    assert!(
        !nginx.lines().any(|line| line.trim_start().starts_with("user ")),
        "no user directive: not started as root"
    );
    for line in nginx.lines().filter_map(|line| line.trim().strip_prefix("listen ")) {
        let port: u16 = line.trim_end_matches(';').parse().unwrap();
        assert!(port >= 1024, "port {port} needs no root");
    }
    for directive in [
        "limit_req_zone $binary_remote_addr",
        "limit_conn_zone $binary_remote_addr",
        "limit_req zone=",
        "limit_conn connections_per_client",
        "limit_req_status 429;",
        "limit_conn_status 429;",
        "add_header Retry-After",
        r#""code":"rate_limited""#,
    ] {
        assert!(nginx.contains(directive), "nginx lacks `{directive}`");
    }
    let proxies = nginx.matches("proxy_pass ").count();
    let forwarded = nginx.matches("proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;").count();
    assert!(proxies >= 1 && forwarded == proxies, "every proxied location forwards the client address");
    let metrics = nginx.split("location = /metrics {").nth(1).expect("a /metrics location").split('}').next().unwrap();
    assert!(metrics.contains("return 404;") && !metrics.contains("proxy_pass"), "/metrics stays inside");

    let trusted = environment(service(&compose, "api"))["TRUSTED_PROXIES"].clone();
    let shared: Vec<String> = networks(gateway).intersection(&networks(service(&compose, "api"))).cloned().collect();
    assert_eq!(shared.len(), 1, "the gateway reaches the api over one network: {shared:?}");
    let subnet = scalar(&compose["networks"][&shared[0]]["ipam"]["config"][0]["subnet"]);
    assert_eq!(trusted, subnet, "the api trusts the gateway's network");
    let members: BTreeSet<&str> = compose["services"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, definition)| networks(definition).contains(&shared[0]))
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(members, BTreeSet::from(["api", "gateway"]), "nothing else can send from the trusted network");
    let resolved = trusted.split_once(":-").map_or(trusted.as_str(), |(_, default)| default.trim_end_matches('}'));
    resolved.parse::<stampede::client_address::TrustedProxies>().expect("the api parses the default");
}
