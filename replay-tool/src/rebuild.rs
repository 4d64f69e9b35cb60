//! `rebuild`: replay the journal into fresh read models and swap them in while
//! the server keeps serving, or (`--check`) into a temporary shadow compared
//! row by row with the live table.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use futures::TryStreamExt;
use kabinet_domain::journal::{read_after_pg, read_after_sqlite};
use kabinet_domain::{Backend, Db, Journal, JournalOrder};
use kabinet_projections::{all_projections, rebuild, Projection, ProjectionTx};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use sqlx::pool::PoolConnection;
use sqlx::{Connection, Postgres};

use crate::cli::RebuildArgs;
use crate::progress::Bar;
use crate::rows::{
    pg_columns, pg_pairs, pg_select_list, pg_unique_key, quote, sqlite_columns, sqlite_pairs,
    sqlite_unique_key, ColumnInfo,
};
use crate::source::{last_position, sqlite_path};

/// The PostgreSQL session advisory lock every `kabinet-replay rebuild` holds.
pub fn rebuild_lock_key() -> i64 {
    let digest = Sha256::digest(b"kabinet-replay rebuild");
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

/// Held for a whole run so that two rebuilds never run side by side.
///
/// PostgreSQL: a session advisory lock on a connection kept open for the run
/// (released by the server if the tool dies). SQLite: an exclusive OS file lock
/// (`flock`) on `<database>-rebuild.lock` next to the database file, released
/// by the kernel if the tool dies; the empty lock file stays behind.
pub enum RebuildLock {
    Postgres(PoolConnection<Postgres>),
    Sqlite(File),
}

impl RebuildLock {
    /// Takes the lock, or explains that another rebuild holds it.
    pub async fn acquire(db: &Db, url: &str) -> anyhow::Result<RebuildLock> {
        match db {
            Db::Postgres(pool) => {
                let mut conn = pool.acquire().await?;
                let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                    .bind(rebuild_lock_key())
                    .fetch_one(&mut *conn)
                    .await?;
                if !taken {
                    bail!("another rebuild is running on this database; try again when it has finished");
                }
                Ok(RebuildLock::Postgres(conn))
            }
            Db::Sqlite(_) => {
                let path =
                    sqlite_path(url).ok_or_else(|| anyhow!("no database file in the URL"))?;
                let mut name = path.clone().into_os_string();
                name.push("-rebuild.lock");
                let lock_path = PathBuf::from(name);
                let file = OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&lock_path)
                    .with_context(|| {
                        format!("cannot open the lock file {}", lock_path.display())
                    })?;
                match file.try_lock() {
                    Ok(()) => Ok(RebuildLock::Sqlite(file)),
                    Err(std::fs::TryLockError::WouldBlock) => bail!(
                        "another rebuild is running on this database (it holds {}); try again when it has finished",
                        lock_path.display()
                    ),
                    Err(std::fs::TryLockError::Error(e)) => {
                        Err(e).with_context(|| format!("cannot lock {}", lock_path.display()))
                    }
                }
            }
        }
    }

    /// Releases the lock.
    pub async fn release(self) {
        match self {
            RebuildLock::Postgres(mut conn) => {
                let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                    .bind(rebuild_lock_key())
                    .execute(&mut *conn)
                    .await;
            }
            RebuildLock::Sqlite(file) => {
                let _ = file.unlock();
            }
        }
    }
}

fn selected(args: &RebuildArgs) -> anyhow::Result<Vec<Arc<dyn Projection>>> {
    let all = all_projections();
    match &args.projection {
        Some(name) => {
            let names: Vec<&str> = all.iter().map(|p| p.name()).collect();
            let found = all.iter().find(|p| p.name() == name.as_str()).cloned();
            found.map(|p| vec![p]).ok_or_else(|| {
                anyhow!(
                    "no projection named '{name}'; the projections are: {}",
                    names.join(", ")
                )
            })
        }
        None => Ok(all),
    }
}

/// Runs `rebuild`: exit 0 done (or no differences), 1 differences found.
pub async fn run(
    db: &Db,
    url: &str,
    args: &RebuildArgs,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let projections = selected(args)?;
    let lock = RebuildLock::acquire(db, url).await?;
    let outcome = if args.check {
        check_all(db, &projections, args.batch_size, as_json).await
    } else {
        swap_all(db, &projections, args.batch_size, as_json).await
    };
    lock.release().await;
    outcome
}

