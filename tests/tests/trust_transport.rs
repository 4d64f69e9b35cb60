//! The HTTP and WebSocket edge within bounds, tried the way an attacker would:
//! slow headers and bodies, too many connections, request floods on public
//! endpoints, oversized, anonymous, silent and greedy WebSocket clients; and
//! sessions: a token speaks with its session's role, and a subscription ends
//! when its session does.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use kabinet_domain::Role;
use kabinet_graphql::auth::TokenKeys;
use kabinet_graphql::config::ServeConfig;
use kabinet_tests::accounts::{register, unique_phone, use_sms_gateway};
use kabinet_tests::delivery::SmsReceiver;
use kabinet_tests::server::{Client, Server, SECRET};
use kabinet_tests::ws::try_connect as ws_connect;
use kabinet_tests::ws::Socket as Ws;
use kabinet_tests::{conformance, run_conformance, TestBackend, TestDb};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// A test of the edge alone: the storage backend plays no part, so SQLite only.
macro_rules! edge {
    ($name:ident, $body:expr) => {
        #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $name() {
            run_conformance(TestBackend::Sqlite, $body).await
        }
    };
}

fn host(server: &Server) -> String {
    server.base.trim_start_matches("http://").to_string()
}

/// Whether the server closed `stream` (EOF or reset) within `within`,
/// reading and discarding whatever it sent before.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buffer = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// What the server sent next: a JSON message, or how it closed.
#[derive(Debug)]
enum Heard {
    Json(Value),
    Closed(Option<u16>),
}

async fn next_heard(ws: &mut Ws, within: Duration) -> Heard {
    loop {
        let message = tokio::time::timeout(within, ws.next())
            .await
            .expect("the server answers in time");
        match message {
            Some(Ok(Message::Text(text))) => {
                return Heard::Json(serde_json::from_str(&text).expect("json"))
            }
            Some(Ok(Message::Close(frame))) => {
                return Heard::Closed(frame.map(|f| u16::from(f.code)))
            }
            None | Some(Err(_)) => return Heard::Closed(None),
            Some(Ok(_)) => continue,
        }
    }
}

async fn send(ws: &mut Ws, value: Value) {
    ws.send(Message::Text(value.to_string()))
        .await
        .expect("send");
}

/// Connects and completes `connection_init` with `token`.
async fn ws_signed_in(server: &Server, token: &str) -> Ws {
    let mut ws = ws_connect(server).await.expect("connect");
    send(
        &mut ws,
        json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } }),
    )
    .await;
    match next_heard(&mut ws, Duration::from_secs(10)).await {
        Heard::Json(m) if m["type"] == "connection_ack" => ws,
        other => panic!("expected connection_ack, got {other:?}"),
    }
}

fn subscribe(id: &str) -> Value {
    json!({ "id": id, "type": "subscribe",
        "payload": { "query": "subscription { activityFeed { action } }" } })
}

const REGISTER_ORG: &str = "mutation($input: RegisterOrganisationInput!) { registerOrganisation(input: $input) { organisation { id } } }";

fn org_input(name: &str) -> Value {
    json!({ "input": { "details": { "name": name, "region": "Москва", "address": "ул. Ленина, 1",
        "timeZone": "Europe/Moscow", "workingHours": "8-20", "departments": [], "specialisations": [] } } })
}

// --- HTTP ---------------------------------------------------------------------------------

edge!(
    a_client_sending_headers_slowly_is_cut_off,
    |test_db: TestDb| async move {
        let server = Server::start(&test_db, |c| c.transport.http_header_timeout_ms = 500).await;
        let mut stream = TcpStream::connect(host(&server)).await.expect("connect");
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("write");
        // One header byte every 100 ms, never finishing the headers.
        let mut cut = false;
        for _ in 0..40 {
            if stream.write_all(b"X").await.is_err() {
                cut = true;
                break;
            }
            if closed_within(&mut stream, Duration::from_millis(100)).await {
                cut = true;
                break;
            }
        }
        assert!(cut, "the server still waits for headers after 4 s");
        server.stop().await;
    }
);

