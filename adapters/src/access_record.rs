//! The access record's table (`medical_access`): appends reads of medical data and
//! lists them for the patient. Append-only: the tables refuse UPDATE and DELETE.

use chrono::DateTime;
use kabinet_domain::access::{MedicalRead, ReadQuery, RecordedRead};
use kabinet_domain::Db;
use sqlx::{QueryBuilder, Row};
use uuid::Uuid;

/// Writes and lists the access record.
#[derive(Debug, Clone)]
pub struct AccessLog {
    db: Db,
}

fn uuid_of(text: Option<String>) -> Option<Uuid> {
    text.and_then(|t| Uuid::parse_str(&t).ok())
}

impl AccessLog {
    /// The access record in `db`.
    pub fn new(db: Db) -> Self {
        AccessLog { db }
    }

    /// Appends `read`.
    #[tracing::instrument(skip_all, fields(what = %read.what))]
    pub async fn record(&self, read: &MedicalRead) -> Result<(), sqlx::Error> {
        const SQL: &str = "INSERT INTO medical_access (patient_id, at, reader_id, reader_role, \
             reader_org_id, what, object_id, request_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
        let patient = read.patient_id.to_string();
        let reader = read.reader.account_id.to_string();
        let org = read.reader.organisation_id.map(|o| o.to_string());
        let object = read.object_id.map(|o| o.to_string());
        kabinet_domain::on_db!(&self.db, pool => {
            sqlx::query(SQL)
                .bind(&patient)
                .bind(read.at.timestamp_micros())
                .bind(&reader)
                .bind(read.reader.role.as_str())
                .bind(&org)
                .bind(read.what.as_str())
                .bind(&object)
                .bind(read.request_id.as_str())
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Up to `limit` reads of `patient_id`'s data, newest first.
    pub async fn list(
        &self,
        patient_id: Uuid,
        query: &ReadQuery,
        limit: usize,
    ) -> Result<Vec<RecordedRead>, sqlx::Error> {
        let patient = patient_id.to_string();
        kabinet_domain::on_db!(&self.db, pool => {
            let mut q = QueryBuilder::new(
                "SELECT seq, at, reader_id, reader_role, reader_org_id, what, object_id \
                 FROM medical_access WHERE patient_id = ",
            );
            q.push_bind(&patient);
            if let Some(from) = query.from {
                q.push(" AND at >= ").push_bind(from.timestamp_micros());
            }
            if let Some(to) = query.to {
                q.push(" AND at < ").push_bind(to.timestamp_micros());
            }
            if let Some((at, seq)) = query.older_than {
                if query.whole_instant_older {
                    q.push(" AND at <= ").push_bind(at);
                } else {
                    q.push(" AND (at < ")
                        .push_bind(at)
                        .push(" OR (at = ")
                        .push_bind(at)
                        .push(" AND seq < ")
                        .push_bind(seq)
                        .push("))");
                }
            }
            q.push(" ORDER BY at DESC, seq DESC LIMIT ")
                .push_bind(limit as i64);
            let rows = q.build().fetch_all(pool).await?;
            rows.iter()
                .map(|row| {
                    Ok(RecordedRead {
                        seq: row.try_get(0)?,
                        at: DateTime::from_timestamp_micros(row.try_get(1)?).unwrap_or_default(),
                        reader_id: uuid_of(Some(row.try_get(2)?)).unwrap_or_default(),
                        reader_role: row.try_get(3)?,
                        reader_organisation_id: uuid_of(row.try_get(4)?),
                        what: row.try_get(5)?,
                        object_id: uuid_of(row.try_get(6)?),
                    })
                })
                .collect()
        })
    }
}
