//! The command path: load an aggregate through cqrs-es `PersistedEventStore`,
//! handle the command, commit with metadata, and report what was committed.

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{EventStoreAggregateContext, PersistedEventStore, PersistenceError};
use cqrs_es::{Aggregate, AggregateContext, AggregateError, EventStore};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::canonical::to_canonical_bytes;
use crate::journal::reservations::{ReservationTaken, Reserving};
use crate::journal::{
    chain::Hash, CommittedEvent, IdempotencyClaim, IdempotencyKeyTaken, Journal, JournalError,
    JournalOrder,
};
use crate::metadata::EventMetadata;

/// How many times a command that met a concurrent commit is run again.
pub const MAX_CONFLICT_RETRIES: u32 = 5;

/// What a command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutcome {
    pub aggregate_type: String,
    pub aggregate_id: String,
    /// The committed events (empty when the command changed nothing).
    pub events: Vec<CommittedEvent>,
    /// True when an earlier command with the same idempotency key is being reported.
    pub replayed: bool,
}

impl CommandOutcome {
    /// The global order of the last event written, for read-your-writes waits.
    pub fn last_order(&self) -> Option<JournalOrder> {
        self.events.iter().map(|e| e.order).max()
    }
}

/// Why a command did not commit.
#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error> {
    /// The aggregate refused the command: a business error for the caller.
    #[error(transparent)]
    Rejected(E),
    /// Concurrent commands kept changing the aggregate; nothing was written.
    #[error("the record was changed by someone else at the same moment; try again")]
    Conflict,
    /// The idempotency key was used before for a different request.
    #[error("this idempotency key was already used for a different request")]
    IdempotencyKeyReused,
    /// A reservation the command needs is held by someone else; nothing was written.
    #[error("{0}")]
    Reserved(ReservationTaken),
    /// A fault of the store; logged, never shown to callers.
    #[error("internal error: {0}")]
    Internal(#[source] CommandFault),
}

/// A fault of the store under a command: the cause is kept for the log.
#[derive(Debug, thiserror::Error)]
pub enum CommandFault {
    /// The event store (cqrs-es over the journal) failed.
    #[error("event store: {0}")]
    EventStore(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
    /// A read of the journal failed.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// A read of the idempotency keys failed.
    #[error("idempotency keys: {0}")]
    Database(#[from] sqlx::Error),
    /// A concurrent request took the idempotency key, yet its record is gone.
    #[error("idempotency key vanished after conflict")]
    IdempotencyKeyVanished,
    /// The store met a concurrent commit where none can happen (while loading).
    #[error("the event store reported a conflict while loading")]
    LoadConflict,
    /// The store reported a business error where no command ran (while loading).
    #[error("the event store reported a rejected command while loading")]
    UnexpectedRejection,
}

/// Whether a command may be run again after a concurrent commit changed its aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Re-run on conflict: the command decides from the fresh state again.
    OnConflict,
    /// Report the conflict: the caller decided on state that is now stale.
    Never,
}

/// Runs commands against the journal.
#[derive(Clone)]
pub struct CommandRunner {
    journal: Journal,
}

/// SHA-256 over the canonical form of a caller's input: what makes two
/// requests under one idempotency key "the same request".
pub fn fingerprint(aggregate_type: &str, input: &Value) -> Hash {
    let whole = json!({ "aggregate_type": aggregate_type, "input": input });
    // Inputs come from GraphQL and hold no floats; fall back to serde's text if one does.
    let bytes = to_canonical_bytes(&whole).unwrap_or_else(|_| whole.to_string().into_bytes());
    Sha256::digest(bytes).into()
}

impl CommandRunner {
    /// A runner writing to `journal`.
    pub fn new(journal: Journal) -> Self {
        CommandRunner { journal }
    }

    /// The journal commands are written to.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// The current state of aggregate `aggregate_id`, folded from its events.
    pub async fn load<A: Aggregate>(&self, aggregate_id: &str) -> Result<A, CommandFault> {
        let store = PersistedEventStore::<_, A>::new_event_store(self.journal.repository());
        store
            .load_aggregate(aggregate_id)
            .await
            .map(|context| context.aggregate)
            .map_err(fault)
    }

