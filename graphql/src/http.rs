//! HTTP routes: GraphQL over POST and WebSocket, the development console, health and metrics.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use kabinet_domain::Actor;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::auth::{TokenKeys, VerifiedToken};
use crate::schema::context::{CallerSession, ClientAddress, RequestContext, Services};
use crate::schema::KabinetSchema;

/// State shared by the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    pub schema: KabinetSchema,
    pub services: Services,
    pub keys: TokenKeys,
    pub console: bool,
    /// Production mode: development tokens are refused.
    pub production: bool,
    /// Whether the last `X-Forwarded-For` entry names the client.
    pub trusted_proxy: bool,
    /// Largest GraphQL response body sent, in bytes.
    pub max_response_bytes: usize,
    /// The bearer token `/metrics` asks for, if one is configured.
    pub metrics_token: Option<MetricsToken>,
    /// Rate limits and WebSocket bounds.
    pub transport: Arc<crate::transport::Transport>,
}

/// The metrics token, kept only as its SHA-256 so that it is compared in
/// constant time whatever its length.
#[derive(Clone)]
pub struct MetricsToken([u8; 32]);

impl MetricsToken {
    /// The token `token`.
    pub fn new(token: &str) -> MetricsToken {
        MetricsToken(Sha256::digest(token.as_bytes()).into())
    }

    /// Whether `given` is the token.
    fn matches(&self, given: &str) -> bool {
        let given: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        self.0
            .iter()
            .zip(given.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// The router of the server.
pub fn router(
    state: AppState,
    max_body_bytes: usize,
    origins: crate::browser::BrowserOrigins,
) -> Router {
    // Everything a client can call is rate-limited; probes and metrics are not.
    let limited = Router::new()
        .route("/", get(console))
        .route("/graphql", get(graphql_get).post(graphql_post))
        .route("/graphql/ws", get(graphql_ws))
        .route(
            "/identity/passport-scan",
            axum::routing::post(crate::identity_http::upload_passport_scan)
                // The handler reads the body under its own limit.
                .layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/identity/passport-scans/{patient}/{sha256}",
            get(crate::identity_http::download_passport_scan),
        )
        .route("/verify/prescription/{token}", get(verify_prescription))
        .route("/files/{sha256}", get(crate::files::download))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::ratelimit::limit,
        ));
    let router = Router::new()
        .merge(limited)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .layer(axum::middleware::from_fn(crate::metrics::track_requests))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state);
    // CORS outermost, so that refusals (429, 503) reach the page readable too.
    crate::browser::with_protective_headers(router).layer(crate::browser::cors(origins))
}

