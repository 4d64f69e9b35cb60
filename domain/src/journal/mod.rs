//! The journal: the only code that writes events.
//!
//! Events go through cqrs-es `PersistedEventStore` over [`JournalRepository`], our
//! own `PersistedEventRepository`. The postgres-es and sqlite-es repositories keep
//! their table layout (which we extend) but cannot chain hashes, report global
//! positions, or claim idempotency keys in the commit's transaction, so the
//! repository is written here against the same tables.

pub mod chain;
mod reader;
mod repository;
pub mod reservations;
mod sealer;
pub mod verify;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::{watch, Mutex};

use crate::db::Db;
pub use chain::{Hash, GENESIS};
pub use reader::{pending_after_pg, read_after_pg, read_after_sqlite, JournalReader};
pub use repository::violated_unique;
pub use repository::{CommitReceipt, IdempotencyClaim, IdempotencyKeyTaken, JournalRepository};
pub use sealer::Seal;

/// A place in the global read order: (writing transaction, position).
///
/// On PostgreSQL positions are taken in insert order but become visible in commit
/// order, so readers walk (transaction id, position) below the snapshot horizon.
/// On SQLite there is one writer and `tx` equals `position`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JournalOrder {
    pub tx: i64,
    pub position: i64,
}

impl JournalOrder {
    /// Before the first event.
    pub const START: JournalOrder = JournalOrder { tx: 0, position: 0 };
}

/// An event as the journal recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    pub order: JournalOrder,
    pub recorded_at: DateTime<Utc>,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: Value,
    pub metadata: Value,
    pub hash: Hash,
}

impl RecordedEvent {
    /// The global position.
    pub fn position(&self) -> i64 {
        self.order.position
    }

    /// A metadata entry as text.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).and_then(Value::as_str)
    }
}

/// What a commit wrote: one entry per event, in sequence order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedEvent {
    pub sequence: i64,
    pub order: JournalOrder,
    pub recorded_at: DateTime<Utc>,
    pub event_type: String,
}

/// Journal errors that are not business errors.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("event cannot be hashed: {0}")]
    Canonical(#[from] crate::canonical::CanonicalError),
    #[error("stored event {aggregate_type}/{aggregate_id}#{sequence} is malformed: {reason}")]
    Malformed {
        aggregate_type: String,
        aggregate_id: String,
        sequence: i64,
        reason: String,
    },
}

struct Shared {
    db: Db,
    /// Serialises this process's writers on SQLite so they queue here instead of
    /// spinning in SQLite's busy handler; other processes still wait on the file lock.
    sqlite_writer: Mutex<()>,
    /// Bumped after every local commit: the in-process wake-up of projectors.
    commits: watch::Sender<u64>,
}

/// Handle to the journal; cheap to clone.
#[derive(Clone)]
pub struct Journal {
    shared: Arc<Shared>,
}

impl Journal {
    /// A journal over an already migrated database.
    pub fn new(db: Db) -> Self {
        let (commits, _) = watch::channel(0);
        Journal {
            shared: Arc::new(Shared {
                db,
                sqlite_writer: Mutex::new(()),
                commits,
            }),
        }
    }

    /// The database the journal lives in.
    pub fn db(&self) -> &Db {
        &self.shared.db
    }

    /// A fresh repository for one command (it remembers the stream it loaded).
    pub fn repository(&self) -> JournalRepository {
        JournalRepository::new(self.clone())
    }

    /// A reader of the global order.
    pub fn reader(&self) -> JournalReader {
        JournalReader::new(self.shared.db.clone())
    }

    /// Subscribes to local commit notifications.
    pub fn subscribe_commits(&self) -> watch::Receiver<u64> {
        self.shared.commits.subscribe()
    }

    pub(crate) fn notify_committed(&self) {
        self.shared.commits.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Takes this process's SQLite write turn (a no-op wait on PostgreSQL).
    pub async fn lock_sqlite_writer(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.shared.sqlite_writer.lock().await
    }

    /// Number of events in the journal.
    pub async fn count(&self) -> Result<i64, JournalError> {
        let n: i64 = crate::on_db!(self.db(), pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM events").fetch_one(pool).await?
        });
        Ok(n)
    }
}
