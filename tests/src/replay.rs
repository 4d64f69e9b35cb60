//! The `kabinet-replay` tool as an auditor runs it, over a journal filled
//! through the command path: the fixture of the replay tests.

use std::ops::Deref;
use std::str::FromStr;
use std::time::Duration;

use kabinet_domain::command::CommandRunner;
use kabinet_domain::journal::chain::{EventContent, Hash};
use kabinet_domain::journal::Seal;
use kabinet_domain::{Actor, Db};
use kabinet_projections::{all_projections, Projector, ProjectorConfig};
use serde_json::{json, Value};
use sqlx::Row;
use uuid::Uuid;

use crate::builders;
use crate::{TestBackend, TestDb};

/// A fresh journal, the account its commands run as, and the tool to run on it.
pub struct TestJournal {
    test_db: TestDb,
    /// The tool's binary (`env!("CARGO_BIN_EXE_kabinet-replay-tool")` in a test).
    tool: String,
    pub commands: CommandRunner,
    /// The administrator every organisation command is run as.
    pub actor: Actor,
}

impl Deref for TestJournal {
    type Target = TestDb;

    fn deref(&self) -> &TestDb {
        &self.test_db
    }
}

impl TestJournal {
    /// A journal on `test_db` that runs the tool at `tool`.
    pub fn new(test_db: TestDb, tool: &str) -> TestJournal {
        TestJournal {
            commands: test_db.commands(),
            test_db,
            tool: tool.to_string(),
            actor: builders::admin(),
        }
    }

    /// Registers an organisation; one event.
    pub async fn register(&self, name: &str) -> Uuid {
        builders::register_organisation(&self.commands, &self.actor, name).await
    }

    /// Renames an organisation; one event.
    pub async fn rename(&self, id: Uuid, name: &str) {
        builders::rename_organisation(&self.commands, &self.actor, id, name).await
    }

    /// Records a patient profile, acting as the patient; one event.
    pub async fn record_patient(&self, patient: Uuid, surname: &str) {
        builders::record_patient(&self.commands, patient, surname).await
    }

    /// Seals everything written so far, `per_seal` events a seal; returns the newest seal.
    pub async fn seal_all(&self, per_seal: i64) -> Seal {
        crate::seal_all_by(&self.journal, per_seal).await;
        self.journal
            .latest_seal()
            .await
            .expect("latest seal")
            .expect("at least one seal")
    }

    /// Brings every live read model up to date, as a running server does.
    pub async fn project(&self) {
        Projector::new(
            self.journal.clone(),
            all_projections(),
            ProjectorConfig {
                batch_size: 7,
                poll_interval: Duration::from_millis(50),
            },
        )
        .catch_up()
        .await
        .expect("catch up the projections");
    }

    /// The live activity-log rows of `account`, as JSON objects, in position order.
    pub async fn live_activity(&self, account: Uuid) -> Vec<Value> {
        const SQL: &str = "SELECT account_id, position, occurred_at, action, object_type, \
             object_id, status, actor_id, actor_role FROM activity_log \
             WHERE account_id = $1 ORDER BY position";
        kabinet_domain::on_db!(&self.db, pool => {
            let rows = sqlx::query(SQL)
                .bind(account.to_string())
                .fetch_all(pool)
                .await
                .expect("live activity log");
            rows.iter()
                .map(|r| {
                    json!({
                        "account_id": r.get::<String, _>(0),
                        "position": r.get::<i64, _>(1),
                        "occurred_at": r.get::<i64, _>(2),
                        "action": r.get::<String, _>(3),
                        "object_type": r.get::<String, _>(4),
                        "object_id": r.get::<String, _>(5),
                        "status": r.get::<Option<String>, _>(6),
                        "actor_id": r.get::<String, _>(7),
                        "actor_role": r.get::<String, _>(8),
                    })
                })
                .collect()
        })
    }

