//! `kabinet-replay verify` and `digest` on both backends: an intact journal
//! passes, each kind of tampering done in SQL is found and named at the right
//! place, a kept digest proves the journal up to it — and fails once the tail
//! was cut — and bad input exits 2 without writing anything.

use kabinet_tests::replay::{digest_position, run_with, TestJournal};
use kabinet_tests::{conformance, TestBackend, TestDb};
use serde_json::Value;
use uuid::Uuid;

/// The tool under test, as auditors run it.
const TOOL: &str = env!("CARGO_BIN_EXE_kabinet-replay-tool");

/// Three organisations, each registered and renamed twice (9 events), sealed
/// three events a seal: positions 1-3, 4-6, 7-9 (registrations first).
struct Sealed {
    t: TestJournal,
    orgs: [Uuid; 3],
}

impl Sealed {
    async fn new(test_db: TestDb) -> Sealed {
        let t = TestJournal::new(test_db, TOOL);
        let mut orgs = [Uuid::nil(); 3];
        for (i, org) in orgs.iter_mut().enumerate() {
            *org = t.register(&format!("Поликлиника {i}")).await;
        }
        for round in 1..=2 {
            for (i, org) in orgs.iter().enumerate() {
                t.rename(*org, &format!("Поликлиника {i}, версия {round}"))
                    .await;
            }
        }
        t.seal_all(3).await;
        Sealed { t, orgs }
    }

    async fn position(&self, org: usize, sequence: i64) -> i64 {
        self.t
            .position_of("organisation", &self.orgs[org].to_string(), sequence)
            .await
    }

    async fn verify_json(&self, extra: &[&str]) -> (i32, Value) {
        let mut args = vec!["--json", "verify"];
        args.extend_from_slice(extra);
        let run = self.t.run(&args).await;
        assert!(
            run.code == 0 || run.code == 1,
            "verify could not run: {run:?}"
        );
        (run.code, run.json())
    }
}

fn first_break(report: &Value) -> &Value {
    &report["first_break"]
}

fn is_hex_hash(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit()))
}

async fn an_intact_journal_verifies(test_db: TestDb) {
    let s = Sealed::new(test_db).await;
    let run = s.t.run(&["verify"]).await;
    run.expect_code(0);
    assert!(
        run.stdout
            .starts_with("intact: 9 events in 3 streams, 3 seals"),
        "{}",
        run.stdout
    );
    // No progress bar when stderr is not a terminal.
    assert_eq!(run.stderr, "");
    let (code, report) = s.verify_json(&[]).await;
    assert_eq!(code, 0);
    assert_eq!(report["intact"], true);
    assert_eq!(report["events"], 9);
    assert_eq!(report["seals"], 3);
    assert_eq!(report["breaks"], 0);
    assert!(report["bytes_hashed"].as_u64().is_some_and(|b| b > 9 * 200));
}

async fn an_edited_payload_is_named_with_its_hashes(test_db: TestDb) {
    let s = Sealed::new(test_db).await;
    let position = s.position(1, 1).await;
    s.t.edit_payload(position).await;
    let run = s.t.run(&["verify"]).await;
    run.expect_code(1);
    let stream = format!("organisation/{}", s.orgs[1]);
    assert!(
        run.stdout.contains(&format!(
            "event at position {position} ({stream} sequence 1)"
        )),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("hash mismatch"), "{}", run.stdout);
    let (_, report) = s.verify_json(&[]).await;
    let first = first_break(&report);
    assert_eq!(first["kind"], "hash_mismatch");
    assert_eq!(first["position"], position);
    assert_eq!(first["stream"], stream);
    assert_eq!(first["sequence"], 1);
    assert!(is_hex_hash(&first["expected"]) && is_hex_hash(&first["found"]));
    assert_ne!(first["expected"], first["found"]);
}

