//! Limits on GraphQL requests and on production settings, tried the way an
//! attacker tries them: a fragment bomb, hundreds of aliases, lists that
//! escape the complexity limit, responses too large to send, weak secrets,
//! schema suggestions and open metrics.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use kabinet_domain::Role;
use kabinet_graphql::config::ServeConfig;
use kabinet_graphql::schema::ids;
use kabinet_graphql::Application;
use kabinet_tests::conformance;
use kabinet_tests::server::code_of;
use kabinet_tests::server::{production_config, Server, METRICS_TOKEN};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

/// Longest any single request here may take: the refusals must come before
/// the expensive work, which took tens of seconds.
const PATIENCE: Duration = Duration::from_secs(20);

fn message_of(response: &Value) -> &str {
    response["errors"][0]["message"].as_str().unwrap_or("")
}

/// Fragments F0 … F{levels} on `root`, each spreading the one below twice:
/// under a kilobyte of text that expands to 2^levels fields.
fn doubling_fragments(root: &str, levels: usize) -> String {
    let mut fragments = format!("fragment F0 on {root} {{ __typename }}");
    for level in 1..=levels {
        let below = level - 1;
        fragments.push_str(&format!(
            " fragment F{level} on {root} {{ ...F{below} ...F{below} }}"
        ));
    }
    fragments
}

/// `{operation} { ...F{levels} }` with its doubling fragments.
fn fragment_bomb(operation: &str, root: &str, levels: usize) -> String {
    format!(
        "{operation} {{ ...F{levels} }} {}",
        doubling_fragments(root, levels)
    )
}

async fn within_patience<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {PATIENCE:?}"))
}

conformance!(
    a_fragment_bomb_is_refused_before_validation,
    |test_db| async move {
        let server = Server::start(&test_db, |_| {}).await;
        let bomb = fragment_bomb("query", "Query", 24);
        assert!(bomb.len() < 1024, "the bomb is {} bytes", bomb.len());

        // Four at once, anonymously, while a normal query is served.
        let attacks = (0..4).map(|_| server.graphql(None, &bomb, json!({})));
        let (answers, normal) = within_patience("the bomb", async {
            tokio::join!(
                futures::future::join_all(attacks),
                server.graphql(
                    None,
                    "{ organisations(first: 5) { edges { cursor } } }",
                    json!({})
                )
            )
        })
        .await;
        for answer in answers {
            assert_eq!(code_of(&answer), Some("QUERY_TOO_LARGE"), "{answer}");
            assert!(answer["data"].is_null(), "{answer}");
            assert!(message_of(&answer).contains("fragments"), "{answer}");
        }
        assert!(normal.get("errors").is_none(), "{normal}");
        assert_eq!(normal["data"]["organisations"]["edges"], json!([]));

        // A fragment that spreads itself is refused by name.
        let cycle = server
            .graphql(
                None,
                "{ ...A } fragment A on Query { __typename ...B } fragment B on Query { ...A }",
                json!({}),
            )
            .await;
        assert_eq!(code_of(&cycle), Some("FRAGMENT_CYCLE"), "{cycle}");

        // Fragments defined but not spread are measured too.
        let unused = server
            .graphql(
                None,
                &format!("{{ __typename }} {}", doubling_fragments("Query", 24)),
                json!({}),
            )
            .await;
        assert_eq!(code_of(&unused), Some("QUERY_TOO_LARGE"), "{unused}");
        server.stop().await;
    }
);

conformance!(
    a_fragment_bomb_is_refused_over_websocket_too,
    |test_db| async move {
        let server = Server::start(&test_db, |_| {}).await;
        let admin = server.token(Role::Admin, None);
        let mut ws = kabinet_tests::ws::connect(&server).await;
        let init = json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {admin}") } });
        ws.send(Message::Text(init.to_string()))
            .await
            .expect("send");
        let subscribe = json!({ "id": "1", "type": "subscribe",
            "payload": { "query": fragment_bomb("subscription", "Subscription", 24) } });
        ws.send(Message::Text(subscribe.to_string()))
            .await
            .expect("send");
        let refusal = within_patience("the bomb over WebSocket", async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Text(text))) => {
                        let message: Value = serde_json::from_str(&text).expect("json");
                        if message["type"] != "connection_ack" {
                            return message;
                        }
                    }
                    Some(Ok(_)) => continue,
                    other => panic!("the socket ended: {other:?}"),
                }
            }
        })
        .await;
        assert_eq!(refusal["id"], "1", "{refusal}");
        let errors = if refusal["payload"].is_array() {
            refusal["payload"].clone()
        } else {
            refusal["payload"]["errors"].clone()
        };
        assert_eq!(
            errors[0]["extensions"]["code"], "QUERY_TOO_LARGE",
            "{refusal}"
        );
        server.stop().await;
    }
);

