//! What a projection is: a named read model fed by journal events in order.

use async_trait::async_trait;
use cqrs_es::Aggregate;
use kabinet_domain::{Backend, RecordedEvent};
use serde::Deserialize;

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
    /// A stored payload does not decode into its aggregate's event enum.
    #[error(
        "{projection}: {aggregate_type} event {event_type} at position {position} does not decode"
    )]
    BadEvent {
        projection: &'static str,
        aggregate_type: String,
        event_type: String,
        position: i64,
        #[source]
        source: serde_json::Error,
    },
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

/// Decodes `event` into the event enum of aggregate `A` when it is one of
/// `A`'s events, and `None` when it belongs to another aggregate type.
///
/// The stored payload is the enum's externally tagged serde form, so the
/// domain's own decoding (older payload shapes included) is what projections
/// read, and a renamed event is a compile error in the `match` that follows.
pub fn event_of<A: Aggregate>(
    projection: &'static str,
    event: &RecordedEvent,
) -> Result<Option<A::Event>, ProjectionError> {
    if event.aggregate_type != A::TYPE {
        return Ok(None);
    }
    A::Event::deserialize(&event.payload)
        .map(Some)
        .map_err(|source| bad_event(projection, event, source))
}

/// The error for a part of `event` that `projection` cannot read or write as JSON.
pub fn bad_event(
    projection: &'static str,
    event: &RecordedEvent,
    source: serde_json::Error,
) -> ProjectionError {
    ProjectionError::BadEvent {
        projection,
        aggregate_type: event.aggregate_type.clone(),
        event_type: event.event_type.clone(),
        position: event.position(),
        source,
    }
}

/// Microseconds since the epoch, the time format of every read-model column.
pub fn micros(at: chrono::DateTime<chrono::Utc>) -> i64 {
    at.timestamp_micros()
}

/// The instant of a read-model time column.
pub fn from_micros(us: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_micros(us).unwrap_or_default()
}
