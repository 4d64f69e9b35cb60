//! What a projection is: a named read model fed by journal events in order.

use async_trait::async_trait;
use kabinet_domain::{Backend, RecordedEvent};

/// An open transaction of the projector, on either backend.
pub enum ProjectionTx<'a> {
    Postgres(&'a mut sqlx::PgConnection),
    Sqlite(&'a mut sqlx::SqliteConnection),
}

/// A read-model write failed; the batch is rolled back and retried later.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("journal error: {0}")]
    Journal(#[from] kabinet_domain::journal::JournalError),
    #[error("event at position {position} cannot be projected: {reason}")]
    BadEvent { position: i64, reason: String },
}

/// A read model built from the journal.
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// Stable name: the checkpoint key and the base name of its table.
    fn name(&self) -> &'static str;

    /// Statements creating the read-model table named `table`, without indexes.
    fn create_table(&self, backend: Backend, table: &str) -> Vec<String>;

    /// Statements creating the indexes of the live table `table`.
    fn create_indexes(&self, backend: Backend, table: &str) -> Vec<String>;

    /// Applies a batch of events, in global order, to `table` inside `tx`.
    async fn apply(
        &self,
        tx: &mut ProjectionTx<'_>,
        table: &str,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError>;
}

/// Runs the same sqlx code on whichever connection a [`ProjectionTx`] holds.
#[macro_export]
macro_rules! on_tx {
    ($tx:expr, $conn:ident => $body:expr) => {
        match $tx {
            $crate::ProjectionTx::Postgres($conn) => $body,
            $crate::ProjectionTx::Sqlite($conn) => $body,
        }
    };
}

/// The payload of an externally tagged event: `{"Variant": {...}}` → `{...}`.
pub fn variant_body(event: &RecordedEvent) -> Option<&serde_json::Value> {
    event.payload.get(&event.event_type)
}

/// Decodes the payload of `event` into `T`, naming the event on failure.
pub fn decode<T: serde::de::DeserializeOwned>(event: &RecordedEvent) -> Result<T, ProjectionError> {
    serde_json::from_value(event.payload.clone()).map_err(|e| ProjectionError::BadEvent {
        position: event.position(),
        reason: format!("{} {}: {e}", event.aggregate_type, event.event_type),
    })
}

/// Microseconds since the epoch, the time format of every read-model column.
pub fn micros(at: chrono::DateTime<chrono::Utc>) -> i64 {
    at.timestamp_micros()
}

/// The instant of a read-model time column.
pub fn from_micros(us: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_micros(us).unwrap_or_default()
}
