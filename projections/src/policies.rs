//! The OMS policies read model (E3).

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use kabinet_domain::policies::{Policy, PolicyEvent};
use kabinet_domain::{Backend, Db, RecordedEvent};
use sqlx::Row;
use uuid::Uuid;

use crate::page::OffsetPage;
use crate::projection::{event_of, from_micros, micros, Projection, ProjectionError, ProjectionTx};

/// The policies projection.
pub struct Policies;

/// Name of the projection and of its table.
pub const NAME: &str = "policies";

/// A policy or an application for one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyView {
    pub id: Uuid,
    pub patient_id: Uuid,
    pub surname: String,
    pub first_name: String,
    pub patronymic: Option<String>,
    pub birth_date: NaiveDate,
    /// SNILS digits.
    pub snils: String,
    /// `regional` or `federal`.
    pub kind: String,
    pub region: Option<String>,
    pub valid_from: NaiveDate,
    pub valid_until: NaiveDate,
    /// The stable name of a `PolicyStatus`.
    pub status: String,
    pub number: Option<String>,
    pub rejection_reason: Option<String>,
    pub applied_at: DateTime<Utc>,
    pub issued_at: Option<DateTime<Utc>>,
    pub renewal_reminded_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

#[async_trait]
impl Projection for Policies {
    fn name(&self) -> &'static str {
        NAME
    }

    fn create_table(&self, _backend: Backend, table: &str) -> Vec<String> {
        vec![format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                id                  TEXT   NOT NULL,
                patient_id          TEXT   NOT NULL,
                surname             TEXT   NOT NULL,
                first_name          TEXT   NOT NULL,
                patronymic          TEXT,
                birth_date          TEXT   NOT NULL,
                snils               TEXT   NOT NULL,
                kind                TEXT   NOT NULL,
                region              TEXT,
                valid_from          TEXT   NOT NULL,
                valid_until         TEXT   NOT NULL,
                status              TEXT   NOT NULL,
                number              TEXT,
                rejection_reason    TEXT,
                applied_at          BIGINT NOT NULL,
                issued_at           BIGINT,
                renewal_reminded_at BIGINT,
                updated_at          BIGINT NOT NULL
            )"
        )]
    }

    fn create_indexes(&self, _backend: Backend, table: &str) -> Vec<String> {
        vec![
            format!("CREATE UNIQUE INDEX IF NOT EXISTS {table}_key ON {table} (id)"),
            format!(
                "CREATE INDEX IF NOT EXISTS {table}_by_patient ON {table} (patient_id, applied_at)"
            ),
            format!(
                "CREATE INDEX IF NOT EXISTS {table}_by_status ON {table} (status, valid_until)"
            ),
        ]
    }

    async fn apply(
        &self,
        tx: &mut ProjectionTx<'_>,
        table: &str,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        for event in events {
            let Some(decoded) = event_of::<Policy>(NAME, event)? else {
                continue;
            };
            let id = event.aggregate_id.as_str();
            let at = micros(event.recorded_at);
            match decoded {
                PolicyEvent::PolicyApplied {
                    patient_id,
                    holder,
                    kind,
                    region,
                    valid_from,
                    valid_until,
                    status,
                } => {
                    let sql = format!(
                        "INSERT INTO {table} (id, patient_id, surname, first_name, patronymic, birth_date, \
                         snils, kind, region, valid_from, valid_until, status, applied_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)"
                    );
                    crate::on_tx!(tx, conn => {
                        sqlx::query(&sql)
                            .bind(id)
                            .bind(patient_id.to_string())
                            .bind(&holder.surname)
                            .bind(&holder.first_name)
                            .bind(&holder.patronymic)
                            .bind(holder.birth_date.to_string())
                            .bind(holder.snils.digits())
                            .bind(kind.as_str())
                            .bind(&region)
                            .bind(valid_from.to_string())
                            .bind(valid_until.to_string())
                            .bind(status.as_str())
                            .bind(at)
                            .execute(&mut **conn)
                            .await?;
                    });
                }
                PolicyEvent::PolicyIssued {
                    number,
                    issued_at,
                    status,
                    ..
                } => {
                    let sql = format!(
                        "UPDATE {table} SET status = $2, number = $3, issued_at = $4, updated_at = $5 WHERE id = $1"
                    );
                    crate::on_tx!(tx, conn => {
                        sqlx::query(&sql)
                            .bind(id)
                            .bind(status.as_str())
                            .bind(number.as_str())
                            .bind(micros(issued_at))
                            .bind(at)
                            .execute(&mut **conn)
                            .await?;
                    });
                }
                PolicyEvent::PolicyApplicationRejected { reason, status, .. } => {
                    let sql = format!(
                        "UPDATE {table} SET status = $2, rejection_reason = $3, updated_at = $4 WHERE id = $1"
                    );
                    crate::on_tx!(tx, conn => {
                        sqlx::query(&sql)
                            .bind(id)
                            .bind(status.as_str())
                            .bind(&reason)
                            .bind(at)
                            .execute(&mut **conn)
                            .await?;
                    });
                }
                PolicyEvent::PolicyRenewalDue { .. } => {
                    let sql = format!(
                        "UPDATE {table} SET renewal_reminded_at = $2, updated_at = $2 WHERE id = $1"
                    );
                    crate::on_tx!(tx, conn => {
                        sqlx::query(&sql).bind(id).bind(at).execute(&mut **conn).await?;
                    });
                }
                PolicyEvent::PolicyExpired { status, .. } => {
                    let sql =
                        format!("UPDATE {table} SET status = $2, updated_at = $3 WHERE id = $1");
                    crate::on_tx!(tx, conn => {
                        sqlx::query(&sql)
                            .bind(id)
                            .bind(status.as_str())
                            .bind(at)
                            .execute(&mut **conn)
                            .await?;
                    });
                }
            }
        }
        Ok(())
    }
}

