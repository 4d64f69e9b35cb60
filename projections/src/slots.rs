//! The slot calendar read model (C1): every published slot with its state.

use async_trait::async_trait;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use kabinet_domain::appointments::{Appointment, AppointmentEvent};
use kabinet_domain::directory::{Schedule, ScheduleEvent};
use kabinet_domain::{Backend, Db, RecordedEvent};
use sqlx::Row;
use uuid::Uuid;

use crate::projection::{event_of, from_micros, micros, Projection, ProjectionError, ProjectionTx};

/// The slots projection.
pub struct Slots;

/// Name of the projection and of its table.
pub const NAME: &str = "schedule_slots";

/// A slot of a doctor's calendar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotView {
    pub doctor_id: Uuid,
    pub organisation_id: Uuid,
    pub period_id: Uuid,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub day: NaiveDate,
    pub time_zone: String,
    pub room: String,
    /// `free`, `booked` or `closed`.
    pub status: String,
}

#[async_trait]
impl Projection for Slots {
    fn name(&self) -> &'static str {
        NAME
    }

    fn create_table(&self, _backend: Backend, table: &str) -> Vec<String> {
        vec![format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                doctor_id       TEXT    NOT NULL,
                start_at        BIGINT  NOT NULL,
                end_at          BIGINT  NOT NULL,
                period_id       TEXT    NOT NULL,
                organisation_id TEXT    NOT NULL,
                local_day       TEXT    NOT NULL,
                time_zone       TEXT    NOT NULL,
                room            TEXT    NOT NULL,
                status          TEXT    NOT NULL,
                appointment_id  TEXT,
                period_closed   INTEGER NOT NULL DEFAULT 0
            )"
        )]
    }

    fn create_indexes(&self, _backend: Backend, table: &str) -> Vec<String> {
        vec![
            format!(
                "CREATE UNIQUE INDEX IF NOT EXISTS {table}_key ON {table} (doctor_id, start_at)"
            ),
            format!(
                "CREATE INDEX IF NOT EXISTS {table}_free ON {table} (doctor_id, status, start_at)"
            ),
            format!(
                "CREATE INDEX IF NOT EXISTS {table}_by_appointment ON {table} (appointment_id)"
            ),
        ]
    }

    async fn apply(
        &self,
        tx: &mut ProjectionTx<'_>,
        table: &str,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        let release = format!(
            "UPDATE {table} SET status = CASE WHEN period_closed = 1 THEN 'closed' ELSE 'free' END, \
             appointment_id = NULL WHERE appointment_id = $1"
        );
        let hold = format!(
            "UPDATE {table} SET status = 'booked', appointment_id = $3 WHERE doctor_id = $1 AND start_at = $2"
        );
        for event in events {
            if let Some(decoded) = event_of::<Schedule>(NAME, event)? {
                match decoded {
                    ScheduleEvent::PeriodPublished(period) => {
                        let rows: Vec<(i64, i64)> = period
                            .slot_starts()
                            .map(|start| {
                                (
                                    micros(start),
                                    micros(start + Duration::minutes(period.slot_minutes as i64)),
                                )
                            })
                            .collect();
                        let head = format!(
                            "INSERT INTO {table} (doctor_id, start_at, end_at, period_id, organisation_id, \
                             local_day, time_zone, room, status) "
                        );
                        let (doctor, period_id, organisation, day) = (
                            period.doctor_id.to_string(),
                            period.period_id.to_string(),
                            period.organisation_id.to_string(),
                            period.date.to_string(),
                        );
                        for chunk in rows.chunks(500) {
                            crate::on_tx!(tx, conn => {
                                let mut q = sqlx::QueryBuilder::new(&head);
                                q.push_values(chunk, |mut row, (start, end)| {
                                    row.push_bind(&doctor)
                                        .push_bind(*start)
                                        .push_bind(*end)
                                        .push_bind(&period_id)
                                        .push_bind(&organisation)
                                        .push_bind(&day)
                                        .push_bind(&period.time_zone)
                                        .push_bind(&period.room)
                                        .push_bind("free");
                                });
                                q.build().execute(&mut **conn).await?;
                            });
                        }
                    }
                    ScheduleEvent::PeriodClosed { period_id, .. } => {
                        let sql = format!(
                            "UPDATE {table} SET period_closed = 1, \
                             status = CASE WHEN status = 'free' THEN 'closed' ELSE status END WHERE period_id = $1"
                        );
                        crate::on_tx!(tx, conn => {
                            sqlx::query(&sql).bind(period_id.to_string()).execute(&mut **conn).await?;
                        });
                    }
                }
            } else if let Some(decoded) = event_of::<Appointment>(NAME, event)? {
                let (slot, moved) = match decoded {
                    AppointmentEvent::AppointmentBooked { slot, .. } => (slot, false),
                    AppointmentEvent::AppointmentRescheduled { slot, .. } => (slot, true),
                    AppointmentEvent::AppointmentCancelled { .. } => {
                        crate::on_tx!(tx, conn => {
                            sqlx::query(&release).bind(&event.aggregate_id).execute(&mut **conn).await?;
                        });
                        continue;
                    }
                    _ => continue,
                };
                crate::on_tx!(tx, conn => {
                    if moved {
                        sqlx::query(&release).bind(&event.aggregate_id).execute(&mut **conn).await?;
                    }
                    sqlx::query(&hold)
                        .bind(slot.doctor_id.to_string())
                        .bind(micros(slot.start))
                        .bind(&event.aggregate_id)
                        .execute(&mut **conn)
                        .await?;
                });
            }
        }
        Ok(())
    }
}

