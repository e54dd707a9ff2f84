//! The deployment files, checked against the code since no Docker engine runs here:
//! docker-compose.yml, the nginx gateway, Prometheus, Grafana provisioning and
//! dashboards, the Dockerfile and the CI workflow.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use serde_json::Value;
use stampede::config::{ApiConfig, WorkerConfig};

use crate::support::deployment_files::{
    accepted_env, compose, environment, healthcheck, read, root, scalar, service, yaml,
};

/// Environment variables the binaries read outside their clap structs:
/// `RUST_LOG` is read by `telemetry::init` (tracing's `EnvFilter`).
const PROCESS_ENV: &[&str] = &["RUST_LOG"];

/// Services the stack must run: the API, its gateway, the worker and every dependency.
const REQUIRED_SERVICES: &[&str] =
    &["api", "gateway", "worker", "redis", "kafka", "postgres", "prometheus", "grafana", "otel-collector", "tempo"];

/// The port of an address such as `0.0.0.0:8080`, `kafka:9092` or a URL.
fn port_of(address: &str) -> u16 {
    let without_scheme = address.rsplit("://").next().unwrap();
    let authority = without_scheme.split('/').next().unwrap();
    let host_port = authority.rsplit('@').next().unwrap();
    host_port.rsplit(':').next().unwrap().parse().unwrap_or_else(|_| panic!("no port in `{address}`"))
}

/// The host of an address or URL.
fn host_of(address: &str) -> String {
    let without_scheme = address.rsplit("://").next().unwrap();
    let authority = without_scheme.split('/').next().unwrap();
    let host_port = authority.rsplit('@').next().unwrap();
    host_port.rsplit_once(':').map_or(host_port, |(host, _)| host).to_owned()
}

/// Container-side ports a service exposes or publishes.
fn container_ports(service: &Value) -> BTreeSet<u16> {
    let mut ports = BTreeSet::new();
    for key in ["expose", "ports"] {
        for entry in service[key].as_array().into_iter().flatten() {
            let text = scalar(entry);
            let container = text.rsplit(':').next().unwrap().split('/').next().unwrap();
            ports.insert(container.parse().unwrap_or_else(|_| panic!("bad port `{text}`")));
        }
    }
    ports
}

