//! One error type for the HTTP edge and the two shapes it is written in.
//!
//! Every refusal a route, an extractor or a layer makes is an [`ApiError`].
//! Its response carries the error itself as an extension; the [`shape`]
//! middleware writes the body once the request id and the route are known:
//!
//! - GraphQL endpoints (`/graphql`, `/graphql/ws`) answer the GraphQL shape,
//!   `{"data": null, "errors": [{"message", "extensions": {"code", "requestId"}}]}`,
//!   so that clients read every failure of a GraphQL request in one place;
//! - every other route answers the envelope
//!   `{"error": {"code", "message", "requestId"}}`.
//!
//! Both add `retryAfterSeconds` when the client should retry later (the
//! `Retry-After` header says the same).

use std::any::Any;
use std::borrow::Cow;
use std::fmt::Write as _;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use super::request_id::{RequestId, REQUEST_ID};

/// A refusal or failure answered to an HTTP client.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: Cow<'static, str>,
    message: Cow<'static, str>,
    retry_after: Option<u64>,
    /// Ask for a bearer token (`WWW-Authenticate: Bearer`).
    challenge: bool,
    /// An internal fault: the client learns only the request id.
    masked: bool,
}

impl ApiError {
    /// An error with `status`, a stable `code` and a message for people.
    pub fn new(
        status: StatusCode,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<Cow<'static, str>>,
    ) -> ApiError {
        ApiError {
            status,
            code: code.into(),
            message: message.into(),
            retry_after: None,
            challenge: false,
            masked: false,
        }
    }

    /// 401 `UNAUTHENTICATED` with `WWW-Authenticate: Bearer`.
    pub fn unauthenticated(message: impl Into<Cow<'static, str>>) -> ApiError {
        ApiError {
            challenge: true,
            ..ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", message)
        }
    }

