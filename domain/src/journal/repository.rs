//! `PersistedEventRepository` over the journal tables, with the hash chain.

use std::sync::{Arc, Mutex as StdMutex};

use chrono::{DateTime, Utc};
use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::Aggregate;
use futures::TryStreamExt;
use serde_json::Value;
use sqlx::Row;

use super::chain::{hash_from_slice, EventContent, Hash, GENESIS};
use super::reservations::{ReservationOp, ReservationTaken, DELETE_OWNER, INSERT_KEY_IF_FREE};
use super::{CommittedEvent, Journal, JournalError, JournalOrder};
use crate::db::Db;

/// An idempotency key to claim in the same transaction as a command's events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyClaim {
    /// Whose key it is (keys of different callers never collide).
    pub scope: String,
    pub key: String,
    /// SHA-256 of the command's canonical input.
    pub fingerprint: Hash,
}

/// The idempotency key was claimed by an earlier commit; nothing was written.
#[derive(Debug, thiserror::Error)]
#[error("idempotency key already used")]
pub struct IdempotencyKeyTaken;

/// The last event of the stream this repository loaded.
#[derive(Debug, Clone)]
struct StreamHead {
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    hash: Hash,
}

#[derive(Debug, Default)]
struct CommandState {
    head: Option<StreamHead>,
    claim: Option<IdempotencyClaim>,
    reservations: Vec<ReservationOp>,
    committed: Vec<CommittedEvent>,
}

/// A repository for one command: it remembers the head of the stream it loaded so
/// the commit chains onto it without another read, and records what it committed.
pub struct JournalRepository {
    journal: Journal,
    state: Arc<StdMutex<CommandState>>,
}

/// Where a command learns what its commit wrote (cqrs-es returns envelopes
/// without global positions).
#[derive(Clone)]
pub struct CommitReceipt(Arc<StdMutex<CommandState>>);

impl CommitReceipt {
    /// Stages reservation changes to make in the transaction of the next commit.
    pub fn stage_reservations(&self, ops: Vec<ReservationOp>) {
        lock(&self.0).reservations = ops;
    }

    /// The events the commit wrote, with their global order.
    pub fn take_committed(&self) -> Vec<CommittedEvent> {
        std::mem::take(&mut lock(&self.0).committed)
    }
}