edge!(
    an_idle_keep_alive_connection_is_closed,
    |test_db: TestDb| async move {
        let server = Server::start(&test_db, |c| c.transport.http_header_timeout_ms = 500).await;
        let mut stream = TcpStream::connect(host(&server)).await.expect("connect");
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut buffer = [0u8; 1024];
        let n = stream.read(&mut buffer).await.expect("read");
        assert!(buffer[..n].starts_with(b"HTTP/1.1 200"));
        assert!(
            closed_within(&mut stream, Duration::from_secs(3)).await,
            "an idle connection is kept open"
        );
        server.stop().await;
    }
);

edge!(
    a_client_sending_its_body_slowly_is_cut_off,
    |test_db: TestDb| async move {
        let server = Server::start(&test_db, |c| c.transport.http_body_timeout_ms = 500).await;
        let mut stream = TcpStream::connect(host(&server)).await.expect("connect");
        stream
        .write_all(b"POST /graphql HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"query\":")
        .await
        .expect("write");
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), async {
            let mut buffer = [0u8; 4096];
            loop {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => answer.extend_from_slice(&buffer[..n]),
                }
            }
        })
        .await;
        assert!(
            read.is_ok(),
            "the server still waits for the body after 5 s"
        );
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
            "{answer}"
        );
        server.stop().await;
    }
);

edge!(
    connections_beyond_the_cap_are_refused,
    |test_db: TestDb| async move {
        let server = Server::start(&test_db, |c| c.transport.http_max_connections = 3).await;
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(TcpStream::connect(host(&server)).await.expect("connect"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut extra = TcpStream::connect(host(&server)).await.expect("connect");
        let _ = extra
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), extra.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains("SERVER_BUSY"), "{answer}");
        // A place frees up when a connection closes.
        drop(held.pop());
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut next = TcpStream::connect(host(&server)).await.expect("connect");
        next.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nconnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), next.read_to_end(&mut answer)).await;
        assert!(answer.starts_with(b"HTTP/1.1 200"));
        drop(held);
        server.stop().await;
    }
);

// --- rate limits --------------------------------------------------------------------------

fn tight_rates(c: &mut ServeConfig) {
    c.transport.rate_per_address = 1;
    c.transport.rate_burst_per_address = 3;
}

async fn get(client: &Client, path: &str) -> reqwest::Response {
    client
        .http
        .get(format!("{}{path}", client.base))
        .send()
        .await
        .expect("request")
}

/// The fields of an error answer and its message: the GraphQL shape on
/// `/graphql`, the envelope `{"error": {...}}` on every other route.
fn error_of(body: &Value, graphql: bool) -> (&Value, &Value) {
    if graphql {
        (
            &body["errors"][0]["extensions"],
            &body["errors"][0]["message"],
        )
    } else {
        (&body["error"], &body["error"]["message"])
    }
}

async fn assert_rate_limited(response: reqwest::Response, who: &str) {
    assert_eq!(response.status().as_u16(), 429);
    let retry: u64 = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After header in seconds");
    assert!((1..=2).contains(&retry), "retry after {retry}");
    let graphql = response.url().path() == "/graphql";
    let body: Value = response.json().await.expect("json");
    let (error, message) = error_of(&body, graphql);
    assert_eq!(error["code"], "RATE_LIMITED", "{body}");
    assert_eq!(error["retryAfterSeconds"], retry);
    let message = message.as_str().expect("message");
    assert!(
        message.contains(who) && message.contains("retry in"),
        "{message}"
    );
}

edge!(
    public_endpoints_answer_429_past_the_address_rate,
    |test_db: TestDb| async move {
        let server = Server::start(&test_db, tight_rates).await;
        let doctors = json!({ "query": "{ doctors(first: 1) { edges { node { id } } } }" });
        for _ in 0..3 {
            let response = server
                .http
                .post(format!("{}/graphql", server.base))
                .json(&doctors)
                .send()
                .await
                .expect("request");
            assert_eq!(response.status().as_u16(), 200);
        }
        let response = server
            .http
            .post(format!("{}/graphql", server.base))
            .json(&doctors)
            .send()
            .await
            .expect("request");
        assert_rate_limited(response, "address").await;
        // The other public endpoints share the address's budget.
        assert_rate_limited(get(&server, "/verify/prescription/abc").await, "address").await;
        assert_rate_limited(
            get(&server, &format!("/files/{}", "0".repeat(64))).await,
            "address",
        )
        .await;
        // Probes are not limited.
        assert_eq!(get(&server, "/healthz").await.status().as_u16(), 200);
        // The budget refills at the configured rate.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(
            get(&server, "/verify/prescription/abc")
                .await
                .status()
                .as_u16(),
            200
        );
        server.stop().await;
    }
);