async fn a_deleted_event_is_found(test_db: TestDb) {
    let s = Sealed::new(test_db).await;
    // The first rename of organisation 0: its stream skips a sequence, and the
    // seal over positions 4-6 lost one of its events.
    let deleted = s.position(0, 2).await;
    let next = s.position(0, 3).await;
    s.t.exec("DELETE FROM events WHERE position = $1", &[deleted])
        .await;
    let (code, report) = s.verify_json(&[]).await;
    assert_eq!(code, 1);
    let first = first_break(&report);
    assert_eq!(first["kind"], "seal_mismatch", "{report}");
    assert_eq!(first["sequence"], 2, "seal 2 is named: {report}");
    assert!(
        first["description"]
            .as_str()
            .is_some_and(|d| d.contains("covers 3 events but 2 are in its range (events removed")),
        "{report}"
    );
    assert_eq!(report["breaks"], 2, "the seal and the stream gap: {report}");
    // The gap in the stream, named on its own by a check of the later range.
    let (code, report) = s.verify_json(&["--from", &next.to_string()]).await;
    assert_eq!(code, 1);
    let first = first_break(&report);
    assert_eq!(first["kind"], "missing_events", "{report}");
    assert_eq!(first["position"], next);
    assert_eq!(first["sequence"], 3);
    assert!(first["description"]
        .as_str()
        .is_some_and(|d| d.contains("events missing from sequence 2")));
}

async fn swapped_events_are_found(test_db: TestDb) {
    let s = Sealed::new(test_db).await;
    // Two registrations of different streams inside seal 1: the chains hold,
    // the seal's root over the global order does not.
    let (a, b) = (s.position(1, 1).await, s.position(2, 1).await);
    s.t.swap(a, b).await;
    let (code, report) = s.verify_json(&[]).await;
    assert_eq!(code, 1);
    let first = first_break(&report);
    assert_eq!(first["kind"], "seal_mismatch", "{report}");
    assert_eq!(first["sequence"], 1, "seal 1: {report}");
    assert!(first["description"]
        .as_str()
        .is_some_and(|d| d.contains("changed or reordered")));
    assert!(is_hex_hash(&first["expected"]) && is_hex_hash(&first["found"]));
}

async fn events_of_one_stream_swapped_are_named_reordered(test_db: TestDb) {
    let s = Sealed::new(test_db).await;
    let (first_pos, second_pos) = (s.position(0, 1).await, s.position(0, 2).await);
    s.t.swap(first_pos, second_pos).await;
    let (code, report) = s.verify_json(&[]).await;
    assert_eq!(code, 1);
    let first = first_break(&report);
    assert_eq!(first["kind"], "reordered", "{report}");
    assert_eq!(first["sequence"], 2);
    assert_eq!(first["position"], first_pos);
}

async fn an_edited_seal_is_found(test_db: TestDb) {
    let s = Sealed::new(test_db).await;
    s.t.exec(
        "UPDATE seals SET last_position = last_position - 1 WHERE seal_no = 2",
        &[],
    )
    .await;
    let (code, report) = s.verify_json(&[]).await;
    assert_eq!(code, 1);
    let first = first_break(&report);
    assert_eq!(first["kind"], "seal_mismatch", "{report}");
    assert_eq!(first["sequence"], 2);
    assert!(first["description"]
        .as_str()
        .is_some_and(|d| d.contains("the seal record itself was edited")));
}