fn lock(state: &StdMutex<CommandState>) -> std::sync::MutexGuard<'_, CommandState> {
    // The lock guards plain data and is never held across an await, so a
    // poisoned lock still holds consistent data.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl JournalRepository {
    pub(super) fn new(journal: Journal) -> Self {
        JournalRepository {
            journal,
            state: Arc::new(StdMutex::new(CommandState::default())),
        }
    }

    /// Claims `claim` in the transaction of the next commit.
    pub fn with_idempotency_claim(self, claim: Option<IdempotencyClaim>) -> Self {
        self.state().claim = claim;
        self
    }

    /// A handle to read what the commit wrote after the store consumed `self`.
    pub fn receipt(&self) -> CommitReceipt {
        CommitReceipt(Arc::clone(&self.state))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, CommandState> {
        lock(&self.state)
    }

    async fn load(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        after_sequence: i64,
    ) -> Result<Vec<SerializedEvent>, JournalError> {
        const SQL: &str = "SELECT sequence, event_type, event_version, payload, metadata, hash \
             FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3 \
             ORDER BY sequence";
        let mut events = Vec::new();
        let mut head = None;
        match self.journal.db() {
            Db::Postgres(pool) => {
                let rows = sqlx::query(SQL)
                    .bind(aggregate_type)
                    .bind(aggregate_id)
                    .bind(after_sequence)
                    .fetch_all(pool)
                    .await?;
                for row in rows {
                    let sequence: i64 = row.try_get(0)?;
                    let payload: Value = row.try_get(3)?;
                    let metadata: Value = row.try_get(4)?;
                    let hash: Vec<u8> = row.try_get(5)?;
                    head = Some((sequence, hash));
                    events.push(serialized(
                        aggregate_type,
                        aggregate_id,
                        sequence,
                        row.try_get(1)?,
                        row.try_get(2)?,
                        payload,
                        metadata,
                    ));
                }
            }
            Db::Sqlite(pool) => {
                let rows = sqlx::query(SQL)
                    .bind(aggregate_type)
                    .bind(aggregate_id)
                    .bind(after_sequence)
                    .fetch_all(pool)
                    .await?;
                for row in rows {
                    let sequence: i64 = row.try_get(0)?;
                    let malformed = |reason: String| JournalError::Malformed {
                        aggregate_type: aggregate_type.to_string(),
                        aggregate_id: aggregate_id.to_string(),
                        sequence,
                        reason,
                    };
                    let payload: Value = serde_json::from_str(row.try_get(3)?)
                        .map_err(|e| malformed(format!("payload: {e}")))?;
                    let metadata: Value = serde_json::from_str(row.try_get(4)?)
                        .map_err(|e| malformed(format!("metadata: {e}")))?;
                    let hash: Vec<u8> = row.try_get(5)?;
                    head = Some((sequence, hash));
                    events.push(serialized(
                        aggregate_type,
                        aggregate_id,
                        sequence,
                        row.try_get(1)?,
                        row.try_get(2)?,
                        payload,
                        metadata,
                    ));
                }
            }
        }
        if let Some((sequence, hash)) = head {
            let hash = hash_from_slice(&hash).ok_or_else(|| JournalError::Malformed {
                aggregate_type: aggregate_type.to_string(),
                aggregate_id: aggregate_id.to_string(),
                sequence,
                reason: "hash is not 32 bytes".into(),
            })?;
            self.state().head = Some(StreamHead {
                aggregate_type: aggregate_type.to_string(),
                aggregate_id: aggregate_id.to_string(),
                sequence,
                hash,
            });
        }
        Ok(events)
    }

    /// The hash the first of `events` chains onto.
    async fn previous_hash(&self, first: &SerializedEvent) -> Result<Hash, PersistenceError> {
        let seq = first.sequence as i64;
        if seq == 1 {
            return Ok(GENESIS);
        }
        if let Some(head) = &self.state().head {
            if head.aggregate_type == first.aggregate_type
                && head.aggregate_id == first.aggregate_id
                && head.sequence == seq - 1
            {
                return Ok(head.hash);
            }
        }
        const SQL: &str = "SELECT hash FROM events \
             WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3";
        let found: Option<Vec<u8>> = crate::on_db!(self.journal.db(), pool => {
            sqlx::query_scalar(SQL)
                .bind(&first.aggregate_type)
                .bind(&first.aggregate_id)
                .bind(seq - 1)
                .fetch_optional(pool)
                .await
                .map_err(unknown)?
        });
        match found {
            Some(bytes) => hash_from_slice(&bytes).ok_or_else(|| {
                unknown(JournalError::Malformed {
                    aggregate_type: first.aggregate_type.clone(),
                    aggregate_id: first.aggregate_id.clone(),
                    sequence: seq - 1,
                    reason: "hash is not 32 bytes".into(),
                })
            }),
            // The stream is not where the command thought it was.
            None => Err(PersistenceError::OptimisticLockError),
        }
    }

    /// The first of `takes` whose key someone holds (the commit was rolled back).
    async fn held_among(&self, takes: &[ReservationOp]) -> ReservationTaken {
        for op in takes {
            if let ReservationOp::Take { scope, key, owner } = op {
                let held = self
                    .journal
                    .held_reservations(scope, std::slice::from_ref(key))
                    .await
                    .unwrap_or_default();
                if held.iter().any(|(_, holder)| holder != owner) {
                    return ReservationTaken {
                        scope: scope.to_string(),
                        key: key.clone(),
                    };
                }
            }
        }
        // Released again in the meantime: report the first, the slot itself.
        match takes.first() {
            Some(ReservationOp::Take { scope, key, .. }) => ReservationTaken {
                scope: scope.to_string(),
                key: key.clone(),
            },
            _ => ReservationTaken {
                scope: String::new(),
                key: String::new(),
            },
        }
    }

    async fn write(&self, events: &[SerializedEvent]) -> Result<(), PersistenceError> {
        let Some(first) = events.first() else {
            return Ok(());
        };
        let mut prev = self.previous_hash(first).await?;
        let mut rows = Vec::with_capacity(events.len());
        for event in events {
            let content = EventContent {
                aggregate_type: &event.aggregate_type,
                aggregate_id: &event.aggregate_id,
                sequence: event.sequence as i64,
                event_type: &event.event_type,
                event_version: &event.event_version,
                payload: &event.payload,
                metadata: &event.metadata,
            };
            let hash = content.hash(&prev).map_err(unknown)?;
            rows.push((event, hash));
            prev = hash;
        }
        let (claim, reservations) = {
            let state = self.state();
            (state.claim.clone(), state.reservations.clone())
        };
        let extras = Extras {
            claim: claim.as_ref(),
            reservations: &reservations,
        };
        let inserted = match self.journal.db() {
            Db::Postgres(pool) => insert_postgres(pool, &rows, extras).await,
            Db::Sqlite(pool) => {
                let _writer = self.journal.lock_sqlite_writer().await;
                insert_sqlite(pool, &rows, extras).await
            }
        };
        let committed = match inserted {
            Err(InsertError::ReservedAmong(takes)) => {
                return Err(unknown(self.held_among(&takes).await))
            }
            other => other.map_err(map_insert_error)?,
        };
        if let (Some((last, hash)), Some(head)) = (rows.last(), committed.last()) {
            self.state().head = Some(StreamHead {
                aggregate_type: last.aggregate_type.clone(),
                aggregate_id: last.aggregate_id.clone(),
                sequence: head.sequence,
                hash: *hash,
            });
        }
        self.state().committed = committed;
        self.journal.notify_committed();
        Ok(())
    }
}

