//! The doctors read model (B2): search by specialty, surname, service, place;
//! rating from reviews.

use async_trait::async_trait;
use kabinet_domain::appointments::{Appointment, AppointmentEvent};
use kabinet_domain::directory::{Doctor, DoctorDetails, DoctorEvent};
use kabinet_domain::{Backend, Db, RecordedEvent};
use sqlx::{QueryBuilder, Row};
use uuid::Uuid;

use crate::page::OffsetPage;
use crate::projection::{bad_event, event_of, Projection, ProjectionError, ProjectionTx};

/// The doctors projection.
pub struct Doctors;

/// Name of the projection and of its table.
pub const NAME: &str = "doctors";

/// A doctor as the directory shows them.
#[derive(Debug, Clone, PartialEq)]
pub struct DoctorView {
    pub id: Uuid,
    pub details: DoctorDetails,
    pub rating_sum: i64,
    pub rating_count: i64,
}

impl DoctorView {
    /// Mean rating from reviews as a decimal string with one digit (`"4.7"`), if any.
    pub fn rating(&self) -> Option<String> {
        (self.rating_count > 0).then(|| {
            let tenths = (self.rating_sum * 10 + self.rating_count / 2) / self.rating_count;
            format!("{}.{}", tenths / 10, tenths % 10)
        })
    }
}

/// Filters of [`list`]; all given filters must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DoctorFilter {
    pub specialty: Option<String>,
    /// Beginning of the surname, any case.
    pub surname: Option<String>,
    pub service_code: Option<String>,
    pub organisation_id: Option<Uuid>,
    /// Region of the doctor's organisation, any case.
    pub region: Option<String>,
}

pub(crate) fn search_key(s: &str) -> String {
    s.trim().to_lowercase()
}

pub(crate) fn escape_like(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

#[async_trait]
impl Projection for Doctors {
    fn name(&self) -> &'static str {
        NAME
    }

    fn create_table(&self, _backend: Backend, table: &str) -> Vec<String> {
        vec![format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                id               TEXT   NOT NULL,
                position         BIGINT NOT NULL,
                organisation_id  TEXT   NOT NULL,
                surname_key      TEXT   NOT NULL,
                specialty        TEXT   NOT NULL,
                service_codes_key TEXT  NOT NULL,
                details          TEXT   NOT NULL,
                rating_sum       BIGINT NOT NULL DEFAULT 0,
                rating_count     BIGINT NOT NULL DEFAULT 0
            )"
        )]
    }

    fn create_indexes(&self, _backend: Backend, table: &str) -> Vec<String> {
        vec![
            format!("CREATE UNIQUE INDEX IF NOT EXISTS {table}_key ON {table} (id)"),
            format!("CREATE INDEX IF NOT EXISTS {table}_by_specialty ON {table} (specialty, position)"),
            format!("CREATE INDEX IF NOT EXISTS {table}_by_organisation ON {table} (organisation_id, position)"),
        ]
    }

    async fn apply(
        &self,
        tx: &mut ProjectionTx<'_>,
        table: &str,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        for event in events {
            if let Some(
                DoctorEvent::DoctorRegistered(details) | DoctorEvent::DoctorDetailsChanged(details),
            ) = event_of::<Doctor>(NAME, event)?
            {
                let text =
                    serde_json::to_string(&details).map_err(|e| bad_event(NAME, event, e))?;
                let sql = format!(
                        "INSERT INTO {table} (id, position, organisation_id, surname_key, specialty, service_codes_key, details) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7) \
                         ON CONFLICT (id) DO UPDATE SET surname_key = excluded.surname_key, \
                         specialty = excluded.specialty, service_codes_key = excluded.service_codes_key, \
                         details = excluded.details"
                    );
                let codes = format!("|{}|", details.service_codes.join("|"));
                crate::on_tx!(tx, conn => {
                    sqlx::query(&sql)
                        .bind(&event.aggregate_id)
                        .bind(event.position())
                        .bind(details.organisation_id.to_string())
                        .bind(search_key(&details.surname))
                        .bind(&details.specialty)
                        .bind(&codes)
                        .bind(&text)
                        .execute(&mut **conn)
                        .await?;
                });
            } else if let Some(AppointmentEvent::ReviewLeft {
                doctor_id, rating, ..
            }) = event_of::<Appointment>(NAME, event)?
            {
                let sql = format!(
                    "UPDATE {table} SET rating_sum = rating_sum + $2, rating_count = rating_count + 1 WHERE id = $1"
                );
                crate::on_tx!(tx, conn => {
                    sqlx::query(&sql)
                        .bind(doctor_id.to_string())
                        .bind(i64::from(rating))
                        .execute(&mut **conn)
                        .await?;
                });
            }
        }
        Ok(())
    }
}

fn view_of<R: Row>(row: &R) -> Result<DoctorView, sqlx::Error>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let id: String = row.try_get(0)?;
    let details: String = row.try_get(1)?;
    Ok(DoctorView {
        id: Uuid::parse_str(&id).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        details: serde_json::from_str(&details).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        rating_sum: row.try_get(2)?,
        rating_count: row.try_get(3)?,
    })
}

/// One doctor by id.
pub async fn get(db: &Db, id: Uuid) -> Result<Option<DoctorView>, sqlx::Error> {
    const SQL: &str = "SELECT id, details, rating_sum, rating_count FROM doctors WHERE id = $1";
    let id = id.to_string();
    kabinet_domain::on_db!(db, pool => {
        let row = sqlx::query(SQL).bind(&id).fetch_optional(pool).await?;
        row.as_ref().map(view_of).transpose()
    })
}

/// A page of doctors in registration order.
pub async fn list(
    db: &Db,
    filter: &DoctorFilter,
    first: usize,
    offset: usize,
) -> Result<OffsetPage<DoctorView>, sqlx::Error> {
    kabinet_domain::on_db!(db, pool => {
        let mut q = QueryBuilder::new(
            "SELECT d.id, d.details, d.rating_sum, d.rating_count FROM doctors d \
             LEFT JOIN organisations o ON o.id = d.organisation_id WHERE 1 = 1",
        );
        if let Some(specialty) = &filter.specialty {
            q.push(" AND d.specialty = ").push_bind(search_key(specialty));
        }
        if let Some(surname) = &filter.surname {
            q.push(" AND d.surname_key LIKE ")
                .push_bind(format!("{}%", escape_like(&search_key(surname))))
                .push(" ESCAPE '\\'");
        }
        if let Some(code) = &filter.service_code {
            q.push(" AND d.service_codes_key LIKE ")
                .push_bind(format!("%|{}|%", escape_like(&code.trim().to_ascii_uppercase())))
                .push(" ESCAPE '\\'");
        }
        if let Some(org) = filter.organisation_id {
            q.push(" AND d.organisation_id = ").push_bind(org.to_string());
        }
        if let Some(region) = &filter.region {
            q.push(" AND o.region_key = ").push_bind(search_key(region));
        }
        q.push(" ORDER BY d.position LIMIT ")
            .push_bind(first as i64 + 1)
            .push(" OFFSET ")
            .push_bind(offset as i64);
        let rows = q.build().fetch_all(pool).await?;
        let views = rows.iter().map(view_of).collect::<Result<Vec<_>, _>>()?;
        Ok(OffsetPage::from_rows(views, offset, first))
    })
}
