//! The appointments read model: "my appointments" (C3), visit history (C4), and
//! the clinic's day list.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use kabinet_domain::appointments::{Appointment, AppointmentEvent, VisitOutcome};
use kabinet_domain::{Backend, Db, RecordedEvent};
use sqlx::{QueryBuilder, Row};
use uuid::Uuid;

use crate::page::OffsetPage;
use crate::projection::{
    bad_event, event_of, from_micros, micros, Projection, ProjectionError, ProjectionTx,
};

/// The appointments projection.
pub struct Appointments;

/// Name of the projection and of its table.
pub const NAME: &str = "appointments";

/// An appointment as its patient and clinic see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppointmentView {
    pub id: Uuid,
    pub patient_id: Uuid,
    pub doctor_id: Uuid,
    pub organisation_id: Uuid,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub day: NaiveDate,
    pub time_zone: String,
    pub room: String,
    pub service_code: Option<String>,
    pub status: String,
    pub cancel_reason: Option<String>,
    pub cancelled_by: Option<String>,
    pub outcome: Option<VisitOutcome>,
    pub review_rating: Option<i32>,
    /// Specialty of the doctor (joined from the directory).
    pub specialty: Option<String>,
}

/// Which appointments a list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Active appointments that have not started.
    Upcoming,
    /// Appointments that have started or ended, not cancelled.
    Past,
    Cancelled,
    All,
}

/// Sort orders of the lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    StartAsc,
    StartDesc,
    /// By status, then newest first.
    Status,
}

/// Filters of [`list_for_patient`] and [`visit_history`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppointmentFilter {
    pub when: When,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub specialty: Option<String>,
    pub statuses: Vec<String>,
    pub doctor_id: Option<Uuid>,
    /// Service type (`consultation`, …) of the booked service.
    pub service_kind: Option<String>,
}

impl Default for AppointmentFilter {
    fn default() -> Self {
        AppointmentFilter {
            when: When::All,
            from: None,
            to: None,
            specialty: None,
            statuses: Vec::new(),
            doctor_id: None,
            service_kind: None,
        }
    }
}