#[test]
fn compose_runs_every_service_with_healthchecks_and_named_volumes() {
    // Goal: docker-compose.yml runs the whole system (2 API replicas behind a gateway, worker, Redis with AOF
    // everysec and noeviction, Kafka in KRaft mode, Postgres, Prometheus, Grafana) with healthchecks,
    // depends_on conditions and named volumes.
    let compose = compose();
    let services = compose["services"].as_object().expect("services");
    for name in REQUIRED_SERVICES {
        assert!(services.contains_key(*name), "missing service {name}");
    }
    assert!(service(&compose, "api")["deploy"]["replicas"].as_u64().unwrap_or(1) >= 2, "api runs 2 replicas");
    let gateway_image = scalar(&service(&compose, "gateway")["image"]);
    assert!(["nginx", "haproxy", "traefik"].iter().any(|proxy| gateway_image.starts_with(proxy)), "{gateway_image}");

    let declared: BTreeSet<String> = compose["volumes"].as_object().expect("named volumes").keys().cloned().collect();
    let mut used = BTreeSet::new();
    for (name, definition) in services {
        assert!(!healthcheck(definition).is_empty(), "service {name} has no healthcheck");
        for (dependency, condition) in definition["depends_on"].as_object().into_iter().flatten() {
            assert!(services.contains_key(dependency), "{name} depends on unknown {dependency}");
            let condition = scalar(&condition["condition"]);
            assert!(
                ["service_healthy", "service_started", "service_completed_successfully"].contains(&condition.as_str()),
                "{name} -> {dependency}: depends_on needs a condition, got `{condition}`"
            );
        }
        for mount in definition["volumes"].as_array().into_iter().flatten() {
            let source = scalar(mount).split(':').next().unwrap().to_owned();
            if !source.starts_with('.') && !source.starts_with('/') {
                assert!(declared.contains(&source), "{name} mounts undeclared volume {source}");
                used.insert(source);
            }
        }
    }
    assert_eq!(used, declared, "every named volume is used");
    for stateful in ["redis", "kafka", "postgres", "prometheus", "grafana"] {
        let mounts = service(&compose, stateful)["volumes"].to_string();
        assert!(declared.iter().any(|volume| mounts.contains(&format!("{volume}:"))), "{stateful} keeps its data");
    }
    for (dependent, dependencies) in
        [("api", ["postgres", "redis", "kafka"].as_slice()), ("worker", &["postgres", "kafka"])]
    {
        for dependency in dependencies {
            let condition = scalar(&service(&compose, dependent)["depends_on"][dependency]["condition"]);
            assert_eq!(condition, "service_healthy", "{dependent} waits for a healthy {dependency}");
        }
    }

    let redis = service(&compose, "redis")["command"].as_array().expect("redis command").iter().map(scalar);
    let redis = redis.collect::<Vec<_>>().join(" ");
    for setting in [
        "--appendonly yes",
        "--appendfsync everysec",
        "--maxmemory-policy noeviction",
        "--hash-max-listpack-entries 128",
    ] {
        assert!(redis.contains(setting), "redis runs with {setting}: {redis}");
    }

    let kafka = service(&compose, "kafka");
    assert!(scalar(&kafka["image"]).starts_with("apache/kafka:"), "Apache Kafka's own image");
    let kafka_env = environment(kafka);
    assert_eq!(kafka_env["KAFKA_PROCESS_ROLES"], "broker,controller", "single-node KRaft");
    assert!(!services.keys().any(|name| name.contains("zookeeper")));
    let cluster_id = &kafka_env["CLUSTER_ID"];
    assert!(
        cluster_id.len() == 22 && cluster_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "CLUSTER_ID must be a base64url UUID"
    );
}

#[test]
fn compose_environment_is_accepted_by_the_binaries() {
    // Goal: every env var set on a service that runs one of our binaries is one that binary accepts (from clap).
    let compose = compose();
    let accepted: BTreeMap<&str, BTreeSet<String>> =
        [("api", accepted_env(&ApiConfig::command())), ("worker", accepted_env(&WorkerConfig::command()))]
            .into_iter()
            .collect();
    let mut checked = BTreeSet::new();
    for (name, definition) in compose["services"].as_object().unwrap() {
        if definition.get("build").is_none() {
            continue;
        }
        let binary = definition["command"].as_array().and_then(|command| command.first()).map(scalar);
        let binary = binary.unwrap_or_else(|| panic!("service {name} builds our image but names no binary"));
        let names = accepted.get(binary.as_str()).unwrap_or_else(|| panic!("{name} runs unknown binary {binary}"));
        for variable in environment(definition).keys() {
            assert!(
                names.contains(variable) || PROCESS_ENV.contains(&variable.as_str()),
                "service {name} sets {variable}, which `{binary}` does not accept; it accepts {names:?}"
            );
        }
        checked.insert(binary);
    }
    assert_eq!(checked, BTreeSet::from(["api".to_owned(), "worker".to_owned()]), "both binaries run in the stack");
    let api = environment(service(&compose, "api"));
    assert!(api.contains_key("JWT_SECRET"), "the api refuses to start without JWT_SECRET outside --dev");
}