const COLUMNS: &str = "id, patient_id, surname, first_name, patronymic, birth_date, snils, kind, region, \
    valid_from, valid_until, status, number, rejection_reason, applied_at, issued_at, renewal_reminded_at, updated_at";

fn view_of<R: Row>(row: &R) -> Result<PolicyView, sqlx::Error>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let uuid = |i: usize| -> Result<Uuid, sqlx::Error> {
        let text: String = row.try_get(i)?;
        Uuid::parse_str(&text).map_err(|e| sqlx::Error::Decode(Box::new(e)))
    };
    let date = |i: usize| -> Result<NaiveDate, sqlx::Error> {
        let text: String = row.try_get(i)?;
        NaiveDate::parse_from_str(&text, "%Y-%m-%d").map_err(|e| sqlx::Error::Decode(Box::new(e)))
    };
    let instant = |i: usize| -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        let us: Option<i64> = row.try_get(i)?;
        Ok(us.map(from_micros))
    };
    Ok(PolicyView {
        id: uuid(0)?,
        patient_id: uuid(1)?,
        surname: row.try_get(2)?,
        first_name: row.try_get(3)?,
        patronymic: row.try_get(4)?,
        birth_date: date(5)?,
        snils: row.try_get(6)?,
        kind: row.try_get(7)?,
        region: row.try_get(8)?,
        valid_from: date(9)?,
        valid_until: date(10)?,
        status: row.try_get(11)?,
        number: row.try_get(12)?,
        rejection_reason: row.try_get(13)?,
        applied_at: from_micros(row.try_get(14)?),
        issued_at: instant(15)?,
        renewal_reminded_at: instant(16)?,
        updated_at: from_micros(row.try_get(17)?),
    })
}

/// One policy by id.
pub async fn get(db: &Db, id: Uuid) -> Result<Option<PolicyView>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM policies WHERE id = $1");
    let id = id.to_string();
    kabinet_domain::on_db!(db, pool => {
        let row = sqlx::query(&sql).bind(&id).fetch_optional(pool).await?;
        row.as_ref().map(view_of).transpose()
    })
}

/// Which policies by their first day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Starts {
    /// Starting on or before the day (in force, for active ones).
    ByDay(NaiveDate),
    /// Starting after the day (issued, not yet in force).
    AfterDay(NaiveDate),
}

/// A page of policies: of one patient, or (with `None`) of everyone, newest first,
/// optionally of one status and by their first day.
pub async fn list(
    db: &Db,
    patient_id: Option<Uuid>,
    status: Option<&str>,
    starts: Option<Starts>,
    first: usize,
    offset: usize,
) -> Result<OffsetPage<PolicyView>, sqlx::Error> {
    // Dates are stored as YYYY-MM-DD, so text order is date order.
    let sql = format!(
        "SELECT {COLUMNS} FROM policies WHERE ($1 = '' OR patient_id = $1) AND ($2 = '' OR status = $2) \
         AND ($5 = '' OR valid_from <= $5) AND ($6 = '' OR valid_from > $6) \
         ORDER BY applied_at DESC, id DESC LIMIT $3 OFFSET $4"
    );
    let patient = patient_id.map(|p| p.to_string()).unwrap_or_default();
    let status = status.unwrap_or_default().to_string();
    let (by, after) = match starts {
        None => (String::new(), String::new()),
        Some(Starts::ByDay(day)) => (day.to_string(), String::new()),
        Some(Starts::AfterDay(day)) => (String::new(), day.to_string()),
    };
    kabinet_domain::on_db!(db, pool => {
        let rows = sqlx::query(&sql)
            .bind(&patient)
            .bind(&status)
            .bind(first as i64 + 1)
            .bind(offset as i64)
            .bind(&by)
            .bind(&after)
            .fetch_all(pool)
            .await?;
        let views = rows.iter().map(view_of).collect::<Result<Vec<_>, _>>()?;
        Ok(OffsetPage::from_rows(views, offset, first))
    })
}

/// Active policies ending on or before `last_day` (renewal reminder not yet sent
/// when `unreminded`), at most `limit`.
pub async fn active_ending_by(
    db: &Db,
    last_day: NaiveDate,
    unreminded: bool,
    limit: usize,
) -> Result<Vec<Uuid>, sqlx::Error> {
    let sql = "SELECT id FROM policies WHERE status = 'active' AND valid_until <= $1 \
               AND ($2 = 0 OR renewal_reminded_at IS NULL) ORDER BY valid_until LIMIT $3";
    kabinet_domain::on_db!(db, pool => {
        let ids: Vec<String> = sqlx::query_scalar(sql)
            .bind(last_day.to_string())
            .bind(i64::from(unreminded))
            .bind(limit as i64)
            .fetch_all(pool)
            .await?;
        Ok(ids.iter().filter_map(|s| Uuid::parse_str(s).ok()).collect())
    })
}
