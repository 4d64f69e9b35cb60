//! Rebuild: replay the whole journal into a fresh table, then swap it in while
//! the live projection keeps serving.

use std::sync::Arc;

use kabinet_domain::journal::{read_after_pg, read_after_sqlite};
use kabinet_domain::{Db, Journal, JournalOrder};

use crate::projection::{Projection, ProjectionError, ProjectionTx};
use crate::projector::{
    checkpoint_of, ensure_checkpoint, lock_key, run_batch, runner_lock, Batch, Target,
};

/// Why a rebuild failed; the live read model is untouched.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// What a rebuild did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebuildReport {
    pub projection: &'static str,
    pub events_applied: u64,
    pub checkpoint: JournalOrder,
}

fn quote(table: &str) -> String {
    format!("\"{}\"", table.replace('"', "\"\""))
}

/// Rebuilds `projection` from position zero into a shadow table and swaps it in.
///
/// The swap happens in one transaction holding the live runner's lock, after the
/// shadow has applied everything committed: readers see the old table or the new
/// one, never a half-built one, and the checkpoint moves with the table.
pub async fn rebuild(
    journal: &Journal,
    projection: Arc<dyn Projection>,
    batch_size: i64,
) -> Result<RebuildReport, RebuildError> {
    let live = projection.name();
    let shadow = format!("{live}__rebuild");
    let shadow_checkpoint = format!("{live}#rebuild");
    let backend = journal.db().backend();
    let db = journal.db();
    // The live checkpoint must exist for the swap to move it (the server may
    // never have run this projection).
    ensure_checkpoint(db, live).await?;
    // The shadow gets its indexes up front: upserts (ON CONFLICT) need the
    // unique ones. The swap renames them to the live names.
    let mut create = projection.create_table(backend, &shadow);
    create.extend(projection.create_indexes(backend, &shadow));
    kabinet_domain::on_db!(db, pool => {
        sqlx::query(&format!("DROP TABLE IF EXISTS {}", quote(&shadow))).execute(pool).await?;
        for statement in &create {
            sqlx::query(statement).execute(pool).await?;
        }
        sqlx::query("DELETE FROM projection_checkpoints WHERE name = $1")
            .bind(&shadow_checkpoint)
            .execute(pool)
            .await?;
    });
    ensure_checkpoint(db, &shadow_checkpoint).await?;
    let mut applied = 0u64;
    loop {
        let target = Target {
            projection: projection.as_ref(),
            checkpoint: &shadow_checkpoint,
            table: &shadow,
        };
        match run_batch(journal, &[target], lock_key(&shadow_checkpoint), batch_size).await? {
            (Batch::Applied { count, .. }, _) => applied += count as u64,
            (Batch::Idle { .. }, _) | (Batch::Busy, _) => break,
        }
    }
    let from = checkpoint_of(db, &shadow_checkpoint).await?;
    let (tail, at) = swap(
        journal,
        projection.as_ref(),
        &shadow,
        &shadow_checkpoint,
        from,
        batch_size,
    )
    .await?;
    Ok(RebuildReport {
        projection: live,
        events_applied: applied + tail,
        checkpoint: at,
    })
}

async fn swap(
    journal: &Journal,
    projection: &dyn Projection,
    shadow: &str,
    shadow_checkpoint: &str,
    mut at: JournalOrder,
    batch_size: i64,
) -> Result<(u64, JournalOrder), RebuildError> {
    let live = projection.name();
    let backend = journal.db().backend();
    let mut applied = 0u64;
    let statements = [
        format!("DROP TABLE IF EXISTS {}", quote(live)),
        format!("ALTER TABLE {} RENAME TO {}", quote(shadow), quote(live)),
    ];
    let create_indexes = projection.create_indexes(backend, live);
    const MOVE_CHECKPOINT: &str = "UPDATE projection_checkpoints \
         SET tx_id = $2, position = $3, updated_at = CURRENT_TIMESTAMP WHERE name = $1";
    const DROP_CHECKPOINT: &str = "DELETE FROM projection_checkpoints WHERE name = $1";
    match journal.db() {
        Db::Postgres(pool) => {
            let mut tx = pool.begin().await?;
            // Waits for the live runner's current batch, then keeps it out.
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(runner_lock())
                .execute(&mut *tx)
                .await?;
            loop {
                let events = read_after_pg(&mut tx, at, batch_size)
                    .await
                    .map_err(ProjectionError::from)?;
                let Some(last) = events.last().map(|e| e.order) else {
                    break;
                };
                projection
                    .apply(&mut ProjectionTx::Postgres(&mut tx), shadow, &events)
                    .await?;
                applied += events.len() as u64;
                at = last;
            }
            for statement in &statements {
                sqlx::query(statement).execute(&mut *tx).await?;
            }
            // The shadow's indexes came along with it: give them the live names.
            const PG_INDEXES: &str = "SELECT indexname::text FROM pg_indexes \
                 WHERE schemaname = current_schema() AND tablename = $1";
            let names: Vec<String> = sqlx::query_scalar(PG_INDEXES)
                .bind(live)
                .fetch_all(&mut *tx)
                .await?;
            for name in names {
                if let Some(suffix) = name.strip_prefix(shadow) {
                    let rename = format!(
                        "ALTER INDEX {} RENAME TO {}",
                        quote(&name),
                        quote(&format!("{live}{suffix}"))
                    );
                    sqlx::query(&rename).execute(&mut *tx).await?;
                }
            }
            for statement in &create_indexes {
                sqlx::query(statement).execute(&mut *tx).await?;
            }
            sqlx::query(MOVE_CHECKPOINT)
                .bind(live)
                .bind(at.tx)
                .bind(at.position)
                .execute(&mut *tx)
                .await?;
            sqlx::query(DROP_CHECKPOINT)
                .bind(shadow_checkpoint)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        Db::Sqlite(pool) => {
            let _writer = journal.lock_sqlite_writer().await;
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            loop {
                let events = read_after_sqlite(&mut tx, at, batch_size)
                    .await
                    .map_err(ProjectionError::from)?;
                let Some(last) = events.last().map(|e| e.order) else {
                    break;
                };
                projection
                    .apply(&mut ProjectionTx::Sqlite(&mut tx), shadow, &events)
                    .await?;
                applied += events.len() as u64;
                at = last;
            }
            for statement in &statements {
                sqlx::query(statement).execute(&mut *tx).await?;
            }
            // SQLite cannot rename an index: build the live ones, drop the shadow's.
            const SQLITE_INDEXES: &str = "SELECT name FROM sqlite_master \
                 WHERE type = 'index' AND tbl_name = $1 AND sql IS NOT NULL";
            let names: Vec<String> = sqlx::query_scalar(SQLITE_INDEXES)
                .bind(live)
                .fetch_all(&mut *tx)
                .await?;
            for statement in &create_indexes {
                sqlx::query(statement).execute(&mut *tx).await?;
            }
            for name in names.iter().filter(|n| n.starts_with(shadow)) {
                sqlx::query(&format!("DROP INDEX {}", quote(name)))
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query(MOVE_CHECKPOINT)
                .bind(live)
                .bind(at.tx)
                .bind(at.position)
                .execute(&mut *tx)
                .await?;
            sqlx::query(DROP_CHECKPOINT)
                .bind(shadow_checkpoint)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
    }
    Ok((applied, at))
}
