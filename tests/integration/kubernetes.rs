//! deploy/kubernetes: the base and each overlay rendered the way kustomize does, every
//! object validated offline against the Kubernetes schemas (`kubernetes-validate`,
//! strict: unknown fields fail), and checked against the code and the operations rules.
//!
//! No kustomize binary is available here, so [`render`] implements the part of
//! kustomize these files use: `resources` (files and directories), `namespace`,
//! `images`, and `patches` by path as strategic merge patches (maps merge; `null`
//! deletes; the `containers`, `env`, `ports` and `volumes` lists merge by `name`; other
//! lists replace). A test refuses any other kustomization field.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::{CommandFactory, Parser};
use serde::Deserialize;
use serde_json::{Map, Value};
use stampede::config::{ApiConfig, WorkerConfig};

use crate::support::deployment_files::accepted_env;

/// The kustomizations an operator may apply.
const KUSTOMIZATIONS: &[&str] = &["base", "overlays/redis-cluster", "overlays/grpc"];

/// Kubernetes versions the manifests are validated against: the oldest still
/// supported upstream and the newest the schemas cover.
const KUBERNETES_VERSIONS: &[&str] = &["1.30.0", "1.37.0"];

/// Kinds that are custom resources: no schema in `kubernetes-validate`, checked here instead.
const CUSTOM_KINDS: &[&str] = &["ServiceMonitor"];

/// Settings of the contract that an overlay sets before this build has them:
/// `GRPC_LISTEN_ADDR` (the gRPC server, issue 24) in overlays/grpc.
const SETTINGS_NOT_BUILT_YET: &[&str] = &["GRPC_LISTEN_ADDR"];

/// Lists a strategic merge patch merges by `name` (the rest are replaced).
const LISTS_MERGED_BY_NAME: &[&str] = &["containers", "initContainers", "env", "ports", "volumes", "volumeMounts"];

/// The kustomization fields [`render`] implements.
const KUSTOMIZE_FIELDS: &[&str] = &["apiVersion", "kind", "namespace", "resources", "images", "patches"];

fn directory(kustomization: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes").join(kustomization)
}

fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|error| panic!("read {}: {error}", path.display()));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|document| {
            let value = serde_yaml_ng::Value::deserialize(document)
                .unwrap_or_else(|error| panic!("parse {}: {error}", path.display()));
            serde_json::to_value(value).expect("YAML maps to JSON")
        })
        .filter(|value| !value.is_null())
        .collect()
}

/// Renders the kustomization in `dir` into its objects.
fn render(dir: &Path) -> Vec<Value> {
    let kustomization = yaml_documents(&dir.join("kustomization.yaml")).remove(0);
    for key in kustomization.as_object().expect("a map").keys() {
        assert!(KUSTOMIZE_FIELDS.contains(&key.as_str()), "{}: `{key}` is not rendered by this test", dir.display());
    }
    let mut objects = Vec::new();
    for resource in kustomization["resources"].as_array().into_iter().flatten() {
        let path = dir.join(resource.as_str().expect("a path"));
        if path.is_dir() { objects.extend(render(&path)) } else { objects.extend(yaml_documents(&path)) }
    }
    for patch in kustomization["patches"].as_array().into_iter().flatten() {
        let path = dir.join(patch["path"].as_str().expect("patches by path"));
        for document in yaml_documents(&path) {
            let target = objects
                .iter_mut()
                .find(|object| {
                    object["kind"] == document["kind"] && object["metadata"]["name"] == document["metadata"]["name"]
                })
                .unwrap_or_else(|| panic!("{} patches an object the resources do not have", path.display()));
            merge(target, &document, "");
        }
    }
    if let Some(namespace) = kustomization["namespace"].as_str() {
        for object in &mut objects {
            if object["kind"] != "Namespace" {
                object["metadata"]["namespace"] = Value::String(namespace.to_owned());
            }
        }
    }
    for image in kustomization["images"].as_array().into_iter().flatten() {
        let name = image["name"].as_str().expect("an image name");
        let new =
            format!("{}:{}", image["newName"].as_str().unwrap_or(name), image["newTag"].as_str().expect("newTag"));
        for object in &mut objects {
            for_each_container(object, &mut |container| {
                if container["image"] == name {
                    container["image"] = Value::String(new.clone());
                }
            });
        }
    }
    objects
}