#[async_trait]
impl Projection for Appointments {
    fn name(&self) -> &'static str {
        NAME
    }

    fn create_table(&self, _backend: Backend, table: &str) -> Vec<String> {
        vec![format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                id              TEXT   NOT NULL,
                patient_id      TEXT   NOT NULL,
                doctor_id       TEXT   NOT NULL,
                organisation_id TEXT   NOT NULL,
                start_at        BIGINT NOT NULL,
                end_at          BIGINT NOT NULL,
                local_day       TEXT   NOT NULL,
                time_zone       TEXT   NOT NULL,
                room            TEXT   NOT NULL,
                service_code    TEXT,
                status          TEXT   NOT NULL,
                cancel_reason   TEXT,
                cancelled_by    TEXT,
                outcome         TEXT,
                review_rating   INTEGER,
                updated_position BIGINT NOT NULL
            )"
        )]
    }

    fn create_indexes(&self, _backend: Backend, table: &str) -> Vec<String> {
        vec![
            format!("CREATE UNIQUE INDEX IF NOT EXISTS {table}_key ON {table} (id)"),
            format!("CREATE INDEX IF NOT EXISTS {table}_by_patient ON {table} (patient_id, start_at)"),
            format!("CREATE INDEX IF NOT EXISTS {table}_by_organisation ON {table} (organisation_id, local_day, start_at)"),
        ]
    }

    async fn apply(
        &self,
        tx: &mut ProjectionTx<'_>,
        table: &str,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        for event in events {
            let Some(decoded) = event_of::<Appointment>(NAME, event)? else {
                continue;
            };
            let id = event.aggregate_id.as_str();
            let position = event.position();
            match decoded {
                AppointmentEvent::AppointmentBooked {
                    patient_id,
                    slot,
                    service_code,
                    ..
                } => {
                    let sql = format!(
                        "INSERT INTO {table} (id, patient_id, doctor_id, organisation_id, start_at, end_at, \
                         local_day, time_zone, room, service_code, status, updated_position) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'booked', $11)"
                    );
                    crate::on_tx!(tx, conn => {
                        sqlx::query(&sql)
                            .bind(id)
                            .bind(patient_id.to_string())
                            .bind(slot.doctor_id.to_string())
                            .bind(slot.organisation_id.to_string())
                            .bind(micros(slot.start))
                            .bind(micros(slot.end))
                            .bind(slot.day.to_string())
                            .bind(&slot.time_zone)
                            .bind(&slot.room)
                            .bind(service_code.clone())
                            .bind(position)
                            .execute(&mut **conn)
                            .await?;
                    });
                }
                AppointmentEvent::AppointmentRescheduled { slot, .. } => {
                    let sql = format!(
                        "UPDATE {table} SET start_at = $2, end_at = $3, local_day = $4, room = $5, \
                         status = 'booked', updated_position = $6 WHERE id = $1"
                    );
                    crate::on_tx!(tx, conn => {
                        sqlx::query(&sql)
                            .bind(id)
                            .bind(micros(slot.start))
                            .bind(micros(slot.end))
                            .bind(slot.day.to_string())
                            .bind(&slot.room)
                            .bind(position)
                            .execute(&mut **conn)
                            .await?;
                    });
                }
                AppointmentEvent::AppointmentCancelled { reason, by, .. } => {
                    let sql = format!(
                        "UPDATE {table} SET status = 'cancelled', cancel_reason = $2, cancelled_by = $3, \
                         updated_position = $4 WHERE id = $1"
                    );
                    crate::on_tx!(tx, conn => {
                        sqlx::query(&sql)
                            .bind(id)
                            .bind(reason.clone())
                            .bind(by.as_str())
                            .bind(position)
                            .execute(&mut **conn)
                            .await?;
                    });
                }
                AppointmentEvent::PatientArrived { status, .. }
                | AppointmentEvent::PatientDidNotCome { status, .. } => {
                    let sql = format!(
                        "UPDATE {table} SET status = $2, updated_position = $3 WHERE id = $1"
                    );
                    crate::on_tx!(tx, conn => {
                        sqlx::query(&sql).bind(id).bind(status.as_str()).bind(position).execute(&mut **conn).await?;
                    });
                }
                AppointmentEvent::VisitFulfilled { outcome, .. } => {
                    let outcome =
                        serde_json::to_string(&outcome).map_err(|e| bad_event(NAME, event, e))?;
                    let sql = format!(
                        "UPDATE {table} SET status = 'fulfilled', outcome = $2, updated_position = $3 WHERE id = $1"
                    );
                    crate::on_tx!(tx, conn => {
                        sqlx::query(&sql).bind(id).bind(&outcome).bind(position).execute(&mut **conn).await?;
                    });
                }
                AppointmentEvent::ReviewLeft { rating, .. } => {
                    let sql = format!("UPDATE {table} SET review_rating = $2, updated_position = $3 WHERE id = $1");
                    crate::on_tx!(tx, conn => {
                        sqlx::query(&sql).bind(id).bind(rating).bind(position).execute(&mut **conn).await?;
                    });
                }
            }
        }
        Ok(())
    }
}

const COLUMNS: &str =
    "a.id, a.patient_id, a.doctor_id, a.organisation_id, a.start_at, a.end_at, a.local_day, \
     a.time_zone, a.room, a.service_code, a.status, a.cancel_reason, a.cancelled_by, a.outcome, \
     a.review_rating, d.specialty";

const FROM: &str = " FROM appointments a LEFT JOIN doctors d ON d.id = a.doctor_id \
     LEFT JOIN medical_services s ON s.code = a.service_code";

