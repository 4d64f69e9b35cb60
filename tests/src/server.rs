//! The real server for end-to-end tests: in-process on port 0, or as a separate
//! process; and a GraphQL client that speaks to it the way a frontend does.

use std::process::Stdio;
use std::time::Duration;

use kabinet_domain::Role;
use kabinet_graphql::config::ServeConfig;
use kabinet_graphql::startup::Overrides;
use kabinet_graphql::Application;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::TestDb;

/// The signing secret of test servers.
pub const SECRET: &str = "e2e-38KqILXXMdp8sYRqRVGtH4idJ0PbeKZGZMHV";

/// The metrics token of [`production_config`].
pub const METRICS_TOKEN: &str = "metrics-token-for-tests-5b1e0c9d7a3f";

/// Settings of a production-mode server with every secret production needs
/// (delivery, data key, prescription signing key); tests take one away to see
/// it refused.
pub fn production_config(database_url: &str) -> ServeConfig {
    let mut c = ServeConfig::for_tests(database_url, SECRET);
    c.mode = kabinet_graphql::config::Mode::Production;
    c.delivery.smtp_url = Some("smtp://127.0.0.1:25".to_string().into());
    c.delivery.mail_from = Some("no-reply@kabinet.test".into());
    c.delivery.sms_gateway_url = Some("https://127.0.0.1:9/sms".into());
    c.metrics_token = Some(METRICS_TOKEN.to_string().into());
    c.set_data_key("e5e1f2557c227f82631631cb4261812258d4fc91f250e9474a118697b504f17a");
    c.prescription_key = kabinet_graphql::config::PrescriptionKeyArgs::with_seed(
        "DYgu4X8B+Mvyb/GSYB5/o45QATtYkhaWHzYUGEvwIgg=",
    );
    c
}

/// A GraphQL client of one server.
#[derive(Clone)]
pub struct Client {
    pub base: String,
    pub http: reqwest::Client,
}

