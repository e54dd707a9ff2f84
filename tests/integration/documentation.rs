//! The OpenAPI document, the Swagger UI and the Prometheus endpoint of the real API.

use std::collections::BTreeSet;
use std::time::Duration;

use clap::CommandFactory;
use reqwest::redirect::Policy;
use serde_json::Value;
use stampede::config::{ApiConfig, WorkerConfig};
use stampede::http::router::ROUTES;
use stampede::ids::CategoryId;
use stampede::keyspace::Keyspace;
use stampede::stock::{Stock, StockTerms};
use stampede::telemetry;

use crate::support::harness::{TestApp, connect_redis, unique_name};

/// Every error code of the contract (docs/api-contract.md, "Errors").
const CONTRACT_ERROR_CODES: &[&str] = &[
    "invalid_json",
    "unauthorized",
    "payment_declined",
    "forbidden",
    "queue_pass_required",
    "not_found",
    "method_not_allowed",
    "sold_out",
    "seat_taken",
    "no_adjacent_seats",
    "limit_exceeded",
    "sale_not_open",
    "sale_closed",
    "already_exists",
    "reservation_not_held",
    "idempotency_in_progress",
    "reservation_expired",
    "payload_too_large",
    "unsupported_media_type",
    "validation_failed",
    "idempotency_key_reused",
    "rate_limited",
    "unavailable",
];

/// Codes that no single operation answers, because the router produces them before any
/// handler runs; the document describes them once in its introduction and the Problem schema.
const ROUTER_ERROR_CODES: &[&str] = &["method_not_allowed"];

/// `(METHOD, path)` of every operation in an OpenAPI document.
fn documented_operations(document: &Value) -> BTreeSet<(String, String)> {
    let mut operations = BTreeSet::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in item.as_object().unwrap().keys() {
            operations.insert((method.to_uppercase(), path.clone()));
        }
    }
    operations
}

/// A matchit pattern in OpenAPI form: `{*file}` becomes `{file}`.
fn openapi_path(pattern: &str) -> String {
    pattern.replace("{*", "{")
}

#[test]
fn openapi_document_lists_every_route_and_nothing_else() {
    // Goal: every (method, path) of the router is in the OpenAPI document and the document has no operation
    // the router does not serve; nothing is excluded (the Swagger UI's own routes are documented too).
    let routed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .flat_map(|route| {
            route.methods.iter().map(|(method, _)| (method.as_str().to_owned(), openapi_path(route.pattern)))
        })
        .collect();
    let documented = documented_operations(&stampede::http::openapi::value());
    let missing: Vec<_> = routed.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&routed).collect();
    assert!(missing.is_empty(), "routes missing from the OpenAPI document: {missing:?}");
    assert!(extra.is_empty(), "documented operations the router does not serve: {extra:?}");
}

/// Every `code` in a problem+json example of any operation, with the response status it sits under.
fn example_codes(document: &Value) -> Vec<(String, String, Value)> {
    let mut found = Vec::new();
    for item in document["paths"].as_object().unwrap().values() {
        for operation in item.as_object().unwrap().values() {
            for (status, response) in operation["responses"].as_object().unwrap() {
                let examples = &response["content"]["application/problem+json"]["examples"];
                for example in examples.as_object().into_iter().flatten().map(|(_, example)| &example["value"]) {
                    let code = example["code"].as_str().unwrap().to_owned();
                    found.push((status.clone(), code, example.clone()));
                }
            }
        }
    }
    found
}