async fn a_kept_digest_is_proven_until_the_tail_is_cut(test_db: TestDb) {
    let s = Sealed::new(test_db).await;
    // The auditor keeps the digest after seal 2.
    let digest_run = s.t.run(&["digest"]).await;
    digest_run.expect_code(0);
    assert_eq!(digest_position(&digest_run.stdout), 9);
    let kept: String = {
        let seal2 =
            s.t.scalar("SELECT last_position FROM seals WHERE seal_no = 2", &[])
                .await;
        let hash = s.t.run(&["--json", "digest"]).await.json();
        assert_eq!(hash["seal"], 3);
        // Digest of seal 2, as `digest` printed it when seal 2 was the newest.
        let row: Vec<u8> = kabinet_domain::on_db!(&s.t.db, pool => {
            sqlx::query_scalar("SELECT hash FROM seals WHERE seal_no = 2")
                .fetch_one(pool)
                .await
                .expect("seal 2")
        });
        format!("{}@{seal2}", hex::encode(row))
    };
    // More is written and sealed after the digest.
    let extra = s.t.register("Поликлиника 3").await;
    s.t.rename(extra, "Поликлиника 3, версия 1").await;
    s.t.seal_all(3).await;
    let run = s.t.run(&["verify", "--digest", &kept]).await;
    run.expect_code(0);
    assert!(
        run.stdout
            .contains(&format!("digest {kept} proven: seal 2")),
        "{}",
        run.stdout
    );
    let (_, report) = s.verify_json(&["--digest", &kept]).await;
    assert_eq!(report["digest_proven"], true);
    assert_eq!(report["digest_seal"], 2);

    // The tail is cut back to seal 1, consistently: the rest verifies on its own.
    let cut =
        s.t.scalar("SELECT last_position FROM seals WHERE seal_no = 1", &[])
            .await;
    s.t.exec("DELETE FROM seals WHERE seal_no >= 2", &[]).await;
    s.t.exec("DELETE FROM events WHERE position > $1", &[cut])
        .await;
    s.t.run(&["verify"]).await.expect_code(0);
    // The kept digest is not proven: named as a truncation.
    let run = s.t.run(&["verify", "--digest", &kept]).await;
    run.expect_code(1);
    assert!(
        run.stdout.contains("the journal was truncated"),
        "{}",
        run.stdout
    );
    let (_, report) = s.verify_json(&["--digest", &kept]).await;
    let first = first_break(&report);
    assert_eq!(first["kind"], "digest_mismatch");
    assert_eq!(first["expected"].as_str(), kept.split('@').next());
    assert!(
        is_hex_hash(&first["found"]),
        "the seal now standing there: {report}"
    );
    assert_eq!(report["digest_proven"], false);
}

async fn a_digest_fails_when_anything_before_it_changed(test_db: TestDb) {
    let s = Sealed::new(test_db).await;
    let kept = s.t.run(&["digest"]).await.stdout.trim().to_string();
    s.t.run(&["verify", "--digest", &kept]).await.expect_code(0);
    let position = s.position(0, 1).await;
    s.t.edit_payload(position).await;
    let (code, report) = s.verify_json(&["--digest", &kept]).await;
    assert_eq!(code, 1);
    assert_eq!(report["digest_proven"], false);
    assert_eq!(first_break(&report)["position"], position);
}

async fn reformatted_but_equal_json_is_not_tampering(test_db: TestDb) {
    let s = Sealed::new(test_db).await;
    // The hash covers the canonical form of the content, not the stored text.
    let sql = match s.t.backend {
        TestBackend::Sqlite => {
            "UPDATE events SET payload = ' ' || replace(payload, '\":', '\" : '), metadata = metadata || ' '"
        }
        TestBackend::Postgres => "UPDATE events SET payload = CAST(CAST(payload AS TEXT) AS jsonb)",
    };
    s.t.exec(sql, &[]).await;
    let (code, report) = s.verify_json(&[]).await;
    assert_eq!(code, 0, "{report}");
    // Changing a value inside that text still is.
    s.t.edit_payload(s.position(2, 1).await).await;
    let (code, report) = s.verify_json(&[]).await;
    assert_eq!(code, 1, "{report}");
    assert_eq!(first_break(&report)["kind"], "hash_mismatch");
}

