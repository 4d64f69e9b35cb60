//! The referral requests read model (C6).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use kabinet_domain::appointments::{Referral, ReferralEvent};
use kabinet_domain::{Backend, Db, RecordedEvent};
use sqlx::Row;
use uuid::Uuid;

use crate::page::OffsetPage;
use crate::projection::{event_of, from_micros, micros, Projection, ProjectionError, ProjectionTx};

/// The referrals projection.
pub struct Referrals;

/// Name of the projection and of its table.
pub const NAME: &str = "referrals";

/// A referral request as the patient and clinic see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferralView {
    pub id: Uuid,
    pub patient_id: Uuid,
    pub organisation_id: Uuid,
    pub specialty: String,
    pub reason: String,
    /// `processing`, `approved` or `rejected`.
    pub status: String,
    pub decision: Option<String>,
    pub requested_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[async_trait]
impl Projection for Referrals {
    fn name(&self) -> &'static str {
        NAME
    }

    fn create_table(&self, _backend: Backend, table: &str) -> Vec<String> {
        vec![format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                id              TEXT   NOT NULL,
                patient_id      TEXT   NOT NULL,
                organisation_id TEXT   NOT NULL,
                specialty       TEXT   NOT NULL,
                reason          TEXT   NOT NULL,
                status          TEXT   NOT NULL,
                decision        TEXT,
                requested_at    BIGINT NOT NULL,
                updated_at      BIGINT NOT NULL
            )"
        )]
    }

    fn create_indexes(&self, _backend: Backend, table: &str) -> Vec<String> {
        vec![
            format!("CREATE UNIQUE INDEX IF NOT EXISTS {table}_key ON {table} (id)"),
            format!("CREATE INDEX IF NOT EXISTS {table}_by_patient ON {table} (patient_id, requested_at)"),
            format!("CREATE INDEX IF NOT EXISTS {table}_by_organisation ON {table} (organisation_id, status, requested_at)"),
        ]
    }

    async fn apply(
        &self,
        tx: &mut ProjectionTx<'_>,
        table: &str,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        for event in events {
            let Some(decoded) = event_of::<Referral>(NAME, event)? else {
                continue;
            };
            let at = micros(event.recorded_at);
            let (status, decision) = match decoded {
                ReferralEvent::ReferralRequested {
                    patient_id,
                    organisation_id,
                    specialty,
                    reason,
                    ..
                } => {
                    let sql = format!(
                        "INSERT INTO {table} (id, patient_id, organisation_id, specialty, reason, status, \
                         requested_at, updated_at) VALUES ($1, $2, $3, $4, $5, 'processing', $6, $6)"
                    );
                    crate::on_tx!(tx, conn => {
                        sqlx::query(&sql)
                            .bind(&event.aggregate_id)
                            .bind(patient_id.to_string())
                            .bind(organisation_id.to_string())
                            .bind(&specialty)
                            .bind(&reason)
                            .bind(at)
                            .execute(&mut **conn)
                            .await?;
                    });
                    continue;
                }
                ReferralEvent::ReferralApproved { note, status, .. } => (status, note),
                ReferralEvent::ReferralRejected { reason, status, .. } => (status, Some(reason)),
            };
            let sql = format!(
                "UPDATE {table} SET status = $2, decision = $3, updated_at = $4 WHERE id = $1"
            );
            crate::on_tx!(tx, conn => {
                sqlx::query(&sql)
                    .bind(&event.aggregate_id)
                    .bind(status.as_str())
                    .bind(decision.clone())
                    .bind(at)
                    .execute(&mut **conn)
                    .await?;
            });
        }
        Ok(())
    }
}

fn view_of<R: Row>(row: &R) -> Result<ReferralView, sqlx::Error>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let uuid = |i: usize| -> Result<Uuid, sqlx::Error> {
        let text: String = row.try_get(i)?;
        Uuid::parse_str(&text).map_err(|e| sqlx::Error::Decode(Box::new(e)))
    };
    Ok(ReferralView {
        id: uuid(0)?,
        patient_id: uuid(1)?,
        organisation_id: uuid(2)?,
        specialty: row.try_get(3)?,
        reason: row.try_get(4)?,
        status: row.try_get(5)?,
        decision: row.try_get(6)?,
        requested_at: from_micros(row.try_get(7)?),
        updated_at: from_micros(row.try_get(8)?),
    })
}

const COLUMNS: &str = "id, patient_id, organisation_id, specialty, reason, status, decision, requested_at, updated_at";

/// One referral request by id.
pub async fn get(db: &Db, id: Uuid) -> Result<Option<ReferralView>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM referrals WHERE id = $1");
    let id = id.to_string();
    kabinet_domain::on_db!(db, pool => {
        let row = sqlx::query(&sql).bind(&id).fetch_optional(pool).await?;
        row.as_ref().map(view_of).transpose()
    })
}

/// A page of a patient's referral requests, newest first, optionally of one status.
pub async fn list_for_patient(
    db: &Db,
    patient_id: Uuid,
    status: Option<&str>,
    first: usize,
    offset: usize,
) -> Result<OffsetPage<ReferralView>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM referrals WHERE patient_id = $1 AND ($2 = '' OR status = $2) \
         ORDER BY requested_at DESC, id DESC LIMIT $3 OFFSET $4"
    );
    let patient = patient_id.to_string();
    let status = status.unwrap_or_default().to_string();
    kabinet_domain::on_db!(db, pool => {
        let rows = sqlx::query(&sql)
            .bind(&patient)
            .bind(&status)
            .bind(first as i64 + 1)
            .bind(offset as i64)
            .fetch_all(pool)
            .await?;
        let views = rows.iter().map(view_of).collect::<Result<Vec<_>, _>>()?;
        Ok(OffsetPage::from_rows(views, offset, first))
    })
}
