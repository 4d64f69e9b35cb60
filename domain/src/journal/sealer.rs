//! The sealer: chains event hashes in global order into seal records.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::chain::{hash_from_slice, Hash, SealContent, SealRoot, GENESIS};
use super::{Journal, JournalError, JournalOrder};
use crate::db::Db;

/// Advisory lock key that elects the single sealer among server processes.
pub const SEALER_LOCK_KEY: i64 = 0x4b61_6269_0001;

/// A seal record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seal {
    pub seal_no: i64,
    pub first: JournalOrder,
    pub last: JournalOrder,
    pub event_count: i64,
    pub root: Hash,
    pub prev_hash: Hash,
    pub hash: Hash,
    pub sealed_at: DateTime<Utc>,
}

impl Seal {
    /// The fields the seal hash covers.
    pub fn content(&self) -> SealContent {
        SealContent {
            seal_no: self.seal_no,
            first: (self.first.tx, self.first.position),
            last: (self.last.tx, self.last.position),
            event_count: self.event_count,
            root: self.root,
            prev_hash: self.prev_hash,
        }
    }

    /// The journal digest this seal stands for: `HASH@POSITION`, where POSITION is
    /// the global position of the last event it covers.
    pub fn digest(&self) -> String {
        format!("{}@{}", hex::encode(self.hash), self.last.position)
    }
}

const SEAL_COLUMNS: &str = "seal_no, first_tx, first_position, last_tx, last_position, \
     event_count, root, prev_hash, hash, sealed_at";

const INSERT_SEAL: &str = "INSERT INTO seals \
     (seal_no, first_tx, first_position, last_tx, last_position, event_count, root, prev_hash, hash) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";

/// Event hashes after a place in global order, below the snapshot horizon
/// (`events.tx_id`: see the reader's PG_READ_AFTER for why it is qualified).
const PG_HASHES_AFTER: &str = "SELECT tx_id::text::bigint, position, hash FROM events \
     WHERE (tx_id, position) > ($1::bigint::text::xid8, $2) \
       AND tx_id < pg_snapshot_xmin(pg_current_snapshot()) \
     ORDER BY events.tx_id, events.position LIMIT $3";

const SQLITE_HASHES_AFTER: &str = "SELECT position, position, hash FROM events \
     WHERE position > $2 AND $1 = $1 ORDER BY position LIMIT $3";

pub(crate) fn seal_from_row<R: Row>(row: &R) -> Result<Seal, JournalError>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> DateTime<Utc>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let seal_no: i64 = row.try_get(0)?;
    let hash_at = |i: usize| -> Result<Hash, JournalError> {
        let bytes: Vec<u8> = row.try_get(i)?;
        hash_from_slice(&bytes).ok_or_else(|| JournalError::Malformed {
            aggregate_type: "seal".into(),
            aggregate_id: seal_no.to_string(),
            sequence: seal_no,
            reason: "hash is not 32 bytes".into(),
        })
    };
    Ok(Seal {
        seal_no,
        first: JournalOrder {
            tx: row.try_get(1)?,
            position: row.try_get(2)?,
        },
        last: JournalOrder {
            tx: row.try_get(3)?,
            position: row.try_get(4)?,
        },
        event_count: row.try_get(5)?,
        root: hash_at(6)?,
        prev_hash: hash_at(7)?,
        hash: hash_at(8)?,
        sealed_at: row.try_get(9)?,
    })
}

fn next_seal(previous: Option<&Seal>, hashes: &[(JournalOrder, Vec<u8>)]) -> Option<SealContent> {
    let (first, _) = hashes.first()?;
    let (last, _) = hashes.last()?;
    let mut root = SealRoot::default();
    for (_, hash) in hashes {
        root.push(hash);
    }
    Some(SealContent {
        seal_no: previous.map_or(1, |s| s.seal_no + 1),
        first: (first.tx, first.position),
        last: (last.tx, last.position),
        event_count: root.count(),
        root: root.finish(),
        prev_hash: previous.map_or(GENESIS, |s| s.hash),
    })
}

impl Journal {
    /// The newest seal, whose hash is the journal's digest.
    pub async fn latest_seal(&self) -> Result<Option<Seal>, JournalError> {
        let sql = format!("SELECT {SEAL_COLUMNS} FROM seals ORDER BY seal_no DESC LIMIT 1");
        crate::on_db!(self.db(), pool => {
            let row = sqlx::query(&sql).fetch_optional(pool).await?;
            row.as_ref().map(seal_from_row).transpose()
        })
    }

    /// Seals up to `max_events` events not yet sealed. Returns the new seal, or
    /// `None` when there was nothing to seal or another process is the sealer.
    pub async fn seal(&self, max_events: i64) -> Result<Option<Seal>, JournalError> {
        let select_last = format!("SELECT {SEAL_COLUMNS} FROM seals ORDER BY seal_no DESC LIMIT 1");
        let content = match self.db() {
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let leader: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
                    .bind(SEALER_LOCK_KEY)
                    .fetch_one(&mut *tx)
                    .await?;
                if !leader {
                    return Ok(None);
                }
                let last = sqlx::query(&select_last).fetch_optional(&mut *tx).await?;
                let last = last.as_ref().map(seal_from_row).transpose()?;
                let after = last.as_ref().map_or(JournalOrder::START, |s| s.last);
                let rows = sqlx::query(PG_HASHES_AFTER)
                    .bind(after.tx)
                    .bind(after.position)
                    .bind(max_events)
                    .fetch_all(&mut *tx)
                    .await?;
                let hashes = hashes_of(&rows)?;
                let Some(content) = next_seal(last.as_ref(), &hashes) else {
                    return Ok(None);
                };
                insert_seal(&content).execute(&mut *tx).await?;
                tx.commit().await?;
                content
            }
            Db::Sqlite(pool) => {
                let _writer = self.lock_sqlite_writer().await;
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let last = sqlx::query(&select_last).fetch_optional(&mut *tx).await?;
                let last = last.as_ref().map(seal_from_row).transpose()?;
                let after = last.as_ref().map_or(JournalOrder::START, |s| s.last);
                let rows = sqlx::query(SQLITE_HASHES_AFTER)
                    .bind(after.tx)
                    .bind(after.position)
                    .bind(max_events)
                    .fetch_all(&mut *tx)
                    .await?;
                let hashes = hashes_of(&rows)?;
                let Some(content) = next_seal(last.as_ref(), &hashes) else {
                    return Ok(None);
                };
                insert_seal(&content).execute(&mut *tx).await?;
                tx.commit().await?;
                content
            }
        };
        tracing::debug!(
            seal_no = content.seal_no,
            events = content.event_count,
            "sealed"
        );
        self.latest_seal().await
    }
}

fn hashes_of<R: Row>(rows: &[R]) -> Result<Vec<(JournalOrder, Vec<u8>)>, JournalError>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    rows.iter()
        .map(|row| {
            Ok((
                JournalOrder {
                    tx: row.try_get(0)?,
                    position: row.try_get(1)?,
                },
                row.try_get(2)?,
            ))
        })
        .collect()
}

fn insert_seal<'q, DB: sqlx::Database>(
    content: &'q SealContent,
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>
where
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Vec<u8>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    sqlx::query(INSERT_SEAL)
        .bind(content.seal_no)
        .bind(content.first.0)
        .bind(content.first.1)
        .bind(content.last.0)
        .bind(content.last.1)
        .bind(content.event_count)
        .bind(content.root.to_vec())
        .bind(content.prev_hash.to_vec())
        .bind(content.hash().to_vec())
}