async fn a_range_checks_only_its_events_and_their_seals(test_db: TestDb) {
    let s = Sealed::new(test_db).await;
    // Tamper inside seal 1 (positions 1-3); a check of 4-9 does not see it.
    s.t.edit_payload(s.position(1, 1).await).await;
    let (code, report) = s.verify_json(&["--from", "4", "--to", "9"]).await;
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["events"], 6);
    assert_eq!(report["from"], 4);
    let (code, report) = s.verify_json(&["--from", "1", "--to", "3"]).await;
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["events"], 3);
}

async fn bad_input_exits_2_and_writes_nothing(test_db: TestDb) {
    let s = Sealed::new(test_db).await;
    let before = s.t.fingerprint().await;
    for (args, message) in [
        (
            vec!["verify", "--digest", "not-a-digest"],
            "malformed digest",
        ),
        (
            vec!["verify", "--digest", &format!("{}@3", "zz".repeat(32))],
            "malformed digest",
        ),
        (vec!["verify", "--from", "10"], "beyond the end"),
        (vec!["verify", "--to", "1000"], "beyond the end"),
        (vec!["verify", "--from", "5", "--to", "2"], "after --to"),
    ] {
        let run = s.t.run(&args).await;
        run.expect_code(2);
        assert!(run.stderr.contains(message), "{args:?}: {}", run.stderr);
        assert_eq!(run.stdout, "", "{args:?} printed a result");
    }
    assert_eq!(s.t.fingerprint().await, before);
}

async fn a_database_that_is_not_a_journal_is_refused(test_db: TestDb) {
    let t = TestJournal::new(test_db, TOOL);
    t.exec("DROP TABLE seals", &[]).await;
    for command in ["verify", "digest"] {
        let run = t.run(&[command]).await;
        run.expect_code(2);
        assert!(
            run.stderr.contains("is not a Kabinet journal"),
            "{}",
            run.stderr
        );
    }
}

async fn digest_of_an_unsealed_journal_exits_2(test_db: TestDb) {
    let t = TestJournal::new(test_db, TOOL);
    t.register("Без печати").await;
    let run = t.run(&["digest"]).await;
    run.expect_code(2);
    assert!(run.stderr.contains("no seal yet"), "{}", run.stderr);
}

conformance!(
    each:
    an_intact_journal_verifies,
    an_edited_payload_is_named_with_its_hashes,
    a_deleted_event_is_found,
    swapped_events_are_found,
    events_of_one_stream_swapped_are_named_reordered,
    an_edited_seal_is_found,
    a_kept_digest_is_proven_until_the_tail_is_cut,
    a_digest_fails_when_anything_before_it_changed,
    a_range_checks_only_its_events_and_their_seals,
    reformatted_but_equal_json_is_not_tampering,
    bad_input_exits_2_and_writes_nothing,
    a_database_that_is_not_a_journal_is_refused,
    digest_of_an_unsealed_journal_exits_2,
);

#[tokio::test]
async fn files_that_are_not_journals_are_refused_untouched() {
    let dir = tempfile::tempdir().expect("temporary directory");
    // A missing file is not created.
    let missing = dir.path().join("missing.db");
    let run = run_with(
        TOOL,
        &format!("sqlite://{}", missing.display()),
        &["verify"],
        &[],
    )
    .await;
    run.expect_code(2);
    assert!(run.stderr.contains("no database at"), "{}", run.stderr);
    assert!(!missing.exists());
    // Neither an empty file nor a text file is written to.
    for (name, content) in [
        ("empty.db", &b""[..]),
        ("text.db", &b"hello, not a database\n"[..]),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, content).expect("write");
        let run = run_with(
            TOOL,
            &format!("sqlite://{}", path.display()),
            &["verify"],
            &[],
        )
        .await;
        run.expect_code(2);
        assert!(
            run.stderr.contains("not a Kabinet journal") || run.stderr.contains("cannot open"),
            "{name}: {}",
            run.stderr
        );
        assert_eq!(
            std::fs::read(&path).expect("read"),
            content,
            "{name} changed"
        );
    }
}
