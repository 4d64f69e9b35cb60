//! `/metrics`: latency histograms per route and per GraphQL operation, errors
//! by code, and projection lag counted in journal order, on both backends.

use futures::SinkExt;
use kabinet_domain::command::{CommandRunner, Retry};
use kabinet_domain::Role;
use kabinet_projections::{all_projections, events_behind, Projector, ProjectorConfig};
use kabinet_tests::conformance;
use kabinet_tests::server::{Server, METRICS_TOKEN};
use kabinet_tests::ws::{connect, next_json};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

const REGISTER: &str = "mutation RegisterClinic($input: RegisterOrganisationInput!) {
  registerOrganisation(input: $input) { organisation { id } userErrors { code } }
}";

/// The value of the sample `series` (name with labels) in a scrape.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

conformance!(
    a_scrape_shows_latency_histograms_errors_and_projection_lag,
    |test_db| async move {
        let server = Server::start(&test_db, |_| {}).await;
        let admin = server.token(Role::Admin, None);
        let registered = server
            .graphql(
                Some(&admin),
                REGISTER,
                json!({ "input": { "details": {
                    "name": "Поликлиника №9", "region": "Москва", "address": "ул. Ленина, 9",
                    "timeZone": "Europe/Moscow", "workingHours": "Пн–Пт 08:00–20:00",
                    "departments": ["Терапия"], "specialisations": ["therapist"] } } }),
            )
            .await;
        assert_eq!(
            registered["data"]["registerOrganisation"]["userErrors"],
            json!([]),
            "{registered}"
        );
        let invalid = server.graphql(None, "{ noSuchField }", json!({})).await;
        let code = invalid["errors"][0]["extensions"]["code"]
            .as_str()
            .expect("a coded error")
            .to_string();

        let text = server
            .http
            .get(format!("{}/metrics", server.base))
            .bearer_auth(METRICS_TOKEN)
            .send()
            .await
            .expect("get")
            .text()
            .await
            .expect("text");
        for series in [
            "kabinet_http_request_duration_seconds_bucket{route=\"/graphql\",le=\"+Inf\"}",
            "kabinet_graphql_request_duration_seconds_bucket{operation=\"RegisterClinic\",le=\"+Inf\"}",
            "kabinet_graphql_request_duration_seconds_bucket{operation=\"anonymous\",le=\"+Inf\"}",
        ] {
            assert!(
                sample(&text, series).is_some_and(|n| n >= 1.0),
                "{series} in\n{text}"
            );
        }
        assert!(
            sample(&text, &format!("kabinet_errors_total{{code=\"{code}\"}}"))
                .is_some_and(|n| n >= 1.0),
            "{code} in\n{text}"
        );
        // The mutation returned once the directory had its event: nothing is behind.
        assert_eq!(
            sample(
                &text,
                "kabinet_projection_lag_events{projection=\"organisations\"}"
            ),
            Some(0.0),
            "{text}"
        );
        assert!(
            sample(&text, "kabinet_db_pool_connections{state=\"max\"}").is_some_and(|n| n >= 1.0),
            "{text}"
        );
        assert!(
            sample(&text, "kabinet_dispatcher_backlog{state=\"new\"}").is_some(),
            "{text}"
        );
        assert!(
            sample(&text, "process_resident_memory_bytes").is_some_and(|n| n > 1_000_000.0),
            "{text}"
        );
        server.stop().await;
    }
);

conformance!(
    operations_over_websocket_are_counted_by_name,
    |test_db| async move {
        let server = Server::start(&test_db, |_| {}).await;
        let admin = server.token(Role::Admin, None);
        let mut ws = connect(&server).await;
        let init = json!({ "type": "connection_init",
            "payload": { "authorization": format!("Bearer {admin}") } });
        ws.send(Message::Text(init.to_string()))
            .await
            .expect("send");
        assert_eq!(
            next_json(&mut ws).await.expect("ack")["type"],
            "connection_ack"
        );
        // A subscription the schema refuses answers at once, so it is counted
        // (as failed) before its answer reaches the client.
        let subscribe = json!({ "id": "1", "type": "subscribe",
            "payload": { "query": "subscription WatchNothing { noSuchFeed }" } });
        ws.send(Message::Text(subscribe.to_string()))
            .await
            .expect("send");
        let answer = next_json(&mut ws).await.expect("an answer");
        assert_eq!(answer["id"], "1", "{answer}");
        assert!(
            answer["payload"]["errors"][0]["extensions"]["code"].is_string(),
            "{answer}"
        );

        let text = server
            .http
            .get(format!("{}/metrics", server.base))
            .bearer_auth(METRICS_TOKEN)
            .send()
            .await
            .expect("get")
            .text()
            .await
            .expect("text");
        for series in [
            "kabinet_graphql_requests_total{operation=\"WatchNothing\"}",
            "kabinet_graphql_errors_total{operation=\"WatchNothing\"}",
            "kabinet_graphql_request_duration_seconds_bucket{operation=\"WatchNothing\",le=\"+Inf\"}",
        ] {
            assert!(
                sample(&text, series).is_some_and(|n| n >= 1.0),
                "{series} in\n{text}"
            );
        }
        server.stop().await;
    }
);

conformance!(
    projection_lag_counts_the_events_after_the_checkpoint,
    |test_db| async move {
        let commands = CommandRunner::new(test_db.journal.clone());
        let account = Uuid::now_v7();
        for i in 0..3 {
            kabinet_tests::add(&commands, &format!("lag-{i}"), 1, account, Retry::Never)
                .await
                .expect("add");
        }
        let names = [kabinet_projections::activity_log::NAME];
        let behind = || async {
            events_behind(&test_db.db, &names)
                .await
                .expect("lag")
                .into_iter()
                .map(|(_, n)| n)
                .sum::<i64>()
        };
        assert_eq!(behind().await, 3);
        let projector = Projector::new(
            test_db.journal.clone(),
            all_projections(),
            ProjectorConfig::default(),
        );
        projector.catch_up().await.expect("catch up");
        assert_eq!(behind().await, 0);
        kabinet_tests::add_each(&commands, "lag-0", vec![1, 2], account, Retry::Never)
            .await
            .expect("add");
        assert_eq!(behind().await, 2);
    }
);