async fn swap_all(
    db: &Db,
    projections: &[Arc<dyn Projection>],
    batch_size: i64,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let journal = Journal::new(db.clone());
    let mut results = Vec::new();
    for projection in projections {
        let name = projection.name();
        let started = Instant::now();
        let watcher = watch_progress(db.clone(), name);
        let report = rebuild(&journal, Arc::clone(projection), batch_size).await;
        watcher.abort();
        let _ = watcher.await;
        let report = report.with_context(|| {
            format!("rebuilding {name} failed; the live read model is unchanged")
        })?;
        let seconds = started.elapsed().as_secs_f64();
        let rate = report.events_applied as f64 / seconds.max(1e-9);
        if !as_json {
            println!(
                "rebuilt {name}: {} events in {seconds:.2}s ({rate:.0} events/s), now at position {}",
                report.events_applied, report.checkpoint.position
            );
        }
        results.push(json!({
            "projection": name,
            "events": report.events_applied,
            "seconds": seconds,
            "events_per_second": rate,
            "position": report.checkpoint.position,
        }));
    }
    if as_json {
        println!("{}", json!({ "rebuilt": results }));
    }
    Ok(ExitCode::SUCCESS)
}

/// Shows the rebuild's progress from its shadow checkpoint (`<name>#rebuild`,
/// written by `kabinet_projections::rebuild` with each batch).
fn watch_progress(db: Db, name: &'static str) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut bar = Bar::new(format!("rebuilding {name}"));
        let total = last_position(&db).await.unwrap_or(0).max(0) as u64;
        let checkpoint = format!("{name}#rebuild");
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            const SQL: &str = "SELECT position FROM projection_checkpoints WHERE name = $1";
            let at: Result<Option<i64>, sqlx::Error> = kabinet_domain::on_db!(&db, pool => {
                sqlx::query_scalar(SQL).bind(&checkpoint).fetch_optional(pool).await
            });
            if let Ok(Some(at)) = at {
                bar.set(at.max(0) as u64, total);
            }
        }
    })
}

/// Differences between a rebuilt shadow and the live table.
#[derive(Debug, Default)]
struct Differences {
    missing: u64,
    extra: u64,
    changed: u64,
}

impl Differences {
    fn total(&self) -> u64 {
        self.missing + self.extra + self.changed
    }
}

/// Where differences go: text lines, or the elements of a JSON array.
struct Sink {
    as_json: bool,
    first: bool,
}

impl Sink {
    fn emit(&mut self, projection: &str, kind: &str, detail: Value) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        if self.as_json {
            if !self.first {
                out.write_all(b",")?;
            }
            let mut item = json!({ "projection": projection, "kind": kind });
            if let (Some(item), Value::Object(detail)) = (item.as_object_mut(), detail) {
                item.extend(detail);
            }
            serde_json::to_writer(&mut out, &item)?;
        } else {
            writeln!(out, "{projection}: {kind} {detail}")?;
        }
        self.first = false;
        Ok(())
    }
}