    /// 403 `FORBIDDEN`.
    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "FORBIDDEN", message)
    }

    /// 404 `NOT_FOUND`.
    pub fn not_found(message: impl Into<Cow<'static, str>>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }

    /// 400 `BAD_REQUEST`.
    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
    }

    /// 500 `INTERNAL`: logs `cause` with its whole chain of sources (inside
    /// the request's span, so with its request id) and tells the client only
    /// the request id.
    pub fn internal(what: &str, cause: impl Into<Cause>) -> ApiError {
        log_internal(what, cause);
        ApiError::masked()
    }

    /// 500 `INTERNAL` for a fault already logged.
    pub fn masked() -> ApiError {
        ApiError {
            masked: true,
            ..ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                "internal error",
            )
        }
    }

    /// The same error, telling the client to retry after `seconds` (at least one).
    pub fn retry_after(mut self, seconds: u64) -> ApiError {
        self.retry_after = Some(seconds.max(1));
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable code.
    pub fn code(&self) -> &str {
        &self.code
    }

    fn message_for(&self, request_id: &str) -> String {
        if self.masked {
            format!("internal error (request id {request_id})")
        } else {
            self.message.to_string()
        }
    }

    /// The response body in `shape`.
    fn body(&self, shape: Shape, request_id: Option<&str>) -> Value {
        let message = self.message_for(request_id.unwrap_or("unknown"));
        let mut fields = Map::new();
        fields.insert("code".into(), Value::from(self.code.as_ref()));
        if let Some(id) = request_id {
            fields.insert("requestId".into(), Value::from(id));
        }
        if let Some(seconds) = self.retry_after {
            fields.insert("retryAfterSeconds".into(), Value::from(seconds));
        }
        match shape {
            Shape::GraphQl => json!({
                "data": null,
                "errors": [{ "message": message, "extensions": fields }],
            }),
            Shape::Envelope => {
                fields.insert("message".into(), Value::from(message));
                json!({ "error": fields })
            }
        }
    }

    /// The complete response in `shape` with `request_id`.
    pub fn render(&self, shape: Shape, request_id: Option<&str>) -> Response {
        let mut response = Response::new(Body::from(
            serde_json::to_vec(&self.body(shape, request_id)).unwrap_or_default(),
        ));
        *response.status_mut() = self.status;
        self.set_headers(response.headers_mut(), request_id);
        response
    }

    fn set_headers(&self, headers: &mut HeaderMap, request_id: Option<&str>) {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.challenge {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(value) = request_id.and_then(|id| HeaderValue::from_str(id).ok()) {
            headers.insert(REQUEST_ID, value);
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl IntoResponse for ApiError {
    /// The envelope without a request id; [`shape`] rewrites it with both.
    fn into_response(self) -> Response {
        let mut response = self.render(Shape::Envelope, None);
        response.extensions_mut().insert(self);
        response
    }
}

/// How a route writes its errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `{"data": null, "errors": [...]}`, for the GraphQL endpoints.
    GraphQl,
    /// `{"error": {...}}`, for every other route.
    Envelope,
}

impl Shape {
    /// The shape of errors on `path`.
    pub fn of_path(path: &str) -> Shape {
        if path == "/graphql" || path.starts_with("/graphql/") {
            Shape::GraphQl
        } else {
            Shape::Envelope
        }
    }
}

/// Marks a response that a handler (or an inner layer) produced, so that
/// [`shape`] can tell it from the empty answer of the timeout layer.
#[derive(Debug, Clone, Copy)]
pub struct Answered;

/// Middleware (innermost): marks the response as [`Answered`].
pub async fn mark_answered(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    response.extensions_mut().insert(Answered);
    response
}

/// Middleware: writes every [`ApiError`] in the route's shape with the
/// request id, and turns the timeout layer's empty answer into the error
/// `REQUEST_TIMEOUT`.
pub async fn shape(request: Request, next: Next) -> Response {
    let shape = Shape::of_path(request.uri().path());
    let request_id = RequestId::of(request.headers()).map(RequestId::into_string);
    let mut response = next.run(request).await;
    let error = match response.extensions_mut().remove::<ApiError>() {
        Some(error) => error,
        None if response.extensions().get::<Answered>().is_none() => {
            tracing::warn!("the request ran past the request timeout");
            ApiError::new(
                response.status(),
                "REQUEST_TIMEOUT",
                "the request took longer than the server allows (KABINET_REQUEST_TIMEOUT_MS) \
                 and was stopped; a mutation may or may not have taken effect: retry with \
                 the same idempotency key",
            )
            .retry_after(1)
        }
        None => return response,
    };
    crate::metrics::observe_error(&error.code);
    let mut rendered = error.render(shape, request_id.as_deref());
    // Headers a route or layer added (CORS, Allow, …) stay.
    for (name, value) in response.headers() {
        if !rendered.headers().contains_key(name) && name != header::CONTENT_LENGTH {
            rendered.headers_mut().insert(name.clone(), value.clone());
        }
    }
    rendered
}

/// The answer of a handler that panicked: 500 `INTERNAL`, the panic logged.
pub fn panicked(panic: Box<dyn Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string());
    tracing::error!(panic = %what, "a request handler panicked");
    ApiError::masked().into_response()
}

/// The cause of an internal fault: any error (its sources are kept), or a
/// text from an adapter that reports one.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Logs an internal fault with the whole chain of its causes.
pub fn log_internal(what: &str, cause: impl Into<Cause>) {
    let cause: Cause = cause.into();
    tracing::error!(error = %cause_chain(cause.as_ref()), "{what}");
}

/// `error` and each of its sources, joined by `": "`.
pub fn cause_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot load the scan")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn the_cause_chain_names_every_source() {
        let error = Outer(std::io::Error::other("disk unreadable"));
        assert_eq!(cause_chain(&error), "cannot load the scan: disk unreadable");
    }

    #[test]
    fn graphql_endpoints_answer_the_graphql_shape_and_others_the_envelope() {
        assert_eq!(Shape::of_path("/graphql"), Shape::GraphQl);
        assert_eq!(Shape::of_path("/graphql/ws"), Shape::GraphQl);
        assert_eq!(Shape::of_path("/graphqlx"), Shape::Envelope);
        assert_eq!(Shape::of_path("/files/abc"), Shape::Envelope);
        let error = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED", "slow down")
            .retry_after(2);
        let envelope = error.body(Shape::Envelope, Some("r1"));
        assert_eq!(
            envelope,
            json!({ "error": { "code": "RATE_LIMITED", "message": "slow down",
                "requestId": "r1", "retryAfterSeconds": 2 } })
        );
        let graphql = error.body(Shape::GraphQl, Some("r1"));
        assert_eq!(graphql["errors"][0]["message"], "slow down");
        assert_eq!(graphql["errors"][0]["extensions"]["code"], "RATE_LIMITED");
        assert_eq!(graphql["errors"][0]["extensions"]["requestId"], "r1");
    }

    #[test]
    fn internal_errors_show_only_the_request_id() {
        let error = ApiError::internal("loading failed", "password=hunter2");
        let body = error.body(Shape::Envelope, Some("r9"));
        assert_eq!(body["error"]["code"], "INTERNAL");
        assert_eq!(body["error"]["message"], "internal error (request id r9)");
        assert_eq!(error.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
