//! The API's own documentation: `GET /openapi.json` and the Swagger UI.
//!
//! The Swagger UI files are compiled into the binary by `utoipa-swagger-ui`'s
//! `vendored` feature, so the UI works without network access. It loads
//! `/openapi.json` from the same origin, so "Try it out" calls this very API; a token
//! pasted into **Authorize** is kept across page reloads (`persistAuthorization`).

use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE, HeaderValue, LOCATION, X_CONTENT_TYPE_OPTIONS};
use hyper::{Response, StatusCode};
use utoipa_swagger_ui::Config;

use super::error::ApiError;
use super::{HandlerResult, RequestContext};
use crate::http::state::AppState;

/// Where the document is served; the Swagger UI loads it from here.
pub const OPENAPI_PATH: &str = "/openapi.json";

/// The Swagger UI's root; its files are relative to it, so the trailing slash matters.
pub const SWAGGER_UI_PATH: &str = "/swagger-ui/";

/// The document, serialized once.
static DOCUMENT: LazyLock<Bytes> = LazyLock::new(|| Bytes::from(crate::http::openapi::json()));

static SWAGGER_CONFIG: LazyLock<Arc<Config<'static>>> = LazyLock::new(|| {
    Arc::new(
        Config::new([OPENAPI_PATH])
            .persist_authorization(true)
            .try_it_out_enabled(true)
            .display_request_duration(true)
            .filter(true),
    )
});

fn respond(status: StatusCode, content_type: &str, body: Bytes) -> hyper::Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_str(content_type).expect("content types are ASCII"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// `GET /openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "documentation",
    summary = "The OpenAPI document",
    description = "This OpenAPI 3.1 document, generated from the handlers and types of the running build.",
    responses((status = 200, description = "The OpenAPI document.", body = serde_json::Value)),
)]
pub async fn openapi_json(_state: &AppState, _request: RequestContext) -> HandlerResult {
    Ok(respond(StatusCode::OK, "application/json", DOCUMENT.clone()))
}

/// `GET /swagger-ui`: redirects to `/swagger-ui/`, whose relative asset links need the slash.
#[utoipa::path(
    get,
    path = "/swagger-ui",
    tag = "documentation",
    summary = "Redirect to the Swagger UI",
    responses((
        status = 301,
        description = "Moved to `/swagger-ui/`.",
        headers(("Location" = String, description = "`/swagger-ui/`")),
    )),
)]
pub async fn swagger_ui_redirect(_state: &AppState, _request: RequestContext) -> HandlerResult {
    let mut response = respond(StatusCode::MOVED_PERMANENTLY, "text/plain; charset=utf-8", Bytes::new());
    response.headers_mut().insert(LOCATION, HeaderValue::from_static(SWAGGER_UI_PATH));
    Ok(response)
}

/// `GET /swagger-ui/`: the Swagger UI page.
#[utoipa::path(
    get,
    path = "/swagger-ui/",
    tag = "documentation",
    summary = "The Swagger UI",
    description = "An interactive view of this document that works offline. Paste a token into \
        **Authorize** and use **Try it out** to call the API.",
    responses((status = 200, description = "The Swagger UI page.", body = String, content_type = "text/html")),
)]
pub async fn swagger_ui_index(_state: &AppState, _request: RequestContext) -> HandlerResult {
    swagger_file("index.html")
}

/// `GET /swagger-ui/{*file}`: the Swagger UI's scripts, styles and icons.
#[utoipa::path(
    get,
    path = "/swagger-ui/{file}",
    tag = "documentation",
    summary = "A Swagger UI asset",
    params(("file" = String, Path, description = "File name, such as `swagger-ui-bundle.js`.", example = "swagger-ui-bundle.js")),
    responses((
        status = 200,
        description = "The file.",
        content(
            (String = "text/javascript"),
            (String = "text/css"),
            (String = "text/html"),
            (String = "image/png"),
        ),
    )),
)]
pub async fn swagger_ui_file(_state: &AppState, request: RequestContext) -> HandlerResult {
    swagger_file(request.param("file").unwrap_or("index.html"))
}

fn swagger_file(path: &str) -> HandlerResult {
    let file = utoipa_swagger_ui::serve(path, SWAGGER_CONFIG.clone())
        .map_err(|error| ApiError::internal(format!("swagger ui file {path}: {error}")))?
        .ok_or(ApiError::NotFound("no such file"))?;
    let content_type = match file.content_type.as_str() {
        text if text.starts_with("text/") => format!("{text}; charset=utf-8"),
        other => other.to_owned(),
    };
    let mut response = respond(StatusCode::OK, &content_type, Bytes::from(file.bytes.into_owned()));
    if file.gzpipped {
        response.headers_mut().insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    Ok(response)
}
