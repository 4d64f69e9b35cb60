//! Shared set-up of the `kabinet-replay` tests: a fresh journal per test on
//! SQLite (a temporary file) or PostgreSQL (a new database, dropped after),
//! filled through the command path, and the binary run as a user runs it.

#![allow(dead_code)]

use std::process::Output;
use std::str::FromStr;
use std::time::Duration;

use chrono::NaiveDate;
use kabinet_domain::command::{CommandRunner, Retry};
use kabinet_domain::db::PoolOptions;
use kabinet_domain::directory::{Organisation, OrganisationCommand, OrganisationDetails};
use kabinet_domain::journal::chain::{EventContent, Hash};
use kabinet_domain::journal::Seal;
use kabinet_domain::patients::{Patient, PatientCommand, PatientProfile, Sex};
use kabinet_domain::{Actor, Db, EventMetadata, Journal, Role};
use kabinet_projections::{all_projections, Projector, ProjectorConfig};
use serde_json::{json, Value};
use sqlx::{Connection, Row};
use uuid::Uuid;

pub const PG_URL_ENV: &str = "KABINET_TEST_PG_URL";
const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Declares `mod <name> { sqlite, postgres }` tests running `body(backend)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::common::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::common::Backend::Postgres).await
                }
            }
        )*
    };
}

/// A fresh, migrated journal.
pub struct TestJournal {
    pub url: String,
    pub db: Db,
    pub journal: Journal,
    pub backend: Backend,
    pub commands: CommandRunner,
    /// The account every test command is run as.
    pub actor: Actor,
    _dir: Option<tempfile::TempDir>,
    pg_drop: Option<(String, String)>,
}

fn pool() -> PoolOptions {
    PoolOptions {
        max_connections: 4,
        acquire_timeout: Duration::from_secs(60),
    }
}

impl TestJournal {
    /// A fresh journal, or `None` when PostgreSQL is unreachable outside CI.
    pub async fn fresh(backend: Backend) -> Option<TestJournal> {
        let (url, dir, pg_drop) = match backend {
            Backend::Sqlite => {
                let dir = tempfile::Builder::new()
                    .prefix("kabinet-replay-test-")
                    .tempdir()
                    .expect("temporary directory");
                let url = format!("sqlite://{}", dir.path().join("kabinet.db").display());
                (url, Some(dir), None)
            }
            Backend::Postgres => {
                let admin = std::env::var(PG_URL_ENV).unwrap_or_else(|_| DEFAULT_PG_URL.into());
                let name = format!("kabinet_replay_{}", Uuid::new_v4().simple());
                if let Err(e) = create_database(&admin, &name).await {
                    if std::env::var("CI").as_deref() == Ok("true") {
                        panic!("PostgreSQL is required under CI ({PG_URL_ENV}): {e}");
                    }
                    eprintln!("SKIPPED (PostgreSQL not reachable at {PG_URL_ENV}): {e}");
                    return None;
                }
                (with_database(&admin, &name), None, Some((admin, name)))
            }
        };
        let db = Db::connect(&url, &pool()).await.expect("connect");
        db.migrate().await.expect("migrate");
        let journal = Journal::new(db.clone());
        Some(TestJournal {
            url,
            commands: CommandRunner::new(journal.clone()),
            journal,
            db,
            backend,
            actor: Actor {
                account_id: Uuid::now_v7(),
                role: Role::Admin,
                organisation_id: None,
            },
            _dir: dir,
            pg_drop,
        })
    }

    fn metadata(&self) -> EventMetadata {
        EventMetadata::new(
            self.actor.clone(),
            format!("req-{}", Uuid::new_v4().simple()),
        )
    }

    /// Registers an organisation; one event.
    pub async fn register(&self, name: &str) -> Uuid {
        let id = Uuid::now_v7();
        let details = details(name);
        self.commands
            .execute::<Organisation>(
                &id.to_string(),
                OrganisationCommand::Register(details.clone()),
                &(),
                &self.metadata(),
                &json!({ "name": name }),
                Retry::Never,
            )
            .await
            .expect("register an organisation");
        id
    }

    /// Renames an organisation; one event.
    pub async fn rename(&self, id: Uuid, name: &str) {
        self.commands
            .execute::<Organisation>(
                &id.to_string(),
                OrganisationCommand::UpdateDetails(details(name)),
                &(),
                &self.metadata(),
                &json!({ "name": name }),
                Retry::Never,
            )
            .await
            .expect("update an organisation");
    }

    /// Records a patient profile, acting as the patient; one event.
    pub async fn record_patient(&self, patient: Uuid, surname: &str) {
        let profile = PatientProfile {
            surname: surname.into(),
            first_name: "Анна".into(),
            patronymic: Some("Сергеевна".into()),
            birth_date: NaiveDate::from_ymd_opt(1990, 5, 17).expect("date"),
            sex: Sex::Female,
        };
        let actor = Actor {
            account_id: patient,
            role: Role::Patient,
            organisation_id: None,
        };
        let metadata = EventMetadata::new(actor, "req-patient");
        self.commands
            .execute::<Patient>(
                &patient.to_string(),
                PatientCommand::RecordProfile {
                    profile,
                    today: NaiveDate::from_ymd_opt(2026, 1, 1).expect("date"),
                },
                &(),
                &metadata,
                &json!({ "surname": surname }),
                Retry::Never,
            )
            .await
            .expect("record a patient");
    }

    /// Seals everything written so far, `per_seal` events a seal; returns the newest seal.
    ///
    /// On PostgreSQL the sealer only sees transactions below the cluster-wide
    /// snapshot horizon, which other tests' open transactions hold back for a
    /// moment: wait until every event is sealed.
    pub async fn seal_all(&self, per_seal: i64) -> Seal {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        if self.backend == Backend::Postgres {
            // Wait until every event is below the horizon, so that seals take
            // exactly `per_seal` events each.
            const HIDDEN: &str = "SELECT COUNT(*) FROM events \
                 WHERE tx_id >= pg_snapshot_xmin(pg_current_snapshot())";
            while self.scalar(HIDDEN, &[]).await > 0 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "events stay above the horizon"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        loop {
            while self.journal.seal(per_seal).await.expect("seal").is_some() {}
            let events = self.scalar("SELECT COUNT(*) FROM events", &[]).await;
            let sealed = self
                .scalar(
                    "SELECT CAST(COALESCE(SUM(event_count), 0) AS BIGINT) FROM seals",
                    &[],
                )
                .await;
            if sealed >= events {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "events stay unsealed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
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

    /// Runs one SQL statement (tampering, or fixtures) with `$n` parameters.
    pub async fn exec(&self, sql: &str, params: &[i64]) {
        kabinet_domain::on_db!(&self.db, pool => {
            let mut q = sqlx::query(sql);
            for p in params {
                q = q.bind(*p);
            }
            q.execute(pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        });
    }

    /// One integer from a query.
    pub async fn scalar(&self, sql: &str, params: &[i64]) -> i64 {
        kabinet_domain::on_db!(&self.db, pool => {
            let mut q = sqlx::query_scalar::<_, i64>(sql);
            for p in params {
                q = q.bind(*p);
            }
            q.fetch_one(pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
        })
    }

    /// The position of sequence `sequence` of `organisation/id`.
    pub async fn position_of(&self, aggregate_type: &str, id: &str, sequence: i64) -> i64 {
        const SQL: &str = "SELECT position FROM events \
             WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3";
        kabinet_domain::on_db!(&self.db, pool => {
            sqlx::query_scalar(SQL)
                .bind(aggregate_type)
                .bind(id)
                .bind(sequence)
                .fetch_one(pool)
                .await
                .expect("position of an event")
        })
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

    /// The recording time of the event at `position`, as RFC 3339.
    pub async fn recorded_at(&self, position: i64) -> String {
        const SQL: &str = "SELECT recorded_at FROM events WHERE position = $1";
        let at: chrono::DateTime<chrono::Utc> = kabinet_domain::on_db!(&self.db, pool => {
            sqlx::query_scalar(SQL).bind(position).fetch_one(pool).await.expect("recorded_at")
        });
        at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    }

    /// Swaps the places of two events in the global order.
    pub async fn swap(&self, a: i64, b: i64) {
        match self.backend {
            Backend::Sqlite => {
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
            Backend::Postgres => {
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
            Backend::Sqlite => {
                "UPDATE events SET payload = json_set(payload, '$.OrganisationRegistered.name', 'Forged') WHERE position = $1"
            }
            Backend::Postgres => {
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
        run_with(&self.url, args, &[]).await
    }

    /// Runs the tool with extra environment variables.
    pub async fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        run_with(&self.url, args, env).await
    }

    /// A fingerprint of everything in the database: tables and their row counts.
    pub async fn fingerprint(&self) -> Vec<(String, i64)> {
        let tables_sql = match self.backend {
            Backend::Sqlite => "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name",
            Backend::Postgres => {
                "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
            }
        };
        let tables: Vec<String> = kabinet_domain::on_db!(&self.db, pool => {
            sqlx::query_scalar(tables_sql).fetch_all(pool).await.expect("tables")
        });
        let mut out = Vec::new();
        for table in tables {
            let n = self
                .scalar(&format!("SELECT COUNT(*) FROM \"{table}\""), &[])
                .await;
            out.push((table, n));
        }
        out
    }
}

impl Drop for TestJournal {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.pg_drop.take() {
            // Drop cannot await; a thread with its own runtime drops the database.
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    rt.block_on(async {
                        if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                            let _ = sqlx::query(&format!(
                                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                            ))
                            .execute(&mut conn)
                            .await;
                        }
                    });
                }
            })
            .join();
        }
    }
}

/// Details of an organisation named `name`.
pub fn details(name: &str) -> OrganisationDetails {
    OrganisationDetails {
        name: name.into(),
        region: "Москва".into(),
        address: "ул. Ленина, 1".into(),
        time_zone: "Europe/Moscow".into(),
        working_hours: "Пн–Пт 08:00–20:00".into(),
        departments: vec!["Терапия".into()],
        specialisations: vec!["therapist".into()],
    }
}

async fn create_database(admin: &str, name: &str) -> Result<(), String> {
    let connect = tokio::time::timeout(Duration::from_secs(10), sqlx::PgConnection::connect(admin));
    let mut conn = match connect.await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err("connecting timed out".into()),
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        match sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await
        {
            Ok(_) => return Ok(()),
            // Concurrent CREATE DATABASE may collide on the template briefly.
            Err(_) if attempt < 5 => tokio::time::sleep(Duration::from_millis(200 * attempt)).await,
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// `url` with its database replaced by `database`.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let start = base.find("://").map_or(0, |i| i + 3);
    let path = base[start..].find('/').map_or(base.len(), |i| start + i);
    let mut out = format!("{}/{database}", &base[..path]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
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

/// Runs the binary against `url`.
pub async fn run_with(url: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_kabinet-replay"));
    command
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
    let output: Output = command.output().await.expect("run kabinet-replay");
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
