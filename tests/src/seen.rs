//! `SeenEvents`: a projection that records every event it is given, so tests
//! can prove the projector delivers each event exactly once and in order.

use std::collections::BTreeMap;

use async_trait::async_trait;
use kabinet_domain::{Backend, Db, RecordedEvent};
use kabinet_projections::{Projection, ProjectionError, ProjectionTx};
use sqlx::QueryBuilder;

/// Records (stream, sequence, place in the journal, order of application) of
/// every event applied. A unique index on (aggregate_id, sequence) makes a
/// second delivery of an event fail its batch instead of passing unnoticed.
#[derive(Debug, Default)]
pub struct SeenEvents;

impl SeenEvents {
    /// Name of the projection and of its table.
    pub const NAME: &'static str = "test_seen";
}

/// One recorded delivery.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, sqlx::FromRow)]
pub struct SeenRow {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub position: i64,
    pub tx: i64,
    /// 1, 2, 3, … in the order the projection applied the events.
    pub applied: i64,
}

#[async_trait]
impl Projection for SeenEvents {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn create_table(&self, _backend: Backend, table: &str) -> Vec<String> {
        vec![format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                aggregate_type TEXT   NOT NULL,
                aggregate_id   TEXT   NOT NULL,
                sequence       BIGINT NOT NULL,
                position       BIGINT NOT NULL,
                tx             BIGINT NOT NULL,
                applied        BIGINT NOT NULL
            )"
        )]
    }

    fn create_indexes(&self, _backend: Backend, table: &str) -> Vec<String> {
        vec![format!(
            "CREATE UNIQUE INDEX IF NOT EXISTS {table}_once ON {table} (aggregate_id, sequence)"
        )]
    }

    async fn apply(
        &self,
        tx: &mut ProjectionTx<'_>,
        table: &str,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        // The batch runs under the projection's lock, so the maximum is stable and
        // the application order survives restarts and other processes' runners.
        let last_sql = format!("SELECT CAST(COALESCE(MAX(applied), 0) AS BIGINT) FROM {table}");
        let head = format!(
            "INSERT INTO {table} (aggregate_type, aggregate_id, sequence, position, tx, applied) "
        );
        match tx {
            ProjectionTx::Postgres(conn) => {
                let last: i64 = sqlx::query_scalar(&last_sql).fetch_one(&mut **conn).await?;
                for (n, chunk) in events.chunks(500).enumerate() {
                    let mut q = QueryBuilder::<sqlx::Postgres>::new(&head);
                    push_rows(&mut q, chunk, last + (n * 500) as i64);
                    q.build().execute(&mut **conn).await?;
                }
            }
            ProjectionTx::Sqlite(conn) => {
                let last: i64 = sqlx::query_scalar(&last_sql).fetch_one(&mut **conn).await?;
                for (n, chunk) in events.chunks(500).enumerate() {
                    let mut q = QueryBuilder::<sqlx::Sqlite>::new(&head);
                    push_rows(&mut q, chunk, last + (n * 500) as i64);
                    q.build().execute(&mut **conn).await?;
                }
            }
        }
        Ok(())
    }
}

fn push_rows<'a, DB: sqlx::Database>(
    q: &mut QueryBuilder<'a, DB>,
    events: &'a [RecordedEvent],
    applied_before: i64,
) where
    &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let mut applied = applied_before;
    q.push_values(events, |mut row, event| {
        applied += 1;
        row.push_bind(event.aggregate_type.as_str())
            .push_bind(event.aggregate_id.as_str())
            .push_bind(event.sequence)
            .push_bind(event.order.position)
            .push_bind(event.order.tx)
            .push_bind(applied);
    });
}

/// Every delivery [`SeenEvents`] recorded, in application order.
pub async fn seen_events(db: &Db) -> Vec<SeenRow> {
    let sql = format!(
        "SELECT aggregate_type, aggregate_id, sequence, position, tx, applied FROM {} ORDER BY applied",
        SeenEvents::NAME
    );
    kabinet_domain::on_db!(db, pool => {
        sqlx::query_as::<_, SeenRow>(&sql)
            .fetch_all(pool)
            .await
            .expect("read the recorded deliveries")
    })
}

/// Every committed event as (aggregate_type, aggregate_id, sequence, position, tx),
/// sorted by stream and sequence; `tx` is the global-order transaction as readers see it.
pub async fn journal_events(db: &Db) -> Vec<(String, String, i64, i64, i64)> {
    let tx = match db {
        Db::Postgres(_) => "tx_id::text::bigint",
        Db::Sqlite(_) => "position",
    };
    let sql = format!(
        "SELECT aggregate_type, aggregate_id, sequence, position, {tx} FROM events \
         ORDER BY aggregate_type, aggregate_id, sequence"
    );
    kabinet_domain::on_db!(db, pool => {
        sqlx::query_as(&sql)
            .fetch_all(pool)
            .await
            .expect("read the journal")
    })
}

/// Asserts that [`SeenEvents`] saw every committed event exactly once, each
/// stream in sequence order and the whole journal in global order. Returns the
/// number of events.
pub async fn assert_seen_matches_journal(db: &Db) -> usize {
    let journal = journal_events(db).await;
    let seen = seen_events(db).await;

    let mut delivered: Vec<_> = seen
        .iter()
        .map(|r| {
            (
                r.aggregate_type.clone(),
                r.aggregate_id.clone(),
                r.sequence,
                r.position,
                r.tx,
            )
        })
        .collect();
    delivered.sort();
    if let Some(i) =
        (0..journal.len().max(delivered.len())).find(|&i| journal.get(i) != delivered.get(i))
    {
        panic!(
            "the projection does not hold each of the {} journal events exactly once \
             ({} deliveries); first difference at {i}: journal {:?}, projection {:?}",
            journal.len(),
            delivered.len(),
            journal.get(i),
            delivered.get(i)
        );
    }

    // `seen` is in application order.
    let mut next_sequence: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    for row in &seen {
        let expected = next_sequence
            .entry((row.aggregate_type.as_str(), row.aggregate_id.as_str()))
            .or_insert(1);
        assert_eq!(
            row.sequence, *expected,
            "stream {}/{} was applied out of order: got sequence {} where {} was due",
            row.aggregate_type, row.aggregate_id, row.sequence, expected
        );
        *expected += 1;
    }
    for pair in seen.windows(2) {
        assert!(
            (pair[0].tx, pair[0].position) < (pair[1].tx, pair[1].position),
            "events were applied out of global order: {:?} before {:?}",
            pair[0],
            pair[1]
        );
    }
    journal.len()
}