#[tokio::test]
async fn openapi_json_is_served_with_every_error_code_and_bearer_auth() {
    // Goal: GET /openapi.json serves an OpenAPI 3.x JSON document with every contract error code as
    // application/problem+json, the bearer JWT security scheme on the authenticated operations, and examples.
    let app = TestApp::spawn().await;
    let response = app.get("/openapi.json", None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let document: Value = response.json().await.expect("the document is JSON");
    assert!(document["openapi"].as_str().unwrap().starts_with("3."), "OpenAPI 3.x");
    assert_eq!(document, stampede::http::openapi::value(), "served document equals the library's");

    let scheme = &document["components"]["securitySchemes"]["bearer_auth"];
    assert_eq!((scheme["type"].as_str(), scheme["scheme"].as_str()), (Some("http"), Some("bearer")));
    assert_eq!(scheme["bearerFormat"], "JWT");
    let create_event = &document["paths"]["/events"]["post"];
    assert!(create_event["security"].to_string().contains("bearer_auth"), "admin endpoints need the bearer token");

    let examples = example_codes(&document);
    for (status, code, example) in &examples {
        assert_eq!(example["status"].to_string(), *status, "{code} example sits under its status");
        assert_eq!(example["type"], format!("urn:stampede:problem:{code}"));
    }
    let codes: BTreeSet<&str> = examples.iter().map(|(_, code, _)| code.as_str()).collect();
    let schema_codes = document["components"]["schemas"]["Problem"]["properties"]["code"]["enum"].to_string();
    let introduction = document["info"]["description"].as_str().unwrap();
    for code in CONTRACT_ERROR_CODES {
        assert!(schema_codes.contains(&format!("\"{code}\"")), "Problem.code lists {code}");
        assert!(introduction.contains(&format!("`{code}`")), "the introduction describes {code}");
        if !ROUTER_ERROR_CODES.contains(code) {
            assert!(codes.contains(code), "no operation documents error code {code}");
        }
    }
    let problem = &document["components"]["schemas"]["Problem"];
    assert!(problem["properties"]["errors"]["items"].to_string().contains("FieldError"));
    for name in ["Event", "EventPage", "Category", "Availability", "Reservation", "Problem"] {
        let schema = &document["components"]["schemas"][name];
        assert!(schema.get("example").is_some() || schema.get("examples").is_some(), "{name} has an example");
    }
    app.stop().await;
}

/// Local asset references (`src="./x"`, `href="./x"`) of the Swagger UI page.
fn local_assets(html: &str) -> Vec<String> {
    let mut assets = Vec::new();
    for marker in ["src=\"./", "href=\"./"] {
        for (index, _) in html.match_indices(marker) {
            let rest = &html[index + marker.len()..];
            assets.push(rest[..rest.find('"').unwrap()].to_owned());
        }
    }
    assets
}

#[tokio::test]
async fn swagger_ui_is_served_offline_and_loads_the_document() {
    // Goal: /swagger-ui redirects to /swagger-ui/, which serves the UI page and every script and style it needs
    // from the binary itself (no external URLs), configured to load /openapi.json and keep a pasted token.
    let app = TestApp::spawn().await;
    let client = reqwest::Client::builder().redirect(Policy::none()).build().unwrap();
    let redirect = client.get(app.url("/swagger-ui")).send().await.unwrap();
    assert_eq!(redirect.status(), 301);
    assert_eq!(redirect.headers()["location"], "/swagger-ui/");

    let page = client.get(app.url("/swagger-ui/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = page.text().await.unwrap();
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"), "no external assets: {html}");
    let assets = local_assets(&html);
    for required in ["swagger-ui-bundle.js", "swagger-ui.css", "swagger-initializer.js"] {
        assert!(assets.iter().any(|asset| asset == required), "the page loads {required}: {assets:?}");
    }
    for asset in &assets {
        let response = client.get(app.url(&format!("/swagger-ui/{asset}"))).send().await.unwrap();
        assert_eq!(response.status(), 200, "{asset}");
        let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
        let expected = match asset.rsplit('.').next() {
            Some("js") => "javascript",
            Some("css") => "text/css",
            Some("png") => "image/png",
            _ => "",
        };
        assert!(content_type.contains(expected), "{asset} is served as {content_type}");
        assert!(!response.bytes().await.unwrap().is_empty(), "{asset} is not empty");
    }
    let bundle = client.get(app.url("/swagger-ui/swagger-ui-bundle.js")).send().await.unwrap();
    assert!(bundle.bytes().await.unwrap().len() > 100_000, "the whole Swagger UI bundle is vendored");
    let initializer = client.get(app.url("/swagger-ui/swagger-initializer.js")).send().await.unwrap();
    let initializer = initializer.text().await.unwrap();
    assert!(initializer.contains("\"/openapi.json\""), "the UI loads this API's document: {initializer}");
    assert!(initializer.contains("\"persistAuthorization\": true"), "a pasted token survives reloads");

    let missing = client.get(app.url("/swagger-ui/no-such-file.js")).send().await.unwrap();
    crate::support::harness::assert_problem(missing, 404, "not_found").await;
    app.stop().await;
}

/// Waits until `/metrics` contains every one of `needles` and returns the page; panics
/// naming the missing ones (and showing the last page) after `within`.
async fn metrics_containing(app: &TestApp, needles: &[String], within: Duration) -> String {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let text = app.get("/metrics", None).await.text().await.unwrap();
        let missing: Vec<&String> = needles.iter().filter(|needle| !text.contains(needle.as_str())).collect();
        if missing.is_empty() {
            return text;
        }
        assert!(tokio::time::Instant::now() < deadline, "after {within:?}, /metrics still lacks {missing:?}:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn metrics_endpoint_serves_http_and_stock_metrics() {
    // Goal: GET /metrics serves the Prometheus text format with http_requests_total labelled by route pattern
    // after a request, the latency histogram's buckets, and the stock gauges of a new category.
    let app = TestApp::spawn().await;
    let event = app.create_event().await;
    let category = app.create_category(event, 30, 5).await;
    assert_eq!(app.get(&format!("/events/{event}/availability"), None).await.status(), 200);
    let response = app.get("/metrics", None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    let needles = [
        r#"http_requests_total{method="GET",route="/events/{id}/availability",status="200"}"#.to_owned(),
        r#"http_request_duration_seconds_bucket{method="GET",route="/events/{id}/availability",status="200",le="0.01"}"#
            .to_owned(),
        format!(r#"stock_quota_tickets{{category="{category}"}}"#),
        format!(r#"stock_tickets{{category="{category}",state="available"}}"#),
        format!(r#"outbox_backlog_entries{{category="{category}"}}"#),
    ];
    // The stock gauges are sampled every 2 s.
    metrics_containing(&app, &needles, Duration::from_secs(30)).await;
    app.stop().await;
}

/// The value of the sample line that starts with `series` (`name{labels}`).
fn sample_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test]
async fn sampler_sets_stock_and_outbox_gauges_from_redis() {
    // Goal: one sampling round sets stock_tickets, stock_quota_tickets and outbox_backlog_entries to exactly
    // what Redis holds for a category.
    let handle = telemetry::install_metrics();
    let mut redis = connect_redis().await;
    let keys = Keyspace::new(unique_name("sampler"));
    // An id no test database hands out, so no other test app's sampler writes these series.
    let id = 3_000_000_000 + i64::from(fastrand::u32(..1_000_000_000));
    let category = CategoryId::new(id).unwrap();
    let terms = StockTerms {
        category_id: category,
        event_id: 1,
        quota: 40,
        max_per_user: 4,
        price: 100,
        currency: "USD".to_owned(),
        sale_window: Default::default(),
        seat_map: None,
    };
    Stock::new(redis.clone(), keys.clone()).create_pending(&terms).await.unwrap();
    redis::cmd("HSET")
        .arg(keys.stock(category))
        .arg(&["available", "33", "held", "5", "sold", "2"])
        .query_async::<()>(&mut redis)
        .await
        .unwrap();
    for _ in 0..3 {
        redis::cmd("XADD")
            .arg(keys.outbox(category))
            .arg("*")
            .arg("f")
            .arg("v")
            .query_async::<()>(&mut redis)
            .await
            .unwrap();
    }
    let sampled = stampede::stock::sampler::sample(&mut redis, &keys).await.unwrap();
    assert_eq!(sampled, 1);
    let text = handle.render();
    let label = format!("category=\"{id}\"");
    assert_eq!(sample_value(&text, &format!("stock_quota_tickets{{{label}}}")), Some(40.0));
    assert_eq!(sample_value(&text, &format!("stock_tickets{{{label},state=\"available\"}}")), Some(33.0));
    assert_eq!(sample_value(&text, &format!("stock_tickets{{{label},state=\"held\"}}")), Some(5.0));
    assert_eq!(sample_value(&text, &format!("stock_tickets{{{label},state=\"sold\"}}")), Some(2.0));
    assert_eq!(sample_value(&text, &format!("outbox_backlog_entries{{{label}}}")), Some(3.0));
    let _: () = redis::cmd("DEL")
        .arg(&[keys.stock(category), keys.outbox(category), keys.categories()])
        .query_async(&mut redis)
        .await
        .unwrap();
}

fn read_doc(path: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("read {}: {error}", path.display()))
}

/// Environment variables named in a binary's `--help` (`[env: NAME=...]`).
fn help_env(binary: &str) -> BTreeSet<String> {
    let output = std::process::Command::new(binary).arg("--help").output().expect("the binary runs");
    let help = String::from_utf8(output.stdout).unwrap();
    help.match_indices("[env: ")
        .map(|(index, marker)| {
            let rest = &help[index + marker.len()..];
            rest[..rest.find(['=', ']']).unwrap()].to_owned()
        })
        .collect()
}

#[test]
fn docs_cover_every_setting_route_and_error_code() {
    // Goal: docs/operations.md documents every environment variable of every binary (read from clap), and
    // docs/api.md shows every route and an answer with every contract error code (the rules stay in the contract), so the docs cannot silently fall behind.
    let operations = read_doc("docs/operations.md");
    let mut settings = crate::support::deployment_files::accepted_env(&ApiConfig::command());
    settings.extend(crate::support::deployment_files::accepted_env(&WorkerConfig::command()));
    settings.extend(help_env(env!("CARGO_BIN_EXE_token")));
    assert!(settings.contains("TOKEN_TTL") && settings.contains("METRICS_ADDR"));
    for setting in &settings {
        assert!(operations.contains(&format!("`{setting}`")), "docs/operations.md does not document {setting}");
    }
    // Rows of the configuration tables: "| `NAME` | `--flag` | ...".
    for row in operations.lines().filter(|line| line.starts_with("| `") && line.contains("| `--")) {
        let name = row.trim_start_matches("| `").split('`').next().unwrap();
        assert!(settings.contains(name), "docs/operations.md documents {name}, which no binary accepts");
    }
    let api = read_doc("docs/api.md");
    for route in ROUTES {
        let path = route.pattern.split("{*").next().unwrap();
        assert!(api.contains(path), "docs/api.md does not show {path}");
    }
    for code in CONTRACT_ERROR_CODES {
        assert!(api.contains(&format!("\"code\":\"{code}\"")), "docs/api.md has no example answer with {code}");
    }
}

/// The configuration table rows of docs/operations.md under the heading `### `section``:
/// `(flag, default cell)` of each row that names one flag (`| `NAME` | `--flag` | default | … |`
/// or `| — | `--flag` | … |`); rows that sum up several settings (`--kafka-tls`, …) are skipped.
fn documented_defaults(operations: &str, section: &str) -> Vec<(String, String)> {
    let heading = format!("### `{section}`\n");
    let start = operations.find(&heading).unwrap_or_else(|| panic!("docs/operations.md has no {heading}"));
    let table = &operations[start + heading.len()..];
    let end = table.find("\n#").unwrap_or(table.len());
    table[..end]
        .lines()
        .filter(|line| line.starts_with("| ") && line.contains("| `--"))
        .filter_map(|row| {
            let cells: Vec<&str> = row.split(" | ").map(str::trim).collect();
            let flag = cells[1].strip_prefix("`--")?.strip_suffix('`')?;
            Some((flag.to_owned(), cells[2].to_owned()))
        })
        .collect()
}

/// What a documented default cell says: the `code` span it opens with (`10m`), the empty
/// string for `empty`, or `None` when it names no value (`none`, `unset`, `unset: the
/// system's roots`, `off`).
fn documented_value(cell: &str) -> Option<String> {
    if cell.starts_with("empty") {
        return Some(String::new());
    }
    let value = cell.strip_prefix('`')?;
    Some(value.split('`').next().unwrap().to_owned())
}

/// The default clap applies to `flag` of `command` (joined with `,`); a bare switch that is
/// off by default reads `None`, as the docs write it (`off`).
fn clap_default(command: &clap::Command, flag: &str) -> Option<String> {
    let argument = command
        .get_arguments()
        .find(|argument| argument.get_long() == Some(flag))
        .unwrap_or_else(|| panic!("docs/operations.md documents --{flag}, which `{}` lacks", command.get_name()));
    let values: Vec<String> =
        argument.get_default_values().iter().map(|value| value.to_string_lossy().into_owned()).collect();
    let switch_off = !argument.get_action().takes_values() && values == ["false"];
    (!values.is_empty() && !switch_off).then(|| values.join(","))
}

/// `[default: X]` of `--flag` in a binary's `--help`, if it shows one: the option's block
/// runs from its line to the next option's (`--name` or `-n, --name`; a `- value:` list item is not one).
fn help_default(help: &str, flag: &str) -> Option<String> {
    let opens = |line: &str| {
        let line = line.trim_start().as_bytes();
        line.len() > 1 && line[0] == b'-' && (line[1] == b'-' || line[1].is_ascii_alphabetic())
    };
    let names = |line: &str| line.trim_start().split([' ', ',']).any(|word| word == format!("--{flag}"));
    let mut lines = help.lines().skip_while(|line| !(opens(line) && names(line)));
    let first = lines.next().unwrap_or_else(|| panic!("--help lacks --{flag}"));
    let block: Vec<&str> = std::iter::once(first).chain(lines.take_while(|line| !opens(line))).collect();
    let block = block.join(" ");
    let (_, rest) = block.split_once("[default: ")?;
    Some(rest[..rest.find(']').unwrap()].to_owned())
}

#[test]
fn documented_defaults_are_the_ones_clap_applies() {
    // Goal: the default of every setting in docs/operations.md's configuration tables is the one clap applies
    // (api and worker read from their clap structs, `token` from its --help), and a setting without one is documented without a value.
    let operations = read_doc("docs/operations.md");
    let mut api = ApiConfig::command();
    api.build();
    let mut worker = WorkerConfig::command();
    worker.build();
    let reconcile = worker.find_subcommand("reconcile").expect("worker reconcile").clone();
    let mut checked = 0;
    let mut wrong = Vec::new();
    for (section, command) in [("api", &api), ("worker", &worker), ("worker reconcile", &reconcile)] {
        for (flag, cell) in documented_defaults(&operations, section) {
            let (documented, applied) = (documented_value(&cell), clap_default(command, &flag));
            if documented != applied {
                wrong.push(format!("{section} --{flag}: documented {cell:?}, clap applies {applied:?}"));
            }
            checked += 1;
        }
    }
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_token")).arg("--help").output().unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    for (flag, cell) in documented_defaults(&operations, "token") {
        let (documented, applied) = (documented_value(&cell), help_default(&help, &flag));
        if documented != applied {
            wrong.push(format!("token --{flag}: documented {cell:?}, --help shows {applied:?}"));
        }
        checked += 1;
    }
    assert!(checked > 60, "only {checked} documented settings found");
    assert!(wrong.is_empty(), "docs/operations.md's defaults disagree with clap:\n{}", wrong.join("\n"));
}
