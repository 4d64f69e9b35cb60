//! The global reader: committed events in an order that never skips one.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::Row;

use super::chain::hash_from_slice;
use super::{JournalError, JournalOrder, RecordedEvent};
use crate::db::Db;

/// Events after `$1/$2` whose writing transaction is below the snapshot horizon:
/// every transaction below it has finished, so nothing can later appear before
/// the last event returned.
///
/// ORDER BY names `events.tx_id`: a bare `tx_id` would mean the output column
/// `tx_id::text::bigint` (PostgreSQL names a cast after its column), which no
/// index provides, and every batch would sort the whole rest of the journal.
const PG_READ_AFTER: &str =
    "SELECT position, tx_id::text::bigint, recorded_at, aggregate_type, aggregate_id, \
     sequence, event_type, event_version, payload, metadata, hash FROM events \
     WHERE (tx_id, position) > ($1::bigint::text::xid8, $2) \
       AND tx_id < pg_snapshot_xmin(pg_current_snapshot()) \
     ORDER BY events.tx_id, events.position LIMIT $3";

/// Whether committed events exist after `$1/$2` that the horizon still holds back.
const PG_PENDING_AFTER: &str = "SELECT EXISTS (SELECT 1 FROM events \
     WHERE (tx_id, position) > ($1::bigint::text::xid8, $2))";

const SQLITE_READ_AFTER: &str =
    "SELECT position, position, recorded_at, aggregate_type, aggregate_id, \
     sequence, event_type, event_version, payload, metadata, hash FROM events \
     WHERE position > $2 AND $1 = $1 ORDER BY position LIMIT $3";

/// Reads the journal in global order.
#[derive(Clone)]
pub struct JournalReader {
    db: Db,
}

impl JournalReader {
    pub(super) fn new(db: Db) -> Self {
        JournalReader { db }
    }

    /// Up to `limit` events after `after`, in global order.
    pub async fn read_after(
        &self,
        after: JournalOrder,
        limit: i64,
    ) -> Result<Vec<RecordedEvent>, JournalError> {
        match &self.db {
            Db::Postgres(pool) => {
                let mut conn = pool.acquire().await?;
                read_after_pg(&mut conn, after, limit).await
            }
            Db::Sqlite(pool) => {
                let mut conn = pool.acquire().await?;
                read_after_sqlite(&mut conn, after, limit).await
            }
        }
    }
}

/// [`JournalReader::read_after`] on a PostgreSQL connection or transaction.
pub async fn read_after_pg(
    conn: &mut sqlx::PgConnection,
    after: JournalOrder,
    limit: i64,
) -> Result<Vec<RecordedEvent>, JournalError> {
    let rows = sqlx::query(PG_READ_AFTER)
        .bind(after.tx)
        .bind(after.position)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|row| {
            let payload: Value = row.try_get(8)?;
            let metadata: Value = row.try_get(9)?;
            recorded(row, payload, metadata)
        })
        .collect()
}

/// Whether events after `after` are committed but still above the horizon.
pub async fn pending_after_pg(
    conn: &mut sqlx::PgConnection,
    after: JournalOrder,
) -> Result<bool, JournalError> {
    Ok(sqlx::query_scalar(PG_PENDING_AFTER)
        .bind(after.tx)
        .bind(after.position)
        .fetch_one(&mut *conn)
        .await?)
}

/// [`JournalReader::read_after`] on a SQLite connection or transaction.
pub async fn read_after_sqlite(
    conn: &mut sqlx::SqliteConnection,
    after: JournalOrder,
    limit: i64,
) -> Result<Vec<RecordedEvent>, JournalError> {
    let rows = sqlx::query(SQLITE_READ_AFTER)
        .bind(after.tx)
        .bind(after.position)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|row| {
            let payload = parse_json(row, 8, "payload")?;
            let metadata = parse_json(row, 9, "metadata")?;
            recorded(row, payload, metadata)
        })
        .collect()
}

fn parse_json(
    row: &sqlx::sqlite::SqliteRow,
    index: usize,
    what: &str,
) -> Result<Value, JournalError> {
    let text: &str = row.try_get(index)?;
    serde_json::from_str(text).map_err(|e| JournalError::Malformed {
        aggregate_type: row.try_get(3).unwrap_or_default(),
        aggregate_id: row.try_get(4).unwrap_or_default(),
        sequence: row.try_get(5).unwrap_or_default(),
        reason: format!("{what}: {e}"),
    })
}

fn recorded<R: Row>(row: &R, payload: Value, metadata: Value) -> Result<RecordedEvent, JournalError>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> DateTime<Utc>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let aggregate_type: String = row.try_get(3)?;
    let aggregate_id: String = row.try_get(4)?;
    let sequence: i64 = row.try_get(5)?;
    let hash: Vec<u8> = row.try_get(10)?;
    let hash = hash_from_slice(&hash).ok_or_else(|| JournalError::Malformed {
        aggregate_type: aggregate_type.clone(),
        aggregate_id: aggregate_id.clone(),
        sequence,
        reason: "hash is not 32 bytes".into(),
    })?;
    Ok(RecordedEvent {
        order: JournalOrder {
            position: row.try_get(0)?,
            tx: row.try_get(1)?,
        },
        recorded_at: row.try_get(2)?,
        aggregate_type,
        aggregate_id,
        sequence,
        event_type: row.try_get(6)?,
        event_version: row.try_get(7)?,
        payload,
        metadata,
        hash,
    })
}