#[test]
fn compose_ports_and_addresses_are_consistent() {
    // Goal: listen ports, exposed ports, healthchecks, the gateway upstream, Prometheus targets and connection
    // URLs all name the same services and ports.
    let compose = compose();
    let services = compose["services"].as_object().unwrap();
    let api = service(&compose, "api");
    let api_port = port_of(&environment(api)["LISTEN_ADDR"]);
    assert!(environment(api)["LISTEN_ADDR"].starts_with("0.0.0.0:"), "api listens on all interfaces");
    assert!(container_ports(api).contains(&api_port), "api exposes {api_port}");
    assert!(healthcheck(api).contains(&format!("127.0.0.1:{api_port}/")), "api healthcheck port");
    let worker = service(&compose, "worker");
    let worker_port = port_of(&environment(worker)["METRICS_ADDR"]);
    assert!(environment(worker)["METRICS_ADDR"].starts_with("0.0.0.0:"), "worker metrics on all interfaces");
    assert!(container_ports(worker).contains(&worker_port), "worker exposes {worker_port}");
    assert!(healthcheck(worker).contains(&format!("127.0.0.1:{worker_port}/")), "worker healthcheck port");

    let nginx = read("nginx/nginx.conf");
    assert!(nginx.contains(&format!("server api:{api_port} ")), "nginx upstream is api:{api_port}");
    let gateway = service(&compose, "gateway");
    let gateway_port = *container_ports(gateway).first().expect("gateway publishes a port");
    assert!(nginx.contains(&format!("listen {gateway_port};")), "nginx listens on the published port");
    assert!(healthcheck(gateway).contains(&format!("127.0.0.1:{gateway_port}/")));

    let scraped = scrape_targets(&yaml("prometheus/prometheus.yml"));
    assert_eq!(scraped.get("api"), Some(&api_port), "prometheus scrapes every api replica on LISTEN_ADDR's port");
    assert_eq!(scraped.get("worker"), Some(&worker_port), "prometheus scrapes the worker on METRICS_ADDR's port");
    for host in scraped.keys() {
        assert!(services.contains_key(host), "prometheus scrapes unknown service {host}");
    }

    let datasources = yaml("grafana/provisioning/datasources/prometheus.yml");
    let url = scalar(&datasources["datasources"][0]["url"]);
    assert_eq!(host_of(&url), "prometheus");
    assert!(container_ports(service(&compose, "prometheus")).contains(&port_of(&url)), "grafana -> {url}");

    for (name, definition) in services {
        let environment = environment(definition);
        for (key, expected_service) in [("DATABASE_URL", "postgres"), ("REDIS_URL", "redis")] {
            if let Some(url) = environment.get(key) {
                assert_eq!(host_of(url), expected_service, "{name} {key}");
            }
        }
        if let Some(brokers) = environment.get("KAFKA_BROKERS") {
            let advertised = environment_of(&compose, "kafka")["KAFKA_ADVERTISED_LISTENERS"].clone();
            for broker in brokers.split(',') {
                assert!(
                    advertised.contains(&format!("://{broker}")),
                    "{name} uses {broker}; kafka advertises {advertised}"
                );
            }
        }
    }
    let mut published = BTreeSet::new();
    for definition in services.values() {
        for entry in definition["ports"].as_array().into_iter().flatten() {
            let text = scalar(entry);
            let host_port = text.split(':').rev().nth(1).unwrap_or(&text).to_owned();
            assert!(published.insert(host_port.clone()), "host port {host_port} published twice");
        }
    }
}

/// Every host Prometheus scrapes, with its port (static targets and DNS discovery).
fn scrape_targets(prometheus: &Value) -> BTreeMap<String, u16> {
    let mut scraped = BTreeMap::new();
    for job in prometheus["scrape_configs"].as_array().expect("scrape_configs") {
        for discovery in job["dns_sd_configs"].as_array().into_iter().flatten() {
            for name in discovery["names"].as_array().unwrap() {
                scraped.insert(scalar(name), u16::try_from(discovery["port"].as_u64().unwrap()).unwrap());
            }
        }
        for group in job["static_configs"].as_array().into_iter().flatten() {
            for target in group["targets"].as_array().unwrap() {
                scraped.insert(host_of(&scalar(target)), port_of(&scalar(target)));
            }
        }
    }
    scraped
}

