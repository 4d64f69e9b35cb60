//! GraphQL over WebSocket (`graphql-transport-ws`) within bounds: a message
//! size cap, a deadline for `connection_init`, which must carry a live
//! sign-in, keep-alive pings, a cap on subscriptions per connection and on
//! connections per client address and in total, and a periodic check that
//! the session is still live: a signed-out connection is closed with 4403.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_graphql::{Request, Response};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::stream::{AbortHandle, Abortable, BoxStream, SelectAll};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use uuid::Uuid;

use super::caller::{standing, Refusal, SignedIn, INVALID_TOKEN};
use super::AppState;
use crate::auth::VerifiedToken;
use crate::schema::context::{CallerSession, ClientAddress, RequestContext, VerifiedOnce};

/// The only subprotocol served.
pub const PROTOCOL: &str = "graphql-transport-ws";

/// Close codes of `graphql-transport-ws` and RFC 6455 used here.
mod close {
    pub const GOING_AWAY: u16 = 1001;
    pub const INTERNAL: u16 = 1011;
    pub const TOO_BIG: u16 = 1009;
    pub const TIMEOUT: u16 = 3008;
    pub const BAD_REQUEST: u16 = 4400;
    pub const UNAUTHORIZED: u16 = 4401;
    pub const FORBIDDEN: u16 = 4403;
    pub const INIT_TIMEOUT: u16 = 4408;
    pub const DUPLICATE_ID: u16 = 4409;
    pub const TOO_MANY_INITS: u16 = 4429;
}

/// Bounds of one WebSocket connection.
#[derive(Debug, Clone)]
pub struct WsSettings {
    pub max_message_bytes: usize,
    pub init_timeout: Duration,
    pub keepalive: Duration,
    pub session_check: Duration,
    pub max_subscriptions: usize,
}

impl WsSettings {
    /// The bounds of `config`.
    pub fn new(config: &crate::config::TransportLimits) -> Self {
        let ms = |v: u64| Duration::from_millis(v.max(1));
        WsSettings {
            max_message_bytes: config.ws_max_message_bytes.max(1024),
            init_timeout: ms(config.ws_init_timeout_ms),
            keepalive: ms(config.ws_keepalive_ms),
            session_check: ms(config.ws_session_check_ms),
            max_subscriptions: config.ws_max_subscriptions,
        }
    }
}

/// Open WebSocket connections per client address and in total.
#[derive(Debug)]
pub struct WsConnections {
    per_address: usize,
    total: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// Why a WebSocket connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crowded {
    /// This address has `per_address` connections open.
    Address(usize),
    /// The server has `total` connections open.
    Server(usize),
}

/// An admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct WsSlot {
    registry: Arc<WsConnections>,
    address: IpAddr,
}

impl WsConnections {
    /// At most `per_address` connections from one address and `total` in all.
    pub fn new(per_address: usize, total: usize) -> Self {
        WsConnections {
            per_address,
            total,
            open: Mutex::new((0, HashMap::new())),
        }
    }

    /// Admits one more connection from `address`, or says which cap is reached.
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Result<WsSlot, Crowded> {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if open.0 >= self.total {
            return Err(Crowded::Server(self.total));
        }
        let mine = open.1.entry(address).or_insert(0);
        if *mine >= self.per_address {
            return Err(Crowded::Address(self.per_address));
        }
        *mine += 1;
        open.0 += 1;
        Ok(WsSlot {
            registry: self.clone(),
            address,
        })
    }
}

impl Drop for WsSlot {
    fn drop(&mut self) {
        let mut open = self
            .registry
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        open.0 = open.0.saturating_sub(1);
        if let Some(mine) = open.1.get_mut(&self.address) {
            *mine -= 1;
            if *mine == 0 {
                open.1.remove(&self.address);
            }
        }
    }
}

/// How a connection ends.
struct Closing(u16, String);