    /// Runs `command` on aggregate `aggregate_id` and commits its events with `metadata`.
    ///
    /// With an idempotency key in `metadata`, `input` identifies the request: a
    /// repeat with the same input reports the first outcome without running the
    /// command again; a repeat with different input is refused.
    pub async fn execute<A>(
        &self,
        aggregate_id: &str,
        command: A::Command,
        services: &A::Services,
        metadata: &EventMetadata,
        input: &Value,
        retry: Retry,
    ) -> Result<(CommandOutcome, A), CommandError<A::Error>>
    where
        A: Reserving + Clone,
        A::Command: Clone,
    {
        self.run(
            aggregate_id,
            command,
            services,
            metadata,
            input,
            retry,
            false,
        )
        .await
    }

    /// [`CommandRunner::execute`] for an aggregate the caller has just given a
    /// fresh id (a UUIDv7): there is nothing to load, so the first attempt starts
    /// from the default state. Should the id exist after all, the commit meets
    /// its events and conflicts, and a retry loads them.
    pub async fn execute_new<A>(
        &self,
        aggregate_id: &str,
        command: A::Command,
        services: &A::Services,
        metadata: &EventMetadata,
        input: &Value,
        retry: Retry,
    ) -> Result<(CommandOutcome, A), CommandError<A::Error>>
    where
        A: Reserving + Clone,
        A::Command: Clone,
    {
        self.run(
            aggregate_id,
            command,
            services,
            metadata,
            input,
            retry,
            true,
        )
        .await
    }

    async fn run<A>(
        &self,
        aggregate_id: &str,
        command: A::Command,
        services: &A::Services,
        metadata: &EventMetadata,
        input: &Value,
        retry: Retry,
        fresh: bool,
    ) -> Result<(CommandOutcome, A), CommandError<A::Error>>
    where
        A: Reserving + Clone,
        A::Command: Clone,
    {
        let claim = metadata
            .idempotency_key
            .as_ref()
            .map(|key| IdempotencyClaim {
                scope: metadata.actor.account_id.to_string(),
                key: key.clone(),
                fingerprint: fingerprint(A::TYPE, input),
            });
        if let Some(claim) = &claim {
            if let Some(outcome) = self.replay_idempotent::<A>(claim).await? {
                return Ok(outcome);
            }
        }
        let map = metadata.to_map();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let repo = self
                .journal
                .repository()
                .with_idempotency_claim(claim.clone());
            let receipt = repo.receipt();
            let store = PersistedEventStore::<_, A>::new_event_store(repo);
            let mut context = if fresh && attempt == 1 {
                EventStoreAggregateContext {
                    aggregate_id: aggregate_id.to_string(),
                    aggregate: A::default(),
                    current_sequence: 0,
                    current_snapshot: None,
                }
            } else {
                store.load_aggregate(aggregate_id).await.map_err(internal)?
            };
            let sink = EventSink::<A>::default();
            context
                .aggregate()
                .handle(command.clone(), services, &sink)
                .await
                .map_err(CommandError::Rejected)?;
            let state = context.aggregate.clone();
            let events = sink.collect().await;
            receipt.stage_reservations(A::reservations(aggregate_id, &events));
            match store.commit(events, context, map.clone()).await {
                Ok(_) => {
                    let outcome = CommandOutcome {
                        aggregate_type: A::TYPE.to_string(),
                        aggregate_id: aggregate_id.to_string(),
                        events: receipt.take_committed(),
                        replayed: false,
                    };
                    return Ok((outcome, state));
                }
                Err(AggregateError::AggregateConflict)
                    if retry == Retry::OnConflict && attempt <= MAX_CONFLICT_RETRIES =>
                {
                    tracing::debug!(aggregate = A::TYPE, attempt, "conflict, retrying");
                    continue;
                }
                Err(AggregateError::AggregateConflict) => return Err(CommandError::Conflict),
                Err(AggregateError::UnexpectedError(e)) if e.is::<ReservationTaken>() => {
                    return match e.downcast::<ReservationTaken>() {
                        Ok(taken) => Err(CommandError::Reserved(*taken)),
                        Err(e) => Err(CommandError::Internal(CommandFault::EventStore(e))),
                    };
                }
                Err(AggregateError::UnexpectedError(e)) if e.is::<IdempotencyKeyTaken>() => {
                    // A concurrent request with the same key committed first.
                    if let Some(claim) = &claim {
                        if let Some(outcome) = self.replay_idempotent::<A>(claim).await? {
                            return Ok(outcome);
                        }
                    }
                    return Err(CommandError::Internal(CommandFault::IdempotencyKeyVanished));
                }
                Err(e) => return Err(internal(e)),
            }
        }
    }