/// The networks a compose service is on.
fn networks(compose: &Value, name: &str) -> BTreeSet<String> {
    service(compose, name)["networks"].as_array().into_iter().flatten().map(scalar).collect()
}

#[test]
fn compose_traces_go_through_the_collector_to_tempo_and_grafana() {
    // Goal: the api and the worker export OTLP to the collector on a port its receiver listens on, over a
    // network they share; the collector exports to Tempo's OTLP receiver; Grafana's Tempo data source is
    // Tempo's query port; every file parses.
    let compose = compose();
    let collector = yaml("otel-collector/config.yaml");
    let receivers = &collector["receivers"]["otlp"]["protocols"];
    for binary in ["api", "worker"] {
        let environment = environment_of(&compose, binary);
        let endpoint = &environment["OTEL_EXPORTER_OTLP_ENDPOINT"];
        assert_eq!(host_of(endpoint), "otel-collector", "{binary} exports to the collector");
        let protocol = match environment["OTEL_EXPORTER_OTLP_PROTOCOL"].as_str() {
            "http/protobuf" => "http",
            "grpc" => "grpc",
            other => panic!("{binary}: unknown OTLP protocol {other}"),
        };
        let listening = port_of(&scalar(&receivers[protocol]["endpoint"]));
        assert_eq!(port_of(endpoint), listening, "{binary} -> the collector's {protocol} receiver");
        assert!(container_ports(service(&compose, "otel-collector")).contains(&listening));
        assert!(!networks(&compose, binary).is_disjoint(&networks(&compose, "otel-collector")), "{binary} reaches it");
        assert!(environment.contains_key("OTEL_TRACES_SAMPLER") && environment.contains_key("OTEL_TRACES_SAMPLER_ARG"));
    }
    let pipeline = &collector["service"]["pipelines"]["traces"];
    assert!(pipeline["receivers"].as_array().unwrap().iter().any(|receiver| receiver == "otlp"));
    let exporter = scalar(&pipeline["exporters"][0]);
    let tempo_endpoint = scalar(&collector["exporters"][exporter.as_str()]["endpoint"]);
    assert_eq!(host_of(&tempo_endpoint), "tempo");
    let tempo = yaml("tempo/tempo.yaml");
    let tempo_receiver = port_of(&scalar(&tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]));
    assert_eq!(port_of(&tempo_endpoint), tempo_receiver, "the collector -> Tempo's OTLP receiver");
    assert!(!networks(&compose, "otel-collector").is_disjoint(&networks(&compose, "tempo")));
    for (file, path) in [("./otel-collector/config.yaml", "otel-collector"), ("./tempo/tempo.yaml", "tempo")] {
        let mounts = service(&compose, path)["volumes"].to_string();
        assert!(mounts.contains(file), "{path} mounts {file}");
    }

    let datasources = yaml("grafana/provisioning/datasources/tempo.yml");
    let source = &datasources["datasources"][0];
    assert_eq!(scalar(&source["type"]), "tempo");
    let url = scalar(&source["url"]);
    assert_eq!(host_of(&url), "tempo");
    assert_eq!(u64::from(port_of(&url)), tempo["server"]["http_listen_port"].as_u64().unwrap(), "grafana -> Tempo");
    assert!(!networks(&compose, "grafana").is_disjoint(&networks(&compose, "tempo")));
}

fn environment_of(compose: &Value, name: &str) -> BTreeMap<String, String> {
    environment(service(compose, name))
}

