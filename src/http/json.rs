//! JSON request bodies and responses.
//!
//! A body is read in three passes so that each failure gets its contract status:
//! not JSON at all is 400 `invalid_json`; an unknown field is 422 `validation_failed`
//! naming the field; a wrong type is 400 `invalid_json`.

use std::borrow::Cow;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{HeaderMap, Response, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::error::ApiError;
use crate::validation::FieldErrors;

/// A request body type and the field names it accepts (`payment.token` for nested ones;
/// the same for the objects of a list, `seat_map.row`).
pub trait RequestBody: DeserializeOwned {
    /// Every accepted field, dotted for nested objects.
    const FIELDS: &'static [&'static str];
}

/// Checks the content type and parses a body, rejecting unknown fields.
pub fn parse<T: RequestBody>(headers: &HeaderMap, body: &Bytes) -> Result<T, ApiError> {
    require_json_content_type(headers)?;
    let value: Value = serde_json::from_slice(body)
        .map_err(|error| ApiError::InvalidJson(format!("the body is not valid JSON: {error}")))?;
    let Value::Object(object) = &value else {
        return Err(ApiError::InvalidJson("the body must be a JSON object".to_owned()));
    };
    let mut errors = FieldErrors::new();
    unknown_fields(object, "", T::FIELDS, &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors.into_vec()));
    }
    serde_json::from_value(value).map_err(|error| ApiError::InvalidJson(format!("wrong JSON type: {error}")))
}

fn require_json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let content_type = headers.get(CONTENT_TYPE).and_then(|value| value.to_str().ok()).unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") { Ok(()) } else { Err(ApiError::UnsupportedMediaType) }
}

fn unknown_fields(object: &Map<String, Value>, path: &str, fields: &[&str], errors: &mut FieldErrors) {
    for (key, value) in object {
        // Borrowed on the hot path (top-level fields of a valid body): no allocation.
        let name: Cow<'_, str> = if path.is_empty() { Cow::Borrowed(key) } else { Cow::Owned(format!("{path}.{key}")) };
        if fields.contains(&name.as_ref()) {
            continue;
        }
        let is_parent = |field: &&str| field.strip_prefix(name.as_ref()).is_some_and(|rest| rest.starts_with('.'));
        if fields.iter().any(is_parent) {
            match value {
                Value::Object(inner) => unknown_fields(inner, &name, fields, errors),
                Value::Array(items) => {
                    for inner in items.iter().filter_map(Value::as_object) {
                        unknown_fields(inner, &name, fields, errors);
                    }
                }
                _ => {}
            }
            continue;
        }
        errors.add(&name, "unknown field");
    }
}

/// A JSON response with `status`.
pub fn response<T: Serialize>(status: StatusCode, body: &T) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).expect("response types serialize");
    raw_response(status, Bytes::from(bytes))
}

/// A JSON response from already serialized bytes.
pub fn raw_response(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Confirm {
        reservation_id: Option<String>,
        payment: Option<Payment>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Payment {
        token: Option<String>,
    }

    impl RequestBody for Confirm {
        const FIELDS: &'static [&'static str] = &["reservation_id", "payment.token"];
    }

    fn json_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
        headers
    }

    fn parse_text(text: &str) -> Result<Confirm, ApiError> {
        parse::<Confirm>(&json_headers(), &Bytes::from(text.to_owned()))
    }

    #[test]
    fn syntax_errors_and_wrong_types_are_invalid_json() {
        assert!(matches!(parse_text("{"), Err(ApiError::InvalidJson(_))));
        assert!(matches!(parse_text("[]"), Err(ApiError::InvalidJson(_))));
        assert!(matches!(parse_text(r#"{"reservation_id": 5}"#), Err(ApiError::InvalidJson(_))));
    }

    #[test]
    fn unknown_fields_are_named_even_when_nested() {
        let Err(ApiError::Validation(errors)) = parse_text(r#"{"reservation_id":"x","payment":{"tokn":"t"},"qty":1}"#)
        else {
            panic!("expected validation errors");
        };
        let fields: Vec<_> = errors.iter().map(|error| error.field.as_str()).collect();
        assert_eq!(fields, ["payment.tokn", "qty"]);
        assert!(parse_text(r#"{"reservation_id":"x","payment":{"token":"t"}}"#).is_ok());
    }

    #[test]
    fn other_media_types_are_refused() {
        let result = parse::<Confirm>(&HeaderMap::new(), &Bytes::from_static(b"{}"));
        assert!(matches!(result, Err(ApiError::UnsupportedMediaType)));
    }
}
