//! A fresh, migrated database per test: a temporary SQLite file, or a new
//! PostgreSQL database that is dropped again when the test ends.

use std::str::FromStr;
use std::time::Duration;

use kabinet_domain::command::CommandRunner;
use kabinet_domain::db::PoolOptions;
use kabinet_domain::{Db, Journal};
use sqlx::Connection;
use uuid::Uuid;

/// Environment variable naming the PostgreSQL server the tests create databases on.
pub const PG_URL_ENV: &str = "KABINET_TEST_PG_URL";

const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Set to keep test databases for inspection instead of dropping them.
const KEEP_ENV: &str = "KABINET_TEST_KEEP_DB";

/// Which backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestBackend {
    Sqlite,
    Postgres,
}

impl FromStr for TestBackend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sqlite" => Ok(TestBackend::Sqlite),
            "postgres" | "postgresql" => Ok(TestBackend::Postgres),
            other => Err(format!("unknown backend '{other}': use sqlite or postgres")),
        }
    }
}

/// A fresh database, migrated, with one journal shared by the test's in-process writers.
pub struct TestDb {
    /// The URL other processes (servers, writers) connect with.
    pub url: String,
    pub db: Db,
    /// The journal every in-process writer of the test shares, as one server does.
    pub journal: Journal,
    pub backend: TestBackend,
    /// Keeps the SQLite file's directory alive.
    _dir: Option<tempfile::TempDir>,
    /// The PostgreSQL database to drop, and the server URL to drop it from.
    pg_drop: Option<(String, String)>,
}

impl TestDb {
    /// A fresh database of `backend` with a pool of up to 10 connections.
    ///
    /// When PostgreSQL is unreachable this prints `SKIPPED (...)` to stderr and
    /// returns `None`, except under CI (`CI=true`), where it panics: a suite that
    /// silently skips its production backend proves nothing.
    pub async fn fresh(backend: TestBackend) -> Option<TestDb> {
        Self::fresh_with(
            backend,
            PoolOptions {
                max_connections: 10,
                acquire_timeout: Duration::from_secs(60),
            },
        )
        .await
    }

    /// [`TestDb::fresh`] with explicit pool options.
    pub async fn fresh_with(backend: TestBackend, pool: PoolOptions) -> Option<TestDb> {
        match backend {
            TestBackend::Sqlite => Some(Self::fresh_sqlite(pool).await),
            TestBackend::Postgres => Self::fresh_postgres(pool).await,
        }
    }

    async fn fresh_sqlite(pool: PoolOptions) -> TestDb {
        let dir = tempfile::Builder::new()
            .prefix("kabinet-test-")
            .tempdir()
            .expect("create a temporary directory");
        let url = format!("sqlite://{}", dir.path().join("kabinet.db").display());
        let db = Db::connect(&url, &pool)
            .await
            .expect("open the SQLite test database");
        db.migrate()
            .await
            .expect("migrate the SQLite test database");
        TestDb {
            url,
            journal: Journal::new(db.clone()),
            db,
            backend: TestBackend::Sqlite,
            _dir: Some(dir),
            pg_drop: None,
        }
    }