conformance!(aliases_are_limited_per_request, |test_db| async move {
    let server = Server::start(&test_db, |_| {}).await;
    let aliases = |n: usize| -> String { (0..n).map(|i| format!("a{i}: __typename ")).collect() };
    let at_limit = server
        .graphql(None, &format!("{{ {} }}", aliases(64)), json!({}))
        .await;
    assert!(at_limit.get("errors").is_none(), "{at_limit}");
    let over = server
        .graphql(None, &format!("{{ {} }}", aliases(65)), json!({}))
        .await;
    assert_eq!(code_of(&over), Some("TOO_MANY_ALIASES"), "{over}");
    // Aliases inside a fragment count each time it is spread.
    let spread = server
        .graphql(
            None,
            &format!(
                "{{ ...A x: __typename ... on Query {{ ...A }} }} fragment A on Query {{ {} }}",
                aliases(32)
            ),
            json!({}),
        )
        .await;
    assert_eq!(code_of(&spread), Some("TOO_MANY_ALIASES"), "{spread}");
    // `__typename` counts like any field.
    let typenames: String = "__typename ".repeat(2001);
    let many = server
        .graphql(None, &format!("{{ {typenames} }}"), json!({}))
        .await;
    assert_eq!(code_of(&many), Some("QUERY_TOO_LARGE"), "{many}");
    server.stop().await;
});

conformance!(
    the_schema_is_described_once_per_request,
    |test_db| async move {
        let server = Server::start(&test_db, |_| {}).await;
        let described = "{ types { name description fields { name description args { name type { name kind ofType { name kind } } } type { name kind ofType { name kind } } } } }";
        let once = server
            .graphql(None, &format!("{{ __schema {described} }}"), json!({}))
            .await;
        assert!(once.get("errors").is_none(), "one description is answered");
        assert!(once["data"]["__schema"]["types"].is_array());
        // Sixty aliased copies would cost seconds of work before the response
        // cap ends them: refused before any runs.
        let copies: String = (0..60)
            .map(|i| format!("s{i}: __schema {described} "))
            .collect();
        let flood = within_patience(
            "an introspection flood",
            server.graphql(None, &format!("{{ {copies} }}"), json!({})),
        )
        .await;
        assert_eq!(code_of(&flood), Some("TOO_MANY_INTROSPECTIONS"), "{flood}");
        server.stop().await;
    }
);

