//! `X-Request-Id`: the client's own id when it is 1..128 printable ASCII characters,
//! else a new unique one. Every response carries it, and the request's span carries it
//! as `request_id`, so every log line written while serving the request names it.

use std::fmt;

use hyper::HeaderMap;
use hyper::header::{HeaderName, HeaderValue};

/// The header's name.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest request id taken from a client.
pub const REQUEST_ID_LENGTH_MAX: usize = 128;

/// A request's id: valid as a header value by construction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// The client's `X-Request-Id` when it is valid, else a new one.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        headers.get(REQUEST_ID_HEADER).and_then(Self::parse).unwrap_or_else(Self::generate)
    }

    /// A client's id: 1..=128 printable ASCII characters (space to `~`).
    pub fn parse(value: &HeaderValue) -> Option<Self> {
        let bytes = value.as_bytes();
        let printable = bytes.iter().all(|byte| (b' '..=b'~').contains(byte));
        (!bytes.is_empty() && bytes.len() <= REQUEST_ID_LENGTH_MAX && printable).then(|| Self(value.clone()))
    }

    /// A new id, unique across processes (a random UUID, 32 hex digits).
    pub fn generate() -> Self {
        let text = uuid::Uuid::new_v4().simple().to_string();
        Self(HeaderValue::from_str(&text).expect("hex digits are a valid header value"))
    }

    /// The id as a header value.
    pub fn header_value(&self) -> HeaderValue {
        self.0.clone()
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        self.0.to_str().expect("printable ASCII by construction")
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID_HEADER, HeaderValue::from_bytes(value).unwrap());
        headers
    }

    #[test]
    fn a_valid_client_id_is_kept() {
        assert_eq!(RequestId::from_headers(&headers(b"abc-123 x")).as_str(), "abc-123 x");
        let longest = "a".repeat(REQUEST_ID_LENGTH_MAX);
        assert_eq!(RequestId::from_headers(&headers(longest.as_bytes())).as_str(), longest);
    }

    #[test]
    fn an_invalid_client_id_is_replaced() {
        let too_long = "a".repeat(REQUEST_ID_LENGTH_MAX + 1);
        for value in [too_long.as_bytes(), b"caf\xc3\xa9", b"tab\there"] {
            let id = RequestId::from_headers(&headers(value));
            assert_eq!(id.as_str().len(), 32, "{value:?} gets a new id");
        }
        assert_eq!(RequestId::from_headers(&HeaderMap::new()).as_str().len(), 32);
    }

    #[test]
    fn generated_ids_differ() {
        let ids: std::collections::HashSet<_> = (0..1000).map(|_| RequestId::generate().to_string()).collect();
        assert_eq!(ids.len(), 1000);
    }
}