impl Client {
    /// A client of the server at `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: String) -> Client {
        Client {
            base,
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()
                .expect("http client"),
        }
    }

    /// A token for a fresh account of `role` (see [`crate::tokens`]).
    pub fn token(&self, role: Role, organisation_id: Option<Uuid>) -> String {
        crate::tokens::token(role, organisation_id)
    }

    /// A token for account `account_id`.
    pub fn token_for(&self, account_id: Uuid, role: Role, organisation_id: Option<Uuid>) -> String {
        crate::tokens::token_for(account_id, role, organisation_id)
    }

    /// A token for account `account_id` as a sign-in issues it: not a development
    /// token, so it meets the identity-verification gate.
    pub fn session_token_for(
        &self,
        account_id: Uuid,
        role: Role,
        organisation_id: Option<Uuid>,
    ) -> String {
        crate::tokens::session_token_for(account_id, role, organisation_id)
    }

    /// Posts `body` to `path` with a content type; returns the status and the body.
    pub async fn post_bytes(
        &self,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: Vec<u8>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", content_type)
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Posts raw bytes; returns the status and the body (JSON when it parses).
    pub async fn post_raw(&self, token: Option<&str>, body: Vec<u8>) -> (u16, Value) {
        let mut request = self
            .http
            .post(format!("{}/graphql", self.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Runs a GraphQL operation, expecting HTTP 200.
    pub async fn graphql(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let body = json!({ "query": query, "variables": variables });
        let (status, value) = self
            .post_raw(token, serde_json::to_vec(&body).expect("json"))
            .await;
        assert_eq!(status, 200, "unexpected status, body: {value}");
        value
    }

    /// Like [`Client::graphql`], failing the test on top-level errors, returning `data`.
    pub async fn data(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let response = self.graphql(token, query, variables).await;
        assert!(
            response.get("errors").is_none(),
            "GraphQL errors: {response}"
        );
        response["data"].clone()
    }
}

/// The code of the first top-level error of a GraphQL response (`extensions.code`).
pub fn code_of(response: &Value) -> Option<&str> {
    response["errors"][0]["extensions"]["code"].as_str()
}

/// Gets `path` from the server of `client`, with a bearer token when given;
/// returns the status and the body.
pub async fn get(client: &Client, path: &str, token: Option<&str>) -> (u16, Vec<u8>) {
    let mut request = client.http.get(format!("{}{path}", client.base));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.bytes().await.expect("body").to_vec())
}

/// A server running inside the test process.
pub struct Server {
    pub client: Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Server {
    /// Starts a server on `test_db` with test settings changed by `adjust`.
    pub async fn start(test_db: &TestDb, adjust: impl FnOnce(&mut ServeConfig)) -> Server {
        Server::start_with(test_db, Overrides::default(), adjust).await
    }

    /// [`Server::start`] with the server reading time from `clock`.
    pub async fn start_with_clock(
        test_db: &TestDb,
        clock: std::sync::Arc<dyn kabinet_domain::clock::Clock>,
        adjust: impl FnOnce(&mut ServeConfig),
    ) -> Server {
        let overrides = Overrides {
            clock: Some(clock),
            ..Overrides::default()
        };
        Server::start_with(test_db, overrides, adjust).await
    }

    /// [`Server::start`] delivering messages through `notifier`.
    pub async fn start_with_notifier(
        test_db: &TestDb,
        notifier: Option<std::sync::Arc<dyn kabinet_domain::notify::Notifier>>,
        adjust: impl FnOnce(&mut ServeConfig),
    ) -> Server {
        let overrides = Overrides {
            notifier,
            ..Overrides::default()
        };
        Server::start_with(test_db, overrides, adjust).await
    }

    /// [`Server::start`] with parts of the application replaced.
    pub async fn start_with(
        test_db: &TestDb,
        overrides: Overrides,
        adjust: impl FnOnce(&mut ServeConfig),
    ) -> Server {
        let mut config = ServeConfig::for_tests(&test_db.url, SECRET);
        adjust(&mut config);
        let app = Application::build_with(config, overrides)
            .await
            .expect("server builds");
        let base = format!("http://127.0.0.1:{}", app.port());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        Server {
            client: Client::new(base),
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the server gracefully.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("join").expect("server stopped cleanly");
        }
    }
}

impl std::ops::Deref for Server {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

/// A server running as a separate OS process.
pub struct ServerProcess {
    pub client: Client,
    child: tokio::process::Child,
}

impl ServerProcess {
    /// Starts `binary serve` (the `kabinet-server` binary, whose path integration
    /// tests know as `env!("CARGO_BIN_EXE_kabinet-server")`) on a free port against
    /// `database_url` and waits until it is ready.
    pub async fn start(binary: &str, database_url: &str) -> ServerProcess {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            listener.local_addr().expect("addr").port()
        };
        let child = tokio::process::Command::new(binary)
            .arg("serve")
            .env("DATABASE_URL", database_url)
            .env("KABINET_JWT_SECRET", SECRET)
            .env("KABINET_LISTEN", format!("127.0.0.1:{port}"))
            .env("KABINET_POLL_INTERVAL_MS", "200")
            .env("KABINET_SEAL_INTERVAL_MS", "200")
            .env("KABINET_LOG", "warn")
            .env("KABINET_DB_MAX_CONNECTIONS", "12")
            // Tests and benchmarks send many requests from 127.0.0.1.
            .env("KABINET_RATE_PER_ADDRESS", "0")
            .env("KABINET_RATE_PER_ACCOUNT", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start kabinet-server");
        let client = Client::new(format!("http://127.0.0.1:{port}"));
        for _ in 0..300 {
            let ready = client
                .http
                .get(format!("{}/readyz", client.base))
                .send()
                .await
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            if ready {
                return ServerProcess { client, child };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("kabinet-server did not become ready on port {port}");
    }

    /// The server's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
        let _ = self.child.wait().await;
    }
}

impl std::ops::Deref for ServerProcess {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}
