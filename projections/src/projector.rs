//! The catch-up projector: applies journal events to read models exactly once,
//! with each batch's checkpoint written in the batch's own transaction.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kabinet_domain::journal::{pending_after_pg, read_after_pg, read_after_sqlite};
use kabinet_domain::{Db, Journal, JournalOrder};
use sha2::{Digest, Sha256};
use sqlx::Row;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::projection::{Projection, ProjectionError, ProjectionTx};
use crate::wakeup::Wakeups;

/// Tuning of the projector.
#[derive(Debug, Clone)]
pub struct ProjectorConfig {
    /// Events applied per transaction.
    pub batch_size: i64,
    /// The fallback poll when no wake-up arrives.
    pub poll_interval: Duration,
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        ProjectorConfig {
            batch_size: 1000,
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// The read models did not reach the wanted place in time.
#[derive(Debug, thiserror::Error)]
#[error("read model '{projection}' has not caught up yet")]
pub struct WaitTimeout {
    pub projection: String,
}

/// What one batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Batch {
    /// Applied `count` events; `more` when others were already waiting.
    Applied { count: usize, more: bool },
    /// Nothing to apply; `pending` when committed events wait behind the horizon.
    Idle { pending: bool },
    /// Another runner holds the projection.
    Busy,
}

/// The advisory lock key that makes one runner per projection across processes.
pub(crate) fn lock_key(checkpoint: &str) -> i64 {
    let digest = Sha256::digest(checkpoint.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

/// Makes sure the checkpoint row of `checkpoint` exists.
pub(crate) async fn ensure_checkpoint(db: &Db, checkpoint: &str) -> Result<(), sqlx::Error> {
    const SQL: &str =
        "INSERT INTO projection_checkpoints (name) VALUES ($1) ON CONFLICT (name) DO NOTHING";
    kabinet_domain::on_db!(db, pool => {
        sqlx::query(SQL).bind(checkpoint).execute(pool).await?;
    });
    Ok(())
}

/// Creates the live table, indexes and checkpoint of `projection` if missing.
pub(crate) async fn prepare(db: &Db, projection: &dyn Projection) -> Result<(), sqlx::Error> {
    let name = projection.name();
    let mut statements = projection.create_table(db.backend(), name);
    statements.extend(projection.create_indexes(db.backend(), name));
    kabinet_domain::on_db!(db, pool => {
        for statement in &statements {
            sqlx::query(statement).execute(pool).await?;
        }
    });
    ensure_checkpoint(db, name).await
}

/// Reads a projection's checkpoint.
pub async fn checkpoint_of(db: &Db, checkpoint: &str) -> Result<JournalOrder, sqlx::Error> {
    const SQL: &str = "SELECT tx_id, position FROM projection_checkpoints WHERE name = $1";
    let row: Option<(i64, i64)> = kabinet_domain::on_db!(db, pool => {
        sqlx::query_as(SQL).bind(checkpoint).fetch_optional(pool).await?
    });
    Ok(
        row.map_or(JournalOrder::START, |(tx, position)| JournalOrder {
            tx,
            position,
        }),
    )
}

/// How many journal events lie after each of the named checkpoints, counted in
/// journal order: on PostgreSQL the events after the checkpoint's (transaction,
/// position), which reaches zero once a projection has caught up even while
/// concurrent writers commit out of position order; on SQLite, positions.
pub async fn events_behind(db: &Db, names: &[&str]) -> Result<Vec<(String, i64)>, sqlx::Error> {
    const PG: &str =
        "SELECT COUNT(*) FROM events WHERE (tx_id, position) > ($1::bigint::text::xid8, $2)";
    const SQLITE: &str = "SELECT COUNT(*) FROM events WHERE position > $1";
    let mut behind = Vec::with_capacity(names.len());
    for &name in names {
        let at = checkpoint_of(db, name).await?;
        let count: i64 = match db {
            Db::Postgres(pool) => {
                sqlx::query_scalar(PG)
                    .bind(at.tx)
                    .bind(at.position)
                    .fetch_one(pool)
                    .await?
            }
            Db::Sqlite(pool) => {
                sqlx::query_scalar(SQLITE)
                    .bind(at.position)
                    .fetch_one(pool)
                    .await?
            }
        };
        behind.push((name.to_string(), count));
    }
    Ok(behind)
}

/// The advisory lock of the live projector: one runner of all projections across
/// processes. Rebuild takes it to swap a table in.
pub(crate) fn runner_lock() -> i64 {
    lock_key("kabinet-projector")
}

/// A projection to run, with where its checkpoint and rows live.
#[derive(Clone, Copy)]
pub(crate) struct Target<'a> {
    pub projection: &'a dyn Projection,
    pub checkpoint: &'a str,
    pub table: &'a str,
}

/// Reads the checkpoints of `targets` inside a transaction, in one statement.
macro_rules! read_checkpoints {
    ($tx:expr, $targets:expr) => {{
        let mut q = sqlx::QueryBuilder::new(
            "SELECT name, tx_id, position FROM projection_checkpoints WHERE name IN (",
        );
        let mut names = q.separated(", ");
        for target in $targets {
            names.push_bind(target.checkpoint);
        }
        q.push(")");
        let rows = q.build().fetch_all(&mut *$tx).await?;
        let mut found = Vec::with_capacity($targets.len());
        for target in $targets {
            let mut at = JournalOrder::START;
            for row in &rows {
                let name: String = row.try_get(0)?;
                if name == target.checkpoint {
                    at = JournalOrder {
                        tx: row.try_get(1)?,
                        position: row.try_get(2)?,
                    };
                }
            }
            found.push(at);
        }
        found
    }};
}

/// Applies `events` to each target past its own checkpoint and moves every
/// checkpoint behind the last event up to it, all inside the caller's transaction.
macro_rules! apply_and_checkpoint {
    ($tx:expr, $variant:ident, $targets:expr, $checkpoints:expr, $events:expr, $last:expr) => {{
        let mut behind = Vec::with_capacity($targets.len());
        for (target, at) in $targets.iter().zip($checkpoints.iter()) {
            let start = $events.partition_point(|e| e.order <= *at);
            if start < $events.len() {
                target
                    .projection
                    .apply(
                        &mut ProjectionTx::$variant(&mut $tx),
                        target.table,
                        &$events[start..],
                    )
                    .await?;
            }
            if $last > *at {
                behind.push(target.checkpoint);
            }
        }
        if !behind.is_empty() {
            let mut q = sqlx::QueryBuilder::new("UPDATE projection_checkpoints SET tx_id = ");
            q.push_bind($last.tx)
                .push(", position = ")
                .push_bind($last.position)
                .push(", updated_at = CURRENT_TIMESTAMP WHERE name IN (");
            let mut names = q.separated(", ");
            for name in &behind {
                names.push_bind(*name);
            }
            q.push(")");
            q.build().execute(&mut *$tx).await?;
        }
    }};
}

/// Applies at most `batch_size` events to every target in one transaction: each
/// projection sees the events past its own checkpoint, and every checkpoint is
/// written in the same transaction as the rows.
pub(crate) async fn run_batch(
    journal: &Journal,
    targets: &[Target<'_>],
    lock: i64,
    batch_size: i64,
) -> Result<(Batch, JournalOrder), ProjectionError> {
    match journal.db() {
        Db::Postgres(pool) => {
            let mut tx = pool.begin().await?;
            let leader: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
                .bind(lock)
                .fetch_one(&mut *tx)
                .await?;
            if !leader {
                return Ok((Batch::Busy, JournalOrder::START));
            }
            let checkpoints = read_checkpoints!(tx, targets);
            let from = checkpoints
                .iter()
                .copied()
                .min()
                .unwrap_or(JournalOrder::START);
            let events = read_after_pg(&mut tx, from, batch_size).await?;
            let Some(last) = events.last().map(|e| e.order) else {
                let pending = pending_after_pg(&mut tx, from).await?;
                tx.rollback().await?;
                return Ok((Batch::Idle { pending }, from));
            };
            apply_and_checkpoint!(tx, Postgres, targets, checkpoints, events, last);
            // A short batch read everything visible; look once for events held
            // behind the horizon instead of spending a whole idle round on it.
            let more = events.len() as i64 >= batch_size || pending_after_pg(&mut tx, last).await?;
            tx.commit().await?;
            Ok((
                Batch::Applied {
                    count: events.len(),
                    more,
                },
                last,
            ))
        }
        Db::Sqlite(pool) => {
            // Cheap check first so idle projectors never take the write lock.
            let mut from = JournalOrder {
                tx: i64::MAX,
                position: i64::MAX,
            };
            for target in targets {
                from = from.min(checkpoint_of(journal.db(), target.checkpoint).await?);
            }
            let newer: Option<i64> =
                sqlx::query_scalar("SELECT position FROM events WHERE position > $1 LIMIT 1")
                    .bind(from.position)
                    .fetch_optional(pool)
                    .await?;
            if newer.is_none() {
                return Ok((Batch::Idle { pending: false }, from));
            }
            let _writer = journal.lock_sqlite_writer().await;
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            let checkpoints = read_checkpoints!(tx, targets);
            let from = checkpoints
                .iter()
                .copied()
                .min()
                .unwrap_or(JournalOrder::START);
            let events = read_after_sqlite(&mut tx, from, batch_size).await?;
            let Some(last) = events.last().map(|e| e.order) else {
                tx.rollback().await?;
                return Ok((Batch::Idle { pending: false }, from));
            };
            apply_and_checkpoint!(tx, Sqlite, targets, checkpoints, events, last);
            tx.commit().await?;
            let more = events.len() as i64 >= batch_size;
            Ok((
                Batch::Applied {
                    count: events.len(),
                    more,
                },
                last,
            ))
        }
    }
}

struct Inner {
    journal: Journal,
    projections: Vec<Arc<dyn Projection>>,
    config: ProjectorConfig,
    progress: HashMap<&'static str, watch::Sender<JournalOrder>>,
}

/// Runs every projection and answers read-your-writes waits.
#[derive(Clone)]
pub struct Projector {
    inner: Arc<Inner>,
}

impl Projector {
    /// A projector of `projections` over `journal`; nothing runs until [`Projector::start`].
    pub fn new(
        journal: Journal,
        projections: Vec<Arc<dyn Projection>>,
        config: ProjectorConfig,
    ) -> Self {
        let progress = projections
            .iter()
            .map(|p| (p.name(), watch::channel(JournalOrder::START).0))
            .collect();
        Projector {
            inner: Arc::new(Inner {
                journal,
                projections,
                config,
                progress,
            }),
        }
    }

    /// The names of the projections this projector runs.
    pub fn names(&self) -> Vec<&'static str> {
        self.inner.projections.iter().map(|p| p.name()).collect()
    }

    /// Starts the runner of all projections; it stops when `shutdown` fires.
    pub async fn start(
        &self,
        wakeups: Wakeups,
        shutdown: CancellationToken,
    ) -> Result<Vec<JoinHandle<()>>, ProjectionError> {
        for projection in &self.inner.projections {
            prepare(self.inner.journal.db(), projection.as_ref()).await?;
        }
        let this = self.clone();
        Ok(vec![tokio::spawn(async move {
            this.run(wakeups, shutdown).await;
        })])
    }

    fn targets(&self) -> Vec<Target<'_>> {
        self.inner
            .projections
            .iter()
            .map(|p| Target {
                projection: p.as_ref(),
                checkpoint: p.name(),
                table: p.name(),
            })
            .collect()
    }

    fn publish_all(&self, at: JournalOrder) {
        for projection in &self.inner.projections {
            self.publish(projection.name(), at);
        }
    }

    async fn run(&self, mut wakeups: Wakeups, shutdown: CancellationToken) {
        let mut pending_backoff = Duration::from_millis(1);
        let mut error_backoff = Duration::from_millis(100);
        while !shutdown.is_cancelled() {
            let targets = self.targets();
            let result = run_batch(
                &self.inner.journal,
                &targets,
                runner_lock(),
                self.inner.config.batch_size,
            )
            .await;
            let pause = match result {
                Ok((Batch::Applied { count, more }, last)) => {
                    tracing::trace!(events = count, "projected");
                    self.publish_all(last);
                    pending_backoff = Duration::from_millis(1);
                    error_backoff = Duration::from_millis(100);
                    if more {
                        continue;
                    }
                    self.inner.config.poll_interval
                }
                Ok((Batch::Idle { pending: true }, _)) => {
                    // Committed events wait behind a transaction still in flight.
                    pending_backoff = (pending_backoff * 2).min(Duration::from_millis(50));
                    pending_backoff
                }
                Ok((Batch::Idle { pending: false }, at)) => {
                    self.publish_all(at);
                    self.inner.config.poll_interval
                }
                Ok((Batch::Busy, _)) => self.inner.config.poll_interval,
                Err(e) => {
                    tracing::error!(error = %e, "projection batch failed; will retry");
                    error_backoff = (error_backoff * 2).min(Duration::from_secs(10));
                    error_backoff
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = wakeups.wait(pause) => {}
            }
        }
    }

    fn publish(&self, name: &str, at: JournalOrder) {
        if let Some(progress) = self.inner.progress.get(name) {
            progress.send_if_modified(|current| {
                let newer = at > *current;
                if newer {
                    *current = at;
                }
                newer
            });
        }
    }

    /// Applies everything committed so far to every projection, in this task.
    pub async fn catch_up(&self) -> Result<(), ProjectionError> {
        for projection in &self.inner.projections {
            prepare(self.inner.journal.db(), projection.as_ref()).await?;
        }
        loop {
            let targets = self.targets();
            match run_batch(
                &self.inner.journal,
                &targets,
                runner_lock(),
                self.inner.config.batch_size,
            )
            .await?
            {
                (Batch::Applied { .. }, last) => self.publish_all(last),
                (Batch::Idle { pending: true }, _) | (Batch::Busy, _) => {
                    tokio::time::sleep(Duration::from_millis(2)).await
                }
                (Batch::Idle { pending: false }, at) => {
                    self.publish_all(at);
                    return Ok(());
                }
            }
        }
    }

    /// Waits (at most `timeout`) until the named projections have applied the
    /// event at `order`: read-your-writes for a command's caller.
    pub async fn wait_for(
        &self,
        names: &[&str],
        order: JournalOrder,
        timeout: Duration,
    ) -> Result<(), WaitTimeout> {
        let deadline = tokio::time::Instant::now() + timeout;
        for &name in names {
            let mut local = self.inner.progress.get(name).map(|p| p.subscribe());
            // This process's runner usually gets there first; the stored
            // checkpoint (another process may be the runner) is read only when
            // the local one is slow, and then now and then.
            let mut next_db_check = tokio::time::Instant::now()
                + if local.is_some() {
                    Duration::from_millis(20)
                } else {
                    Duration::ZERO
                };
            loop {
                if local
                    .as_mut()
                    .is_some_and(|rx| *rx.borrow_and_update() >= order)
                {
                    break;
                }
                let now = tokio::time::Instant::now();
                if now >= next_db_check {
                    match checkpoint_of(self.inner.journal.db(), name).await {
                        Ok(at) if at >= order => {
                            self.publish(name, at);
                            break;
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "cannot read checkpoint"),
                    }
                    next_db_check = now + Duration::from_millis(50);
                }
                if now >= deadline {
                    return Err(WaitTimeout {
                        projection: name.to_string(),
                    });
                }
                let changed = async {
                    match local.as_mut() {
                        Some(rx) => {
                            let _ = rx.changed().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    _ = changed => {}
                    _ = tokio::time::sleep_until(next_db_check.min(deadline)) => {}
                }
            }
        }
        Ok(())
    }

    /// Watches how far `name` has got, as this process sees it.
    pub fn subscribe_progress(&self, name: &str) -> Option<watch::Receiver<JournalOrder>> {
        self.inner.progress.get(name).map(|p| p.subscribe())
    }

    /// Where each projection has got to, as this process last saw it.
    pub fn progress(&self) -> Vec<(&'static str, JournalOrder)> {
        self.inner
            .progress
            .iter()
            .map(|(name, tx)| (*name, *tx.borrow()))
            .collect()
    }
}