conformance!(every_refusal_carries_a_code, |test_db| async move {
    let server = Server::start(&test_db, |_| {}).await;
    let admin = server.token(Role::Admin, None);
    let skips = "@skip(if: false) ".repeat(9);
    let pages: String = (0..30)
        .map(|i| {
            format!(
                "a{i}: organisations(first: 100) {{ edges {{ node {{ name region address }} }} }} "
            )
        })
        .collect();
    for (query, code) in [
        ("{ doctors(first: ".to_string(), "GRAPHQL_PARSE_FAILED"),
        ("{ doctrs { id } }".to_string(), "GRAPHQL_VALIDATION_FAILED"),
        (
            "query($n: Int!) { __typename }".to_string(),
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (format!("{{ __typename {skips} }}"), "TOO_MANY_DIRECTIVES"),
        (
            format!("{{ {}__typename{} }}", "me { ".repeat(20), " }".repeat(20)),
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (format!("{{ {pages} }}"), "QUERY_TOO_COMPLEX"),
        (
            "subscription { activityFeed { action } }".to_string(),
            "SUBSCRIPTION_NEEDS_WEBSOCKET",
        ),
    ] {
        let answer = server.graphql(Some(&admin), &query, json!({})).await;
        let errors = answer["errors"].as_array().expect("errors");
        assert!(!errors.is_empty(), "{query}: {answer}");
        for error in errors {
            assert_eq!(error["extensions"]["code"], code, "{query}: {answer}");
        }
    }
    // A body over the limit gets the JSON envelope, not a line of text.
    let huge = serde_json::to_vec(
        &json!({ "query": format!("{{ __typename }} #{}", "x".repeat(70_000)) }),
    )
    .expect("json");
    let (status, body) = server.client.post_raw(None, huge).await;
    assert_eq!(status, 413);
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "PAYLOAD_TOO_LARGE",
        "{body}"
    );
    server.stop().await;
});

conformance!(
    lists_are_costed_by_what_they_can_return,
    |test_db| async move {
        // Aliases allowed generously, to see the complexity limit itself.
        let server = Server::start(&test_db, |c| c.max_aliases = 1000).await;
        let doctor = ids::encode("Doctor", Uuid::now_v7()).to_string();
        let free_slots = |n: usize| -> String {
            let fields: String = (0..n)
                .map(|i| format!("s{i}:freeSlots(doctorId:$d,from:$f,to:$t){{id}} "))
                .collect();
            format!("query($d:ID!,$f:String!,$t:String!){{ {fields}}}")
        };
        let month = json!({ "d": doctor, "f": "2027-03-01", "t": "2027-03-31" });
        // 490 month-long ranges in one anonymous request of about 24 KiB.
        let flood = free_slots(490);
        assert!(flood.len() < 32 * 1024, "{} bytes", flood.len());
        let flood =
            within_patience("490 freeSlots", server.graphql(None, &flood, month.clone())).await;
        assert!(message_of(&flood).contains("complex"), "{flood}");
        assert!(flood["data"].is_null(), "{flood}");
        // Ten are too many as well: each month can hold 2,000 slots. (Before
        // lists were costed, all 490 were answered: 18.7 MiB.)
        let ten = server.graphql(None, &free_slots(10), month.clone()).await;
        assert!(message_of(&ten).contains("complex"), "{ten}");
        // One month passes the limits (and is answered by the resolver).
        let one = server.graphql(None, &free_slots(1), month.clone()).await;
        assert!(!message_of(&one).contains("complex"), "{one}");
        assert_eq!(code_of(&one), Some("BAD_USER_INPUT"), "{one}");
        assert!(message_of(&one).contains("no such doctor"), "{one}");

        // Checking a signature and reading the database costs more than a field.
        let verifications: String = (0..300)
            .map(|i| format!("v{i}: verifyPrescription(token: \"t{i}\") {{ result }} "))
            .collect();
        let verify = server
            .graphql(None, &format!("{{ {verifications} }}"), json!({}))
            .await;
        assert!(message_of(&verify).contains("complex"), "{verify}");
        let single = server
            .graphql(
                None,
                "{ verifyPrescription(token: \"t\") { result } }",
                json!({}),
            )
            .await;
        assert_eq!(
            single["data"]["verifyPrescription"]["result"], "INVALID",
            "{single}"
        );
        server.stop().await;

        // With the default alias limit the flood is refused before costing.
        let server = Server::start(&test_db, |_| {}).await;
        let flood = server.graphql(None, &free_slots(490), month).await;
        assert_eq!(code_of(&flood), Some("TOO_MANY_ALIASES"), "{flood}");
        server.stop().await;
    }
);

conformance!(
    responses_over_the_size_cap_are_not_sent,
    |test_db| async move {
        let server = Server::start(&test_db, |c| c.max_response_bytes = 2048).await;
        let small = server
            .graphql(
                None,
                "{ organisations(first: 1) { edges { cursor } } }",
                json!({}),
            )
            .await;
        assert!(small.get("errors").is_none(), "{small}");
        let names: String = (0..60)
            .map(|i| format!("a_rather_long_alias_to_fill_the_answer_{i:03}: __typename "))
            .collect();
        let large = server
            .graphql(None, &format!("{{ {names} }}"), json!({}))
            .await;
        assert_eq!(code_of(&large), Some("RESPONSE_TOO_LARGE"), "{large}");
        assert!(message_of(&large).contains("2048 bytes"), "{large}");
        assert!(large["data"].is_null(), "{large}");
        server.stop().await;
    }
);

/// A production configuration on a fresh SQLite file.
fn production() -> (tempfile::TempDir, ServeConfig) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/k.db", dir.path().display());
    let config = production_config(&url);
    (dir, config)
}

