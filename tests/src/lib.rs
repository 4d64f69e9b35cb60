//! Test support shared by the conformance suites, the end-to-end tests and the
//! `kabinet-bench` binary: a fresh database per test on either backend, a macro
//! that runs one test body on both, a tiny aggregate and a recording projection.

pub mod accounts;
pub mod api_bench;
pub mod browser;
pub mod builders;
pub mod clinic;
pub mod delivery;
pub mod identity;
pub mod outbound;
pub mod pdf_text;
pub mod replay;
mod seen;
pub mod server;
mod tally;
mod test_db;
pub mod tokens;
pub mod ws;

pub use seen::{assert_seen_matches_journal, journal_events, seen_events, SeenEvents, SeenRow};
pub use tally::{Tally, TallyCommand, TallyError, TallyEvent, TallyServices};
pub use test_db::{TestBackend, TestDb, PG_URL_ENV};

use std::future::Future;
use std::time::Duration;

use kabinet_domain::command::{CommandError, CommandOutcome, CommandRunner, Retry};
use kabinet_domain::{Actor, EventMetadata, Journal, Role};
use uuid::Uuid;

/// The longest any single conformance test may run before it is failed.
pub const TEST_DEADLINE: Duration = Duration::from_secs(240);

/// Runs `body` on a fresh, migrated database of `backend`, failing it after
/// [`TEST_DEADLINE`]. Returns without running when PostgreSQL is unreachable
/// outside CI (see [`TestDb::fresh`]).
pub async fn run_conformance<F, Fut>(backend: TestBackend, body: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(test_db) = TestDb::fresh(backend).await else {
        return;
    };
    if tokio::time::timeout(TEST_DEADLINE, body(test_db))
        .await
        .is_err()
    {
        panic!("{backend:?}: the test did not finish within {TEST_DEADLINE:?}");
    }
}

/// Defines a test once and runs it on both backends:
/// `conformance!(name, |test_db| async move { ... })` expands to a module `name`
/// with the tests `name::sqlite` and `name::postgres`;
/// `conformance!(each: first, second)` does so for each `async fn(TestDb)` named.
#[macro_export]
macro_rules! conformance {
    (each: $($test:ident),+ $(,)?) => {
        $( $crate::conformance!($test, super::$test); )+
    };
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                $crate::run_conformance($crate::TestBackend::Sqlite, $body).await
            }

            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                $crate::run_conformance($crate::TestBackend::Postgres, $body).await
            }
        }
    };
}

/// Metadata of a command sent by `account` as a patient.
pub fn metadata_of(account: Uuid) -> EventMetadata {
    let actor = Actor {
        account_id: account,
        role: Role::Patient,
        organisation_id: None,
    };
    EventMetadata::new(actor, format!("test-{}", Uuid::new_v4().simple()))
}

/// Adds `amount` to the tally `aggregate_id` as `account`, with no idempotency key.
pub async fn add(
    commands: &CommandRunner,
    aggregate_id: &str,
    amount: i64,
    account: Uuid,
    retry: Retry,
) -> Result<CommandOutcome, CommandError<TallyError>> {
    let input = serde_json::json!({ "aggregate_id": aggregate_id, "amount": amount });
    commands
        .execute::<Tally>(
            aggregate_id,
            TallyCommand::Add { amount },
            &TallyServices::default(),
            &metadata_of(account),
            &input,
            retry,
        )
        .await
        .map(|(outcome, _)| outcome)
}

/// Adds each of `amounts` to the tally `aggregate_id` in one commit (one event each).
pub async fn add_each(
    commands: &CommandRunner,
    aggregate_id: &str,
    amounts: Vec<i64>,
    account: Uuid,
    retry: Retry,
) -> Result<CommandOutcome, CommandError<TallyError>> {
    let input = serde_json::json!({ "aggregate_id": aggregate_id, "amounts": amounts });
    commands
        .execute::<Tally>(
            aggregate_id,
            TallyCommand::AddEach { amounts },
            &TallyServices::default(),
            &metadata_of(account),
            &input,
            retry,
        )
        .await
        .map(|(outcome, _)| outcome)
}

/// Seals until every committed event is covered by a seal, and returns the
/// number of seals written.
pub async fn seal_all(journal: &Journal) -> usize {
    seal_all_by(journal, 10_000).await
}

/// Seals until every committed event is covered by a seal of at most
/// `per_seal` events, and returns the number of seals written.
///
/// On PostgreSQL a seal stops at the snapshot horizon, which any open
/// transaction in the cluster (another test's, say) holds back for a moment:
/// this first waits until every event is below it, so that each seal but the
/// last takes exactly `per_seal` events.
pub async fn seal_all_by(journal: &Journal, per_seal: i64) -> usize {
    const ABOVE_HORIZON: &str =
        "SELECT COUNT(*) FROM events WHERE tx_id >= pg_snapshot_xmin(pg_current_snapshot())";
    const SEALED: &str = "SELECT CAST(COALESCE(SUM(event_count), 0) AS BIGINT) FROM seals";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    if let kabinet_domain::Db::Postgres(pool) = journal.db() {
        loop {
            let above: i64 = sqlx::query_scalar(ABOVE_HORIZON)
                .fetch_one(pool)
                .await
                .expect("count events above the horizon");
            if above == 0 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "events stay above the snapshot horizon for a minute"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let mut written = 0;
    loop {
        let total = journal.count().await.expect("count events");
        let sealed: i64 = kabinet_domain::on_db!(journal.db(), pool => {
            sqlx::query_scalar(SEALED)
                .fetch_one(pool)
                .await
                .expect("sum sealed events")
        });
        if sealed >= total {
            return written;
        }
        if journal.seal(per_seal).await.expect("seal").is_some() {
            written += 1;
        } else {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the journal could not be sealed up to its end within a minute"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
