//! `kabinet-replay replay` on both backends: a stream folded as of a position
//! and a time, unknown aggregate types listed event by event, and an
//! account's read models as of a moment equal to what the live read model
//! showed at that moment — without touching the live read models.

use std::time::Duration;

use kabinet_domain::journal::chain::GENESIS;
use kabinet_tests::replay::TestJournal;
use kabinet_tests::{conformance, TestDb};
use serde_json::{json, Value};
use uuid::Uuid;

/// The tool under test, as auditors run it.
const TOOL: &str = env!("CARGO_BIN_EXE_kabinet-replay-tool");

/// Gives the next event a later recording time than the last one.
async fn tick() {
    tokio::time::sleep(Duration::from_millis(30)).await;
}

async fn replay_json(t: &TestJournal, args: &[&str]) -> Value {
    let mut all = vec!["--json", "replay"];
    all.extend_from_slice(args);
    let run = t.run(&all).await;
    run.expect_code(0);
    run.json()
}

async fn a_stream_is_folded_as_of_a_position_and_a_time(test_db: TestDb) {
    let t = TestJournal::new(test_db, TOOL);
    let org = t.register("Первая").await;
    tick().await;
    t.rename(org, "Вторая").await;
    tick().await;
    t.rename(org, "Третья").await;
    let stream = format!("organisation/{org}");
    let id = org.to_string();
    let (first, second) = (
        t.position_of("organisation", &id, 1).await,
        t.position_of("organisation", &id, 2).await,
    );

    let now = replay_json(&t, &["--stream", &stream]).await;
    assert_eq!(now["known_type"], true);
    assert_eq!(now["version"], 3);
    assert_eq!(now["state"]["details"]["name"], "Третья");
    assert!(
        now.get("events").is_none(),
        "known types show their state only"
    );

    let at_second = replay_json(&t, &["--stream", &stream, "--as-of", &second.to_string()]).await;
    assert_eq!(at_second["version"], 2);
    assert_eq!(at_second["last_position"], second);
    assert_eq!(at_second["state"]["details"]["name"], "Вторая");
    assert_eq!(at_second["as_of"], json!({ "position": second }));

    let time = t.recorded_at(first).await;
    let at_time = replay_json(&t, &["--stream", &stream, "--as-of", &time, "--events"]).await;
    assert_eq!(at_time["version"], 1);
    assert_eq!(at_time["state"]["details"]["name"], "Первая");
    assert_eq!(at_time["events"].as_array().map(Vec::len), Some(1));
    assert_eq!(at_time["events"][0]["event_type"], "OrganisationRegistered");

    // Without --json the same document, pretty-printed.
    let run = t.run(&["replay", "--stream", &stream]).await;
    run.expect_code(0);
    assert!(run.stdout.contains("\n  \"state\": {"), "{}", run.stdout);
    assert_eq!(run.json(), now);
}