#[test]
fn grafana_provisioning_loads_the_dashboards_from_the_compose_mounts() {
    // Goal: the provisioned datasource uid is the one the dashboards use, and the dashboard provider reads the
    // directory that compose mounts.
    let compose = compose();
    let mounts: BTreeMap<String, String> = service(&compose, "grafana")["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(scalar)
        .filter_map(|mount| {
            let mut parts = mount.split(':');
            Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
        })
        .collect();
    assert_eq!(mounts.get("./grafana/provisioning").map(String::as_str), Some("/etc/grafana/provisioning"));
    let dashboards_mount = mounts.get("./grafana/dashboards").expect("dashboards are mounted");
    let providers = yaml("grafana/provisioning/dashboards/stampede.yml");
    assert_eq!(&scalar(&providers["providers"][0]["options"]["path"]), dashboards_mount);
    let home = environment_of(&compose, "grafana")["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"].clone();
    let home_file = home.strip_prefix(&format!("{dashboards_mount}/")).expect("home dashboard is in the mount");
    assert!(root().join("grafana/dashboards").join(home_file).exists());

    let datasources = yaml("grafana/provisioning/datasources/prometheus.yml");
    let uids: BTreeSet<String> =
        datasources["datasources"].as_array().unwrap().iter().map(|source| scalar(&source["uid"])).collect();
    for (file, dashboard) in dashboards() {
        let mut used = BTreeSet::new();
        collect_datasource_uids(&dashboard, &mut used);
        assert!(!used.is_empty(), "{file} names its datasource");
        assert!(used.is_subset(&uids), "{file} uses datasources {used:?}; provisioned: {uids:?}");
    }
}

fn collect_datasource_uids(value: &Value, uids: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Object(source)) = map.get("datasource")
                && let Some(uid) = source.get("uid").and_then(Value::as_str)
            {
                uids.insert(uid.to_owned());
            }
            map.values().for_each(|inner| collect_datasource_uids(inner, uids));
        }
        Value::Array(items) => items.iter().for_each(|inner| collect_datasource_uids(inner, uids)),
        _ => {}
    }
}

/// Every dashboard JSON under grafana/dashboards.
fn dashboards() -> Vec<(String, Value)> {
    let directory = root().join("grafana/dashboards");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&directory).expect("grafana/dashboards exists") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|extension| extension == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            let value = serde_json::from_str(&text).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
            found.push((path.file_name().unwrap().to_string_lossy().into_owned(), value));
        }
    }
    assert!(!found.is_empty(), "at least one dashboard");
    found
}

/// Every `.rs` file under `directory`.
fn rust_files(directory: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(directory).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            files.push(path);
        }
    }
    files
}

/// The string literal right after each `marker` in `text`; `Err` names a marker followed by
/// something else.
fn literals_after(text: &str, marker: &str) -> Vec<Result<String, String>> {
    let mut found = Vec::new();
    for (index, _) in text.match_indices(marker) {
        let rest = text[index + marker.len()..].trim_start();
        match rest.strip_prefix('"').and_then(|rest| rest.split_once('"')) {
            Some((literal, _)) => found.push(Ok(literal.to_owned())),
            None => found.push(Err(rest.chars().take(40).collect())),
        }
    }
    found
}

/// The metric names the code exports, read from the `metrics::counter!/gauge!/histogram!` calls under src/,
/// plus `_bucket`, `_sum` and `_count` for histograms whose suffix has buckets in `telemetry::install_metrics`.
fn exported_metrics() -> BTreeSet<String> {
    let bucketed: Vec<String> = literals_after(&read("src/telemetry.rs"), "Matcher::Suffix(")
        .into_iter()
        .map(|suffix| suffix.expect("bucket matchers use literal suffixes"))
        .collect();
    assert!(!bucketed.is_empty());
    let bucketed_names: Vec<String> = literals_after(&read("src/telemetry.rs"), "Matcher::Full(")
        .into_iter()
        .map(|name| name.expect("bucket matchers use literal names"))
        .collect();
    let mut names = BTreeSet::new();
    for file in rust_files(&root().join("src")) {
        let text = std::fs::read_to_string(&file).unwrap();
        for (macro_name, histogram) in [("counter!(", false), ("gauge!(", false), ("histogram!(", true)] {
            for name in literals_after(&text, macro_name) {
                let name = name.unwrap_or_else(|rest| {
                    panic!(
                        "{}: {macro_name}{rest}: use a literal metric name so dashboards can be checked",
                        file.display()
                    )
                });
                let bucketed =
                    bucketed.iter().any(|suffix| name.ends_with(suffix.as_str())) || bucketed_names.contains(&name);
                if histogram && bucketed {
                    names.extend(["_bucket", "_sum", "_count"].map(|suffix| format!("{name}{suffix}")));
                }
                names.insert(name);
            }
        }
    }
    names
}

