//! The web app at `/app/`, served by the api alone: the page, every asset it loads
//! (following the module imports), the security headers and the caching rules.
//! scripts/browser-test drives the same app in a real browser.

use std::collections::{BTreeSet, VecDeque};

use reqwest::redirect::Policy;
use reqwest::{Client, Response};
use stampede::http::web_app;

use crate::support::harness::{TestApp, assert_problem};

/// The one absolute URL the app may contain: the SVG namespace, which is a name, not a fetch.
const SVG_NAMESPACE: &str = "http://www.w3.org/2000/svg";

/// Values of `attribute="..."` in a page.
fn attribute_values<'a>(html: &'a str, attribute: &str) -> Vec<&'a str> {
    let marker = format!("{attribute}=\"");
    html.match_indices(&marker)
        .map(|(index, _)| {
            let rest = &html[index + marker.len()..];
            &rest[..rest.find('"').unwrap()]
        })
        .collect()
}

/// The relative module specifiers of a script: `from './api.js'`, `from '../dom.js'`.
fn module_imports(script: &str) -> Vec<&str> {
    script
        .match_indices("from '")
        .map(|(index, _)| {
            let rest = &script[index + "from '".len()..];
            &rest[..rest.find('\'').unwrap()]
        })
        .collect()
}

/// `relative` resolved against the folder of the URL path `base`.
fn resolve(base: &str, relative: &str) -> String {
    let mut segments: Vec<&str> = base.split('/').collect();
    segments.pop();
    for part in relative.split('/') {
        match part {
            "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    segments.join("/")
}

fn header(response: &Response, name: &str) -> String {
    response.headers().get(name).map(|value| value.to_str().unwrap().to_owned()).unwrap_or_default()
}

/// Every answer under /app/ carries the strict policy and `nosniff`.
fn assert_secured(response: &Response, what: &str) {
    let policy = header(response, "content-security-policy");
    assert_eq!(policy, web_app::CONTENT_SECURITY_POLICY_VALUE, "{what}");
    for directive in ["default-src 'self'", "script-src 'self'", "style-src 'self'", "object-src 'none'"] {
        assert!(policy.contains(directive), "{what}: {directive} in {policy}");
    }
    assert!(!policy.contains("unsafe-inline") && !policy.contains("unsafe-eval"), "{what}: {policy}");
    assert_eq!(header(response, "x-content-type-options"), "nosniff", "{what}");
    assert_eq!(header(response, "referrer-policy"), "no-referrer", "{what}");
}

fn assert_offline(text: &str, what: &str) {
    let external: Vec<_> = text
        .match_indices("http")
        .map(|(index, _)| &text[index..(index + 40).min(text.len())])
        .filter(|found| {
            (found.starts_with("http://") || found.starts_with("https://")) && !found.starts_with(SVG_NAMESPACE)
        })
        .collect();
    assert!(external.is_empty(), "{what} refers to another origin: {external:?}");
}

/// Fetches `path`, checks its headers and type, and returns its text.
async fn load_asset(client: &Client, app: &TestApp, path: &str) -> String {
    let response = client.get(app.url(path)).send().await.unwrap();
    assert_eq!(response.status(), 200, "{path}");
    assert_secured(&response, path);
    assert_eq!(header(&response, "cache-control"), "public, max-age=31536000, immutable", "{path}");
    assert!(header(&response, "etag").starts_with('"'), "{path}");
    let expected = match path.rsplit('.').next() {
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        other => panic!("unexpected asset kind {other:?}"),
    };
    assert_eq!(header(&response, "content-type"), expected, "{path}");
    let text = response.text().await.unwrap();
    assert!(!text.is_empty(), "{path} is empty");
    assert_offline(&text, path);
    text
}

#[tokio::test]
async fn the_web_app_and_every_asset_load_from_the_api_alone_under_a_strict_policy() {
    // Goal: /app/ serves the page and, through its links and module imports, every file of web/ from the
    // binary itself, each with the strict Content-Security-Policy and nosniff, no reference to another
    // origin, immutable versioned asset URLs and a revalidated page.
    let app = TestApp::spawn().await;
    let client = Client::builder().redirect(Policy::none()).build().unwrap();

    let redirect = client.get(app.url("/app")).send().await.unwrap();
    assert_eq!(redirect.status(), 301);
    assert_eq!(header(&redirect, "location"), "/app/");

    let page = client.get(app.url("/app/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_secured(&page, "/app/");
    assert_eq!(header(&page, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&page, "cache-control"), "no-cache");
    let etag = header(&page, "etag");
    let html = page.text().await.unwrap();
    assert_offline(&html, "/app/");
    assert!(
        !html.contains(" style=") && !html.contains("<style") && !html.contains("onclick"),
        "no inline style or handler"
    );
    assert!(!html.contains("<script>"), "no inline script");

    let prefix = format!("assets/{}/", web_app::version());
    let mut queue: VecDeque<String> = attribute_values(&html, "src")
        .into_iter()
        .chain(attribute_values(&html, "href"))
        .filter(|link| link.starts_with("assets/"))
        .map(|link| format!("/app/{link}"))
        .collect();
    assert!(queue.iter().any(|path| path.ends_with(&format!("{prefix}main.js"))), "the page loads main.js: {queue:?}");
    let mut loaded = BTreeSet::new();
    while let Some(path) = queue.pop_front() {
        if !loaded.insert(path.clone()) {
            continue;
        }
        let text = load_asset(&client, &app, &path).await;
        if path.ends_with(".js") {
            queue.extend(module_imports(&text).into_iter().map(|import| resolve(&path, import)));
        }
    }
    let expected: BTreeSet<String> = web_app::asset_names().map(|name| format!("/app/{prefix}{name}")).collect();
    assert_eq!(loaded, expected, "the page reaches every asset, and every asset it reaches is served");

    let revalidated = client.get(app.url("/app/")).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(revalidated.status(), 304);
    assert_eq!(header(&revalidated, "etag"), etag);
    assert!(revalidated.bytes().await.unwrap().is_empty());
    let head = client.head(app.url("/app/")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_secured(&head, "HEAD /app/");

    let old_version = client.get(app.url("/app/assets/0000000000000000/main.js")).send().await.unwrap();
    assert_problem(old_version, 404, "not_found").await;
    let missing = client.get(app.url(&format!("/app/{prefix}no-such-file.js"))).send().await.unwrap();
    assert_problem(missing, 404, "not_found").await;
    let outside = client.get(app.url(&format!("/app/{prefix}../../index.html"))).send().await.unwrap();
    assert_eq!(outside.status(), 404);
    app.stop().await;
}
