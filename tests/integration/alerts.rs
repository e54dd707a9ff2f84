//! prometheus/alerts.yml: valid rules (`promtool check rules`), unit-tested
//! (`promtool test rules prometheus/alerts_test.yml`), each with a runbook line in
//! docs/operations.md and every series it reads exported by the code.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use stampede::telemetry::descriptions::METRICS;

/// Series alerts read that other software exports: kube-state-metrics (the reconcile
/// CronJob's failed Jobs).
const EXTERNAL_SERIES: &[&str] = &["kube_job_status_failed"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn promtool(args: &[&str]) -> String {
    let output = Command::new("promtool").args(args).current_dir(root()).output().unwrap_or_else(|error| {
        panic!("promtool is missing ({error}): `apt-get install -y prometheus` (scripts/test installs it)")
    });
    let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "promtool {args:?}:\n{report}");
    report
}

fn rules() -> Vec<Value> {
    let text = std::fs::read_to_string(root().join("prometheus/alerts.yml")).unwrap();
    let value: Value = serde_yaml_ng::from_str(&text).unwrap();
    value["groups"].as_array().unwrap().iter().flat_map(|group| group["rules"].as_array().unwrap().clone()).collect()
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    // Goal: promtool accepts every rule and every unit test in prometheus/alerts_test.yml passes, including the ones where an alert must stay quiet.
    let checked = promtool(&["check", "rules", "prometheus/alerts.yml"]);
    assert!(checked.contains(&format!("SUCCESS: {} rules found", rules().len())), "{checked}");
    let tested = promtool(&["test", "rules", "prometheus/alerts_test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
    let tests = std::fs::read_to_string(root().join("prometheus/alerts_test.yml")).unwrap();
    for rule in rules() {
        let name = rule["alert"].as_str().unwrap();
        assert!(tests.contains(&format!("alertname: {name}\n")), "{name} has no unit test");
    }
}

#[test]
fn every_alert_has_a_runbook_line_and_reads_exported_series() {
    // Goal: each alert names its runbook, docs/operations.md has that runbook line, and every series the expressions read is one the binaries export (or a named external one).
    let operations = std::fs::read_to_string(root().join("docs/operations.md")).unwrap();
    let exported: BTreeSet<&str> = METRICS.iter().map(|metric| metric.name).collect();
    for rule in rules() {
        let name = rule["alert"].as_str().unwrap();
        assert_eq!(rule["annotations"]["runbook"], format!("docs/operations.md#alerts: {name}"));
        assert!(operations.contains(&format!("| `{name}` |")), "docs/operations.md has no runbook line for {name}");
        let severity = rule["labels"]["severity"].as_str().unwrap();
        assert!(["warning", "critical"].contains(&severity), "{name}: {severity}");
        for series in series_names(rule["expr"].as_str().unwrap()) {
            let base = ["_bucket", "_count", "_sum"].iter().fold(series.as_str(), |name, suffix| {
                name.strip_suffix(suffix).filter(|base| exported.contains(base)).unwrap_or(name)
            });
            assert!(
                exported.contains(base) || EXTERNAL_SERIES.contains(&base),
                "{name} reads `{series}`, which nothing exports"
            );
        }
    }
}

/// The metric names in a PromQL expression: identifiers followed by `{`, `[` or a space
/// that are not functions, keywords or label names.
fn series_names(expression: &str) -> BTreeSet<String> {
    const WORDS: &[&str] = &[
        "sum",
        "rate",
        "increase",
        "deriv",
        "and",
        "or",
        "unless",
        "by",
        "on",
        "max",
        "min",
        "histogram_quantile",
        "le",
        "category",
        "reason",
        "status",
        "job_name",
        "ignoring",
        "without",
    ];
    let mut names = BTreeSet::new();
    let mut chars = expression.char_indices().peekable();
    let mut in_braces = false;
    while let Some((start, character)) = chars.next() {
        match character {
            '{' => in_braces = true,
            '}' => in_braces = false,
            '"' => {
                for (_, quoted) in chars.by_ref() {
                    if quoted == '"' {
                        break;
                    }
                }
            }
            c if (c.is_ascii_alphabetic() || c == '_') && !in_braces => {
                let mut end = start + c.len_utf8();
                while let Some(&(index, next)) = chars.peek() {
                    if !(next.is_ascii_alphanumeric() || next == '_') {
                        break;
                    }
                    end = index + next.len_utf8();
                    chars.next();
                }
                let word = &expression[start..end];
                let after = expression[end..].trim_start();
                if !WORDS.contains(&word) && !after.starts_with('(') && word.contains('_') {
                    names.insert(word.to_owned());
                }
            }
            _ => {}
        }
    }
    names
}
