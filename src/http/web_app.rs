//! The web app: `GET /app/`, a single-page app for buyers and organisers, served from
//! the binary itself (docs/app.md).
//!
//! Its files live in `web/` and are compiled in with `include_bytes!`, so the app works
//! with no other server and no network. The page at `/app/` loads its scripts and styles
//! from `/app/assets/<version>/...`, where the version is a hash of every file: those
//! URLs never change meaning, so they are cached for a year, while the page itself is
//! revalidated on every load (`no-cache` with an `ETag`). Every answer carries a strict
//! Content-Security-Policy (only this origin, no inline script or style, Trusted Types
//! with no policy, so no string ever becomes markup) and `nosniff`.

use std::collections::HashMap;
use std::sync::LazyLock;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, HeaderName, HeaderValue, IF_NONE_MATCH, LOCATION,
    REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use hyper::{Response, StatusCode};
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::{HandlerResult, RequestContext};
use crate::http::state::AppState;

/// The app's root; its asset links are relative to it, so the trailing slash matters.
pub const APP_PATH: &str = "/app/";

/// Where the page's asset links point, before the version is filled in.
const ASSETS_PLACEHOLDER: &str = "__ASSETS__";

/// The policy of every answer under `/app/`.
pub const CONTENT_SECURITY_POLICY_VALUE: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self'; font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'; require-trusted-types-for 'script'; trusted-types 'none'";

/// Versioned assets never change: a year, and no revalidation.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

const HTML: &str = "text/html; charset=utf-8";
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// One file of `web/` compiled into the binary.
struct Source {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! web_file {
    ($name:literal, $content_type:expr) => {
        Source { name: $name, content_type: $content_type, bytes: include_bytes!(concat!("../../web/", $name)) }
    };
}

/// The page; its links to the assets hold [`ASSETS_PLACEHOLDER`].
const INDEX: Source = web_file!("index.html", HTML);

/// Every asset the page loads, directly or through a module import.
const SOURCES: &[Source] = &[
    web_file!("app.css", CSS),
    web_file!("icon.svg", SVG),
    web_file!("main.js", JAVASCRIPT),
    web_file!("api.js", JAVASCRIPT),
    web_file!("session.js", JAVASCRIPT),
    web_file!("dom.js", JAVASCRIPT),
    web_file!("format.js", JAVASCRIPT),
    web_file!("live.js", JAVASCRIPT),
    web_file!("views/events.js", JAVASCRIPT),
    web_file!("views/event.js", JAVASCRIPT),
    web_file!("views/waiting_room.js", JAVASCRIPT),
    web_file!("views/seat_map.js", JAVASCRIPT),
    web_file!("views/hold.js", JAVASCRIPT),
    web_file!("views/reservations.js", JAVASCRIPT),
    web_file!("views/sign_in.js", JAVASCRIPT),
    web_file!("views/organiser.js", JAVASCRIPT),
    web_file!("views/seat_map_editor.js", JAVASCRIPT),
    web_file!("views/sale.js", JAVASCRIPT),
];

/// One file as served: its bytes, type and entity tag.
struct Served {
    bytes: Bytes,
    content_type: &'static str,
    etag: HeaderValue,
}

impl Served {
    fn new(bytes: Bytes, content_type: &'static str) -> Self {
        let digest = hex(&Sha256::digest(&bytes)[..12]);
        let etag = HeaderValue::from_str(&format!("\"{digest}\"")).expect("hex is ASCII");
        Self { bytes, content_type, etag }
    }
}

/// The app as served: the page with its links filled in, and the assets by name.
struct Bundle {
    version: String,
    index: Served,
    assets: HashMap<&'static str, Served>,
}

static BUNDLE: LazyLock<Bundle> = LazyLock::new(|| {
    let mut hasher = Sha256::new();
    for source in SOURCES {
        hasher.update(source.name.as_bytes());
        hasher.update((source.bytes.len() as u64).to_be_bytes());
        hasher.update(source.bytes);
    }
    let version = hex(&hasher.finalize()[..8]);
    let page = std::str::from_utf8(INDEX.bytes).expect("index.html is UTF-8");
    let page = page.replace(ASSETS_PLACEHOLDER, &format!("assets/{version}"));
    let assets = SOURCES
        .iter()
        .map(|source| (source.name, Served::new(Bytes::from_static(source.bytes), source.content_type)))
        .collect();
    Bundle { version, index: Served::new(Bytes::from(page), INDEX.content_type), assets }
});

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The version in this build's asset URLs (`/app/assets/<version>/main.js`).
pub fn version() -> &'static str {
    &BUNDLE.version
}

/// The names of the files this build serves as assets.
pub fn asset_names() -> impl Iterator<Item = &'static str> {
    SOURCES.iter().map(|source| source.name)
}

/// An answer under `/app/` with the security headers every one of them carries.
fn secured(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY_VALUE));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(HeaderName::from_static("cross-origin-opener-policy"), HeaderValue::from_static("same-origin"));
    headers.insert(HeaderName::from_static("cross-origin-resource-policy"), HeaderValue::from_static("same-origin"));
    response
}