fn view_of<R: Row>(row: &R) -> Result<SlotView, sqlx::Error>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let uuid = |i: usize| -> Result<Uuid, sqlx::Error> {
        let text: String = row.try_get(i)?;
        Uuid::parse_str(&text).map_err(|e| sqlx::Error::Decode(Box::new(e)))
    };
    let day: String = row.try_get(5)?;
    Ok(SlotView {
        doctor_id: uuid(0)?,
        start: from_micros(row.try_get(1)?),
        end: from_micros(row.try_get(2)?),
        period_id: uuid(3)?,
        organisation_id: uuid(4)?,
        day: day.parse().map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        time_zone: row.try_get(6)?,
        room: row.try_get(7)?,
        status: row.try_get(8)?,
    })
}

const COLUMNS: &str =
    "doctor_id, start_at, end_at, period_id, organisation_id, local_day, time_zone, room, status";

/// The free slots of a doctor starting in `[from, to)`, at most `limit`.
pub async fn free_slots(
    db: &Db,
    doctor_id: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<SlotView>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM schedule_slots WHERE doctor_id = $1 AND status = 'free' \
         AND start_at >= $2 AND start_at < $3 ORDER BY start_at LIMIT $4"
    );
    let doctor = doctor_id.to_string();
    kabinet_domain::on_db!(db, pool => {
        let rows = sqlx::query(&sql)
            .bind(&doctor)
            .bind(micros(from))
            .bind(micros(to))
            .bind(limit as i64)
            .fetch_all(pool)
            .await?;
        rows.iter().map(view_of).collect()
    })
}

/// The next free slot of a doctor after `now`.
pub async fn next_free(
    db: &Db,
    doctor_id: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<SlotView>, sqlx::Error> {
    Ok(free_slots(db, doctor_id, now, now + Duration::days(366), 1)
        .await?
        .into_iter()
        .next())
}

/// One slot of a doctor, whatever its state.
pub async fn get(
    db: &Db,
    doctor_id: Uuid,
    start: DateTime<Utc>,
) -> Result<Option<SlotView>, sqlx::Error> {
    let sql =
        format!("SELECT {COLUMNS} FROM schedule_slots WHERE doctor_id = $1 AND start_at = $2");
    let doctor = doctor_id.to_string();
    kabinet_domain::on_db!(db, pool => {
        let row = sqlx::query(&sql).bind(&doctor).bind(micros(start)).fetch_optional(pool).await?;
        row.as_ref().map(view_of).transpose()
    })
}