fn view_of<R: Row>(row: &R) -> Result<AppointmentView, sqlx::Error>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<i32>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let decode = |e: Box<dyn std::error::Error + Send + Sync>| sqlx::Error::Decode(e);
    let uuid = |i: usize| -> Result<Uuid, sqlx::Error> {
        let text: String = row.try_get(i)?;
        Uuid::parse_str(&text).map_err(|e| decode(Box::new(e)))
    };
    let day: String = row.try_get(6)?;
    let outcome: Option<String> = row.try_get(13)?;
    Ok(AppointmentView {
        id: uuid(0)?,
        patient_id: uuid(1)?,
        doctor_id: uuid(2)?,
        organisation_id: uuid(3)?,
        start: from_micros(row.try_get(4)?),
        end: from_micros(row.try_get(5)?),
        day: day.parse().map_err(|e| decode(Box::new(e)))?,
        time_zone: row.try_get(7)?,
        room: row.try_get(8)?,
        service_code: row.try_get(9)?,
        status: row.try_get(10)?,
        cancel_reason: row.try_get(11)?,
        cancelled_by: row.try_get(12)?,
        outcome: outcome
            .map(|o| serde_json::from_str(&o))
            .transpose()
            .map_err(|e| decode(Box::new(e)))?,
        review_rating: row.try_get(14)?,
        specialty: row.try_get(15)?,
    })
}

/// One appointment by id.
pub async fn get(db: &Db, id: Uuid) -> Result<Option<AppointmentView>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS}{FROM} WHERE a.id = $1");
    let id = id.to_string();
    kabinet_domain::on_db!(db, pool => {
        let row = sqlx::query(&sql).bind(&id).fetch_optional(pool).await?;
        row.as_ref().map(view_of).transpose()
    })
}

/// Which rows a list is about: one patient's, or one organisation's day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Patient(Uuid),
    Organisation { id: Uuid, day: NaiveDate },
}

/// A page of appointments.
pub async fn list(
    db: &Db,
    scope: &Scope,
    filter: &AppointmentFilter,
    sort: Sort,
    now: DateTime<Utc>,
    first: usize,
    offset: usize,
) -> Result<OffsetPage<AppointmentView>, sqlx::Error> {
    kabinet_domain::on_db!(db, pool => {
        let mut q = QueryBuilder::new(format!("SELECT {COLUMNS}{FROM} WHERE "));
        match scope {
            Scope::Patient(patient) => {
                q.push("a.patient_id = ").push_bind(patient.to_string());
            }
            Scope::Organisation { id, day } => {
                q.push("a.organisation_id = ")
                    .push_bind(id.to_string())
                    .push(" AND a.local_day = ")
                    .push_bind(day.to_string());
            }
        }
        match filter.when {
            When::Upcoming => {
                q.push(" AND a.status IN ('booked', 'arrived') AND a.start_at > ").push_bind(micros(now));
            }
            When::Past => {
                q.push(" AND a.status <> 'cancelled' AND a.start_at <= ").push_bind(micros(now));
            }
            When::Cancelled => {
                q.push(" AND a.status = 'cancelled'");
            }
            When::All => {}
        }
        if let Some(from) = filter.from {
            q.push(" AND a.start_at >= ").push_bind(micros(from));
        }
        if let Some(to) = filter.to {
            q.push(" AND a.start_at < ").push_bind(micros(to));
        }
        if let Some(specialty) = &filter.specialty {
            q.push(" AND d.specialty = ").push_bind(specialty.trim().to_lowercase());
        }
        if let Some(doctor) = filter.doctor_id {
            q.push(" AND a.doctor_id = ").push_bind(doctor.to_string());
        }
        if let Some(kind) = &filter.service_kind {
            q.push(" AND s.kind = ").push_bind(kind.as_str());
        }
        if !filter.statuses.is_empty() {
            q.push(" AND a.status IN (");
            let mut list = q.separated(", ");
            for status in &filter.statuses {
                list.push_bind(status.as_str());
            }
            q.push(")");
        }
        q.push(match sort {
            Sort::StartAsc => " ORDER BY a.start_at ASC, a.id ASC",
            Sort::StartDesc => " ORDER BY a.start_at DESC, a.id DESC",
            Sort::Status => " ORDER BY a.status ASC, a.start_at DESC, a.id DESC",
        });
        q.push(" LIMIT ").push_bind(first as i64 + 1).push(" OFFSET ").push_bind(offset as i64);
        let rows = q.build().fetch_all(pool).await?;
        let views = rows.iter().map(view_of).collect::<Result<Vec<_>, _>>()?;
        Ok(OffsetPage::from_rows(views, offset, first))
    })
}