edge!(
    websocket_upgrades_count_against_the_address_rate,
    |test_db: TestDb| async move {
        let server = Server::start(&test_db, tight_rates).await;
        for _ in 0..3 {
            let _ = get(&server, "/verify/prescription/abc").await;
        }
        match ws_connect(&server).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), 429)
            }
            other => panic!("expected a 429, got {:?}", other.map(|_| "a connection")),
        }
        server.stop().await;
    }
);

edge!(
    a_signed_in_account_is_limited_from_any_address,
    |test_db: TestDb| async move {
        let server = Server::start(&test_db, |c| {
            c.trusted_proxy = true;
            c.transport.rate_per_account = 1;
            c.transport.rate_burst_per_account = 2;
        })
        .await;
        let token = server.token(Role::Admin, None);
        let mut statuses = Vec::new();
        for i in 0..3 {
            let response = server
                .http
                .post(format!("{}/graphql", server.base))
                .bearer_auth(&token)
                .header("x-forwarded-for", format!("10.0.0.{}", i + 1))
                .json(&json!({ "query": "{ me { role } }" }))
                .send()
                .await
                .expect("request");
            statuses.push(response.status().as_u16());
            if i == 2 {
                assert_rate_limited(response, "account").await;
            }
        }
        assert_eq!(statuses, vec![200, 200, 429]);
        // Another account is not affected.
        let other = server.token(Role::Admin, None);
        let data = server
            .data(Some(&other), "{ me { role } }", json!({}))
            .await;
        assert_eq!(data["me"]["role"], "ADMIN");
        server.stop().await;
    }
);

// --- WebSocket ----------------------------------------------------------------------------

edge!(
    anonymous_connection_init_is_refused_with_4403,
    |test_db: TestDb| async move {
        let server = Server::start(&test_db, |_| {}).await;
        let mut ws = ws_connect(&server).await.expect("connect");
        send(&mut ws, json!({ "type": "connection_init" })).await;
        match next_heard(&mut ws, Duration::from_secs(10)).await {
            Heard::Closed(Some(4403)) => {}
            other => panic!("expected a close with 4403, got {other:?}"),
        }
        server.stop().await;
    }
);

edge!(a_bad_token_closes_with_4403, |test_db: TestDb| async move {
    let server = Server::start(&test_db, |_| {}).await;
    let mut ws = ws_connect(&server).await.expect("connect");
    send(
        &mut ws,
        json!({ "type": "connection_init", "payload": { "authorization": "Bearer not-a-token" } }),
    )
    .await;
    match next_heard(&mut ws, Duration::from_secs(10)).await {
        Heard::Closed(Some(4403)) => {}
        other => panic!("expected a close with 4403, got {other:?}"),
    }
    server.stop().await;
});

edge!(
    connection_init_must_come_in_time,
    |test_db: TestDb| async move {
        let server = Server::start(&test_db, |c| c.transport.ws_init_timeout_ms = 300).await;
        let mut ws = ws_connect(&server).await.expect("connect");
        match next_heard(&mut ws, Duration::from_secs(5)).await {
            Heard::Closed(Some(4408)) => {}
            other => panic!("expected a close with 4408, got {other:?}"),
        }
        server.stop().await;
    }
);