/// A strategic merge of `patch` into `target`; `key` is the field `target` sits under.
fn merge(target: &mut Value, patch: &Value, key: &str) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (field, value) in patch {
                if value.is_null() {
                    target.remove(field);
                } else if let Some(existing) = target.get_mut(field) {
                    merge(existing, value, field);
                } else {
                    target.insert(field.clone(), value.clone());
                }
            }
        }
        (Value::Array(target), Value::Array(patch)) if LISTS_MERGED_BY_NAME.contains(&key) => {
            for item in patch {
                match target.iter_mut().find(|existing| existing["name"] == item["name"]) {
                    Some(existing) => merge(existing, item, ""),
                    None => target.push(item.clone()),
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

/// The pod template's spec of a workload, if the object is one.
fn pod_spec(object: &mut Value) -> Option<&mut Value> {
    let kind = object["kind"].as_str().unwrap_or_default().to_owned();
    let spec = match kind.as_str() {
        "Deployment" | "Job" | "StatefulSet" | "DaemonSet" => object.pointer_mut("/spec/template/spec"),
        "CronJob" => object.pointer_mut("/spec/jobTemplate/spec/template/spec"),
        _ => None,
    };
    spec.filter(|spec| spec.is_object())
}

fn for_each_container(object: &mut Value, visit: &mut dyn FnMut(&mut Value)) {
    if let Some(spec) = pod_spec(object) {
        for container in spec["containers"].as_array_mut().into_iter().flatten() {
            visit(container);
        }
    }
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|object| object["kind"] == kind && object["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn container<'a>(objects: &'a [Value], deployment: &str) -> &'a Value {
    &find(objects, "Deployment", deployment)["spec"]["template"]["spec"]["containers"][0]
}

/// A container's environment: its `env` values (secret references as `secret:KEY`) over the ConfigMaps it loads.
fn environment(objects: &[Value], container: &Value) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for source in container["envFrom"].as_array().into_iter().flatten() {
        let name = source["configMapRef"]["name"].as_str().expect("only ConfigMaps are loaded whole");
        for (key, value) in find(objects, "ConfigMap", name)["data"].as_object().expect("data") {
            env.insert(key.clone(), value.as_str().expect("string values").to_owned());
        }
    }
    for variable in container["env"].as_array().into_iter().flatten() {
        let value = match variable["value"].as_str() {
            Some(value) => value.to_owned(),
            None => format!("secret:{}", variable["valueFrom"]["secretKeyRef"]["key"].as_str().expect("a secret ref")),
        };
        env.insert(variable["name"].as_str().expect("a name").to_owned(), value);
    }
    env
}

fn duration_seconds(text: &str) -> u64 {
    humantime::parse_duration(text).unwrap_or_else(|error| panic!("{text}: {error}")).as_secs()
}

fn port_of(address: &str) -> u64 {
    address.rsplit(':').next().unwrap().parse().unwrap()
}

fn container_port(container: &Value, name: &str) -> u64 {
    container["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|port| port["name"] == name)
        .and_then(|port| port["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("container {} has no port {name}", container["name"]))
}

#[test]
fn every_manifest_passes_the_kubernetes_schemas() {
    // Goal: the base and each overlay, rendered, pass strict validation against the Kubernetes schemas of the oldest and newest supported versions.
    let validator = Command::new("kubernetes-validate").arg("--version").output();
    assert!(
        validator.is_ok_and(|output| output.status.success()),
        "kubernetes-validate is missing: `pip install kubernetes-validate` (scripts/test installs it)"
    );
    let output_dir = std::env::temp_dir().join(format!("stampede-kubernetes-{}", std::process::id()));
    std::fs::create_dir_all(&output_dir).unwrap();
    for kustomization in KUSTOMIZATIONS {
        let objects = render(&directory(kustomization));
        let mut files = Vec::new();
        for (index, object) in objects.iter().enumerate() {
            if CUSTOM_KINDS.contains(&object["kind"].as_str().unwrap()) {
                continue;
            }
            let file = output_dir.join(format!("{}-{index}.yaml", kustomization.replace('/', "-")));
            std::fs::write(&file, serde_yaml_ng::to_string(object).unwrap()).unwrap();
            files.push(file);
        }
        for version in KUBERNETES_VERSIONS {
            let output = Command::new("kubernetes-validate")
                .args(["--strict", "--quiet", "-k", version])
                .args(&files)
                .output()
                .unwrap();
            let report =
                format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
            assert!(output.status.success() && !report.contains("ERROR"), "{kustomization} on {version}:\n{report}");
        }
    }
    std::fs::remove_dir_all(&output_dir).unwrap();
}

#[test]
fn workloads_are_bounded_non_root_and_read_only() {
    // Goal: every container of every rendering has CPU and memory requests and limits, runs as non-root without privilege escalation or capabilities, on a read-only root filesystem, with no service account token.
    for kustomization in KUSTOMIZATIONS {
        for mut object in render(&directory(kustomization)) {
            let name = format!("{kustomization}: {} {}", object["kind"], object["metadata"]["name"]);
            let Some(spec) = pod_spec(&mut object) else { continue };
            assert_eq!(spec["securityContext"]["runAsNonRoot"], true, "{name}");
            assert_eq!(spec["automountServiceAccountToken"], false, "{name}");
            for container in spec["containers"].as_array().unwrap() {
                for bound in ["requests", "limits"] {
                    for resource in ["cpu", "memory"] {
                        assert!(container["resources"][bound][resource].is_string(), "{name}: {bound}.{resource}");
                    }
                }
                let security = &container["securityContext"];
                assert_eq!(security["readOnlyRootFilesystem"], true, "{name}");
                assert_eq!(security["allowPrivilegeEscalation"], false, "{name}");
                assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]), "{name}");
            }
        }
    }
}

#[test]
fn manifests_agree_with_the_binaries() {
    // Goal: every variable the manifests set is one the binaries read, the commands parse, secrets come only from references to a Secret the manifests never define, and the ports, probes and grace periods match the settings.
    let api_env = accepted_env(&ApiConfig::command());
    let worker_env = accepted_env(&WorkerConfig::command());
    for kustomization in KUSTOMIZATIONS {
        let objects = render(&directory(kustomization));
        assert!(objects.iter().all(|object| object["kind"] != "Secret"), "{kustomization}: no Secret values here");
        for mut object in objects.clone() {
            let Some(spec) = pod_spec(&mut object) else { continue };
            for container in spec["containers"].as_array().unwrap() {
                let args: Vec<&str> =
                    container["args"].as_array().unwrap().iter().map(|arg| arg.as_str().unwrap()).collect();
                let accepted = match args[0] {
                    "api" => ApiConfig::try_parse_from(&args).map(|_| &api_env),
                    "worker" => WorkerConfig::try_parse_from(&args).map(|_| &worker_env),
                    other => panic!("unknown binary {other}"),
                }
                .unwrap_or_else(|error| panic!("{kustomization}: {args:?}: {error}"));
                for (name, value) in environment(&objects, container) {
                    let known = accepted.contains(&name)
                        || name == "RUST_LOG"
                        || api_env.contains(&name)
                        || worker_env.contains(&name)
                        || SETTINGS_NOT_BUILT_YET.contains(&name.as_str());
                    assert!(known, "{kustomization}: {name} is read by no binary");
                    if let Some(key) = value.strip_prefix("secret:") {
                        assert_eq!(key, name, "{kustomization}: the Secret's keys are the variables' names");
                    }
                }
                for variable in container["env"].as_array().into_iter().flatten() {
                    if let Some(secret) = variable["valueFrom"]["secretKeyRef"]["name"].as_str() {
                        assert_eq!(secret, "stampede-secrets");
                    }
                }
            }
        }
        check_api(kustomization, &objects);
        let worker = container(&objects, "stampede-worker");
        let env = environment(&objects, worker);
        assert_eq!(port_of(&env["METRICS_ADDR"]), container_port(worker, "metrics"));
        assert_eq!(worker["livenessProbe"]["httpGet"]["path"], "/health");
        for secret in ["DATABASE_URL", "REDIS_URL"] {
            assert_eq!(env[secret], format!("secret:{secret}"), "{kustomization}: {secret} comes from the Secret");
        }
        let migrate = &find(&objects, "Job", "stampede-migrate")["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(migrate["args"], serde_json::json!(["worker", "migrate"]));
    }
}

/// The api Deployment's probes, ports, grace period and scaling objects.
fn check_api(kustomization: &str, objects: &[Value]) {
    let deployment = find(objects, "Deployment", "stampede-api");
    let api = container(objects, "stampede-api");
    let env = environment(objects, api);
    assert_eq!(port_of(&env["LISTEN_ADDR"]), container_port(api, "http"));
    assert_eq!(api["livenessProbe"]["httpGet"]["path"], "/health");
    assert_eq!(env["JWT_SECRET"], "secret:JWT_SECRET");
    let grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"].as_u64().unwrap();
    let delay = duration_seconds(&env["SHUTDOWN_READINESS_DELAY"]);
    let drain = duration_seconds(&env["SHUTDOWN_TIMEOUT"]);
    assert!(
        delay > 0 && grace > delay + drain,
        "{kustomization}: grace {grace} s must exceed delay {delay} s + drain {drain} s"
    );
    let readiness = &api["readinessProbe"];
    let probe_window = readiness["periodSeconds"].as_u64().unwrap() * readiness["failureThreshold"].as_u64().unwrap();
    assert!(probe_window < delay, "{kustomization}: the probe takes the pod out within the readiness delay");
    match env.get("GRPC_LISTEN_ADDR") {
        None => assert_eq!(readiness["httpGet"]["path"], "/ready", "{kustomization}"),
        Some(address) => {
            assert_eq!(port_of(address), container_port(api, "grpc"));
            assert_eq!(readiness["grpc"]["port"].as_u64(), Some(port_of(address)));
            assert!(readiness.get("httpGet").is_none(), "{kustomization}: one probe handler");
        }
    }
    for kind in ["PodDisruptionBudget", "HorizontalPodAutoscaler"] {
        assert!(objects.iter().any(|object| object["kind"] == kind), "{kustomization}: {kind}");
    }
    let autoscaler = find(objects, "HorizontalPodAutoscaler", "stampede-api");
    assert_eq!(autoscaler["spec"]["scaleTargetRef"]["name"], "stampede-api");
    assert_eq!(autoscaler["spec"]["metrics"][0]["resource"]["name"], "cpu");
}

#[test]
fn services_and_the_service_monitor_select_what_exists() {
    // Goal: each Service selects a workload's pods and targets a port they name; the ServiceMonitor selects Services whose named ports it scrapes; the Redis Cluster overlay turns the cluster client on.
    for kustomization in KUSTOMIZATIONS {
        let objects = render(&directory(kustomization));
        let services: Vec<&Value> = objects.iter().filter(|object| object["kind"] == "Service").collect();
        for service in &services {
            let selector = service["spec"]["selector"].as_object().unwrap();
            let pods = objects
                .iter()
                .filter(|object| object["kind"] == "Deployment")
                .find(|deployment| labels_match(selector, &deployment["spec"]["template"]["metadata"]["labels"]))
                .unwrap_or_else(|| panic!("{kustomization}: {} selects no pods", service["metadata"]["name"]));
            let pod_container = &pods["spec"]["template"]["spec"]["containers"][0];
            for port in service["spec"]["ports"].as_array().unwrap() {
                container_port(pod_container, port["targetPort"].as_str().expect("named target ports"));
            }
        }
        let monitor = find(&objects, "ServiceMonitor", "stampede");
        assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
        let selector = monitor["spec"]["selector"]["matchLabels"].as_object().unwrap();
        let scraped: BTreeSet<String> = services
            .iter()
            .filter(|service| labels_match(selector, &service["metadata"]["labels"]))
            .flat_map(|service| service["spec"]["ports"].as_array().unwrap().iter())
            .map(|port| port["name"].as_str().unwrap().to_owned())
            .collect();
        for endpoint in monitor["spec"]["endpoints"].as_array().unwrap() {
            assert!(scraped.contains(endpoint["port"].as_str().unwrap()), "{kustomization}: {endpoint}");
            assert_eq!(endpoint["path"], "/metrics");
        }
        let cluster = find(&objects, "ConfigMap", "stampede-config")["data"]["REDIS_CLUSTER"].clone();
        assert_eq!(cluster, if *kustomization == "overlays/redis-cluster" { "true" } else { "false" });
    }
}

fn labels_match(selector: &Map<String, Value>, labels: &Value) -> bool {
    selector.iter().all(|(key, value)| &labels[key] == value)
}
