//! `kabinet-replay export` on both backends: streamed in global order, subject
//! ids replaced by keyed pseudonyms, personal fields left out unless an auditor's
//! token asks for them, and refusals (no key, wrong role, bad range) exit 2
//! before writing anything.

use kabinet_domain::Role;
use kabinet_replay::pseudonym::Pseudonymiser;
use kabinet_tests::replay::TestJournal;
use kabinet_tests::server::SECRET;
use kabinet_tests::tokens::token;
use kabinet_tests::{conformance, TestDb};
use serde_json::{json, Value};
use uuid::Uuid;

/// The tool under test, as auditors run it.
const TOOL: &str = env!("CARGO_BIN_EXE_kabinet-replay-tool");

const KEY: &str = "an export key of the tests, 32 b";

struct Fixture {
    t: TestJournal,
    patient: Uuid,
    orgs: Vec<Uuid>,
}

async fn fixture(test_db: TestDb) -> Fixture {
    let t = TestJournal::new(test_db, TOOL);
    let mut orgs = Vec::new();
    for i in 0..3 {
        orgs.push(t.register(&format!("Клиника {i}")).await);
    }
    t.rename(orgs[0], "Клиника 0, новое имя").await;
    let patient = Uuid::now_v7();
    t.record_patient(patient, "Иванова").await;
    Fixture { t, patient, orgs }
}

fn lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

async fn ndjson_hides_subjects_and_personal_data(test_db: TestDb) {
    let f = fixture(test_db).await;
    let before = f.t.fingerprint().await;
    let run =
        f.t.run_env(
            &["export", "--format", "ndjson"],
            &[("KABINET_EXPORT_KEY", KEY)],
        )
        .await;
    run.expect_code(0);
    let events = lines(&run.stdout);
    assert_eq!(events.len(), 5);
    let positions: Vec<i64> = events
        .iter()
        .filter_map(|e| e["position"].as_i64())
        .collect();
    let mut sorted = positions.clone();
    sorted.sort_unstable();
    assert_eq!(positions, sorted, "global order");

    let p = Pseudonymiser::new(KEY.as_bytes(), false).expect("key");
    let actor = f.t.actor.account_id;
    // No raw subject id anywhere; pseudonyms where they were.
    for raw in [actor.to_string(), f.patient.to_string()] {
        assert!(!run.stdout.contains(&raw), "{raw} leaked");
    }
    assert_eq!(events[0]["metadata"]["actor_id"], p.pseudonym(&actor));
    let patient_event = events
        .iter()
        .find(|e| e["aggregate_type"] == "patient")
        .expect("patient event");
    assert_eq!(patient_event["aggregate_id"], p.pseudonym(&f.patient));
    assert_eq!(
        patient_event["metadata"]["actor_id"],
        p.pseudonym(&f.patient)
    );
    // Organisations are not subjects: their ids stay.
    assert_eq!(events[0]["aggregate_id"], f.orgs[0].to_string());
    // Personal fields are gone, the rest stays.
    let profile = &patient_event["payload"]["PatientProfileRecorded"];
    assert_eq!(profile, &json!({}), "{patient_event}");
    assert!(!run.stdout.contains("Иванова") && !run.stdout.contains("1990-05-17"));
    let details = &events[0]["payload"]["OrganisationRegistered"];
    assert_eq!(details["name"], "Клиника 0");
    assert!(details.get("address").is_none());
    // Another key, other pseudonyms.
    let other =
        f.t.run_env(
            &["export", "--format", "ndjson"],
            &[("KABINET_EXPORT_KEY", "another key, also long enough")],
        )
        .await;
    assert_ne!(
        lines(&other.stdout)[0]["metadata"]["actor_id"],
        events[0]["metadata"]["actor_id"]
    );
    assert_eq!(
        f.t.fingerprint().await,
        before,
        "export wrote to the database"
    );
}

async fn filters_select_a_range_and_a_type(test_db: TestDb) {
    let f = fixture(test_db).await;
    let env = [("KABINET_EXPORT_KEY", KEY)];
    let run =
        f.t.run_env(
            &[
                "export",
                "--format",
                "ndjson",
                "--type",
                "OrganisationRegistered",
            ],
            &env,
        )
        .await;
    run.expect_code(0);
    let events = lines(&run.stdout);
    assert_eq!(events.len(), 3);
    assert!(events
        .iter()
        .all(|e| e["event_type"] == "OrganisationRegistered"));
    let run =
        f.t.run_env(
            &["export", "--format", "ndjson", "--from", "2", "--to", "4"],
            &env,
        )
        .await;
    run.expect_code(0);
    let positions: Vec<i64> = lines(&run.stdout)
        .iter()
        .filter_map(|e| e["position"].as_i64())
        .collect();
    assert_eq!(positions, [2, 3, 4]);
}