edge!(
    an_oversized_message_closes_the_connection,
    |test_db: TestDb| async move {
        let server =
            Server::start(&test_db, |c| c.transport.ws_max_message_bytes = 64 * 1024).await;
        let admin = server.token(Role::Admin, None);
        let mut ws = ws_signed_in(&server, &admin).await;
        let padding = " ".repeat(1024 * 1024);
        let query = format!("subscription {{ activityFeed {{ action }} }}{padding}");
        let _ = ws
            .send(Message::Text(
                json!({ "id": "1", "type": "subscribe", "payload": { "query": query } })
                    .to_string(),
            ))
            .await;
        match next_heard(&mut ws, Duration::from_secs(10)).await {
            Heard::Closed(code) => assert!(matches!(code, Some(1009) | None), "{code:?}"),
            other => panic!("expected the connection closed, got {other:?}"),
        }
        // A message under the limit is still served on a new connection.
        let mut ws = ws_signed_in(&server, &admin).await;
        send(&mut ws, subscribe("1")).await;
        server.stop().await;
    }
);

edge!(
    a_silent_client_is_disconnected,
    |test_db: TestDb| async move {
        let server = Server::start(&test_db, |c| c.transport.ws_keepalive_ms = 200).await;
        let admin = server.token(Role::Admin, None);
        let mut ws = ws_signed_in(&server, &admin).await;
        // Neither reading (so no pong) nor writing for a while.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        match next_heard(&mut ws, Duration::from_secs(5)).await {
            Heard::Closed(Some(3008)) => {}
            other => panic!("expected a close with 3008, got {other:?}"),
        }
        server.stop().await;
    }
);

edge!(
    a_client_answering_pings_stays_connected,
    |test_db: TestDb| async move {
        let server = Server::start(&test_db, |c| c.transport.ws_keepalive_ms = 200).await;
        let admin = server.token(Role::Admin, None);
        let mut ws = ws_signed_in(&server, &admin).await;
        send(&mut ws, subscribe("1")).await;
        // Reading answers the server's pings; nothing else arrives meanwhile.
        let quiet = tokio::time::timeout(Duration::from_millis(1500), async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Ping(_))) => continue,
                    other => return other,
                }
            }
        })
        .await;
        assert!(quiet.is_err(), "unexpected: {quiet:?}");
        server
            .data(Some(&admin), REGISTER_ORG, org_input("Поликлиника пинг"))
            .await;
        match next_heard(&mut ws, Duration::from_secs(10)).await {
            Heard::Json(m) => assert_eq!(m["type"], "next", "{m}"),
            other => panic!("expected the subscription's next entry, got {other:?}"),
        }
        server.stop().await;
    }
);

edge!(
    subscriptions_per_connection_are_capped,
    |test_db: TestDb| async move {
        let server = Server::start(&test_db, |c| c.transport.ws_max_subscriptions = 3).await;
        let admin = server.token(Role::Admin, None);
        let mut ws = ws_signed_in(&server, &admin).await;
        for id in ["1", "2", "3", "4"] {
            send(&mut ws, subscribe(id)).await;
        }
        match next_heard(&mut ws, Duration::from_secs(10)).await {
            Heard::Json(m) => {
                assert_eq!(m["type"], "error", "{m}");
                assert_eq!(m["id"], "4");
                assert_eq!(
                    m["payload"][0]["extensions"]["code"],
                    "TOO_MANY_SUBSCRIPTIONS"
                );
                assert!(m["payload"][0]["message"]
                    .as_str()
                    .expect("message")
                    .contains("at most 3"));
            }
            other => panic!("expected an error for the fourth subscription, got {other:?}"),
        }
        // Completing one makes room for another.
        send(&mut ws, json!({ "id": "1", "type": "complete" })).await;
        send(&mut ws, subscribe("5")).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        server
            .data(Some(&admin), REGISTER_ORG, org_input("Поликлиника лимит"))
            .await;
        let mut ids = Vec::new();
        for _ in 0..3 {
            match next_heard(&mut ws, Duration::from_secs(10)).await {
                Heard::Json(m) => {
                    assert_eq!(m["type"], "next", "{m}");
                    ids.push(m["id"].as_str().expect("id").to_string());
                }
                other => panic!("expected next, got {other:?}"),
            }
        }
        ids.sort();
        assert_eq!(ids, vec!["2", "3", "5"]);
        server.stop().await;
    }
);