async fn refusal(config: ServeConfig) -> String {
    match Application::build(config).await {
        Ok(_) => panic!("production started with a bad setting"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn production_refuses_weak_secrets_keys_plain_sms_and_the_demo() {
    let (_dir, good) = production();

    let mut weak = good.clone();
    weak.secret.jwt_secret = Some("a".repeat(40).into());
    let message = refusal(weak).await;
    assert!(
        message.contains("KABINET_JWT_SECRET") && message.contains("too weak"),
        "{message}"
    );
    let mut pattern = good.clone();
    pattern.secret.jwt_secret = Some("ab".repeat(24).into());
    let message = refusal(pattern).await;
    assert!(message.contains("KABINET_JWT_SECRET"), "{message}");

    let mut zero_data_key = good.clone();
    zero_data_key.set_data_key(&"0".repeat(64));
    let message = refusal(zero_data_key).await;
    assert!(
        message.contains("KABINET_DATA_KEY") && message.contains("all zeros"),
        "{message}"
    );
    let mut patterned_data_key = good.clone();
    patterned_data_key.set_data_key(&"0101010101020202".repeat(4));
    let message = refusal(patterned_data_key).await;
    assert!(message.contains("KABINET_DATA_KEY"), "{message}");

    let mut zero_seed = good.clone();
    zero_seed.prescription_key = kabinet_graphql::config::PrescriptionKeyArgs::with_seed(
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    );
    let message = refusal(zero_seed).await;
    assert!(
        message.contains("KABINET_PRESCRIPTION_SIGNING_KEY") && message.contains("all zeros"),
        "{message}"
    );

    let mut plain_sms = good.clone();
    plain_sms.delivery.sms_gateway_url = Some("http://sms.example.ru/send".into());
    let message = refusal(plain_sms).await;
    assert!(
        message.contains("KABINET_SMS_GATEWAY_URL") && message.contains("https://"),
        "{message}"
    );

    let mut demo = good.clone();
    demo.demo = true;
    let message = refusal(demo).await;
    assert!(message.contains("--demo"), "{message}");

    let mut weak_metrics = good.clone();
    weak_metrics.metrics_token = Some("metrics".to_string().into());
    let message = refusal(weak_metrics).await;
    assert!(message.contains("KABINET_METRICS_TOKEN"), "{message}");

    // The same settings start in development, and the good ones in production.
    let mut development = good.clone();
    development.mode = kabinet_graphql::config::Mode::Development;
    development.demo = true;
    development.secret.jwt_secret = Some("a".repeat(40).into());
    assert!(Application::build(development).await.is_ok());
    assert!(Application::build(good).await.is_ok());
}

conformance!(
    production_answers_no_suggestions_and_closes_metrics,
    |test_db| async move {
        let misspelt = "{ organisatons(first: 1) { edges { cursor } } }";
        let development = Server::start(&test_db, |_| {}).await;
        let hint = development.graphql(None, misspelt, json!({})).await;
        assert!(message_of(&hint).contains("Did you mean"), "{hint}");
        development.stop().await;

        let url = test_db.url.clone();
        let server = Server::start(&test_db, |c| {
            *c = production_config(&url);
            c.metrics_token = None;
        })
        .await;
        let answer = server.graphql(None, misspelt, json!({})).await;
        assert!(message_of(&answer).contains("organisatons"), "{answer}");
        assert!(!answer.to_string().contains("Did you mean"), "{answer}");
        assert!(
            !answer.to_string().contains("\"organisations\""),
            "{answer}"
        );
        // Without a metrics token production serves no metrics at all.
        let metrics = server
            .http
            .get(format!("{}/metrics", server.base))
            .send()
            .await
            .expect("get");
        assert_eq!(metrics.status().as_u16(), 403);
        server.stop().await;

        let server = Server::start(&test_db, |c| *c = production_config(&url)).await;
        let get = |token: Option<&'static str>| {
            let mut request = server.http.get(format!("{}/metrics", server.base));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            request.send()
        };
        assert_eq!(get(None).await.expect("get").status().as_u16(), 401);
        assert_eq!(
            get(Some("not-the-metrics-token-at-all-000000"))
                .await
                .expect("get")
                .status()
                .as_u16(),
            401
        );
        // A user's bearer token is not the metrics token either.
        let session = server.session_token_for(Uuid::now_v7(), Role::Admin, None);
        let as_user = server
            .http
            .get(format!("{}/metrics", server.base))
            .bearer_auth(&session)
            .send()
            .await
            .expect("get");
        assert_eq!(as_user.status().as_u16(), 401);
        let allowed = get(Some(METRICS_TOKEN)).await.expect("get");
        assert_eq!(allowed.status().as_u16(), 200);
        let text = allowed.text().await.expect("text");
        assert!(text.contains("kabinet_http_requests_total"), "{text}");
        server.stop().await;
    }
);
