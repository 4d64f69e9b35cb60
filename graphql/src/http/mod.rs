//! The HTTP edge: routes, the layers every request passes, the caller and
//! error types they share, and the connection handling underneath.
//!
//! A request passes, from the outside in: CORS, the protective headers, the
//! request id (taken if sane, else made, and returned), gzip compression, the
//! request's trace span (request id, method, matched route), the error
//! [`error::shape`], the request timeout, panic catching, the rate limits
//! (client routes only), and then its handler. Handlers learn who calls
//! through the [`caller::Caller`] and [`caller::SignedIn`] extractors and
//! answer refusals as [`error::ApiError`].

pub mod browser;
pub mod caller;
pub mod error;
pub mod files;
pub mod graphql;
pub mod identity;
pub mod ratelimit;
pub mod request_id;
pub mod routes;
pub mod transport;
pub mod ws;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use sha2::{Digest, Sha256};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
use tower_http::compression::CompressionLayer;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::auth::TokenKeys;
use crate::schema::context::Services;
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
    pub transport: Arc<transport::Transport>,
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

/// Settings of the router's layers.
#[derive(Debug, Clone)]
pub struct EdgeSettings {
    /// Largest request body in bytes (the passport scan route has its own).
    pub max_body_bytes: usize,
    /// Longest a request may take before it is answered `REQUEST_TIMEOUT`.
    pub request_timeout: Duration,
    /// Web origins whose pages may call the API.
    pub origins: browser::BrowserOrigins,
}

/// The router of the server.
pub fn router(state: AppState, edge: EdgeSettings) -> Router {
    router_with(state, edge, Router::new())
}

/// [`router`] with `extra` routes that pass every layer, as tests use to
/// exercise the layers with handlers of their own; the server itself adds none.
pub fn router_with(state: AppState, edge: EdgeSettings, extra: Router) -> Router {
    // Everything a client can call is rate-limited; probes and metrics are not.
    let limited = Router::new()
        .route("/", get(routes::console))
        .route("/graphql", get(graphql::get).post(graphql::post))
        .route("/graphql/ws", get(graphql::upgrade))
        .route(
            "/identity/passport-scan",
            post(identity::upload_passport_scan)
                // The handler reads the body under its own limit.
                .layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/identity/passport-scans/{patient}/{sha256}",
            get(identity::download_passport_scan),
        )
        .route(
            "/verify/prescription/{token}",
            get(routes::verify_prescription),
        )
        .route("/files/{sha256}", get(files::download))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            ratelimit::limit,
        ));
    // Large answers are worth compressing; PDFs and scans already are.
    let compress = SizeAbove::new(1024)
        .and(NotForContentType::const_new("application/pdf"))
        .and(NotForContentType::IMAGES);
    let router = Router::new()
        .merge(limited)
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route("/metrics", get(routes::metrics))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .with_state(state)
        .merge(extra)
        .layer(DefaultBodyLimit::max(edge.max_body_bytes))
        .layer(axum::middleware::from_fn(error::mark_answered))
        .layer(CatchPanicLayer::custom(error::panicked))
        // The empty answer of this layer becomes REQUEST_TIMEOUT in `shape`.
        // A WebSocket is past it once upgraded, and downloads are answered
        // from memory, so only the work before the answer is bounded.
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            edge.request_timeout,
        ))
        .layer(axum::middleware::from_fn(error::shape))
        .layer(axum::middleware::from_fn(crate::metrics::track_requests))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(CompressionLayer::new().gzip(true).compress_when(compress))
        .layer(PropagateRequestIdLayer::new(request_id::REQUEST_ID))
        .layer(SetRequestIdLayer::new(
            request_id::REQUEST_ID,
            request_id::NewRequestId,
        ))
        .layer(axum::middleware::map_request(request_id::drop_insane));
    // CORS outermost, so that refusals (429, 503) reach the page readable too.
    browser::with_protective_headers(router).layer(browser::cors(edge.origins))
}

/// The span of one request: every log line of the request carries its id
/// and route.
fn request_span(request: &Request) -> tracing::Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    let id = request
        .headers()
        .get(&request_id::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        route = %route,
    )
}