    /// Swaps the places of two events in the global order.
    pub async fn swap(&self, a: i64, b: i64) {
        match self.backend {
            TestBackend::Sqlite => {
                self.exec("UPDATE events SET position = -1 WHERE position = $1", &[a])
                    .await;
                self.exec(
                    "UPDATE events SET position = $1 WHERE position = $2",
                    &[a, b],
                )
                .await;
                self.exec("UPDATE events SET position = $1 WHERE position = -1", &[b])
                    .await;
            }
            TestBackend::Postgres => {
                // The global order is (transaction, position): swap both.
                let Db::Postgres(pool) = &self.db else {
                    unreachable!("a PostgreSQL test journal")
                };
                let mut tx = pool.begin().await.expect("begin");
                for (sql, params) in [
                    (
                        "CREATE TEMP TABLE swap ON COMMIT DROP AS \
                      SELECT position, tx_id FROM events WHERE position IN ($1, $2)",
                        vec![a, b],
                    ),
                    (
                        "UPDATE events SET position = -1 WHERE position = $1",
                        vec![a],
                    ),
                    (
                        "UPDATE events SET position = $1, \
                      tx_id = (SELECT tx_id FROM swap WHERE position = $1) WHERE position = $2",
                        vec![a, b],
                    ),
                    (
                        "UPDATE events SET position = $1, \
                      tx_id = (SELECT tx_id FROM swap WHERE position = $1) WHERE position = -1",
                        vec![b],
                    ),
                ] {
                    let mut q = sqlx::query(sql);
                    for p in params {
                        q = q.bind(p);
                    }
                    q.execute(&mut *tx)
                        .await
                        .unwrap_or_else(|e| panic!("{sql}: {e}"));
                }
                tx.commit().await.expect("commit the swap");
            }
        }
    }

    /// Replaces the organisation name in the payload of the event at `position`.
    pub async fn edit_payload(&self, position: i64) {
        let sql = match self.backend {
            TestBackend::Sqlite => {
                "UPDATE events SET payload = json_set(payload, '$.OrganisationRegistered.name', 'Forged') WHERE position = $1"
            }
            TestBackend::Postgres => {
                "UPDATE events SET payload = jsonb_set(payload, '{OrganisationRegistered,name}', '\"Forged\"') WHERE position = $1"
            }
        };
        self.exec(sql, &[position]).await;
    }

    /// Appends a raw, correctly chained event (for aggregate types the tool
    /// does not know) and returns its hash.
    pub async fn append_raw(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        sequence: i64,
        payload: &Value,
        prev: &Hash,
    ) -> Hash {
        let metadata =
            json!({ "actor_id": self.actor.account_id.to_string(), "actor_role": "admin" });
        let content = EventContent {
            aggregate_type,
            aggregate_id,
            sequence,
            event_type: "GizmoTurned",
            event_version: "1",
            payload,
            metadata: &metadata,
        };
        let hash = content.hash(prev).expect("hash");
        match &self.db {
            Db::Postgres(pool) => {
                sqlx::query(
                    "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
                     event_version, payload, metadata, hash) VALUES ($1, $2, $3, 'GizmoTurned', '1', $4, $5, $6)",
                )
                .bind(aggregate_type)
                .bind(aggregate_id)
                .bind(sequence)
                .bind(payload)
                .bind(&metadata)
                .bind(&hash[..])
                .execute(pool)
                .await
                .expect("insert a raw event");
            }
            Db::Sqlite(pool) => {
                sqlx::query(
                    "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
                     event_version, payload, metadata, hash, position) VALUES ($1, $2, $3, 'GizmoTurned', '1', $4, $5, $6, \
                     (SELECT COALESCE(MAX(position), 0) + 1 FROM events))",
                )
                .bind(aggregate_type)
                .bind(aggregate_id)
                .bind(sequence)
                .bind(payload.to_string())
                .bind(metadata.to_string())
                .bind(&hash[..])
                .execute(pool)
                .await
                .expect("insert a raw event");
            }
        }
        hash
    }

    /// Runs `kabinet-replay --database-url <this> ARGS`.
    pub async fn run(&self, args: &[&str]) -> Run {
        run_with(&self.tool, &self.url, args, &[]).await
    }

    /// Runs the tool with extra environment variables.
    pub async fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        run_with(&self.tool, &self.url, args, env).await
    }
}

/// The outcome of one run of the tool.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Stdout as one JSON document.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {}\nstderr: {}",
                self.stdout, self.stderr
            )
        })
    }

    /// Asserts the exit code, showing the output when it differs.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "exit code {} (wanted {code})\nstdout: {}\nstderr: {}",
            self.code, self.stdout, self.stderr
        );
        self
    }
}

/// Runs the tool `binary` against `url`, with none of its settings inherited
/// from the environment but those in `env`.
pub async fn run_with(binary: &str, url: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = tokio::process::Command::new(binary);
    command
        // Usage lines name the tool as its users know it.
        .arg0("kabinet-replay")
        .arg("--database-url")
        .arg(url)
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("KABINET_EXPORT_KEY")
        .env_remove("KABINET_TOKEN")
        .env_remove("KABINET_JWT_SECRET");
    for (k, v) in env {
        command.env(k, v);
    }
    let output = command.output().await.expect("run kabinet-replay");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Parses a digest printed by the tool (used to check its shape).
pub fn digest_position(digest: &str) -> i64 {
    let (hash, position) = digest.trim().split_once('@').expect("HASH@POSITION");
    assert_eq!(hash.len(), 64, "hash of {digest}");
    i64::from_str(position).expect("position")
}
