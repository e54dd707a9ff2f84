//! The repository's deployment files read as data (compose, YAML as JSON) and the
//! environment variables the binaries' clap structs accept.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_json::Value;

/// The repository's root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A file of the repository, by its path from the root.
pub fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|error| panic!("read {path}: {error}"))
}

/// A YAML file as JSON, with `<<` merge keys applied.
pub fn yaml(path: &str) -> Value {
    let mut value: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&read(path)).unwrap_or_else(|error| panic!("parse {path}: {error}"));
    value.apply_merge().expect("merge keys apply");
    serde_json::to_value(value).expect("YAML maps to JSON")
}

/// docker-compose.yml, parsed.
pub fn compose() -> Value {
    yaml("docker-compose.yml")
}

/// A service of the compose file (panics naming it when it is missing).
pub fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    compose["services"].get(name).unwrap_or_else(|| panic!("docker-compose.yml has no service `{name}`"))
}

/// A service's environment as a map, from either the map or the `KEY=VALUE` list form.
pub fn environment(service: &Value) -> BTreeMap<String, String> {
    match &service["environment"] {
        Value::Object(map) => map.iter().map(|(key, value)| (key.clone(), scalar(value))).collect(),
        Value::Array(list) => list
            .iter()
            .map(|item| {
                let text = scalar(item);
                let (key, value) = text.split_once('=').unwrap_or((&text, ""));
                (key.to_owned(), value.to_owned())
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// A YAML scalar as text (null is empty).
pub fn scalar(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A healthcheck's command as one string.
pub fn healthcheck(service: &Value) -> String {
    match &service["healthcheck"]["test"] {
        Value::Array(parts) => parts.iter().map(scalar).collect::<Vec<_>>().join(" "),
        other => scalar(other),
    }
}

/// Every environment variable a clap command (and its subcommands) accepts.
pub fn accepted_env(command: &clap::Command) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = command
        .get_arguments()
        .filter_map(|argument| argument.get_env())
        .map(|name| name.to_string_lossy().into_owned())
        .collect();
    for subcommand in command.get_subcommands() {
        names.extend(accepted_env(subcommand));
    }
    names
}