impl Closing {
    fn new(code: u16, reason: impl Into<String>) -> Self {
        // A close reason may hold at most 123 bytes.
        let mut reason: String = reason.into();
        while reason.len() > 123 {
            reason.pop();
        }
        Closing(code, reason)
    }
}

/// A client's message, decoded.
enum ClientMessage {
    Init(Value),
    Subscribe { id: String, payload: Value },
    Complete { id: String },
    Ping,
    Pong,
}

fn decode(text: &str) -> Result<ClientMessage, Closing> {
    let invalid = |why: &str| Closing::new(close::BAD_REQUEST, format!("invalid message: {why}"));
    let value: Value = serde_json::from_str(text).map_err(|_| invalid("not JSON"))?;
    let id = || {
        value
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty() && id.len() <= 128)
            .map(str::to_string)
            .ok_or_else(|| invalid("'id' must be a string of 1 to 128 characters"))
    };
    match value.get("type").and_then(Value::as_str) {
        Some("connection_init") => Ok(ClientMessage::Init(
            value.get("payload").cloned().unwrap_or(Value::Null),
        )),
        Some("subscribe") => Ok(ClientMessage::Subscribe {
            id: id()?,
            payload: value.get("payload").cloned().unwrap_or(Value::Null),
        }),
        Some("complete") => Ok(ClientMessage::Complete { id: id()? }),
        Some("ping") => Ok(ClientMessage::Ping),
        Some("pong") => Ok(ClientMessage::Pong),
        Some(other) => Err(invalid(&format!("unknown type '{other}'"))),
        None => Err(invalid("no 'type'")),
    }
}

type Socket = WebSocket;

async fn send_json(socket: &mut Socket, value: &Value) -> bool {
    socket
        .send(Message::Text(value.to_string().into()))
        .await
        .is_ok()
}

async fn close_with(socket: &mut Socket, closing: Closing) {
    tracing::debug!(code = closing.0, reason = %closing.1, "closing a WebSocket");
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: closing.0,
            reason: closing.1.into(),
        })))
        .await;
    let _ = socket.close().await;
}

/// The text of a client's data message, or how the connection must end.
/// `Ok(None)`: a control frame or a pong, nothing to act on.
fn text_of(
    message: Option<Result<Message, axum::Error>>,
    max_bytes: usize,
) -> Result<Option<String>, Option<Closing>> {
    match message {
        None | Some(Ok(Message::Close(_))) => Err(None),
        Some(Err(e)) => {
            // A message over the cap, a protocol violation or a reset: the
            // first is the one a client can be told about.
            tracing::debug!(error = %e, "WebSocket read failed");
            Err(Some(Closing::new(
                close::TOO_BIG,
                format!("message too big or malformed: at most {max_bytes} bytes"),
            )))
        }
        Some(Ok(Message::Text(text))) => Ok(Some(text.as_str().to_string())),
        Some(Ok(Message::Binary(bytes))) => match String::from_utf8(bytes.to_vec()) {
            Ok(text) => Ok(Some(text)),
            Err(_) => Err(Some(Closing::new(
                close::BAD_REQUEST,
                "invalid message: not UTF-8",
            ))),
        },
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(None),
    }
}