/// Metric names in a PromQL expression: identifiers that are not functions, keywords,
/// grouping labels, label matchers, ranges, strings or numbers.
// Aggregations may put `by (...)` between their name and their parentheses.
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];
const GROUPING: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];

/// The expression with label matchers, ranges and strings blanked out, so only names remain.
fn strip_matchers_and_strings(expression: &str) -> String {
    let mut stripped = String::new();
    let mut closing: Option<char> = None;
    for character in expression.chars() {
        match closing {
            Some(end) if character == end => closing = None,
            Some(_) => {}
            None => match character {
                '{' => closing = Some('}'),
                '[' => closing = Some(']'),
                '"' | '\'' | '`' => closing = Some(character),
                other => {
                    stripped.push(other);
                    continue;
                }
            },
        }
        stripped.push(' ');
    }
    stripped
}

fn promql_metrics(expression: &str) -> BTreeSet<String> {
    let stripped = strip_matchers_and_strings(expression);
    let characters: Vec<char> = stripped.chars().collect();
    let mut names = BTreeSet::new();
    let mut index = 0;
    while index < characters.len() {
        let character = characters[index];
        if character.is_ascii_digit() || character == '$' {
            while index < characters.len()
                && (characters[index].is_ascii_alphanumeric() || "._$".contains(characters[index]))
            {
                index += 1;
            }
            continue;
        }
        if !(character.is_ascii_alphabetic() || character == '_' || character == ':') {
            index += 1;
            continue;
        }
        let start = index;
        while index < characters.len()
            && (characters[index].is_ascii_alphanumeric() || "_:".contains(characters[index]))
        {
            index += 1;
        }
        let word: String = characters[start..index].iter().collect();
        let mut next = index;
        while next < characters.len() && characters[next].is_whitespace() {
            next += 1;
        }
        let calls = characters.get(next) == Some(&'(');
        if GROUPING.contains(&word.to_lowercase().as_str()) {
            if calls {
                index = next + characters[next..].iter().position(|c| *c == ')').unwrap_or(0);
            }
        } else if !calls && !KEYWORDS.contains(&word.to_lowercase().as_str()) {
            names.insert(word);
        }
    }
    names
}

/// Every PromQL expression of a dashboard, with where it came from.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    let mut panels: Vec<&Value> = dashboard["panels"].as_array().into_iter().flatten().collect();
    while let Some(panel) = panels.pop() {
        panels.extend(panel["panels"].as_array().into_iter().flatten());
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expression) = target["expr"].as_str() {
                queries.push((scalar(&panel["title"]), expression.to_owned()));
            }
        }
    }
    for variable in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        let query = variable["query"]["query"].as_str().or(variable["query"].as_str()).unwrap_or_default();
        // label_values(metric, label) names a metric; label_values(label) does not.
        if let Some(arguments) = query.strip_prefix("label_values(").and_then(|rest| rest.strip_suffix(')'))
            && let Some((metric, _)) = arguments.rsplit_once(',')
        {
            queries.push((format!("variable {}", scalar(&variable["name"])), metric.trim().to_owned()));
        }
    }
    queries
}