/// A GraphQL-shaped error response outside normal execution.
pub(crate) fn error_response(
    status: StatusCode,
    code: &str,
    message: &str,
    request_id: &str,
) -> Response {
    let body = serde_json::json!({
        "data": null,
        "errors": [{ "message": message, "extensions": { "code": code, "requestId": request_id } }],
    });
    crate::metrics::observe_error(code);
    let mut response = (status, Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// The request id: the caller's `x-request-id` when it is sane, else a new one.
pub(crate) fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        .map(str::to_string)
        .unwrap_or_else(|| Uuid::now_v7().simple().to_string())
}

/// Why a request's token was not accepted.
pub(crate) enum AuthError {
    /// HTTP 401 with this message.
    Unauthenticated(&'static str),
    /// The session could not be checked (logged); HTTP 500.
    Internal,
}

/// A caller whose token was accepted.
pub(crate) struct Authenticated {
    pub(crate) actor: Actor,
    pub(crate) session_id: Option<Uuid>,
    /// A development token, exempt from the identity-verification gate.
    pub(crate) dev: bool,
}

pub(crate) const INVALID_TOKEN: &str =
    "the bearer token is malformed, expired or not signed by this server";

/// Checks a bearer token: its signature, then its standing.
async fn authenticate(state: &AppState, token: &str) -> Result<Authenticated, AuthError> {
    let verified = state
        .keys
        .verify_token(token)
        .map_err(|_| AuthError::Unauthenticated(INVALID_TOKEN))?;
    standing(state, verified).await
}

/// Checks a token whose signature is verified: its session (live, account
/// active) or, for a development token, the account's state. A session
/// token speaks with the role and organisation its session row holds (copied
/// from the account's record at sign-in), never with its claims.
pub(crate) async fn standing(
    state: &AppState,
    verified: VerifiedToken,
) -> Result<Authenticated, AuthError> {
    let store = state.services.accounts.store();
    let internal = |e: sqlx::Error| {
        tracing::error!(error = %e, "cannot check a session");
        AuthError::Internal
    };
    match verified.session_id {
        Some(session_id) => {
            let session = store.session(session_id).await.map_err(internal)?;
            let now = state.services.clock.now();
            match session {
                Some(s) if s.live(now) && s.account_id == verified.actor.account_id => {
                    let role = s.role.parse::<kabinet_domain::Role>().map_err(|e| {
                        tracing::error!(error = %e, "a session holds an unknown role");
                        AuthError::Internal
                    })?;
                    Ok(Authenticated {
                        actor: Actor {
                            account_id: s.account_id,
                            role,
                            organisation_id: s.organisation_id,
                        },
                        session_id: Some(session_id),
                        dev: false,
                    })
                }
                _ => Err(AuthError::Unauthenticated(
                    "the session has ended (signed out, expired or revoked); sign in again",
                )),
            }
        }
        None if state.production => Err(AuthError::Unauthenticated(
            "development tokens are not accepted in production mode; sign in",
        )),
        None => {
            // A development token speaks for its subject; if that subject has
            // an account, the account's state decides.
            match store
                .status(verified.actor.account_id)
                .await
                .map_err(internal)?
            {
                None | Some(kabinet_domain::accounts::AccountStatus::Active) => Ok(Authenticated {
                    actor: verified.actor,
                    session_id: None,
                    dev: verified.dev,
                }),
                Some(_) => Err(AuthError::Unauthenticated(
                    "the account is closed or deactivated",
                )),
            }
        }
    }
}

/// The caller of an `Authorization: Bearer` header; `Ok(None)` when there is none.
/// The signed-in caller of a plain HTTP route, or the 401 / 500 response to
/// send instead.
pub(crate) async fn require_caller(
    state: &AppState,
    headers: &HeaderMap,
    request_id: &str,
) -> Result<Actor, Response> {
    require_caller_of_token(state, headers, request_id)
        .await
        .map(|(actor, _)| actor)
}

/// [`require_caller`], also telling whether the token is a development token
/// (which passes the identity-verification gate).
pub(crate) async fn require_caller_of_token(
    state: &AppState,
    headers: &HeaderMap,
    request_id: &str,
) -> Result<(Actor, bool), Response> {
    let unauthenticated = |message: &str| {
        let mut response = error_response(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            message,
            request_id,
        );
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        response
    };
    match caller(state, headers).await {
        Ok(Some(c)) => Ok((c.actor, c.dev)),
        Ok(None) => Err(unauthenticated("sign in first: this needs a bearer token")),
        Err(AuthError::Unauthenticated(message)) => Err(unauthenticated(message)),
        Err(AuthError::Internal) => Err(error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            &format!("internal error (request id {request_id})"),
            request_id,
        )),
    }
}

async fn caller(state: &AppState, headers: &HeaderMap) -> Result<Option<Authenticated>, AuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| AuthError::Unauthenticated("the Authorization header is not valid text"))?;
    let token = value
        .strip_prefix("Bearer ")
        .ok_or(AuthError::Unauthenticated(
            "the Authorization header must be 'Bearer <token>'",
        ))?;
    authenticate(state, token.trim()).await.map(Some)
}

/// The client's address: the socket's peer, or behind a trusted proxy the
/// last `X-Forwarded-For` entry (the one that proxy added).
pub(crate) fn client_address(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    if state.trusted_proxy {
        // Only the very last entry: earlier ones come from the client and may be forged.
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| v.trim().parse::<IpAddr>().ok());
        if let Some(ip) = forwarded {
            return ip;
        }
    }
    peer.ip()
}

