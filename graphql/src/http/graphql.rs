//! GraphQL over HTTP POST and the upgrade to GraphQL over WebSocket. The
//! request context of a GraphQL operation is built here from the [`Caller`].

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{State, WebSocketUpgrade};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;

use super::caller::{Caller, ClientIp};
use super::error::ApiError;
use super::request_id::RequestId;
use super::ws;
use super::AppState;
use crate::schema::context::{CallerSession, ClientAddress, RequestContext, VerifiedOnce};

/// `POST /graphql`: one operation per request, as a JSON object.
pub(super) async fn post(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    request_id: RequestId,
    caller: Result<Caller, ApiError>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|rejection| {
        crate::metrics::observe_rejected();
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                "the request body is larger than the server accepts (KABINET_MAX_BODY_BYTES); send a shorter query",
            )
        } else {
            ApiError::new(rejection.status(), "BAD_REQUEST", rejection.body_text())
        }
    })?;
    let Caller(caller) = caller.inspect_err(|refused| {
        if refused.status() == StatusCode::UNAUTHORIZED {
            crate::metrics::observe_unauthenticated();
        }
    })?;
    let request = parse(&body).inspect_err(|_| crate::metrics::observe_rejected())?;
    let operation = request.operation_name.clone().unwrap_or_default();
    let named = crate::metrics::operation_of(&request);
    let (actor, session_id, dev) = match caller {
        Some(c) => (Some(c.actor), c.session_id, c.dev),
        None => (None, None, false),
    };
    let request = request
        .data(RequestContext {
            dev_token: dev,
            actor,
            request_id: request_id.as_str().to_string(),
        })
        .data(ClientAddress(Some(client)))
        .data(CallerSession(session_id))
        .data(VerifiedOnce::default());
    let started = std::time::Instant::now();
    let span = tracing::info_span!("graphql", operation = %operation);
    let response = tracing::Instrument::instrument(state.schema.execute(request), span).await;
    let codes = crate::metrics::error_codes(&response);
    crate::metrics::observe_graphql(named.as_deref(), started.elapsed(), &codes);
    response_within(response, state.max_response_bytes)
}

/// The GraphQL request in `body`, or why it is not one.
fn parse(body: &[u8]) -> Result<async_graphql::Request, ApiError> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(value @ serde_json::Value::Object(_)) => {
            serde_json::from_value::<async_graphql::Request>(value).map_err(|e| {
                ApiError::bad_request(format!("the request body is not a GraphQL request: {e}"))
            })
        }
        Ok(serde_json::Value::Array(_)) => Err(ApiError::bad_request(
            "batched requests are not accepted: send one operation per request",
        )),
        Ok(_) => Err(ApiError::bad_request(
            "the request body must be a JSON object with a 'query'",
        )),
        Err(e) => Err(ApiError::bad_request(format!(
            "the request body is not valid JSON: {e}"
        ))),
    }
}

/// A buffer that refuses to grow past its limit, so that serialising a
/// response larger than the cap stops there instead of finishing it.
struct CappedBuffer {
    bytes: Vec<u8>,
    limit: usize,
    overflowed: bool,
}

impl std::io::Write for CappedBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len().saturating_add(buf.len()) > self.limit {
            self.overflowed = true;
            return Err(std::io::Error::other("response size cap reached"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The HTTP response of a GraphQL response, or an error with code
/// `RESPONSE_TOO_LARGE` when its JSON would pass `max_bytes`.
fn response_within(
    response: async_graphql::Response,
    max_bytes: usize,
) -> Result<Response, ApiError> {
    let mut body = CappedBuffer {
        bytes: Vec::new(),
        limit: max_bytes,
        overflowed: false,
    };
    match serde_json::to_writer(&mut body, &response) {
        Ok(()) => {}
        Err(_) if body.overflowed => {
            tracing::warn!(max_bytes, "a GraphQL response passed the size cap");
            return Err(ApiError::new(
                StatusCode::OK,
                "RESPONSE_TOO_LARGE",
                format!(
                    "the response would be larger than {max_bytes} bytes and was not sent; \
                     ask for fewer fields, fewer aliases or smaller pages"
                ),
            ));
        }
        Err(e) => return Err(ApiError::internal("cannot serialise a GraphQL response", e)),
    }
    let mut http = Response::new(axum::body::Body::from(body.bytes));
    http.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/graphql-response+json"),
    );
    if response.is_ok() {
        if let Some(value) = response
            .cache_control
            .value()
            .and_then(|v| HeaderValue::from_str(&v).ok())
        {
            http.headers_mut().insert(header::CACHE_CONTROL, value);
        }
    }
    http.headers_mut().extend(response.http_headers);
    Ok(http)
}

/// `GET /graphql`: refused, queries go as POST.
pub(super) async fn get() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        "send GraphQL requests as POST with a JSON body",
    )
}

/// Upgrades to GraphQL over WebSocket (`graphql-transport-ws` only), within
/// the connection caps and the message size limit; [`ws`] runs it. The
/// caller signs in with `connection_init`, not with a header.
pub(super) async fn upgrade(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade = upgrade
        .map_err(|rejection| {
            ApiError::new(rejection.status(), "BAD_REQUEST", rejection.body_text())
        })?
        .protocols([ws::PROTOCOL]);
    if upgrade.selected_protocol().is_none() {
        return Err(ApiError::bad_request(
            "ask for the WebSocket subprotocol graphql-transport-ws (Sec-WebSocket-Protocol)",
        ));
    }
    let slot = state
        .transport
        .ws_connections
        .admit(client)
        .map_err(|crowded| {
            let (status, message) = match crowded {
                ws::Crowded::Address(max) => (
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("too many WebSocket connections from this address: at most {max}; close one first"),
                ),
                ws::Crowded::Server(max) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the server has {max} WebSocket connections open, its maximum: retry later"),
                ),
            };
            ApiError::new(status, "TOO_MANY_CONNECTIONS", message).retry_after(5)
        })?;
    let max = state.transport.ws.max_message_bytes;
    // The connection outlives the request; its log lines keep the request's span.
    let span = tracing::Span::current();
    Ok(upgrade
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| {
            tracing::Instrument::instrument(ws::serve(socket, state, client, slot), span)
        }))
}
