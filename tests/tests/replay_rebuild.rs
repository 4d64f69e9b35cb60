//! `kabinet-replay rebuild` on both backends: the swapped-in read models equal
//! the live ones and keep being projected; `--check` finds every difference
//! without changing anything; a second rebuild beside a running one is refused.

use std::collections::BTreeSet;
use std::fs::OpenOptions;

use kabinet_tests::replay::TestJournal;
use kabinet_tests::{conformance, TestBackend, TestDb};
use serde_json::Value;
use sqlx::Connection;
use uuid::Uuid;

/// The tool under test, as auditors run it.
const TOOL: &str = env!("CARGO_BIN_EXE_kabinet-replay-tool");

async fn populated(test_db: TestDb) -> TestJournal {
    let t = TestJournal::new(test_db, TOOL);
    let mut orgs = Vec::new();
    for i in 0..4 {
        orgs.push(t.register(&format!("Клиника {i}")).await);
    }
    for org in &orgs {
        t.rename(*org, "Переименована").await;
    }
    t.record_patient(Uuid::now_v7(), "Петрова").await;
    t.project().await;
    t
}

/// Every row of a table as text, sorted: a comparison independent of row order.
async fn table_rows(t: &TestJournal, table: &str) -> Vec<String> {
    let sql = match t.backend {
        TestBackend::Sqlite => format!("SELECT * FROM \"{table}\""),
        TestBackend::Postgres => format!("SELECT CAST(row_to_json(x) AS TEXT) FROM \"{table}\" x"),
    };
    let mut rows: Vec<String> = kabinet_domain::on_db!(&t.db, pool => {
        let rows = sqlx::query(&sql).fetch_all(pool).await.expect("rows");
        rows.iter().map(row_text).collect()
    });
    rows.sort();
    rows
}

fn row_text<R: sqlx::Row>(row: &R) -> String
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    (0..row.len())
        .map(|i| {
            row.try_get::<Option<String>, _>(i)
                .map(|v| format!("{v:?}"))
                .or_else(|_| row.try_get::<Option<i64>, _>(i).map(|v| format!("{v:?}")))
                .unwrap_or_else(|e| format!("<{e}>"))
        })
        .collect::<Vec<_>>()
        .join("|")
}

/// The index names of a table.
async fn indexes(t: &TestJournal, table: &str) -> BTreeSet<String> {
    let sql = match t.backend {
        TestBackend::Sqlite => {
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = $1 AND sql IS NOT NULL"
        }
        TestBackend::Postgres => "SELECT indexname::text FROM pg_indexes WHERE tablename = $1",
    };
    kabinet_domain::on_db!(&t.db, pool => {
        sqlx::query_scalar::<_, String>(sql)
            .bind(table)
            .fetch_all(pool)
            .await
            .expect("indexes")
            .into_iter()
            .collect()
    })
}

const TABLES: [&str; 2] = ["activity_log", "organisations"];

async fn rebuild_swaps_in_models_equal_to_the_live_ones(test_db: TestDb) {
    let t = populated(test_db).await;
    let mut before = Vec::new();
    for table in TABLES {
        before.push((table_rows(&t, table).await, indexes(&t, table).await));
    }
    let run = t.run(&["--json", "rebuild", "--all"]).await;
    run.expect_code(0);
    let out = run.json();
    let rebuilt = out["rebuilt"].as_array().expect("rebuilt");
    let names: Vec<&str> = rebuilt
        .iter()
        .filter_map(|r| r["projection"].as_str())
        .collect();
    assert_eq!(
        names,
        kabinet_projections::all_projections()
            .iter()
            .map(|p| p.name())
            .collect::<Vec<_>>()
    );
    let last = t.scalar("SELECT MAX(position) FROM events", &[]).await;
    for entry in rebuilt {
        assert_eq!(entry["events"], last, "{entry}");
        assert_eq!(entry["position"], last, "{entry}");
    }
    for (table, (rows, index_names)) in TABLES.iter().zip(&before) {
        assert_eq!(&table_rows(&t, table).await, rows, "{table} rows");
        assert_eq!(&indexes(&t, table).await, index_names, "{table} indexes");
    }
    // The checkpoints moved with the tables: projecting on adds, never repeats.
    let org = t.register("После перестройки").await;
    t.rename(org, "После перестройки, 2").await;
    t.project().await;
    assert_eq!(
        table_rows(&t, "activity_log").await.len(),
        before[0].0.len() + 2
    );
    // A second rebuild of one projection works over the first.
    t.run(&["rebuild", "--projection", "organisations"])
        .await
        .expect_code(0);
    t.run(&["rebuild", "--check", "--all"]).await.expect_code(0);
}