/// The token of a `connection_init` payload: `{"authorization": "Bearer <token>"}`.
fn token_of(payload: &Value) -> Option<&str> {
    payload
        .get("authorization")
        .or_else(|| payload.get("Authorization"))
        .and_then(Value::as_str)
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// Runs the protocol on an upgraded connection.
pub async fn serve(mut socket: Socket, state: AppState, client: IpAddr, slot: WsSlot) {
    let settings = state.transport.ws.clone();
    let ended = match run(&mut socket, &state, &settings, client).await {
        Ok(()) => None,
        Err(closing) => closing,
    };
    if let Some(closing) = ended {
        close_with(&mut socket, closing).await;
    }
    drop(slot);
}

/// Waits for `connection_init` and checks its sign-in.
async fn handshake(
    socket: &mut Socket,
    state: &AppState,
    settings: &WsSettings,
) -> Result<(VerifiedToken, SignedIn), Option<Closing>> {
    let deadline = tokio::time::Instant::now() + settings.init_timeout;
    loop {
        let message = tokio::time::timeout_at(deadline, socket.recv())
            .await
            .map_err(|_| {
                Some(Closing::new(
                    close::INIT_TIMEOUT,
                    "Connection initialisation timeout",
                ))
            })?;
        let Some(text) = text_of(message, settings.max_message_bytes)? else {
            continue;
        };
        match decode(&text)? {
            ClientMessage::Init(payload) => {
                let Some(token) = token_of(&payload) else {
                    return Err(Some(Closing::new(
                        close::FORBIDDEN,
                        "Forbidden: sign in; connection_init needs {\"authorization\": \"Bearer <token>\"}",
                    )));
                };
                let verified = state.keys.verify_token(token).map_err(|_| {
                    Some(Closing::new(
                        close::FORBIDDEN,
                        format!("Forbidden: {}", INVALID_TOKEN),
                    ))
                })?;
                let caller = standing(state, verified.clone())
                    .await
                    .map_err(|e| Some(refusal(e)))?;
                return Ok((verified, caller));
            }
            ClientMessage::Ping => {
                if !send_json(socket, &json!({ "type": "pong" })).await {
                    return Err(None);
                }
            }
            ClientMessage::Pong => {}
            ClientMessage::Subscribe { .. } | ClientMessage::Complete { .. } => {
                return Err(Some(Closing::new(close::UNAUTHORIZED, "Unauthorized")));
            }
        }
    }
}

fn refusal(e: Refusal) -> Closing {
    match e {
        Refusal::Unauthenticated(message) => {
            Closing::new(close::FORBIDDEN, format!("Forbidden: {message}"))
        }
        Refusal::Internal => Closing::new(close::INTERNAL, "internal error"),
    }
}

type Responses = BoxStream<'static, (String, Option<Response>)>;

/// A running operation of a connection.
///
/// It is counted in the metrics once, at its first answer (with that answer's
/// error codes, so a refused subscription counts as failed), or when it ends
/// unanswered: a live subscription may wait long for its first event.
struct Started {
    abort: AbortHandle,
    /// Operation name and start time, until the operation is counted.
    uncounted: Option<(Option<String>, Instant)>,
}

impl Started {
    fn count(&mut self, response: Option<&Response>) {
        if let Some((operation, at)) = self.uncounted.take() {
            let codes = response
                .map(crate::metrics::error_codes)
                .unwrap_or_default();
            crate::metrics::observe_graphql(operation.as_deref(), at.elapsed(), &codes);
        }
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        self.count(None);
    }
}

async fn run(
    socket: &mut Socket,
    state: &AppState,
    settings: &WsSettings,
    client: IpAddr,
) -> Result<(), Option<Closing>> {
    let (verified, caller) = handshake(socket, state, settings).await?;
    if !send_json(socket, &json!({ "type": "connection_ack" })).await {
        return Err(None);
    }
    let account = caller.actor.account_id;
    let mut running: HashMap<String, Started> = HashMap::new();
    let mut streams: SelectAll<Responses> = SelectAll::new();
    let mut heard = Instant::now();
    let mut pings = tokio::time::interval(settings.keepalive);
    pings.tick().await;
    let mut checks = tokio::time::interval(settings.session_check);
    checks.tick().await;
    loop {
        tokio::select! {
            message = socket.recv() => {
                heard = Instant::now();
                let Some(text) = text_of(message, settings.max_message_bytes)? else {
                    continue;
                };
                match decode(&text)? {
                    ClientMessage::Init(_) => {
                        return Err(Some(Closing::new(
                            close::TOO_MANY_INITS,
                            "Too many initialisation requests",
                        )));
                    }
                    ClientMessage::Ping => {
                        if !send_json(socket, &json!({ "type": "pong" })).await {
                            return Err(None);
                        }
                    }
                    ClientMessage::Pong => {}
                    ClientMessage::Complete { id } => {
                        if let Some(started) = running.remove(&id) {
                            started.abort.abort();
                        }
                    }
                    ClientMessage::Subscribe { id, payload } => {
                        if running.contains_key(&id) {
                            return Err(Some(Closing::new(
                                close::DUPLICATE_ID,
                                format!("Subscriber for {id} already exists"),
                            )));
                        }
                        if let Some(refused) = refuse_subscription(state, settings, running.len(), account) {
                            let message = json!({ "id": id, "type": "error", "payload": [refused] });
                            if !send_json(socket, &message).await {
                                return Err(None);
                            }
                            continue;
                        }
                        let request: Request = serde_json::from_value(payload).map_err(|e| {
                            Some(Closing::new(close::BAD_REQUEST, format!("invalid subscribe payload: {e}")))
                        })?;
                        let operation = crate::metrics::operation_of(&request);
                        let request = request
                            .data(RequestContext {
                                dev_token: caller.dev,
                                actor: Some(caller.actor.clone()),
                                request_id: Uuid::now_v7().simple().to_string(),
                            })
                            .data(ClientAddress(Some(client)))
                            .data(CallerSession(caller.session_id))
                            .data(VerifiedOnce::default());
                        let (handle, registration) = AbortHandle::new_pair();
                        let tag = id.clone();
                        let responses = state
                            .schema
                            .execute_stream(request)
                            .map(Some)
                            .chain(futures::stream::once(async { None }));
                        streams.push(
                            Abortable::new(responses, registration)
                                .map(move |r| (tag.clone(), r))
                                .boxed(),
                        );
                        running.insert(id, Started {
                            abort: handle,
                            uncounted: Some((operation, Instant::now())),
                        });
                    }
                }
            }
            Some((id, response)) = streams.next(), if !streams.is_empty() => {
                let Some(started) = running.get_mut(&id) else {
                    continue;
                };
                started.count(response.as_ref());
                let message = match response {
                    Some(response) => json!({ "id": id, "type": "next", "payload": response }),
                    None => {
                        running.remove(&id);
                        json!({ "id": id, "type": "complete" })
                    }
                };
                if !send_json(socket, &message).await {
                    return Err(None);
                }
            }
            _ = pings.tick() => {
                if heard.elapsed() > settings.keepalive * 2 {
                    return Err(Some(Closing::new(
                        close::TIMEOUT,
                        "keep-alive timeout: the client answered no ping",
                    )));
                }
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    return Err(None);
                }
            }
            _ = state.transport.stopping.cancelled() => {
                return Err(Some(Closing::new(close::GOING_AWAY, "the server is shutting down")));
            }
            _ = checks.tick() => {
                // The session may have ended (signed out, revoked, account closed).
                standing(state, verified.clone())
                    .await
                    .map_err(|e| Some(refusal(e)))?;
            }
        }
    }
}

/// Why a new subscription is refused: too many on this connection, or the
/// account's rate is spent. `None` lets it start.
fn refuse_subscription(
    state: &AppState,
    settings: &WsSettings,
    running: usize,
    account: Uuid,
) -> Option<Value> {
    if running >= settings.max_subscriptions {
        let max = settings.max_subscriptions;
        return Some(json!({
            "message": format!("too many subscriptions on this connection: at most {max} at once; complete one first"),
            "extensions": { "code": "TOO_MANY_SUBSCRIPTIONS", "max": max },
        }));
    }
    if let Err(wait) = state
        .transport
        .rates
        .accounts
        .check(account, Instant::now())
    {
        let seconds = super::ratelimit::retry_seconds(wait).max(1);
        return Some(json!({
            "message": format!("too many requests from this account: retry in {seconds} s"),
            "extensions": { "code": "RATE_LIMITED", "retryAfterSeconds": seconds },
        }));
    }
    None
}