    /// The outcome of an earlier command under `metadata`'s idempotency key, when
    /// there was one: for commands with effects outside the journal (a message sent),
    /// which check before acting. A key used for a different `input` is refused.
    pub async fn earlier_outcome<A>(
        &self,
        metadata: &EventMetadata,
        input: &Value,
    ) -> Result<Option<CommandOutcome>, CommandError<A::Error>>
    where
        A: Aggregate,
    {
        let Some(key) = &metadata.idempotency_key else {
            return Ok(None);
        };
        let claim = IdempotencyClaim {
            scope: metadata.actor.account_id.to_string(),
            key: key.clone(),
            fingerprint: fingerprint(A::TYPE, input),
        };
        Ok(self
            .replay_idempotent::<A>(&claim)
            .await?
            .map(|(outcome, _)| outcome))
    }

    /// The outcome recorded under `claim`'s key, if the key was used before.
    async fn replay_idempotent<A>(
        &self,
        claim: &IdempotencyClaim,
    ) -> Result<Option<(CommandOutcome, A)>, CommandError<A::Error>>
    where
        A: Aggregate,
    {
        const SQL: &str =
            "SELECT fingerprint, aggregate_type, aggregate_id, first_sequence, event_count \
             FROM idempotency_keys WHERE scope = $1 AND key = $2";
        let found: Option<(Vec<u8>, String, String, i64, i64)> = crate::on_db!(self.journal.db(), pool => {
            let row = sqlx::query(SQL)
                .bind(&claim.scope)
                .bind(&claim.key)
                .fetch_optional(pool)
                .await
                .map_err(internal_db)?;
            row.map(|r| -> Result<_, sqlx::Error> {
                Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?))
            })
            .transpose()
            .map_err(internal_db)?
        });
        let Some((stored, aggregate_type, aggregate_id, first_sequence, count)) = found else {
            return Ok(None);
        };
        if stored != claim.fingerprint || aggregate_type != A::TYPE {
            return Err(CommandError::IdempotencyKeyReused);
        }
        let events = self
            .committed_events(&aggregate_type, &aggregate_id, first_sequence, count)
            .await
            .map_err(|e| CommandError::Internal(e.into()))?;
        let store = PersistedEventStore::<_, A>::new_event_store(self.journal.repository());
        let context = store
            .load_aggregate(&aggregate_id)
            .await
            .map_err(internal)?;
        Ok(Some((
            CommandOutcome {
                aggregate_type,
                aggregate_id,
                events,
                replayed: true,
            },
            context.aggregate,
        )))
    }

    async fn committed_events(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        first_sequence: i64,
        count: i64,
    ) -> Result<Vec<CommittedEvent>, JournalError> {
        let order = match self.journal.db() {
            crate::Db::Postgres(_) => "tx_id::text::bigint",
            crate::Db::Sqlite(_) => "position",
        };
        let sql = format!(
            "SELECT sequence, position, {order}, recorded_at, event_type FROM events \
             WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence >= $3 AND sequence < $4 \
             ORDER BY sequence"
        );
        crate::on_db!(self.journal.db(), pool => {
            let rows = sqlx::query(&sql)
                .bind(aggregate_type)
                .bind(aggregate_id)
                .bind(first_sequence)
                .bind(first_sequence + count)
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(CommittedEvent {
                        sequence: r.try_get(0)?,
                        order: JournalOrder { position: r.try_get(1)?, tx: r.try_get(2)? },
                        recorded_at: r.try_get(3)?,
                        event_type: r.try_get(4)?,
                    })
                })
                .collect()
        })
    }
}

/// The fault behind a cqrs-es error met while loading or committing.
fn fault<F: std::error::Error>(e: AggregateError<F>) -> CommandFault {
    match e {
        AggregateError::UnexpectedError(e)
        | AggregateError::DatabaseConnectionError(e)
        | AggregateError::DeserializationError(e) => CommandFault::EventStore(e),
        AggregateError::AggregateConflict => CommandFault::LoadConflict,
        AggregateError::UserError(_) => CommandFault::UnexpectedRejection,
    }
}

fn internal<E: std::error::Error, F: std::error::Error>(e: AggregateError<F>) -> CommandError<E> {
    CommandError::Internal(fault(e))
}

fn internal_db<E: std::error::Error>(e: sqlx::Error) -> CommandError<E> {
    CommandError::Internal(e.into())
}

impl<E: std::error::Error> From<PersistenceError> for CommandError<E> {
    fn from(e: PersistenceError) -> Self {
        CommandError::Internal(fault(AggregateError::<E>::from(e)))
    }
}