async fn check_all(
    db: &Db,
    projections: &[Arc<dyn Projection>],
    batch_size: i64,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let mut sink = Sink {
        as_json,
        first: true,
    };
    if as_json {
        print!("{{\"differences\":[");
    }
    let mut summaries = Vec::new();
    let mut any = false;
    for projection in projections {
        let (differences, rows, at) = match db {
            Db::Postgres(pool) => {
                let mut conn = pool.acquire().await?;
                check_pg(&mut conn, projection.as_ref(), batch_size, &mut sink).await?
            }
            Db::Sqlite(pool) => {
                let mut conn = pool.acquire().await?;
                check_sqlite(&mut conn, projection.as_ref(), batch_size, &mut sink).await?
            }
        };
        any |= differences.total() > 0;
        if !as_json {
            println!(
                "{}: {} ({} rows at position {}; {} missing, {} extra, {} changed)",
                projection.name(),
                if differences.total() == 0 {
                    "identical"
                } else {
                    "DIFFERENT"
                },
                rows,
                at.position,
                differences.missing,
                differences.extra,
                differences.changed
            );
        }
        summaries.push(json!({
            "projection": projection.name(),
            "identical": differences.total() == 0,
            "rows": rows,
            "position": at.position,
            "missing": differences.missing,
            "extra": differences.extra,
            "changed": differences.changed,
        }));
    }
    if as_json {
        println!(
            "],\"projections\":{},\"identical\":{}}}",
            Value::Array(summaries),
            !any
        );
    }
    Ok(if any {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// DDL of the check shadow: the projection's own statements, its table made temporary.
fn temporary_ddl(
    projection: &dyn Projection,
    backend: Backend,
    shadow: &str,
) -> anyhow::Result<Vec<String>> {
    let mut statements = Vec::new();
    for statement in projection.create_table(backend, shadow) {
        let trimmed = statement.trim_start();
        let Some(rest) = trimmed
            .get(..12)
            .filter(|head| head.eq_ignore_ascii_case("CREATE TABLE"))
            .map(|_| &trimmed[12..])
        else {
            bail!(
                "cannot check {}: its table statement is not a plain CREATE TABLE",
                projection.name()
            );
        };
        statements.push(format!("CREATE TEMPORARY TABLE{rest}"));
    }
    // Indexes on a temporary table are temporary too; upserts need the unique ones.
    statements.extend(projection.create_indexes(backend, shadow));
    Ok(statements)
}

fn shadow_name(projection: &dyn Projection) -> String {
    format!("{}__check", projection.name())
}

/// The live checkpoint of a projection, read with the connection's snapshot.
const CHECKPOINT: &str = "SELECT tx_id, position FROM projection_checkpoints WHERE name = $1";

/// Key equality and full-row equality conditions between aliases `s` and `l`.
fn conditions(backend: Backend, columns: &[ColumnInfo], key: &[String]) -> (String, String) {
    let same = match backend {
        Backend::Postgres => "IS NOT DISTINCT FROM",
        Backend::Sqlite => "IS",
    };
    let eq = |name: &str| format!("s.{0} {same} l.{0}", quote(name));
    let key_eq = key.iter().map(|k| eq(k)).collect::<Vec<_>>().join(" AND ");
    let all_eq = columns
        .iter()
        .map(|c| eq(&c.name))
        .collect::<Vec<_>>()
        .join(" AND ");
    (key_eq, all_eq)
}

/// The three difference queries: rows only in the shadow, only live, and
/// rows present in both (by key) whose columns differ. Without a unique key,
/// rows are compared whole and none count as changed.
fn difference_queries(
    backend: Backend,
    live: &str,
    shadow: &str,
    columns: &[ColumnInfo],
    key: &[String],
) -> [(&'static str, String); 3] {
    let list = |alias: &str| match backend {
        Backend::Postgres => pg_select_list(columns, Some(alias)),
        Backend::Sqlite => columns
            .iter()
            .map(|c| format!("{alias}.{}", quote(&c.name)))
            .collect::<Vec<_>>()
            .join(", "),
    };
    let (key_eq, all_eq) = conditions(backend, columns, key);
    let matching = if key.is_empty() { &all_eq } else { &key_eq };
    let (live, shadow) = (quote(live), quote(shadow));
    [
        (
            "missing",
            format!(
                "SELECT {} FROM {shadow} s WHERE NOT EXISTS (SELECT 1 FROM {live} l WHERE {matching})",
                list("s")
            ),
        ),
        (
            "extra",
            format!(
                "SELECT {} FROM {live} l WHERE NOT EXISTS (SELECT 1 FROM {shadow} s WHERE {matching})",
                list("l")
            ),
        ),
        (
            "changed",
            if key.is_empty() {
                format!("SELECT {} FROM {shadow} s WHERE 1 = 0", list("s"))
            } else {
                format!(
                    "SELECT {}, {} FROM {shadow} s JOIN {live} l ON {key_eq} WHERE NOT ({all_eq})",
                    list("s"),
                    list("l")
                )
            },
        ),
    ]
}

/// The JSON detail of one difference: the row, or for a changed row both
/// versions and the columns that differ.
fn describe(kind: &str, pairs: Vec<(String, Value)>, width: usize) -> Value {
    let object =
        |pairs: &[(String, Value)]| -> Map<String, Value> { pairs.iter().cloned().collect() };
    if kind == "changed" && pairs.len() == 2 * width {
        let (rebuilt, live) = pairs.split_at(width);
        let columns: Vec<&str> = rebuilt
            .iter()
            .zip(live)
            .filter(|(a, b)| a.1 != b.1)
            .map(|(a, _)| a.0.as_str())
            .collect();
        json!({ "columns": columns, "live": object(live), "rebuilt": object(rebuilt) })
    } else {
        json!({ "row": object(&pairs) })
    }
}

fn count(differences: &mut Differences, kind: &str) {
    match kind {
        "missing" => differences.missing += 1,
        "extra" => differences.extra += 1,
        _ => differences.changed += 1,
    }
}

async fn check_pg(
    conn: &mut sqlx::PgConnection,
    projection: &dyn Projection,
    batch_size: i64,
    sink: &mut Sink,
) -> anyhow::Result<(Differences, u64, JournalOrder)> {
    let live = projection.name();
    let shadow = shadow_name(projection);
    if pg_columns(conn, live).await?.is_empty() {
        bail!("projection {live} has no live table to check (has the server run it?)");
    }
    sqlx::query(&format!("DROP TABLE IF EXISTS pg_temp.{}", quote(&shadow)))
        .execute(&mut *conn)
        .await?;
    for statement in temporary_ddl(projection, Backend::Postgres, &shadow)? {
        sqlx::query(&statement).execute(&mut *conn).await?;
    }
    let result = async {
        // Catch up to where the live table was when we started, batch by batch.
        let target = checkpoint_pg(conn, live).await?;
        let mut at = JournalOrder::START;
        let mut bar = Bar::new(format!("checking {live}"));
        loop {
            let mut tx = conn.begin().await?;
            let (n, last) = apply_pg(&mut tx, projection, &shadow, at, target, batch_size).await?;
            tx.commit().await?;
            at = last;
            bar.set(at.position.max(0) as u64, target.position.max(0) as u64);
            if n == 0 || at >= target {
                break;
            }
        }
        bar.finish();
        // Then, in one snapshot, the live table, its checkpoint and the last
        // events up to that checkpoint: a consistent comparison while the
        // live projection keeps running.
        let mut tx = conn.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .execute(&mut *tx)
            .await?;
        let target = checkpoint_pg(&mut tx, live).await?;
        loop {
            let (n, last) = apply_pg(&mut tx, projection, &shadow, at, target, batch_size).await?;
            at = last;
            if n == 0 || at >= target {
                break;
            }
        }
        let columns = pg_columns(&mut tx, live).await?;
        let key = pg_unique_key(&mut tx, live).await?;
        let mut differences = Differences::default();
        for (kind, sql) in difference_queries(Backend::Postgres, live, &shadow, &columns, &key) {
            let mut rows = sqlx::query(&sql).fetch(&mut *tx);
            while let Some(row) = rows.try_next().await? {
                let detail = describe(kind, pg_pairs(&row), columns.len());
                sink.emit(live, kind, detail)?;
                count(&mut differences, kind);
            }
        }
        let rows: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {}", quote(live)))
            .fetch_one(&mut *tx)
            .await?;
        tx.rollback().await?;
        Ok::<_, anyhow::Error>((differences, rows.max(0) as u64, target))
    }
    .await;
    let _ = sqlx::query(&format!("DROP TABLE IF EXISTS pg_temp.{}", quote(&shadow)))
        .execute(&mut *conn)
        .await;
    result
}

async fn checkpoint_pg(conn: &mut sqlx::PgConnection, live: &str) -> anyhow::Result<JournalOrder> {
    let row: Option<(i64, i64)> = sqlx::query_as(CHECKPOINT)
        .bind(live)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(
        row.map_or(JournalOrder::START, |(tx, position)| JournalOrder {
            tx,
            position,
        }),
    )
}

/// Applies the events after `at` up to `target` (at most one batch) to `shadow`.
async fn apply_pg(
    conn: &mut sqlx::PgConnection,
    projection: &dyn Projection,
    shadow: &str,
    at: JournalOrder,
    target: JournalOrder,
    batch_size: i64,
) -> anyhow::Result<(usize, JournalOrder)> {
    if at >= target {
        return Ok((0, at));
    }
    let mut events = read_after_pg(conn, at, batch_size).await?;
    events.retain(|e| e.order <= target);
    let Some(last) = events.last().map(|e| e.order) else {
        return Ok((0, at));
    };
    projection
        .apply(&mut ProjectionTx::Postgres(conn), shadow, &events)
        .await?;
    Ok((events.len(), last))
}

async fn check_sqlite(
    conn: &mut sqlx::SqliteConnection,
    projection: &dyn Projection,
    batch_size: i64,
    sink: &mut Sink,
) -> anyhow::Result<(Differences, u64, JournalOrder)> {
    let live = projection.name();
    let shadow = shadow_name(projection);
    const LIVE_EXISTS: &str =
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = $1";
    let exists: i64 = sqlx::query_scalar(LIVE_EXISTS)
        .bind(live)
        .fetch_one(&mut *conn)
        .await?;
    if exists == 0 {
        bail!("projection {live} has no live table to check (has the server run it?)");
    }
    sqlx::query(&format!("DROP TABLE IF EXISTS temp.{}", quote(&shadow)))
        .execute(&mut *conn)
        .await?;
    for statement in temporary_ddl(projection, Backend::Sqlite, &shadow)? {
        sqlx::query(&statement).execute(&mut *conn).await?;
    }
    let result = async {
        let target = checkpoint_sqlite(conn, live).await?;
        let mut at = JournalOrder::START;
        let mut bar = Bar::new(format!("checking {live}"));
        loop {
            let mut tx = conn.begin().await?;
            let (n, last) =
                apply_sqlite(&mut tx, projection, &shadow, at, target, batch_size).await?;
            tx.commit().await?;
            at = last;
            bar.set(at.position.max(0) as u64, target.position.max(0) as u64);
            if n == 0 || at >= target {
                break;
            }
        }
        bar.finish();
        // One read transaction is one snapshot of the live table and its
        // checkpoint (WAL); writing the temporary shadow takes no lock on them.
        let mut tx = conn.begin().await?;
        let target = checkpoint_sqlite(&mut tx, live).await?;
        loop {
            let (n, last) =
                apply_sqlite(&mut tx, projection, &shadow, at, target, batch_size).await?;
            at = last;
            if n == 0 || at >= target {
                break;
            }
        }
        let columns = sqlite_columns(&mut tx, live).await?;
        let key = sqlite_unique_key(&mut tx, live).await?;
        let mut differences = Differences::default();
        for (kind, sql) in difference_queries(Backend::Sqlite, live, &shadow, &columns, &key) {
            let mut rows = sqlx::query(&sql).fetch(&mut *tx);
            while let Some(row) = rows.try_next().await? {
                let detail = describe(kind, sqlite_pairs(&row), columns.len());
                sink.emit(live, kind, detail)?;
                count(&mut differences, kind);
            }
        }
        let rows: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {}", quote(live)))
            .fetch_one(&mut *tx)
            .await?;
        tx.rollback().await?;
        Ok::<_, anyhow::Error>((differences, rows.max(0) as u64, target))
    }
    .await;
    let _ = sqlx::query(&format!("DROP TABLE IF EXISTS temp.{}", quote(&shadow)))
        .execute(&mut *conn)
        .await;
    result
}

async fn checkpoint_sqlite(
    conn: &mut sqlx::SqliteConnection,
    live: &str,
) -> anyhow::Result<JournalOrder> {
    let row: Option<(i64, i64)> = sqlx::query_as(CHECKPOINT)
        .bind(live)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(
        row.map_or(JournalOrder::START, |(tx, position)| JournalOrder {
            tx,
            position,
        }),
    )
}

async fn apply_sqlite(
    conn: &mut sqlx::SqliteConnection,
    projection: &dyn Projection,
    shadow: &str,
    at: JournalOrder,
    target: JournalOrder,
    batch_size: i64,
) -> anyhow::Result<(usize, JournalOrder)> {
    if at >= target {
        return Ok((0, at));
    }
    let mut events = read_after_sqlite(conn, at, batch_size).await?;
    events.retain(|e| e.order <= target);
    let Some(last) = events.last().map(|e| e.order) else {
        return Ok((0, at));
    };
    projection
        .apply(&mut ProjectionTx::Sqlite(conn), shadow, &events)
        .await?;
    Ok((events.len(), last))
}