async fn csv_has_a_header_and_one_quoted_row_per_event(test_db: TestDb) {
    let f = fixture(test_db).await;
    let run =
        f.t.run_env(
            &["export", "--format", "csv"],
            &[("KABINET_EXPORT_KEY", KEY)],
        )
        .await;
    run.expect_code(0);
    let rows: Vec<&str> = run.stdout.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(rows.len(), 6);
    assert_eq!(
        rows[0],
        "position,recorded_at,aggregate_type,aggregate_id,sequence,event_type,event_version,actor_id,actor_role,payload,metadata"
    );
    let p = Pseudonymiser::new(KEY.as_bytes(), false).expect("key");
    let first: Vec<&str> = rows[1].splitn(10, ',').collect();
    assert_eq!(first[0], "1");
    assert_eq!(first[2], "organisation");
    assert_eq!(first[7], p.pseudonym(&f.t.actor.account_id));
    assert_eq!(first[8], "admin");
    // The payload is one quoted field with doubled quotes.
    assert!(
        first[9].starts_with("\"{\"\"OrganisationRegistered\"\":"),
        "{}",
        rows[1]
    );
    assert!(!run.stdout.contains(&f.patient.to_string()));
}

async fn personal_data_needs_an_auditor_token(test_db: TestDb) {
    let f = fixture(test_db).await;
    let args = ["export", "--format", "ndjson", "--include-personal-data"];
    let key = ("KABINET_EXPORT_KEY", KEY);
    let secret = ("KABINET_JWT_SECRET", SECRET);
    let analyst = token(Role::Analyst, None);
    let auditor = token(Role::Auditor, None);
    for (env, message) in [
        (vec![key, secret], "needs the caller's token"),
        (
            vec![key, secret, ("KABINET_TOKEN", analyst.as_str())],
            "this token's role is 'analyst'",
        ),
        (
            vec![
                key,
                ("KABINET_JWT_SECRET", "a different secret, 32 bytes long"),
                ("KABINET_TOKEN", auditor.as_str()),
            ],
            "not signed",
        ),
        (
            vec![key, ("KABINET_TOKEN", auditor.as_str())],
            "KABINET_JWT_SECRET",
        ),
    ] {
        let run = f.t.run_env(&args, &env).await;
        run.expect_code(2);
        assert!(run.stderr.contains(message), "{message}: {}", run.stderr);
        assert_eq!(run.stdout, "");
        assert!(!run.stderr.contains(&auditor), "the token is never echoed");
    }
    let run =
        f.t.run_env(&args, &[key, secret, ("KABINET_TOKEN", auditor.as_str())])
            .await;
    run.expect_code(0);
    let events = lines(&run.stdout);
    let patient_event = events
        .iter()
        .find(|e| e["aggregate_type"] == "patient")
        .expect("patient");
    assert_eq!(
        patient_event["payload"]["PatientProfileRecorded"]["surname"],
        "Иванова"
    );
    assert_eq!(
        events[0]["payload"]["OrganisationRegistered"]["address"],
        "ул. Ленина, 1"
    );
    // Subject ids stay pseudonymised even for the auditor.
    assert!(!run.stdout.contains(&f.patient.to_string()));
}

async fn export_refuses_without_a_key_or_with_a_bad_range(test_db: TestDb) {
    let f = fixture(test_db).await;
    let run = f.t.run(&["export", "--format", "ndjson"]).await;
    run.expect_code(2);
    assert!(
        run.stderr
            .contains("refusing to export without a pseudonymisation key"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stdout, "");
    let run =
        f.t.run_env(
            &["export", "--format", "csv", "--to", "99"],
            &[("KABINET_EXPORT_KEY", KEY)],
        )
        .await;
    run.expect_code(2);
    assert!(run.stderr.contains("beyond the end"), "{}", run.stderr);
    assert_eq!(run.stdout, "", "not even the header");
    let run =
        f.t.run_env(
            &["export", "--format", "csv"],
            &[("KABINET_EXPORT_KEY", "short")],
        )
        .await;
    run.expect_code(2);
    assert!(run.stderr.contains("at least 16 bytes"), "{}", run.stderr);
    let run =
        f.t.run_env(
            &["export", "--format", "xml"],
            &[("KABINET_EXPORT_KEY", KEY)],
        )
        .await;
    run.expect_code(2);
}

conformance!(
    each:
    ndjson_hides_subjects_and_personal_data,
    filters_select_a_range_and_a_type,
    csv_has_a_header_and_one_quoted_row_per_event,
    personal_data_needs_an_auditor_token,
    export_refuses_without_a_key_or_with_a_bad_range,
);