    async fn fresh_postgres(pool: PoolOptions) -> Option<TestDb> {
        let admin_url = std::env::var(PG_URL_ENV).unwrap_or_else(|_| DEFAULT_PG_URL.to_string());
        let shown = kabinet_domain::db::redact_url(&admin_url);
        let name = format!("kabinet_test_{}", Uuid::new_v4().simple());
        if let Err(reason) = create_pg_database(&admin_url, &name).await {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("PostgreSQL tests cannot run under CI: PostgreSQL is not usable at {shown} ({PG_URL_ENV}): {reason}");
            }
            eprintln!("SKIPPED (PostgreSQL not reachable at {shown}): {reason}");
            return None;
        }
        let url = with_database(&admin_url, &name);
        // From here on the database exists: a failure below still drops it.
        let mut guard = PgDropGuard(Some((admin_url.clone(), name.clone())));
        let db = Db::connect(&url, &pool)
            .await
            .expect("connect to the fresh PostgreSQL test database");
        db.migrate()
            .await
            .expect("migrate the PostgreSQL test database");
        Some(TestDb {
            url,
            journal: Journal::new(db.clone()),
            db,
            backend: TestBackend::Postgres,
            _dir: None,
            pg_drop: guard.0.take(),
        })
    }

    /// A command service over the test's shared journal.
    pub fn commands(&self) -> CommandRunner {
        CommandRunner::new(self.journal.clone())
    }

    /// A second, independent pool on the same database, as another process would open.
    pub async fn connect_again(&self, max_connections: u32) -> Db {
        let options = PoolOptions {
            max_connections,
            acquire_timeout: Duration::from_secs(60),
        };
        Db::connect(&self.url, &options)
            .await
            .expect("connect to the test database again")
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

    /// One integer from a query with `$n` parameters.
    pub async fn scalar(&self, sql: &str, params: &[i64]) -> i64 {
        kabinet_domain::on_db!(&self.db, pool => {
            let mut q = sqlx::query_scalar::<_, i64>(sql);
            for p in params {
                q = q.bind(*p);
            }
            q.fetch_one(pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
        })
    }

    /// The global position of event `sequence` of the stream `aggregate_type/id`.
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

    /// The recording time of the event at `position`, as RFC 3339.
    pub async fn recorded_at(&self, position: i64) -> String {
        const SQL: &str = "SELECT recorded_at FROM events WHERE position = $1";
        let at: chrono::DateTime<chrono::Utc> = kabinet_domain::on_db!(&self.db, pool => {
            sqlx::query_scalar(SQL).bind(position).fetch_one(pool).await.expect("recorded_at")
        });
        at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    }

    /// A fingerprint of everything in the database: its tables and their row counts.
    pub async fn fingerprint(&self) -> Vec<(String, i64)> {
        let tables_sql = match self.backend {
            TestBackend::Sqlite => {
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            }
            TestBackend::Postgres => {
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

    /// Closes the pool and removes the database now (otherwise done on drop).
    pub async fn cleanup(mut self) {
        self.db.close().await;
        if let Some((admin_url, name)) = self.pg_drop.take() {
            if let Err(e) = drop_pg_database(&admin_url, &name).await {
                eprintln!("warning: cannot drop test database {name}: {e}");
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(target) = self.pg_drop.take() {
            drop_in_background(target);
        }
    }
}

/// Drops a database whose creation succeeded but whose set-up failed.
struct PgDropGuard(Option<(String, String)>);

impl Drop for PgDropGuard {
    fn drop(&mut self) {
        if let Some(target) = self.0.take() {
            drop_in_background(target);
        }
    }
}

/// Drops the database from a thread with its own runtime: `Drop` cannot await,
/// and the test's runtime may be shutting down. `WITH (FORCE)` ends the pool's
/// remaining connections server-side. Waits a bounded time for the outcome.
fn drop_in_background((admin_url, name): (String, String)) {
    let (done, outcome) = std::sync::mpsc::channel();
    let thread_name = name.clone();
    let spawned = std::thread::Builder::new()
        .name("drop-test-db".into())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
                .and_then(|rt| rt.block_on(drop_pg_database(&admin_url, &thread_name)));
            let _ = done.send(result);
        });
    if let Err(e) = spawned {
        eprintln!("warning: cannot drop test database {name}: {e}");
        return;
    }
    match outcome.recv_timeout(Duration::from_secs(30)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("warning: cannot drop test database {name}: {e}"),
        Err(_) => eprintln!("warning: dropping test database {name} did not finish in 30s"),
    }
}

async fn admin_connection(admin_url: &str) -> Result<sqlx::PgConnection, String> {
    match tokio::time::timeout(
        Duration::from_secs(10),
        sqlx::PgConnection::connect(admin_url),
    )
    .await
    {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("connecting timed out after 10s".into()),
    }
}

async fn create_pg_database(admin_url: &str, name: &str) -> Result<(), String> {
    let mut conn = admin_connection(admin_url).await?;
    // `name` is generated here (letters, digits, underscores), so quoting suffices.
    let sql = format!("CREATE DATABASE \"{name}\"");
    let mut attempt = 0;
    loop {
        attempt += 1;
        match sqlx::query(&sql).execute(&mut conn).await {
            Ok(_) => break,
            // Concurrent CREATE DATABASE can briefly collide on the template.
            Err(e) if attempt < 5 => {
                eprintln!("CREATE DATABASE {name} failed ({e}); retrying");
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    let _ = conn.close().await;
    Ok(())
}

async fn drop_pg_database(admin_url: &str, name: &str) -> Result<(), String> {
    if std::env::var_os(KEEP_ENV).is_some() {
        eprintln!("keeping test database {name} ({KEEP_ENV} is set)");
        return Ok(());
    }
    let mut conn = admin_connection(admin_url).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    let _ = conn.close().await;
    Ok(())
}

/// `url` with its database name replaced by `database`, keeping any parameters.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{database}", &base[..path_start]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_name_is_replaced_and_parameters_kept() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "t2"),
            "postgres://u:p@h/t2?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h:5432", "t3"),
            "postgres://h:5432/t3"
        );
    }
}