async fn graphql_post(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let request_id = request_id(&headers);
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            crate::metrics::observe_rejected();
            let (code, message) = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                (
                    "PAYLOAD_TOO_LARGE",
                    "the request body is larger than the server accepts (KABINET_MAX_BODY_BYTES); send a shorter query".to_string(),
                )
            } else {
                ("BAD_REQUEST", rejection.body_text())
            };
            return error_response(rejection.status(), code, &message, &request_id);
        }
    };
    let client = client_address(&state, peer, &headers);
    let caller = match caller(&state, &headers).await {
        Ok(caller) => caller,
        Err(AuthError::Internal) => {
            return error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                &format!("internal error (request id {request_id})"),
                &request_id,
            )
        }
        Err(AuthError::Unauthenticated(message)) => {
            crate::metrics::observe_unauthenticated();
            let mut response = error_response(
                StatusCode::UNAUTHORIZED,
                "UNAUTHENTICATED",
                message,
                &request_id,
            );
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    };
    let parsed: Result<serde_json::Value, _> = serde_json::from_slice(&body);
    let request = match parsed {
        Ok(value @ serde_json::Value::Object(_)) => {
            serde_json::from_value::<async_graphql::Request>(value)
                .map_err(|e| format!("the request body is not a GraphQL request: {e}"))
        }
        Ok(serde_json::Value::Array(_)) => {
            Err("batched requests are not accepted: send one operation per request".to_string())
        }
        Ok(_) => Err("the request body must be a JSON object with a 'query'".to_string()),
        Err(e) => Err(format!("the request body is not valid JSON: {e}")),
    };
    let request = match request {
        Ok(request) => request,
        Err(message) => {
            crate::metrics::observe_rejected();
            return error_response(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                &message,
                &request_id,
            );
        }
    };
    let operation = request.operation_name.clone().unwrap_or_default();
    let named = crate::metrics::operation_of(&request);
    let span = tracing::info_span!("graphql", request_id = %request_id, operation = %operation);
    let _guard = span.enter();
    let (actor, session_id, dev) = match caller {
        Some(c) => (Some(c.actor), c.session_id, c.dev),
        None => (None, None, false),
    };
    let request = request
        .data(RequestContext {
            dev_token: dev,
            actor,
            request_id: request_id.clone(),
        })
        .data(ClientAddress(Some(client)))
        .data(CallerSession(session_id))
        .data(crate::schema::context::VerifiedOnce::default());
    drop(_guard);
    let started = std::time::Instant::now();
    let response = tracing::Instrument::instrument(state.schema.execute(request), span).await;
    let codes: Vec<&str> = response
        .errors
        .iter()
        .filter_map(|e| match e.extensions.as_ref()?.get("code")? {
            async_graphql::Value::String(code) => Some(code.as_str()),
            _ => None,
        })
        .collect();
    crate::metrics::observe_graphql(named.as_deref(), started.elapsed(), &codes);
    let mut response = response_within(response, state.max_response_bytes, &request_id);
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
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
    request_id: &str,
) -> Response {
    let mut body = CappedBuffer {
        bytes: Vec::new(),
        limit: max_bytes,
        overflowed: false,
    };
    match serde_json::to_writer(&mut body, &response) {
        Ok(()) => {}
        Err(_) if body.overflowed => {
            tracing::warn!(max_bytes, "a GraphQL response passed the size cap");
            return error_response(
                StatusCode::OK,
                "RESPONSE_TOO_LARGE",
                &format!(
                    "the response would be larger than {max_bytes} bytes and was not sent; \
                     ask for fewer fields, fewer aliases or smaller pages"
                ),
                request_id,
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot serialise a GraphQL response");
            return error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                &format!("internal error (request id {request_id})"),
                request_id,
            );
        }
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
    http
}

async fn graphql_get(headers: HeaderMap) -> Response {
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        "send GraphQL requests as POST with a JSON body",
        &request_id(&headers),
    )
}