#[test]
fn promql_metric_names_are_extracted_without_labels_functions_or_variables() {
    // Goal: the dashboard check reads metric names from PromQL correctly, so it neither misses nor invents one.
    let expression = r#"histogram_quantile(0.99, sum by (le, route) (rate(http_request_duration_seconds_bucket{route=~"/x", status!="5.."}[$__rate_interval]))) / clamp_min(sum(rate(http_requests_total[5m] offset 1h)), 1e-9) * on (job) group_left (version) up"#;
    let names: Vec<String> = promql_metrics(expression).into_iter().collect();
    assert_eq!(names, ["http_request_duration_seconds_bucket", "http_requests_total", "up"]);
}

#[test]
fn dashboard_queries_use_only_metrics_the_code_exports() {
    // Goal: every metric a dashboard panel or variable queries is one that a metrics::counter!/gauge!/histogram!
    // call under src/ exports, and the dashboard has the panels operators need.
    let exported = exported_metrics();
    for (file, dashboard) in dashboards() {
        let queries = dashboard_queries(&dashboard);
        assert!(!queries.is_empty(), "{file} has queries");
        let mut used = BTreeSet::new();
        for (source, expression) in &queries {
            for name in promql_metrics(expression) {
                assert!(
                    exported.contains(&name),
                    "{file}: `{source}` queries `{name}`, which the code does not export"
                );
                used.insert(name);
            }
        }
        if file == "stampede.json" {
            let required = [
                "http_requests_total",
                "http_request_duration_seconds_bucket",
                "reservation_outcomes_total",
                "stock_tickets",
                "stock_quota_tickets",
                "outbox_backlog_entries",
                "worker_partition_lag_records",
                "reaper_release_delay_seconds_bucket",
            ];
            for name in required {
                assert!(used.contains(name), "{file} has no panel on {name}");
            }
            let all: String = queries.iter().map(|(_, expression)| expression.as_str()).collect();
            for quantile in ["histogram_quantile(0.5,", "histogram_quantile(0.95,", "histogram_quantile(0.99,"] {
                assert!(all.contains(quantile), "{file} shows {quantile}");
            }
            assert!(all.contains(r#"status=~"5.."#) && all.contains("by (status"), "{file} shows 5xx and 4xx by code");
        }
    }
}

#[test]
fn dockerfile_builds_every_binary_into_a_small_non_root_image() {
    // Goal: the Dockerfile is multi-stage, builds every src/bin binary in release mode, and runs as a non-root
    // user on a slim base.
    let dockerfile = read("Dockerfile");
    let stages: Vec<&str> = dockerfile.lines().filter(|line| line.starts_with("FROM ")).collect();
    assert!(stages.len() >= 2, "multi-stage");
    let runtime = stages.last().unwrap();
    assert!(runtime.contains("-slim") || runtime.contains("distroless"), "small runtime image: {runtime}");
    assert!(dockerfile.contains("cargo build --release --locked"));
    for entry in std::fs::read_dir(root().join("src/bin")).unwrap() {
        let name = entry.unwrap().path().file_stem().unwrap().to_string_lossy().into_owned();
        assert!(dockerfile.contains(&format!("--bin {name}")), "the image builds `{name}`");
        assert!(dockerfile.contains(&format!("target/release/{name}")), "the image ships `{name}`");
    }
    let final_stage = &dockerfile[dockerfile.rfind("\nFROM ").unwrap()..];
    let user = final_stage.lines().find_map(|line| line.strip_prefix("USER ")).expect("the runtime sets USER");
    assert!(!user.starts_with("root") && !user.starts_with('0'), "non-root user, got {user}");
}

#[test]
fn ci_workflow_runs_fmt_clippy_and_the_suite_with_its_services() {
    // Goal: the GitHub workflow runs what .ci/run runs (fmt, clippy, scripts/test, scripts/fuzz) with Postgres and Redis service
    // containers and the same tansu version that scripts/services installs.
    let workflow = yaml(".github/workflows/ci.yml");
    let mut commands = String::new();
    let mut services = BTreeSet::new();
    for job in workflow["jobs"].as_object().expect("jobs").values() {
        services.extend(job["services"].as_object().into_iter().flatten().map(|(name, _)| name.clone()));
        for step in job["steps"].as_array().into_iter().flatten() {
            commands.push_str(&scalar(&step["run"]));
            commands.push('\n');
        }
    }
    for command in
        ["cargo fmt --all -- --check", "cargo clippy --all-targets", "-D warnings", "scripts/test", "scripts/fuzz"]
    {
        assert!(commands.contains(command), "ci runs `{command}`");
    }
    assert!(services.contains("postgres") && services.contains("redis"), "service containers: {services:?}");
    let services_script = read("scripts/services");
    let version = services_script
        .lines()
        .find_map(|line| line.strip_prefix("TANSU_VERSION="))
        .expect("scripts/services pins TANSU_VERSION");
    assert!(read(".github/workflows/ci.yml").contains(&format!("tansu-{version}-")), "ci caches tansu {version}");
}

#[test]
fn the_cluster_override_runs_a_six_node_redis_cluster_for_both_binaries() {
    // Goal: docker-compose.cluster.yml runs six Redis nodes in cluster mode (AOF, noeviction, a volume each), creates
    // the cluster with one replica per master before the api and the worker start, and gives both binaries
    // REDIS_CLUSTER=true and every node as a seed, in variables they accept.
    let cluster = yaml("docker-compose.cluster.yml");
    let base = compose();
    let services = cluster["services"].as_object().expect("services");
    let nodes: BTreeSet<String> =
        services.keys().filter(|name| name.starts_with("redis-") && *name != "redis-cluster-init").cloned().collect();
    assert_eq!(nodes.len(), 6, "3 masters and 3 replicas: {nodes:?}");
    let declared: BTreeSet<String> = cluster["volumes"].as_object().expect("named volumes").keys().cloned().collect();
    for node in &nodes {
        let definition = &services[node];
        let command: Vec<String> = definition["command"].as_array().expect("a command").iter().map(scalar).collect();
        let flag = |name: &str| command.iter().position(|part| part == name).map(|index| command[index + 1].clone());
        assert_eq!(flag("--cluster-enabled").as_deref(), Some("yes"), "{node}");
        assert_eq!(flag("--appendonly").as_deref(), Some("yes"), "{node}");
        assert_eq!(flag("--maxmemory-policy").as_deref(), Some("noeviction"), "{node}");
        assert!(healthcheck(definition).contains("redis-cli ping"), "{node}");
        let volume = format!("{node}-data");
        assert!(definition["volumes"].to_string().contains(&format!("{volume}:/data")), "{node} keeps /data");
        assert!(declared.contains(&volume), "{volume} is declared");
    }
    let init = &services["redis-cluster-init"];
    let script = init["command"].to_string();
    assert!(script.contains("--cluster create") && script.contains("--cluster-replicas 1"), "{script}");
    for node in &nodes {
        assert_eq!(scalar(&init["depends_on"][node]["condition"]), "service_healthy", "init waits for {node}");
    }
    for (binary, command) in [("api", ApiConfig::command()), ("worker", WorkerConfig::command())] {
        assert!(base["services"].get(binary).is_some(), "the override extends the base's {binary}");
        let definition = &services[binary];
        let condition = scalar(&definition["depends_on"]["redis-cluster-init"]["condition"]);
        assert_eq!(condition, "service_completed_successfully", "{binary} starts on a created cluster");
        let variables = environment(definition);
        assert_eq!(variables["REDIS_CLUSTER"], "true", "{binary}");
        let seeds: BTreeSet<String> = variables["REDIS_URL"].split(',').map(host_of).collect();
        assert_eq!(seeds, nodes, "{binary} lists every node as a seed");
        assert!(variables["REDIS_URL"].split(',').all(|seed| port_of(seed) == 6379));
        let accepted = accepted_env(&command);
        assert!(variables.keys().all(|variable| accepted.contains(variable)), "{binary} accepts {variables:?}");
    }
}
