//! Opening the journal: read-only unless a command must write, and refusing
//! anything that is not a Kabinet journal.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context};
use kabinet_domain::db::redact_url;
use kabinet_domain::Db;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions, SqliteSynchronous};

/// What a command may do to the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads only; the database refuses writes (SQLite `query_only`,
    /// PostgreSQL `default_transaction_read_only`).
    ReadOnly,
    /// Writes session-private temporary tables only (`rebuild --check`).
    Temporary,
    /// Writes read models (`rebuild`).
    ReadWrite,
}

/// The file behind a `sqlite:` URL.
pub fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

/// Opens the journal at `url` with `access`, and checks that it is a journal.
pub async fn open(url: &str, access: Access) -> anyhow::Result<Db> {
    let shown = redact_url(url);
    let db = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let mut options =
            PgConnectOptions::from_str(url).with_context(|| format!("bad database URL {shown}"))?;
        // No JIT: the tool's queries stream large results, where compiling
        // them costs more than it saves.
        options = options.options([("jit", "off")]);
        if access == Access::ReadOnly {
            options = options.options([("default_transaction_read_only", "on")]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(15))
            .connect_with(options)
            .await
            .with_context(|| format!("cannot connect to {shown}"))?;
        Db::Postgres(pool)
    } else if url.starts_with("sqlite:") {
        let Some(path) = sqlite_path(url) else {
            bail!("{shown} names no database file");
        };
        if !path.is_file() {
            bail!("no database at {}", path.display());
        }
        let mut options = SqliteConnectOptions::from_str(url)
            .with_context(|| format!("bad database URL {shown}"))?
            .create_if_missing(false)
            .busy_timeout(Duration::from_secs(30))
            .synchronous(SqliteSynchronous::Full);
        if access == Access::ReadOnly {
            options = options.pragma("query_only", "ON");
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(15))
            .connect_with(options)
            .await
            .with_context(|| format!("cannot open {shown}"))?;
        Db::Sqlite(pool)
    } else {
        bail!("unsupported database URL {shown}: use sqlite://PATH or postgres://…");
    };
    for (table, columns) in [
        (
            "events",
            "position, aggregate_type, aggregate_id, sequence, payload, metadata, hash",
        ),
        (
            "seals",
            "seal_no, first_position, last_position, root, prev_hash, hash",
        ),
    ] {
        let probe = format!("SELECT {columns} FROM {table} LIMIT 1");
        let found = kabinet_domain::on_db!(&db, pool => {
            sqlx::query(&probe).fetch_optional(pool).await.map(|_| ())
        });
        if let Err(e) = found {
            db.close().await;
            bail!("{shown} is not a Kabinet journal (no '{table}' table of the journal: {e})");
        }
    }
    Ok(db)
}

/// The last global position in the journal (0 when empty).
pub async fn last_position(db: &Db) -> anyhow::Result<i64> {
    let last: Option<i64> = kabinet_domain::on_db!(db, pool => {
        sqlx::query_scalar("SELECT MAX(position) FROM events").fetch_one(pool).await?
    });
    Ok(last.unwrap_or(0))
}

/// Checks a `--from`/`--to` range against the journal; returns inclusive bounds.
pub async fn position_range(
    db: &Db,
    from: Option<i64>,
    to: Option<i64>,
) -> anyhow::Result<(i64, i64)> {
    let last = last_position(db).await?;
    let from_pos = from.unwrap_or(1);
    let to_pos = to.unwrap_or(last.max(1));
    if from_pos < 1 || to_pos < 1 {
        bail!("positions start at 1");
    }
    for (flag, given) in [("--from", from), ("--to", to)] {
        if let Some(position) = given.filter(|p| *p > last) {
            bail!(
                "{flag} {position} is beyond the end of the journal (its last position is {last})"
            );
        }
    }
    if from_pos > to_pos {
        bail!("--from {from_pos} is after --to {to_pos}");
    }
    Ok((from_pos, to_pos))
}
