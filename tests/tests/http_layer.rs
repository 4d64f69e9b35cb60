//! The HTTP layer every route shares: request ids in and out, gzip, panics
//! and timeouts answered as JSON errors, one error envelope for every route
//! other than GraphQL, and the status rule of unauthenticated GraphQL requests.
//! The storage backend plays no part, so SQLite only.

use std::io::Read as _;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use kabinet_domain::notify::{Message, Notifier, NotifyError};
use kabinet_domain::Role;
use kabinet_graphql::auth::TokenKeys;
use kabinet_graphql::startup::Overrides;
use kabinet_tests::server::{Server, SECRET};
use kabinet_tests::{TestBackend, TestDb};
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use uuid::Uuid;

async fn sqlite() -> TestDb {
    TestDb::fresh(TestBackend::Sqlite)
        .await
        .expect("SQLite is always there")
}

/// The request id the server answered with.
fn request_id(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("every answer carries x-request-id")
        .to_string()
}

/// Checks that `response` is the envelope with `status` and `code`, and that
/// its request id is the one in the header; returns the envelope's error.
async fn assert_envelope(response: reqwest::Response, status: u16, code: &str) -> Value {
    let path = response.url().path().to_string();
    assert_eq!(response.status().as_u16(), status, "{path}");
    let id = request_id(&response);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        content_type.starts_with("application/json"),
        "{path}: {content_type}"
    );
    let body: Value = response.json().await.expect("a JSON body");
    let error = &body["error"];
    assert_eq!(error["code"], code, "{path}: {body}");
    assert_eq!(error["requestId"], id.as_str(), "{path}: {body}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{path}: {body}"
    );
    error.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sane_request_id_is_echoed_and_others_are_replaced() {
    let test_db = sqlite().await;
    let server = Server::start(&test_db, |_| {}).await;
    let healthz = format!("{}/healthz", server.base);

    let given = server
        .http
        .get(&healthz)
        .header("x-request-id", "frontend-4f2a-0001")
        .send()
        .await
        .expect("get");
    assert_eq!(request_id(&given), "frontend-4f2a-0001");

    let first = request_id(&server.http.get(&healthz).send().await.expect("get"));
    let second = request_id(&server.http.get(&healthz).send().await.expect("get"));
    assert_ne!(first, second);
    for made in [&first, &second] {
        assert_eq!(made.len(), 32, "{made}");
        assert!(made.bytes().all(|b| b.is_ascii_hexdigit()), "{made}");
    }

    for insane in ["has spaces in it", &"x".repeat(65), "semi;colon"] {
        let answer = server
            .http
            .get(&healthz)
            .header("x-request-id", insane)
            .send()
            .await
            .expect("get");
        let made = request_id(&answer);
        assert_ne!(made, insane);
        assert_eq!(made.len(), 32, "{made}");
    }

    // A GraphQL error names the same id as the header.
    let refused = server
        .http
        .post(format!("{}/graphql", server.base))
        .header("x-request-id", "frontend-4f2a-0002")
        .bearer_auth("not-a-token")
        .json(&json!({ "query": "{ me { role } }" }))
        .send()
        .await
        .expect("post");
    assert_eq!(request_id(&refused), "frontend-4f2a-0002");
    let body: Value = refused.json().await.expect("json");
    assert_eq!(
        body["errors"][0]["extensions"]["requestId"],
        "frontend-4f2a-0002"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_answers_are_gzipped_for_clients_that_accept_it() {
    let test_db = sqlite().await;
    let server = Server::start(&test_db, |_| {}).await;
    let query = json!({ "query": "{ __schema { types { name description } } }" });
    let post = |gzip: bool| {
        let mut request = server
            .http
            .post(format!("{}/graphql", server.base))
            .json(&query);
        if gzip {
            request = request.header("accept-encoding", "gzip");
        }
        request.send()
    };
    let plain = post(false).await.expect("post");
    assert!(plain.headers().get("content-encoding").is_none());
    let plain: Value = plain.json().await.expect("json");
    assert!(plain["data"]["__schema"]["types"].is_array(), "{plain}");

    let zipped = post(true).await.expect("post");
    assert_eq!(
        zipped
            .headers()
            .get("content-encoding")
            .and_then(|v| v.to_str().ok()),
        Some("gzip")
    );
    let bytes = zipped.bytes().await.expect("body");
    let mut text = String::new();
    flate2::read::GzDecoder::new(&bytes[..])
        .read_to_string(&mut text)
        .expect("a gzip stream");
    assert!(bytes.len() < text.len());
    let unzipped: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(unzipped, plain);

    // Small answers are not worth it.
    let small = server
        .http
        .get(format!("{}/healthz", server.base))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("get");
    assert!(small.headers().get("content-encoding").is_none());
    server.stop().await;
}

async fn panics() -> &'static str {
    panic!("a handler fault planted by the test")
}

async fn sleeps() -> &'static str {
    tokio::time::sleep(Duration::from_secs(600)).await;
    "too late"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_is_answered_500_with_the_request_id_and_the_server_goes_on() {
    let test_db = sqlite().await;
    let overrides = Overrides {
        routes: Some(axum::Router::new().route("/test/panic", get(panics))),
        ..Overrides::default()
    };
    let server = Server::start_with(&test_db, overrides, |_| {}).await;
    let answer = server
        .http
        .get(format!("{}/test/panic", server.base))
        .header("x-request-id", "panic-probe-1")
        .send()
        .await
        .expect("an answer, not a dropped connection");
    let error = assert_envelope(answer, 500, "INTERNAL").await;
    assert_eq!(
        error["message"],
        "internal error (request id panic-probe-1)"
    );
    let health = server
        .http
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .expect("get");
    assert_eq!(health.status().as_u16(), 200);
    server.stop().await;
}

/// A channel that holds every message until the test lets it go.
struct StalledChannel(Arc<Semaphore>);

#[async_trait::async_trait]
impl Notifier for StalledChannel {
    async fn send(&self, _: &Message) -> Result<(), NotifyError> {
        let _ = self.0.acquire().await;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_the_timeout_is_answered_with_a_json_error() {
    let test_db = sqlite().await;
    let release = Arc::new(Semaphore::new(0));
    let overrides = Overrides {
        notifier: Some(Arc::new(StalledChannel(release.clone()))),
        routes: Some(axum::Router::new().route("/test/slow", get(sleeps))),
        ..Overrides::default()
    };
    let server = Server::start_with(&test_db, overrides, |c| {
        c.transport.request_timeout_ms = 300;
    })
    .await;
    // startRegistration sends its code before it answers: with the SMS
    // channel stalled, the request runs past the timeout.
    let answer = tokio::time::timeout(
        Duration::from_secs(20),
        server
            .http
            .post(format!("{}/graphql", server.base))
            .json(&json!({
                "query": "mutation($input: StartRegistrationInput!) { startRegistration(input: $input) { userErrors { code } } }",
                "variables": { "input": { "contact": "+79123456700" } },
            }))
            .send(),
    )
    .await
    .expect("answered, not hung")
    .expect("post");
    assert_eq!(answer.status().as_u16(), 503);
    assert!(answer.headers().get("retry-after").is_some());
    let id = request_id(&answer);
    let body: Value = answer.json().await.expect("json");
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "REQUEST_TIMEOUT",
        "{body}"
    );
    assert_eq!(body["errors"][0]["extensions"]["requestId"], id.as_str());

    // Other routes answer the envelope.
    let slow = tokio::time::timeout(
        Duration::from_secs(20),
        server.http.get(format!("{}/test/slow", server.base)).send(),
    )
    .await
    .expect("answered, not hung")
    .expect("get");
    assert_envelope(slow, 503, "REQUEST_TIMEOUT").await;

    release.add_permits(1000);
    let health = server
        .http
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .expect("get");
    assert_eq!(health.status().as_u16(), 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_but_graphql_answers_errors_in_the_envelope() {
    let test_db = sqlite().await;
    let server = Server::start(&test_db, |c| {
        c.metrics_token = Some("metrics-token-of-the-envelope-test".to_string().into());
    })
    .await;
    let base = &server.base;
    let http = &server.http;
    let patient = server.token(Role::Patient, None);
    let doctor = server.token(Role::Doctor, Some(Uuid::now_v7()));
    let file = "0".repeat(64);

    let get = |path: String, token: Option<&str>| {
        let mut request = http.get(format!("{base}{path}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let sent = |r: Result<reqwest::Response, reqwest::Error>| r.expect("request");

    assert_envelope(
        sent(get("/no/such/route".into(), None).await),
        404,
        "NOT_FOUND",
    )
    .await;
    let wrong_method = sent(http.delete(format!("{base}/healthz")).send().await);
    assert_envelope(wrong_method, 405, "METHOD_NOT_ALLOWED").await;

    let link = format!("/files/{file}?exp=4102444800&sig=00");
    let anonymous = sent(get(link.clone(), None).await);
    assert_eq!(
        anonymous
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
    assert_envelope(anonymous, 401, "UNAUTHENTICATED").await;
    assert_envelope(
        sent(get(link.clone(), Some("garbage")).await),
        401,
        "UNAUTHENTICATED",
    )
    .await;
    assert_envelope(sent(get(link, Some(&patient)).await), 403, "INVALID_LINK").await;
    assert_envelope(
        sent(get("/files/not-a-hash?exp=1&sig=00".into(), Some(&patient)).await),
        404,
        "NOT_FOUND",
    )
    .await;

    let upload = |token: Option<String>| {
        let mut request = http
            .post(format!("{base}/identity/passport-scan"))
            .header("content-type", "application/pdf")
            .body(b"%PDF-1.4".to_vec());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    assert_envelope(sent(upload(None).await), 401, "UNAUTHENTICATED").await;
    assert_envelope(sent(upload(Some(doctor.clone())).await), 403, "FORBIDDEN").await;
    assert_envelope(
        sent(get(format!("/identity/passport-scans/x/{file}"), Some(&patient)).await),
        403,
        "FORBIDDEN",
    )
    .await;

    assert_envelope(
        sent(get("/metrics".into(), None).await),
        401,
        "UNAUTHENTICATED",
    )
    .await;
    assert_envelope(
        sent(get("/metrics".into(), Some(&patient)).await),
        401,
        "UNAUTHENTICATED",
    )
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphql_without_a_token_is_anonymous_and_a_bad_token_is_401() {
    let test_db = sqlite().await;
    let server = Server::start(&test_db, |_| {}).await;
    let query = json!({ "query": "{ myAppointments(first: 1) { edges { cursor } } }" });
    let post = |token: Option<String>| {
        let mut request = server
            .http
            .post(format!("{}/graphql", server.base))
            .json(&query);
        if let Some(token) = token {
            request = request.header("authorization", token);
        }
        request.send()
    };

    // No token: an anonymous request, answered 200; fields that need a caller say so.
    let anonymous = post(None).await.expect("post");
    assert_eq!(anonymous.status().as_u16(), 200);
    assert!(anonymous.headers().get("www-authenticate").is_none());
    let body: Value = anonymous.json().await.expect("json");
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{body}"
    );

    // A token that is not accepted: 401 at the HTTP level, in the GraphQL shape.
    let keys = TokenKeys::new(SECRET.as_bytes());
    let patient = kabinet_domain::Actor {
        account_id: Uuid::now_v7(),
        role: Role::Patient,
        organisation_id: None,
    };
    let expired = keys
        .mint(&patient, chrono::Duration::minutes(-10))
        .expect("token");
    let foreign = TokenKeys::new(b"another-secret-another-secret-0123456789")
        .mint(&patient, chrono::Duration::minutes(5))
        .expect("token");
    let revoked_session = keys.mint_session(&patient, Uuid::now_v7()).expect("token");
    for header in [
        format!("Bearer {expired}"),
        format!("Bearer {foreign}"),
        format!("Bearer {revoked_session}"),
        "Bearer not-a-jwt".to_string(),
        "Basic dXNlcjpwYXNz".to_string(),
    ] {
        let refused = post(Some(header.clone())).await.expect("post");
        assert_eq!(refused.status().as_u16(), 401, "{header}");
        assert_eq!(
            refused
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok()),
            Some("Bearer"),
            "{header}"
        );
        let id = request_id(&refused);
        let body: Value = refused.json().await.expect("json");
        assert_eq!(body["data"], Value::Null, "{body}");
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
            "{body}"
        );
        assert_eq!(body["errors"][0]["extensions"]["requestId"], id.as_str());
    }

    // A good token is served.
    let good = keys
        .mint(&patient, chrono::Duration::minutes(5))
        .expect("token");
    let served = post(Some(format!("Bearer {good}"))).await.expect("post");
    assert_eq!(served.status().as_u16(), 200);
    let body: Value = served.json().await.expect("json");
    assert!(body["errors"].is_null(), "{body}");
    server.stop().await;
}
