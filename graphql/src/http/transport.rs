//! Serving HTTP within bounds: a cap on open connections, a deadline for a
//! request's headers (which also ends idle keep-alive connections) and one
//! for its body, and a cap on requests handled at once.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use axum::response::Response;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;
use tower_service::Service as _;

use super::error::{ApiError, Shape};
use super::ratelimit::RateLimits;
use super::request_id::RequestId;
use super::ws::{WsConnections, WsSettings};
use crate::config::TransportLimits;

/// Edge state shared by the handlers: rate limits and WebSocket bounds.
#[derive(Debug)]
pub struct Transport {
    pub rates: RateLimits,
    pub ws: WsSettings,
    pub ws_connections: Arc<WsConnections>,
    /// Cancelled when the server stops: WebSocket connections close.
    pub stopping: CancellationToken,
}

impl Transport {
    /// The edge state of `config`; `stopping` ends open WebSocket connections.
    pub fn new(config: &TransportLimits, stopping: CancellationToken) -> Self {
        Transport {
            stopping,
            rates: RateLimits::new(config),
            ws: WsSettings::new(config),
            ws_connections: Arc::new(WsConnections::new(
                config.ws_max_connections_per_address,
                config.ws_max_connections,
            )),
        }
    }
}

/// What a refused connection is told before it is closed.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
retry-after: 1\r\nconnection: close\r\ncontent-length: 107\r\n\r\n\
{\"errors\":[{\"message\":\"too many open connections: retry later\",\"extensions\":{\"code\":\"SERVER_BUSY\"}}]}";

/// Largest connection or request cap taken (beyond any real machine).
const MAX_CAP: usize = 1 << 30;

/// Bounds of [`serve`].
#[derive(Debug, Clone)]
pub struct ServeBounds {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub max_connections: usize,
    pub max_requests: usize,
    pub queue_timeout: Duration,
}

impl ServeBounds {
    /// The bounds of `config`.
    pub fn new(config: &TransportLimits) -> Self {
        ServeBounds {
            header_timeout: Duration::from_millis(config.http_header_timeout_ms),
            body_timeout: Duration::from_millis(config.http_body_timeout_ms),
            max_connections: config.http_max_connections.clamp(1, MAX_CAP),
            max_requests: config.http_max_concurrent_requests.clamp(1, MAX_CAP),
            queue_timeout: Duration::from_millis(config.http_queue_timeout_ms),
        }
    }
}

/// Serves `router` on `listener` until `stop` is cancelled, then lets open
/// requests finish (for at most `drain`).
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    bounds: ServeBounds,
    stop: CancellationToken,
    drain: Duration,
) {
    let connections = Arc::new(Semaphore::new(bounds.max_connections));
    let requests = Arc::new(Semaphore::new(bounds.max_requests));
    let bounds = Arc::new(bounds);
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            refuse(stream);
            continue;
        };
        let router = router.clone();
        let requests = requests.clone();
        let bounds = bounds.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            serve_connection(stream, peer, router, requests, bounds, stop).await;
            drop(permit);
        });
    }
    // Every connection holds a permit: when all are back, all have ended.
    let all = u32::try_from(bounds.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(drain, connections.acquire_many(all)).await;
}

/// Tells a connection over the cap that the server is busy, without waiting for it.
fn refuse(stream: TcpStream) {
    tracing::debug!("connection refused: too many open connections");
    let _ = stream.try_write(BUSY);
    drop(stream);
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: axum::Router,
    requests: Arc<Semaphore>,
    bounds: Arc<ServeBounds>,
    stop: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let body_timeout = bounds.body_timeout;
    let queue_timeout = bounds.queue_timeout;
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let mut router = router.clone();
        let requests = requests.clone();
        async move {
            let mut request = request.map(|body| Body::new(DeadlineBody::new(body, body_timeout)));
            request.extensions_mut().insert(ConnectInfo(peer));
            let permit = match tokio::time::timeout(queue_timeout, requests.acquire_owned()).await {
                Ok(Ok(permit)) => permit,
                _ => return Ok::<_, Infallible>(busy(&request)),
            };
            let response = router.call(request).await;
            drop(permit);
            response
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(bounds.header_timeout)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        _ = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// The answer when no request slot frees up in time. The router's layers
/// are not reached, so the error is written here in the route's shape.
fn busy<B>(request: &Request<B>) -> Response {
    let request_id = RequestId::of(request.headers()).unwrap_or_else(RequestId::fresh);
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "SERVER_BUSY",
        "the server is busy: retry in 1 s",
    )
    .retry_after(1)
    .render(
        Shape::of_path(request.uri().path()),
        Some(request_id.as_str()),
    )
}

/// A request body that fails once its deadline passes: a client that sends
/// its body slowly cannot hold a handler (and its buffer) for long.
struct DeadlineBody<B> {
    inner: B,
    deadline: Pin<Box<Sleep>>,
    timeout: Duration,
}

impl<B> DeadlineBody<B> {
    fn new(inner: B, timeout: Duration) -> Self {
        DeadlineBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            timeout,
        }
    }
}

/// The body was not received in time.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimeout(Duration);

impl<B> HttpBody for DeadlineBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyTimeout(this.timeout)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