fn serialized(
    aggregate_type: &str,
    aggregate_id: &str,
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: Value,
    metadata: Value,
) -> SerializedEvent {
    SerializedEvent::new(
        aggregate_id.to_string(),
        sequence as usize,
        aggregate_type.to_string(),
        event_type,
        event_version,
        payload,
        metadata,
    )
}

fn unknown(e: impl std::error::Error + Send + Sync + 'static) -> PersistenceError {
    PersistenceError::UnknownError(Box::new(e))
}

enum InsertError {
    Db(sqlx::Error),
    Canonical(crate::canonical::CanonicalError),
    /// One of these takes met a held key.
    ReservedAmong(Vec<ReservationOp>),
}

/// What a commit writes besides its events, in the same transaction.
#[derive(Clone, Copy)]
struct Extras<'a> {
    claim: Option<&'a IdempotencyClaim>,
    reservations: &'a [ReservationOp],
}

impl Extras<'_> {
    fn is_empty(&self) -> bool {
        self.claim.is_none() && self.reservations.is_empty()
    }
}

/// Runs the idempotency claim and the reservation changes inside `tx`.
macro_rules! write_extras {
    ($tx:expr, $extras:expr, $first:expr, $count:expr) => {{
        if let Some(claim) = $extras.claim {
            claim_query(claim, $first, $count)
                .execute(&mut *$tx)
                .await?;
        }
        let mut ops = $extras.reservations;
        while let Some((op, rest)) = ops.split_first() {
            match op {
                ReservationOp::TakeIfFree { scope, key, owner } => {
                    sqlx::query(INSERT_KEY_IF_FREE)
                        .bind(*scope)
                        .bind(key)
                        .bind(owner)
                        .execute(&mut *$tx)
                        .await?;
                    ops = rest;
                }
                ReservationOp::ReleaseAll { owner } => {
                    sqlx::query(DELETE_OWNER)
                        .bind(owner)
                        .execute(&mut *$tx)
                        .await?;
                    ops = rest;
                }
                ReservationOp::Take { .. } => {
                    // Consecutive takes go in one statement; which key was held
                    // is looked up after the rollback.
                    let run = ops
                        .iter()
                        .take_while(|op| matches!(op, ReservationOp::Take { .. }))
                        .count();
                    let (takes, rest) = ops.split_at(run);
                    let mut q =
                        sqlx::QueryBuilder::new("INSERT INTO reservations (scope, key, owner) ");
                    q.push_values(takes, |mut row, op| {
                        if let ReservationOp::Take { scope, key, owner } = op {
                            row.push_bind(*scope)
                                .push_bind(key.as_str())
                                .push_bind(owner.as_str());
                        }
                    });
                    match q.build().execute(&mut *$tx).await {
                        Ok(_) => {}
                        Err(e) if violated_unique(&e) == Some("reservations_pkey") => {
                            return Err(InsertError::ReservedAmong(takes.to_vec()));
                        }
                        Err(e) => return Err(e.into()),
                    }
                    ops = rest;
                }
            }
        }
    }};
}