edge!(
    websocket_connections_per_address_are_capped,
    |test_db: TestDb| async move {
        let server =
            Server::start(&test_db, |c| c.transport.ws_max_connections_per_address = 2).await;
        let admin = server.token(Role::Admin, None);
        let first = ws_signed_in(&server, &admin).await;
        let _second = ws_signed_in(&server, &admin).await;
        match ws_connect(&server).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), 429);
                let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                    .to_string();
                assert!(body.contains("TOO_MANY_CONNECTIONS"), "{body}");
            }
            other => panic!("expected a 429, got {:?}", other.map(|_| "a connection")),
        }
        // Closing one frees its place.
        drop(first);
        let mut admitted = false;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if ws_connect(&server).await.is_ok() {
                admitted = true;
                break;
            }
        }
        assert!(admitted, "the place of a closed connection is not freed");
        server.stop().await;
    }
);

// --- sessions -----------------------------------------------------------------------------

/// Registers a patient by SMS; returns the access token of the new session.
async fn register_patient(server: &Server, sms: &SmsReceiver) -> String {
    let confirmed = register(&server.client, sms, &unique_phone()).await;
    confirmed["tokens"]["accessToken"]
        .as_str()
        .expect("access token")
        .to_string()
}

conformance!(
    a_session_token_speaks_with_its_sessions_role,
    |test_db: TestDb| async move {
        let sms = SmsReceiver::start().await;
        let server = Server::start(&test_db, |c| use_sms_gateway(&sms, c)).await;
        let token = register_patient(&server, &sms).await;
        // A token of the same session whose claims say administrator (as a
        // leaked signing key, or a bug minting tokens, would produce).
        let keys = TokenKeys::new(SECRET.as_bytes());
        let verified = keys.verify_token(&token).expect("token");
        let session = verified.session_id.expect("a session token");
        let mut claimed = verified.actor.clone();
        claimed.role = Role::Admin;
        let forged = keys.mint_session(&claimed, session).expect("mint");
        let me = server
            .data(Some(&forged), "{ me { role } }", json!({}))
            .await;
        assert_eq!(me["me"]["role"], "PATIENT");
        let admin_only = server
            .graphql(Some(&forged), REGISTER_ORG, org_input("Поликлиника подлог"))
            .await;
        assert!(admin_only["errors"].is_array(), "{admin_only}");
        assert!(
            admin_only["data"]["registerOrganisation"].is_null(),
            "{admin_only}"
        );
        server.stop().await;
    }
);

conformance!(
    a_subscription_ends_when_its_session_ends,
    |test_db: TestDb| async move {
        let sms = SmsReceiver::start().await;
        let server = Server::start(&test_db, |c| {
            use_sms_gateway(&sms, c);
            c.transport.ws_session_check_ms = 200;
        })
        .await;
        let token = register_patient(&server, &sms).await;
        let mut ws = ws_signed_in(&server, &token).await;
        send(&mut ws, subscribe("1")).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let out = server
            .data(
                Some(&token),
                "mutation { signOut { signedOut } }",
                json!({}),
            )
            .await;
        assert_eq!(out["signOut"]["signedOut"], true);
        loop {
            match next_heard(&mut ws, Duration::from_secs(5)).await {
                // The sign-out itself may show in the feed before the close.
                Heard::Json(m) if m["type"] == "next" => continue,
                Heard::Closed(Some(4403)) => break,
                other => panic!("expected a close with 4403, got {other:?}"),
            }
        }
        server.stop().await;
    }
);

edge!(
    requests_beyond_the_concurrency_cap_wait_then_get_503,
    |test_db: TestDb| async move {
        let server = Server::start(&test_db, |c| {
            c.transport.http_max_concurrent_requests = 1;
            c.transport.http_queue_timeout_ms = 300;
        })
        .await;
        // A request whose body trickles in holds the only place.
        let mut slow = TcpStream::connect(host(&server)).await.expect("connect");
        slow.write_all(b"POST /graphql HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{")
        .await
        .expect("write");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let response = get(&server, "/healthz").await;
        assert_eq!(response.status().as_u16(), 503);
        assert_eq!(
            response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
            Some("1")
        );
        let body: Value = response.json().await.expect("json");
        assert_eq!(error_of(&body, false).0["code"], "SERVER_BUSY", "{body}");
        // Once it is gone, requests are served again.
        drop(slow);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(get(&server, "/healthz").await.status().as_u16(), 200);
        server.stop().await;
    }
);
