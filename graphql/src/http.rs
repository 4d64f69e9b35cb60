//! HTTP routes: GraphQL over POST and WebSocket, GraphiQL, health and metrics.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use async_graphql::http::{GraphiQLSource, ALL_WEBSOCKET_PROTOCOLS};
use async_graphql::Data;
use async_graphql_axum::{GraphQLProtocol, GraphQLResponse, GraphQLWebSocket};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use kabinet_domain::Actor;
use uuid::Uuid;

use crate::auth::TokenKeys;
use crate::metrics::Metrics;
use crate::schema::context::{CallerSession, ClientAddress, RequestContext, Services};
use crate::schema::KabinetSchema;

/// State shared by the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    pub schema: KabinetSchema,
    pub services: Services,
    pub keys: TokenKeys,
    pub metrics: Arc<Metrics>,
    pub graphiql: bool,
    /// Production mode: development tokens are refused.
    pub production: bool,
    /// Whether the last `X-Forwarded-For` entry names the client.
    pub trusted_proxy: bool,
}

/// The router of the server.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/", get(graphiql))
        .route("/graphql", get(graphql_get).post(graphql_post))
        .route("/graphql/ws", get(graphql_ws))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
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
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
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
enum AuthError {
    /// HTTP 401 with this message.
    Unauthenticated(&'static str),
    /// The session could not be checked (logged); HTTP 500.
    Internal,
}

/// A caller whose token was accepted.
struct Authenticated {
    actor: Actor,
    session_id: Option<Uuid>,
    /// A development token, exempt from the identity-verification gate.
    dev: bool,
}

const INVALID_TOKEN: &str = "the bearer token is malformed, expired or not signed by this server";

/// Checks a bearer token: its signature, then its session (live, account
/// active) or, for a development token, the account's state.
async fn authenticate(state: &AppState, token: &str) -> Result<Authenticated, AuthError> {
    let verified = state
        .keys
        .verify_token(token)
        .map_err(|_| AuthError::Unauthenticated(INVALID_TOKEN))?;
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
                    Ok(Authenticated {
                        actor: verified.actor,
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
        Ok(Some(c)) => Ok(c.actor),
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
fn client_address(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
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
    body: Bytes,
) -> Response {
    Metrics::inc(&state.metrics.http_requests);
    let request_id = request_id(&headers);
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
            Metrics::inc(&state.metrics.unauthenticated);
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
            Metrics::inc(&state.metrics.rejected_requests);
            return error_response(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                &message,
                &request_id,
            );
        }
    };
    let operation = request.operation_name.clone().unwrap_or_default();
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
    Metrics::inc(&state.metrics.graphql_requests);
    let response = tracing::Instrument::instrument(state.schema.execute(request), span).await;
    if response.is_err() {
        Metrics::inc(&state.metrics.graphql_errors);
    }
    let mut response = GraphQLResponse::from(response).into_response();
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

async fn graphql_get(headers: HeaderMap) -> Response {
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        "send GraphQL requests as POST with a JSON body",
        &request_id(&headers),
    )
}

async fn graphql_ws(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    Metrics::inc(&state.metrics.http_requests);
    let client = client_address(&state, peer, &headers);
    let auth_state = state.clone();
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |stream| {
            GraphQLWebSocket::new(stream, state.schema.clone(), protocol)
                .on_connection_init(move |payload| async move {
                    let state = auth_state;
                    // The token comes in the connection_init payload:
                    // {"authorization": "Bearer <token>"} (or "Authorization").
                    let token = payload
                        .get("authorization")
                        .or_else(|| payload.get("Authorization"))
                        .and_then(|v| v.as_str())
                        .and_then(|v| v.strip_prefix("Bearer "));
                    let caller = match token {
                        None => None,
                        Some(token) => Some(authenticate(&state, token.trim()).await.map_err(
                            |e| match e {
                                AuthError::Unauthenticated(message) => {
                                    async_graphql::Error::new(message)
                                }
                                AuthError::Internal => async_graphql::Error::new("internal error"),
                            },
                        )?),
                    };
                    let (actor, session_id, dev) = match caller {
                        Some(c) => (Some(c.actor), c.session_id, c.dev),
                        None => (None, None, false),
                    };
                    let mut data = Data::default();
                    data.insert(RequestContext {
                        dev_token: dev,
                        actor,
                        request_id: Uuid::now_v7().simple().to_string(),
                    });
                    data.insert(ClientAddress(Some(client)));
                    data.insert(CallerSession(session_id));
                    data.insert(crate::schema::context::VerifiedOnce::default());
                    Ok(data)
                })
                .serve()
        })
}

async fn graphiql(State(state): State<AppState>) -> Response {
    if !state.graphiql {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    }
    Html(
        GraphiQLSource::build()
            .endpoint("/graphql")
            .subscription_endpoint("/graphql/ws")
            .finish(),
    )
    .into_response()
}

/// Public verification of a printed prescription's QR code: no sign-in, and
/// only what a pharmacist needs. A token that does not verify answers
/// `{"result": "invalid"}`; a database fault answers 503, never 500.
async fn verify_prescription(
    State(state): State<AppState>,
    axum::extract::Path(token): axum::extract::Path<String>,
) -> Response {
    Metrics::inc(&state.metrics.http_requests);
    match crate::schema::prescriptions::verify(&state.services, &token).await {
        Ok(answer) => (
            [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
            Json(answer),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "prescription verification failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({ "error": "verification is unavailable; try again" })),
            )
                .into_response()
        }
    }
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

async fn metrics(State(state): State<AppState>) -> Response {
    let progress: Vec<(&str, i64)> = state
        .services
        .projector
        .progress()
        .into_iter()
        .map(|(name, at)| (name, at.position))
        .collect();
    let journal = kabinet_domain::on_db!(&state.services.db, pool => {
        sqlx::query_scalar::<_, Option<i64>>("SELECT MAX(position) FROM events")
            .fetch_one(pool)
            .await
            .ok()
            .flatten()
    });
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(&progress, journal),
    )
        .into_response()
}