/// Upgrades to GraphQL over WebSocket (`graphql-transport-ws` only), within
/// the connection caps and the message size limit; [`crate::ws`] runs it.
async fn graphql_ws(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let request_id = request_id(&headers);
    let offered = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == crate::ws::PROTOCOL);
    if !offered {
        return error_response(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "ask for the WebSocket subprotocol graphql-transport-ws (Sec-WebSocket-Protocol)",
            &request_id,
        );
    }
    let client = client_address(&state, peer, &headers);
    let slot = match state.transport.ws_connections.admit(client) {
        Ok(slot) => slot,
        Err(crowded) => {
            let (status, message) = match crowded {
                crate::ws::Crowded::Address(max) => (
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("too many WebSocket connections from this address: at most {max}; close one first"),
                ),
                crate::ws::Crowded::Server(max) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the server has {max} WebSocket connections open, its maximum: retry later"),
                ),
            };
            let mut response =
                error_response(status, "TOO_MANY_CONNECTIONS", &message, &request_id);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            return response;
        }
    };
    let max = state.transport.ws.max_message_bytes;
    upgrade
        .protocols([crate::ws::PROTOCOL])
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| crate::ws::serve(socket, state, client, slot))
}

/// The development console at `/`: a page of our own that needs nothing
/// from the internet (no CDN), to try queries with a bearer token.
async fn console(State(state): State<AppState>) -> Response {
    if !state.console {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    }
    (
        [(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
            ),
        )],
        Html(include_str!("../assets/console.html")),
    )
        .into_response()
}

/// Public verification of a printed prescription's QR code: no sign-in, and
/// only what a pharmacist needs. A person's browser (`Accept: text/html` preferred
/// over JSON) gets a page in Russian; programs get JSON. A token that does not
/// verify answers `{"result": "invalid"}`; a database fault answers 503, never 500.
async fn verify_prescription(
    State(state): State<AppState>,
    axum::extract::Path(token): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    let page = prefers_html(&headers);
    let mut response = match crate::schema::prescriptions::verify(&state.services, &token).await {
        Ok(answer) if page => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            )],
            crate::schema::prescriptions::verification_page(&answer),
        )
            .into_response(),
        Ok(answer) => Json(answer).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "prescription verification failed");
            if page {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/html; charset=utf-8"),
                    )],
                    "<!DOCTYPE html>\n<html lang=\"ru\"><head><meta charset=\"utf-8\">\
                     <title>Проверка рецепта</title></head><body><h1>Проверка рецепта сейчас \
                     недоступна</h1><p>Попробуйте ещё раз через минуту.</p></body></html>\n",
                )
                    .into_response()
            } else {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(serde_json::json!({ "error": "verification is unavailable; try again" })),
                )
                    .into_response()
            }
        }
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::VARY, HeaderValue::from_static("accept"));
    if page {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
        );
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
    }
    response
}

/// Whether the `Accept` header ranks `text/html` above `application/json`
/// (a browser); without a header, or at a tie, the answer is JSON.
fn prefers_html(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mut html = 0.0_f32;
    let mut json = 0.0_f32;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "text/html" => html = html.max(q),
            "application/json" => json = json.max(q),
            _ => {}
        }
    }
    html > json
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.services.db.ping().await {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response()
    }
}

/// Who may read `/metrics`: with a metrics token configured, a caller with
/// `Authorization: Bearer <token>`; without one, anyone in development and
/// no one in production.
/// Returns the refusal to send, or `None` when the caller may read them.
fn metrics_refusal(state: &AppState, headers: &HeaderMap, request_id: &str) -> Option<Response> {
    match &state.metrics_token {
        Some(token) => {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim);
            if given.is_some_and(|given| token.matches(given)) {
                return None;
            }
            crate::metrics::observe_unauthenticated();
            let mut response = error_response(
                StatusCode::UNAUTHORIZED,
                "UNAUTHENTICATED",
                "the metrics need 'Authorization: Bearer <metrics token>' (KABINET_METRICS_TOKEN)",
                request_id,
            );
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            Some(response)
        }
        None if state.production => Some(error_response(
            StatusCode::FORBIDDEN,
            "METRICS_DISABLED",
            "metrics are not served in production mode without a metrics token: set KABINET_METRICS_TOKEN",
            request_id,
        )),
        None => None,
    }
}

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let request_id = request_id(&headers);
    if let Some(refused) = metrics_refusal(&state, &headers, &request_id) {
        return refused;
    }
    let text = crate::metrics::render(&state.services.db, &state.services.projector).await;
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