async fn check_reports_every_difference_and_changes_nothing(test_db: TestDb) {
    let t = populated(test_db).await;
    let run = t.run(&["--json", "rebuild", "--check", "--all"]).await;
    run.expect_code(0);
    let out = run.json();
    assert_eq!(out["identical"], true);
    assert_eq!(out["differences"], Value::Array(vec![]));

    // Break the live activity log three ways.
    let account = t.actor.account_id.to_string();
    let positions: Vec<i64> = {
        let sql = "SELECT position FROM activity_log WHERE account_id = $1 ORDER BY position";
        kabinet_domain::on_db!(&t.db, pool => {
            sqlx::query_scalar(sql).bind(&account).fetch_all(pool).await.expect("positions")
        })
    };
    t.exec(
        "DELETE FROM activity_log WHERE position = $1",
        &[positions[0]],
    )
    .await;
    t.exec(
        "UPDATE activity_log SET status = 'forged' WHERE position = $1",
        &[positions[1]],
    )
    .await;
    t.exec(
        "INSERT INTO activity_log (account_id, position, occurred_at, action, object_type, \
         object_id, status, actor_id, actor_role) \
         VALUES ('00000000-0000-0000-0000-000000000001', $1, 0, 'Invented', 'x', 'y', NULL, 'z', 'admin')",
        &[positions[2]],
    )
    .await;
    let before = t.fingerprint().await;
    let live_rows = table_rows(&t, "activity_log").await;

    let run = t
        .run(&[
            "--json",
            "rebuild",
            "--check",
            "--projection",
            "activity_log",
        ])
        .await;
    run.expect_code(1);
    let out = run.json();
    assert_eq!(out["identical"], false);
    let summary = &out["projections"][0];
    assert_eq!(
        (
            summary["missing"].as_u64(),
            summary["extra"].as_u64(),
            summary["changed"].as_u64()
        ),
        (Some(1), Some(1), Some(1)),
        "{out}"
    );
    let differences = out["differences"].as_array().expect("differences");
    let by_kind = |kind: &str| {
        differences
            .iter()
            .find(|d| d["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in {out}"))
    };
    assert_eq!(by_kind("missing")["row"]["position"], positions[0]);
    assert_eq!(by_kind("extra")["row"]["action"], "Invented");
    let changed = by_kind("changed");
    assert_eq!(changed["columns"], serde_json::json!(["status"]));
    assert_eq!(changed["live"]["status"], "forged");
    assert_eq!(changed["rebuilt"]["status"], "registered");

    // Text output names the same differences.
    let run = t
        .run(&["rebuild", "--check", "--projection", "activity_log"])
        .await;
    run.expect_code(1);
    assert!(
        run.stdout.contains("activity_log: DIFFERENT"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("1 missing, 1 extra, 1 changed"),
        "{}",
        run.stdout
    );

    // Checking changed nothing; rebuilding repairs the live table.
    assert_eq!(t.fingerprint().await, before);
    assert_eq!(table_rows(&t, "activity_log").await, live_rows);
    t.run(&["rebuild", "--projection", "activity_log"])
        .await
        .expect_code(0);
    t.run(&["rebuild", "--check", "--all"]).await.expect_code(0);
}

async fn a_rebuild_beside_another_is_refused(test_db: TestDb) {
    let t = populated(test_db).await;
    let message = "another rebuild is running";
    match t.backend {
        TestBackend::Postgres => {
            let mut holder = sqlx::PgConnection::connect(&t.url).await.expect("connect");
            sqlx::query("SELECT pg_advisory_lock($1)")
                .bind(kabinet_replay::rebuild_lock_key())
                .execute(&mut holder)
                .await
                .expect("hold the rebuild lock");
            for args in [
                &["rebuild", "--all"][..],
                &["rebuild", "--check", "--all"][..],
            ] {
                let run = t.run(args).await;
                run.expect_code(2);
                assert!(run.stderr.contains(message), "{}", run.stderr);
            }
            holder.close().await.expect("release");
        }
        TestBackend::Sqlite => {
            let path = format!("{}-rebuild.lock", t.url.trim_start_matches("sqlite://"));
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .expect("lock file");
            file.lock().expect("hold the rebuild lock");
            for args in [
                &["rebuild", "--all"][..],
                &["rebuild", "--check", "--all"][..],
            ] {
                let run = t.run(args).await;
                run.expect_code(2);
                assert!(run.stderr.contains(message), "{}", run.stderr);
            }
            file.unlock().expect("release");
        }
    }
    t.run(&["rebuild", "--all"]).await.expect_code(0);
}

async fn bad_rebuild_input_exits_2(test_db: TestDb) {
    let t = TestJournal::new(test_db, TOOL);
    t.register("Одна").await;
    let run = t.run(&["rebuild", "--projection", "nonexistent"]).await;
    run.expect_code(2);
    assert!(
        run.stderr.contains("no projection named 'nonexistent'"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("activity_log"),
        "the names are listed: {}",
        run.stderr
    );
    // The server never ran: there is no live table to check against.
    let run = t
        .run(&["rebuild", "--check", "--projection", "activity_log"])
        .await;
    run.expect_code(2);
    assert!(run.stderr.contains("no live table"), "{}", run.stderr);
    t.run(&["rebuild"]).await.expect_code(2);
}

conformance!(
    each:
    rebuild_swaps_in_models_equal_to_the_live_ones,
    check_reports_every_difference_and_changes_nothing,
    a_rebuild_beside_another_is_refused,
    bad_rebuild_input_exits_2,
);
