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
    /// Applied this many events; there may be more.
    Applied(usize),
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

const READ_CHECKPOINT: &str = "SELECT tx_id, position FROM projection_checkpoints WHERE name = $1";
const WRITE_CHECKPOINT: &str = "UPDATE projection_checkpoints \
     SET tx_id = $2, position = $3, updated_at = CURRENT_TIMESTAMP WHERE name = $1";

/// Applies at most `batch_size` events after `checkpoint` to `table`.
pub(crate) async fn run_batch(
    journal: &Journal,
    projection: &dyn Projection,
    checkpoint: &str,
    table: &str,
    batch_size: i64,
) -> Result<(Batch, JournalOrder), ProjectionError> {
    match journal.db() {
        Db::Postgres(pool) => {
            let mut tx = pool.begin().await?;
            let leader: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
                .bind(lock_key(checkpoint))
                .fetch_one(&mut *tx)
                .await?;
            if !leader {
                return Ok((Batch::Busy, JournalOrder::START));
            }
            let row = sqlx::query(READ_CHECKPOINT)
                .bind(checkpoint)
                .fetch_one(&mut *tx)
                .await?;
            let from = JournalOrder {
                tx: row.try_get(0)?,
                position: row.try_get(1)?,
            };
            let events = read_after_pg(&mut tx, from, batch_size).await?;
            let Some(last) = events.last().map(|e| e.order) else {
                let pending = pending_after_pg(&mut tx, from).await?;
                tx.rollback().await?;
                return Ok((Batch::Idle { pending }, from));
            };
            projection
                .apply(&mut ProjectionTx::Postgres(&mut tx), table, &events)
                .await?;
            sqlx::query(WRITE_CHECKPOINT)
                .bind(checkpoint)
                .bind(last.tx)
                .bind(last.position)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok((Batch::Applied(events.len()), last))
        }
        Db::Sqlite(pool) => {
            // Cheap check first so idle projectors never take the write lock.
            let from = checkpoint_of(journal.db(), checkpoint).await?;
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
            let row = sqlx::query(READ_CHECKPOINT)
                .bind(checkpoint)
                .fetch_one(&mut *tx)
                .await?;
            let from = JournalOrder {
                tx: row.try_get(0)?,
                position: row.try_get(1)?,
            };
            let events = read_after_sqlite(&mut tx, from, batch_size).await?;
            let Some(last) = events.last().map(|e| e.order) else {
                tx.rollback().await?;
                return Ok((Batch::Idle { pending: false }, from));
            };
            projection
                .apply(&mut ProjectionTx::Sqlite(&mut tx), table, &events)
                .await?;
            sqlx::query(WRITE_CHECKPOINT)
                .bind(checkpoint)
                .bind(last.tx)
                .bind(last.position)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok((Batch::Applied(events.len()), last))
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

    /// Starts one runner task per projection; they stop when `shutdown` fires.
    pub async fn start(
        &self,
        wakeups: Wakeups,
        shutdown: CancellationToken,
    ) -> Result<Vec<JoinHandle<()>>, ProjectionError> {
        let mut handles = Vec::new();
        for projection in &self.inner.projections {
            prepare(self.inner.journal.db(), projection.as_ref()).await?;
            let this = self.clone();
            let projection = Arc::clone(projection);
            let wakeups = wakeups.clone();
            let shutdown = shutdown.clone();
            handles.push(tokio::spawn(async move {
                this.run(projection, wakeups, shutdown).await;
            }));
        }
        Ok(handles)
    }

    async fn run(
        &self,
        projection: Arc<dyn Projection>,
        mut wakeups: Wakeups,
        shutdown: CancellationToken,
    ) {
        let name = projection.name();
        let mut pending_backoff = Duration::from_millis(1);
        let mut error_backoff = Duration::from_millis(100);
        while !shutdown.is_cancelled() {
            let result = run_batch(
                &self.inner.journal,
                projection.as_ref(),
                name,
                name,
                self.inner.config.batch_size,
            )
            .await;
            let pause = match result {
                Ok((Batch::Applied(n), last)) => {
                    tracing::trace!(projection = name, events = n, "applied");
                    self.publish(name, last);
                    pending_backoff = Duration::from_millis(1);
                    error_backoff = Duration::from_millis(100);
                    continue;
                }
                Ok((Batch::Idle { pending: true }, _)) => {
                    // Committed events wait behind a transaction still in flight.
                    pending_backoff = (pending_backoff * 2).min(Duration::from_millis(50));
                    pending_backoff
                }
                Ok((Batch::Idle { pending: false }, at)) => {
                    self.publish(name, at);
                    self.inner.config.poll_interval
                }
                Ok((Batch::Busy, _)) => self.inner.config.poll_interval,
                Err(e) => {
                    tracing::error!(projection = name, error = %e, "projection batch failed; will retry");
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
            let name = projection.name();
            prepare(self.inner.journal.db(), projection.as_ref()).await?;
            loop {
                match run_batch(
                    &self.inner.journal,
                    projection.as_ref(),
                    name,
                    name,
                    self.inner.config.batch_size,
                )
                .await?
                {
                    (Batch::Applied(_), last) => self.publish(name, last),
                    (Batch::Idle { pending: true }, _) | (Batch::Busy, _) => {
                        tokio::time::sleep(Duration::from_millis(2)).await
                    }
                    (Batch::Idle { pending: false }, at) => {
                        self.publish(name, at);
                        break;
                    }
                }
            }
        }
        Ok(())
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
            let mut poll = Duration::from_millis(1);
            loop {
                if local.as_ref().is_some_and(|rx| *rx.borrow() >= order) {
                    break;
                }
                // Another process may be this projection's runner.
                match checkpoint_of(self.inner.journal.db(), name).await {
                    Ok(at) if at >= order => {
                        self.publish(name, at);
                        break;
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot read checkpoint"),
                }
                if tokio::time::Instant::now() >= deadline {
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
                    _ = tokio::time::sleep(poll) => {}
                    _ = tokio::time::sleep_until(deadline) => {}
                }
                poll = (poll * 2).min(Duration::from_millis(20));
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
