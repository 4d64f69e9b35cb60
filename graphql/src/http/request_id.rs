//! Request ids: the client's `x-request-id` when it is sane, else a new one;
//! tower-http sets it on the request and copies it to the answer.

use std::convert::Infallible;

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use tower_http::request_id::MakeRequestId;
use uuid::Uuid;

/// The header that carries the request id, in and out.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The id of the current request (extractor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    /// The sane request id in `headers`, if any.
    pub fn of(headers: &HeaderMap) -> Option<RequestId> {
        headers
            .get(&REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| is_sane(v))
            .map(|v| RequestId(v.to_string()))
    }

    /// A fresh id (UUID v7, so ids sort by time).
    pub fn fresh() -> RequestId {
        RequestId(Uuid::now_v7().simple().to_string())
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id's text, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<RequestId, Infallible> {
        // The request-id layer has set a sane one; outside it, make one up.
        Ok(RequestId::of(&parts.headers).unwrap_or_else(RequestId::fresh))
    }
}

/// Whether a client's request id is taken as it is: 1 to 64 letters, digits
/// and dashes (it is written into logs and headers).
pub fn is_sane(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Makes the ids of requests that came without a sane one.
#[derive(Debug, Clone, Copy, Default)]
pub struct NewRequestId;

impl MakeRequestId for NewRequestId {
    fn make_request_id<B>(
        &mut self,
        _: &axum::http::Request<B>,
    ) -> Option<tower_http::request_id::RequestId> {
        HeaderValue::from_str(RequestId::fresh().as_str())
            .ok()
            .map(tower_http::request_id::RequestId::new)
    }
}

/// Drops a request id that is not sane, so that a new one is made for the request.
pub async fn drop_insane(mut request: Request) -> Request {
    // Several ids are as bad as a malformed one: which would the logs believe?
    let given = request.headers().get_all(&REQUEST_ID);
    let insane = given.iter().count() > 1
        || given
            .iter()
            .next()
            .is_some_and(|v| !v.to_str().is_ok_and(is_sane));
    if insane {
        request.headers_mut().remove(&REQUEST_ID);
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_plain_ids_are_taken() {
        assert!(is_sane("0193f1c2-abc"));
        assert!(!is_sane(""));
        assert!(!is_sane("a b"));
        assert!(!is_sane("id\nforged-log-line"));
        assert!(!is_sane(&"a".repeat(65)));
        assert!(is_sane(RequestId::fresh().as_str()));
    }
}