impl From<sqlx::Error> for InsertError {
    fn from(e: sqlx::Error) -> Self {
        InsertError::Db(e)
    }
}

/// Which unique constraint a database error violated, if any.
pub fn violated_unique(err: &sqlx::Error) -> Option<&'static str> {
    let sqlx::Error::Database(db) = err else {
        return None;
    };
    if !matches!(db.kind(), sqlx::error::ErrorKind::UniqueViolation) {
        return None;
    }
    // PostgreSQL names the constraint; SQLite names the table and columns.
    let name = db.constraint().unwrap_or_default();
    let message = db.message();
    if name == "idempotency_keys_pkey" || message.contains("idempotency_keys.") {
        Some("idempotency_keys_pkey")
    } else if name == "reservations_pkey" || message.contains("reservations.") {
        Some("reservations_pkey")
    } else if name == "events_pkey" || message.contains("events.aggregate_type") {
        Some("events_pkey")
    } else {
        Some("other")
    }
}

fn map_insert_error(err: InsertError) -> PersistenceError {
    match err {
        InsertError::Canonical(e) => unknown(e),
        InsertError::ReservedAmong(_) => unknown(ReservationTaken {
            scope: String::new(),
            key: String::new(),
        }),
        InsertError::Db(e) => match violated_unique(&e) {
            Some("events_pkey") => PersistenceError::OptimisticLockError,
            Some("idempotency_keys_pkey") => unknown(IdempotencyKeyTaken),
            _ => match &e {
                sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Io(_)
                | sqlx::Error::Tls(_) => PersistenceError::ConnectionError(Box::new(e)),
                _ => unknown(JournalError::Database(e)),
            },
        },
    }
}

const INSERT_CLAIM: &str = "INSERT INTO idempotency_keys \
     (scope, key, fingerprint, aggregate_type, aggregate_id, first_sequence, event_count) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";

fn claim_query<'q, DB: sqlx::Database>(
    claim: &'q IdempotencyClaim,
    first: &'q SerializedEvent,
    count: usize,
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>
where
    &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    &'q [u8]: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    sqlx::query(INSERT_CLAIM)
        .bind(claim.scope.as_str())
        .bind(claim.key.as_str())
        .bind(&claim.fingerprint[..])
        .bind(first.aggregate_type.as_str())
        .bind(first.aggregate_id.as_str())
        .bind(first.sequence as i64)
        .bind(count as i64)
}