/// 200 with the file, or 304 when the client's copy (`If-None-Match`) is current.
fn serve(request: &RequestContext, file: &Served, cache_control: &'static str) -> HandlerResult {
    let current = request.header(IF_NONE_MATCH.as_str()).is_some_and(|tags| {
        tags.split(',').any(|tag| tag.trim() == "*" || tag.trim().as_bytes() == file.etag.as_bytes())
    });
    let (status, body) =
        if current { (StatusCode::NOT_MODIFIED, Bytes::new()) } else { (StatusCode::OK, file.bytes.clone()) };
    let mut response = secured(status, body);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(file.content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(cache_control));
    headers.insert(ETAG, file.etag.clone());
    Ok(response)
}

/// `GET /app`: redirects to `/app/`, whose relative asset links need the slash.
#[utoipa::path(
    get,
    path = "/app",
    tag = "web app",
    summary = "Redirect to the web app",
    responses((
        status = 301,
        description = "Moved to `/app/`.",
        headers(("Location" = String, description = "`/app/`")),
    )),
)]
pub async fn app_redirect(_state: &AppState, _request: RequestContext) -> HandlerResult {
    let mut response = secured(StatusCode::MOVED_PERMANENTLY, Bytes::new());
    response.headers_mut().insert(LOCATION, HeaderValue::from_static(APP_PATH));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    Ok(response)
}

/// `GET /app/`: the web app's page.
#[utoipa::path(
    get,
    path = "/app/",
    tag = "web app",
    summary = "The web app",
    description = "A single-page app for buyers (events, live availability, the waiting room, seat maps, \
        holds, confirm and cancel) and organisers (events, categories, seat maps, the waiting room, the live \
        sale). It calls this API only and works offline. Give it a token in the fragment: \
        `/app/#token=<JWT>`; it keeps the token in the tab's session storage. Served with a strict \
        Content-Security-Policy, revalidated on every load (`ETag`).",
    responses(
        (status = 200, description = "The page.", body = String, content_type = "text/html",
            headers(
                ("Content-Security-Policy" = String, description = "Only this origin; no inline script or style."),
                ("ETag" = String, description = "The page's version; send it in `If-None-Match`."),
            )),
        (status = 304, description = "The copy named in `If-None-Match` is current."),
    ),
)]
pub async fn app_index(_state: &AppState, request: RequestContext) -> HandlerResult {
    serve(&request, &BUNDLE.index, "no-cache")
}

/// `GET /app/{*file}`: the web app's scripts, styles and icon.
#[utoipa::path(
    get,
    path = "/app/{file}",
    tag = "web app",
    summary = "A web app asset",
    description = "A file of the web app at `assets/<version>/<name>`, where the version is a hash of all of \
        the app's files: the URL of a file never changes meaning, so it is cached for a year. Another \
        version's URL is 404.",
    params(("file" = String, Path, description = "`assets/<version>/<name>`, as linked from the page.",
        example = "assets/0123456789abcdef/main.js")),
    responses(
        (status = 200, description = "The file.", content(
            (String = "text/javascript"),
            (String = "text/css"),
            (String = "image/svg+xml"),
        )),
        (status = 304, description = "The copy named in `If-None-Match` is current."),
    ),
)]
pub async fn app_file(_state: &AppState, request: RequestContext) -> HandlerResult {
    let path = request.param("file").unwrap_or_default();
    let name = path
        .strip_prefix("assets/")
        .and_then(|rest| rest.strip_prefix(BUNDLE.version.as_str()))
        .and_then(|rest| rest.strip_prefix('/'));
    let file = name.and_then(|name| BUNDLE.assets.get(name)).ok_or(ApiError::NotFound("no such file"))?;
    serve(&request, file, IMMUTABLE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files_under(directory: &std::path::Path, root: &std::path::Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(directory).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files_under(&path, root, found);
            } else {
                found.push(path.strip_prefix(root).unwrap().to_str().unwrap().replace('\\', "/"));
            }
        }
    }

    #[test]
    fn every_file_of_web_is_served() {
        // Goal: a file added to web/ cannot be forgotten in SOURCES (the page would fail to load it).
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
        let mut found = Vec::new();
        files_under(&root, &root, &mut found);
        found.retain(|name| name != "index.html");
        found.sort();
        let mut listed: Vec<String> = asset_names().map(str::to_owned).collect();
        listed.sort();
        assert_eq!(found, listed);
    }

    #[test]
    fn the_page_links_the_versioned_assets() {
        // Goal: the page's placeholder becomes this build's asset folder, and the version is a short hex hash.
        let page = std::str::from_utf8(&BUNDLE.index.bytes).unwrap();
        assert!(!page.contains(ASSETS_PLACEHOLDER));
        assert!(page.contains(&format!("assets/{}/main.js", version())));
        assert_eq!(version().len(), 16);
        assert!(version().bytes().all(|byte| byte.is_ascii_hexdigit()));
    }
}