async fn an_unknown_aggregate_type_is_listed_event_by_event(test_db: TestDb) {
    let t = TestJournal::new(test_db, TOOL);
    let first = t
        .append_raw("gizmo", "g-1", 1, &json!({ "turns": 1 }), &GENESIS)
        .await;
    t.append_raw("gizmo", "g-1", 2, &json!({ "turns": 2 }), &first)
        .await;
    t.seal_all(10).await;
    t.run(&["verify"]).await.expect_code(0);
    let out = replay_json(&t, &["--stream", "gizmo/g-1"]).await;
    assert_eq!(out["known_type"], false);
    assert_eq!(out["state"], Value::Null);
    let payloads: Vec<&Value> = out["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| &e["payload"])
        .collect();
    assert_eq!(payloads, [&json!({ "turns": 1 }), &json!({ "turns": 2 })]);
}

async fn an_account_as_of_a_moment_equals_the_live_read_model_then(test_db: TestDb) {
    let t = TestJournal::new(test_db, TOOL);
    let account = t.actor.account_id;
    let mut orgs = Vec::new();
    for i in 0..3 {
        orgs.push(t.register(&format!("Клиника {i}")).await);
    }
    t.rename(orgs[0], "Клиника 0, новое имя").await;
    t.project().await;
    // What the server showed at position P (and at P's recording time).
    let then = t.live_activity(account).await;
    assert_eq!(then.len(), 4);
    let position = then
        .last()
        .and_then(|r| r["position"].as_i64())
        .expect("a position");
    let time = t.recorded_at(position).await;
    tick().await;
    // The journal moves on.
    for org in &orgs {
        t.rename(*org, "Переименована").await;
    }
    t.register("Клиника 3").await;
    let patient = Uuid::now_v7();
    t.record_patient(patient, "Иванова").await;
    t.project().await;
    let now = t.live_activity(account).await;
    assert_eq!(now.len(), 8);
    let before = t.fingerprint().await;

    let account_text = account.to_string();
    let at_position = replay_json(
        &t,
        &["--account", &account_text, "--as-of", &position.to_string()],
    )
    .await;
    assert_eq!(
        at_position["read_models"]["activity_log"],
        Value::Array(then.clone())
    );
    assert_eq!(at_position["last_position"], position);
    let at_time = replay_json(&t, &["--account", &account_text, "--as-of", &time]).await;
    assert_eq!(at_time["read_models"]["activity_log"], Value::Array(then));
    let latest = replay_json(&t, &["--account", &account_text]).await;
    assert_eq!(latest["read_models"]["activity_log"], Value::Array(now));

    // A patient's account: its own aggregate and its log.
    let patient_text = patient.to_string();
    let of_patient = replay_json(&t, &["--account", &patient_text]).await;
    assert_eq!(
        of_patient["aggregates"]["patient"]["state"]["profile"]["surname"],
        "Иванова"
    );
    assert_eq!(
        of_patient["read_models"]["activity_log"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    // The patient did not exist yet at P.
    let early = replay_json(
        &t,
        &["--account", &patient_text, "--as-of", &position.to_string()],
    )
    .await;
    assert_eq!(early["aggregates"]["patient"]["event_count"], 0);
    assert_eq!(early["read_models"]["activity_log"], json!([]));

    // Replaying wrote nothing to the live database.
    assert_eq!(t.fingerprint().await, before);
}

async fn bad_replay_input_exits_2(test_db: TestDb) {
    let t = TestJournal::new(test_db, TOOL);
    let org = t.register("Одна").await;
    let stream = format!("organisation/{org}");
    let unknown_stream = format!("organisation/{}", Uuid::now_v7());
    let unknown_account = Uuid::now_v7().to_string();
    let future = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--stream", &unknown_stream], "no stream"),
        (vec!["--stream", "organisation"], "is not TYPE/ID"),
        (
            vec!["--stream", &stream, "--as-of", "99"],
            "beyond the journal",
        ),
        (
            vec!["--stream", &stream, "--as-of", "yesterday"],
            "neither a position nor an RFC 3339 time",
        ),
        (
            vec!["--stream", &stream, "--as-of", &future],
            "in the future",
        ),
        (vec!["--account", "not-a-uuid"], "is not a UUID"),
        (
            vec!["--account", &unknown_account],
            "does not appear in the journal",
        ),
        (vec!["--as-of", "1"], "--stream"),
    ];
    for (args, message) in cases {
        let mut all = vec!["replay"];
        all.extend_from_slice(&args);
        let run = t.run(&all).await;
        run.expect_code(2);
        assert!(run.stderr.contains(message), "{args:?}: {}", run.stderr);
        assert_eq!(run.stdout, "", "{args:?}");
    }
}

conformance!(
    each:
    a_stream_is_folded_as_of_a_position_and_a_time,
    an_unknown_aggregate_type_is_listed_event_by_event,
    an_account_as_of_a_moment_equals_the_live_read_model_then,
    bad_replay_input_exits_2,
);