async fn insert_postgres(
    pool: &sqlx::PgPool,
    rows: &[(&SerializedEvent, Hash)],
    extras: Extras<'_>,
) -> Result<Vec<CommittedEvent>, InsertError> {
    const SQL: &str = "INSERT INTO events \
         (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         RETURNING position, tx_id::text::bigint, recorded_at";
    let insert = |event: &SerializedEvent, hash: &Hash| {
        sqlx::query(SQL)
            .bind(event.aggregate_type.clone())
            .bind(event.aggregate_id.clone())
            .bind(event.sequence as i64)
            .bind(event.event_type.clone())
            .bind(event.event_version.clone())
            .bind(event.payload.clone())
            .bind(event.metadata.clone())
            .bind(hash.to_vec())
    };
    let committed_of = |event: &SerializedEvent, row: sqlx::postgres::PgRow| {
        Ok::<_, InsertError>(CommittedEvent {
            sequence: event.sequence as i64,
            order: JournalOrder {
                position: row.try_get(0)?,
                tx: row.try_get(1)?,
            },
            recorded_at: row.try_get(2)?,
            event_type: event.event_type.clone(),
        })
    };
    // The common case, one event and nothing else, is a single autocommit statement.
    if let ([(event, hash)], true) = (rows, extras.is_empty()) {
        let row = insert(event, hash).fetch_one(pool).await?;
        return Ok(vec![committed_of(event, row)?]);
    }
    // One event that only takes reservations (a booking) is one statement too:
    // a data-modifying CTE commits or fails with the event.
    let only_takes = !extras.reservations.is_empty()
        && extras
            .reservations
            .iter()
            .all(|op| matches!(op, ReservationOp::Take { .. }));
    if let ([(event, hash)], None, true) = (rows, extras.claim, only_takes) {
        let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new(
            "WITH taken AS (INSERT INTO reservations (scope, key, owner) ",
        );
        q.push_values(extras.reservations, |mut row, op| {
            if let ReservationOp::Take { scope, key, owner } = op {
                row.push_bind(*scope)
                    .push_bind(key.as_str())
                    .push_bind(owner.as_str());
            }
        });
        q.push(
            " RETURNING 1) INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
             event_version, payload, metadata, hash) VALUES (",
        );
        let mut values = q.separated(", ");
        values
            .push_bind(event.aggregate_type.as_str())
            .push_bind(event.aggregate_id.as_str())
            .push_bind(event.sequence as i64)
            .push_bind(event.event_type.as_str())
            .push_bind(event.event_version.as_str())
            .push_bind(&event.payload)
            .push_bind(&event.metadata)
            .push_bind(&hash[..]);
        q.push(") RETURNING position, tx_id::text::bigint, recorded_at");
        return match q.build().fetch_one(pool).await {
            Ok(row) => Ok(vec![committed_of(event, row)?]),
            Err(e) if violated_unique(&e) == Some("reservations_pkey") => {
                Err(InsertError::ReservedAmong(extras.reservations.to_vec()))
            }
            Err(e) => Err(e.into()),
        };
    }
    let mut tx = pool.begin().await?;
    if let Some((first, _)) = rows.first() {
        write_extras!(tx, extras, first, rows.len());
    }
    let mut committed = Vec::with_capacity(rows.len());
    for (event, hash) in rows {
        let row = insert(event, hash).fetch_one(&mut *tx).await?;
        committed.push(committed_of(event, row)?);
    }
    tx.commit().await?;
    Ok(committed)
}

async fn insert_sqlite(
    pool: &sqlx::SqlitePool,
    rows: &[(&SerializedEvent, Hash)],
    extras: Extras<'_>,
) -> Result<Vec<CommittedEvent>, InsertError> {
    // Positions are taken under SQLite's write lock, so they follow commit order.
    const SQL: &str = "INSERT INTO events \
         (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, position, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, (SELECT COALESCE(MAX(position), 0) + 1 FROM events), $8) \
         RETURNING position, recorded_at";
    // Every statement below writes, so the transaction takes the write lock at its
    // first statement and never has to upgrade a read snapshot.
    let mut tx = pool.begin().await?;
    if let Some((first, _)) = rows.first() {
        write_extras!(tx, extras, first, rows.len());
    }
    let mut committed = Vec::with_capacity(rows.len());
    for (event, hash) in rows {
        let payload =
            crate::canonical::to_canonical_bytes(&event.payload).map_err(InsertError::Canonical)?;
        let metadata = crate::canonical::to_canonical_bytes(&event.metadata)
            .map_err(InsertError::Canonical)?;
        let row = sqlx::query(SQL)
            .bind(&event.aggregate_type)
            .bind(&event.aggregate_id)
            .bind(event.sequence as i64)
            .bind(&event.event_type)
            .bind(&event.event_version)
            .bind(String::from_utf8_lossy(&payload).into_owned())
            .bind(String::from_utf8_lossy(&metadata).into_owned())
            .bind(&hash[..])
            .fetch_one(&mut *tx)
            .await?;
        let position: i64 = row.try_get(0)?;
        let recorded_at: DateTime<Utc> = row.try_get(1)?;
        committed.push(CommittedEvent {
            sequence: event.sequence as i64,
            order: JournalOrder {
                tx: position,
                position,
            },
            recorded_at,
            event_type: event.event_type.clone(),
        });
    }
    tx.commit().await?;
    Ok(committed)
}

impl PersistedEventRepository for JournalRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.load(A::TYPE, aggregate_id, 0).await.map_err(unknown)
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.load(A::TYPE, aggregate_id, last_sequence as i64)
            .await
            .map_err(unknown)
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        _aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        // Aggregates are always rebuilt from their events (cqrs-es 0.5 snapshots
        // apply new events twice).
        Ok(None)
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        _snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        self.write(events).await
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        let events = self.get_events::<A>(aggregate_id).await?;
        Ok(feed(events))
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        // Streams one aggregate type in stream order, as cqrs-es expects; the
        // global order lives in `JournalReader`.
        let (mut feed, stream) = ReplayStream::new(256);
        let db = self.journal.db().clone();
        tokio::spawn(async move {
            const SQL: &str = "SELECT aggregate_id, sequence, event_type, event_version, \
                 CAST(payload AS TEXT), CAST(metadata AS TEXT) \
                 FROM events WHERE aggregate_type = $1 ORDER BY aggregate_id, sequence";
            let result: Result<(), PersistenceError> = crate::on_db!(&db, pool => {
                let mut rows = sqlx::query(SQL).bind(A::TYPE).fetch(pool);
                loop {
                    match rows.try_next().await {
                        Ok(Some(row)) => {
                            let event = stream_row(A::TYPE, &row);
                            if feed.push(event).await.is_err() {
                                break Ok(());
                            }
                        }
                        Ok(None) => break Ok(()),
                        Err(e) => break Err(unknown(e)),
                    }
                }
            });
            if let Err(e) = result {
                let _ = feed.push(Err(e)).await;
            }
        });
        Ok(stream)
    }
}

fn stream_row<R: Row>(aggregate_type: &str, row: &R) -> Result<SerializedEvent, PersistenceError>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    // Payload and metadata are selected as text so one decoder serves both backends.
    let text = |i: usize| -> Result<Value, PersistenceError> {
        let raw: String = row.try_get(i).map_err(unknown)?;
        serde_json::from_str(&raw).map_err(|e| PersistenceError::DeserializationError(Box::new(e)))
    };
    Ok(serialized(
        aggregate_type,
        &row.try_get::<String, _>(0).map_err(unknown)?,
        row.try_get(1).map_err(unknown)?,
        row.try_get(2).map_err(unknown)?,
        row.try_get(3).map_err(unknown)?,
        text(4)?,
        text(5)?,
    ))
}

fn feed(events: Vec<SerializedEvent>) -> ReplayStream {
    let (mut feed, stream) = ReplayStream::new(events.len().max(1));
    tokio::spawn(async move {
        for event in events {
            if feed.push(Ok(event)).await.is_err() {
                return;
            }
        }
    });
    stream
}
