//! Document requests (E1): the patient's list and the organisation's worklist, and
//! the journal of each request (every change with its time, status and who made it).

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use kabinet_domain::documents::{DocumentRequest, DocumentRequestEvent, DocumentRequestStatus};
use kabinet_domain::{Backend, Db, RecordedEvent};
use sqlx::{QueryBuilder, Row};
use uuid::Uuid;

use crate::page::OffsetPage;
use crate::projection::{event_of, from_micros, micros, Projection, ProjectionError, ProjectionTx};

/// The document requests projection.
pub struct DocumentRequests;

/// Name of the projection and of its table.
pub const NAME: &str = "document_requests";

/// The request journal projection.
pub struct DocumentRequestJournal;

/// Name of the journal projection and of its table.
pub const JOURNAL_NAME: &str = "document_request_journal";

/// A document request as the patient and the organisation see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentRequestView {
    pub id: Uuid,
    pub patient_id: Uuid,
    pub organisation_id: Uuid,
    /// `history_extract`, `health_certificate` or `examination_results`.
    pub kind: String,
    /// `submitted`, `in_progress`, `fulfilled` or `rejected`.
    pub status: String,
    pub period_from: NaiveDate,
    pub period_to: NaiveDate,
    pub policy_number: Option<String>,
    pub visit_date: Option<NaiveDate>,
    pub purpose: Option<String>,
    pub resubmission_of: Option<Uuid>,
    pub resubmitted_as: Option<Uuid>,
    pub due_at: DateTime<Utc>,
    pub file_sha256: Option<String>,
    pub reject_code: Option<String>,
    pub reject_text: Option<String>,
    pub submitted_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl DocumentRequestView {
    /// Open past its deadline at `now`.
    pub fn is_overdue(&self, now: DateTime<Utc>) -> bool {
        matches!(self.status.as_str(), "submitted" | "in_progress") && self.due_at < now
    }
}

/// One change of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    pub request_id: Uuid,
    pub position: i64,
    pub at: DateTime<Utc>,
    /// `submitted`, `started`, `fulfilled`, `rejected` or `sent_to_clinic`.
    pub action: String,
    /// The request's status after the change.
    pub status: String,
    /// Role of the account that made the change (`patient`, `doctor`, …).
    pub actor_role: String,
    /// For `sent_to_clinic`: the receiving organisation.
    pub organisation_id: Option<Uuid>,
}

#[async_trait]
impl Projection for DocumentRequests {
    fn name(&self) -> &'static str {
        NAME
    }

    fn create_table(&self, _backend: Backend, table: &str) -> Vec<String> {
        vec![format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                id              TEXT   NOT NULL,
                patient_id      TEXT   NOT NULL,
                organisation_id TEXT   NOT NULL,
                kind            TEXT   NOT NULL,
                status          TEXT   NOT NULL,
                period_from     TEXT   NOT NULL,
                period_to       TEXT   NOT NULL,
                policy_number   TEXT,
                visit_date      TEXT,
                purpose         TEXT,
                resubmission_of TEXT,
                resubmitted_as  TEXT,
                due_at          BIGINT NOT NULL,
                file_sha256     TEXT,
                reject_code     TEXT,
                reject_text     TEXT,
                submitted_at    BIGINT NOT NULL,
                updated_at      BIGINT NOT NULL
            )"
        )]
    }

    fn create_indexes(&self, _backend: Backend, table: &str) -> Vec<String> {
        vec![
            format!("CREATE UNIQUE INDEX IF NOT EXISTS {table}_key ON {table} (id)"),
            format!("CREATE INDEX IF NOT EXISTS {table}_by_patient ON {table} (patient_id, submitted_at)"),
            format!("CREATE INDEX IF NOT EXISTS {table}_by_organisation ON {table} (organisation_id, status, due_at)"),
        ]
    }

    async fn apply(
        &self,
        tx: &mut ProjectionTx<'_>,
        table: &str,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        for event in events {
            let Some(decoded) = event_of::<DocumentRequest>(NAME, event)? else {
                continue;
            };
            let at = micros(event.recorded_at);
            let id = event.aggregate_id.as_str();
            match decoded {
                DocumentRequestEvent::DocumentRequested {
                    patient_id,
                    organisation_id,
                    kind,
                    period_from,
                    period_to,
                    policy_number,
                    visit_date,
                    purpose,
                    resubmission_of,
                    due_at,
                    ..
                } => {
                    let sql = format!(
                        "INSERT INTO {table} (id, patient_id, organisation_id, kind, status, period_from, \
                         period_to, policy_number, visit_date, purpose, resubmission_of, due_at, \
                         submitted_at, updated_at) \
                         VALUES ($1, $2, $3, $4, 'submitted', $5, $6, $7, $8, $9, $10, $11, $12, $12)"
                    );
                    let link = format!("UPDATE {table} SET resubmitted_as = $2 WHERE id = $1");
                    let previous = resubmission_of.map(|p| p.to_string());
                    crate::on_tx!(tx, conn => {
                        sqlx::query(&sql)
                            .bind(id)
                            .bind(patient_id.to_string())
                            .bind(organisation_id.to_string())
                            .bind(kind.as_str())
                            .bind(period_from.to_string())
                            .bind(period_to.to_string())
                            .bind(policy_number.clone())
                            .bind(visit_date.map(|d| d.to_string()))
                            .bind(purpose.clone())
                            .bind(previous.clone())
                            .bind(micros(due_at))
                            .bind(at)
                            .execute(&mut **conn)
                            .await?;
                        if let Some(previous) = &previous {
                            sqlx::query(&link).bind(previous).bind(id).execute(&mut **conn).await?;
                        }
                    });
                }
                DocumentRequestEvent::DocumentRequestStarted { status, .. } => {
                    let sql =
                        format!("UPDATE {table} SET status = $2, updated_at = $3 WHERE id = $1");
                    crate::on_tx!(tx, conn => {
                        sqlx::query(&sql).bind(id).bind(status.as_str()).bind(at).execute(&mut **conn).await?;
                    });
                }
                DocumentRequestEvent::DocumentRequestFulfilled {
                    file_sha256,
                    status,
                    ..
                } => {
                    let sql = format!(
                        "UPDATE {table} SET status = $2, file_sha256 = $3, updated_at = $4 WHERE id = $1"
                    );
                    crate::on_tx!(tx, conn => {
                        sqlx::query(&sql)
                            .bind(id)
                            .bind(status.as_str())
                            .bind(&file_sha256)
                            .bind(at)
                            .execute(&mut **conn)
                            .await?;
                    });
                }
                DocumentRequestEvent::DocumentRequestRejected {
                    reason,
                    text,
                    status,
                    ..
                } => {
                    let sql = format!(
                        "UPDATE {table} SET status = $2, reject_code = $3, reject_text = $4, updated_at = $5 \
                         WHERE id = $1"
                    );
                    crate::on_tx!(tx, conn => {
                        sqlx::query(&sql)
                            .bind(id)
                            .bind(status.as_str())
                            .bind(reason.as_str())
                            .bind(&text)
                            .bind(at)
                            .execute(&mut **conn)
                            .await?;
                    });
                }
                DocumentRequestEvent::DocumentSentToClinic { .. } => {}
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Projection for DocumentRequestJournal {
    fn name(&self) -> &'static str {
        JOURNAL_NAME
    }

    fn create_table(&self, _backend: Backend, table: &str) -> Vec<String> {
        vec![format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                request_id      TEXT   NOT NULL,
                position        BIGINT NOT NULL,
                at              BIGINT NOT NULL,
                action          TEXT   NOT NULL,
                status          TEXT   NOT NULL,
                actor_role      TEXT   NOT NULL,
                organisation_id TEXT
            )"
        )]
    }

    fn create_indexes(&self, _backend: Backend, table: &str) -> Vec<String> {
        vec![format!(
            "CREATE UNIQUE INDEX IF NOT EXISTS {table}_key ON {table} (request_id, position)"
        )]
    }

    async fn apply(
        &self,
        tx: &mut ProjectionTx<'_>,
        table: &str,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        let sql = format!(
            "INSERT INTO {table} (request_id, position, at, action, status, actor_role, organisation_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)"
        );
        for event in events {
            let Some(decoded) = event_of::<DocumentRequest>(JOURNAL_NAME, event)? else {
                continue;
            };
            let (action, status, organisation) = match decoded {
                DocumentRequestEvent::DocumentRequested { status, .. } => {
                    ("submitted", status, None)
                }
                DocumentRequestEvent::DocumentRequestStarted { status, .. } => {
                    ("started", status, None)
                }
                DocumentRequestEvent::DocumentRequestFulfilled { status, .. } => {
                    ("fulfilled", status, None)
                }
                DocumentRequestEvent::DocumentRequestRejected { status, .. } => {
                    ("rejected", status, None)
                }
                // Sending leaves the request fulfilled.
                DocumentRequestEvent::DocumentSentToClinic {
                    organisation_id, ..
                } => (
                    "sent_to_clinic",
                    DocumentRequestStatus::Fulfilled,
                    Some(organisation_id.to_string()),
                ),
            };
            crate::on_tx!(tx, conn => {
                sqlx::query(&sql)
                    .bind(&event.aggregate_id)
                    .bind(event.position())
                    .bind(micros(event.recorded_at))
                    .bind(action)
                    .bind(status.as_str())
                    .bind(event.meta("actor_role").unwrap_or_default())
                    .bind(organisation)
                    .execute(&mut **conn)
                    .await?;
            });
        }
        Ok(())
    }
}

const COLUMNS: &str = "id, patient_id, organisation_id, kind, status, period_from, period_to, \
     policy_number, visit_date, purpose, resubmission_of, resubmitted_as, due_at, file_sha256, \
     reject_code, reject_text, submitted_at, updated_at";

fn view_of<R: Row>(row: &R) -> Result<DocumentRequestView, sqlx::Error>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let decode = |e: Box<dyn std::error::Error + Send + Sync>| sqlx::Error::Decode(e);
    let uuid = |i: usize| -> Result<Uuid, sqlx::Error> {
        let text: String = row.try_get(i)?;
        Uuid::parse_str(&text).map_err(|e| decode(Box::new(e)))
    };
    let optional_uuid = |i: usize| -> Result<Option<Uuid>, sqlx::Error> {
        let text: Option<String> = row.try_get(i)?;
        text.map(|t| Uuid::parse_str(&t).map_err(|e| decode(Box::new(e))))
            .transpose()
    };
    let day = |i: usize| -> Result<NaiveDate, sqlx::Error> {
        let text: String = row.try_get(i)?;
        text.parse().map_err(|e| decode(Box::new(e)))
    };
    let visit: Option<String> = row.try_get(8)?;
    Ok(DocumentRequestView {
        id: uuid(0)?,
        patient_id: uuid(1)?,
        organisation_id: uuid(2)?,
        kind: row.try_get(3)?,
        status: row.try_get(4)?,
        period_from: day(5)?,
        period_to: day(6)?,
        policy_number: row.try_get(7)?,
        visit_date: visit
            .map(|v| v.parse().map_err(|e| decode(Box::new(e))))
            .transpose()?,
        purpose: row.try_get(9)?,
        resubmission_of: optional_uuid(10)?,
        resubmitted_as: optional_uuid(11)?,
        due_at: from_micros(row.try_get(12)?),
        file_sha256: row.try_get(13)?,
        reject_code: row.try_get(14)?,
        reject_text: row.try_get(15)?,
        submitted_at: from_micros(row.try_get(16)?),
        updated_at: from_micros(row.try_get(17)?),
    })
}

/// One request by id.
pub async fn get(db: &Db, id: Uuid) -> Result<Option<DocumentRequestView>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM document_requests WHERE id = $1");
    let id = id.to_string();
    kabinet_domain::on_db!(db, pool => {
        let row = sqlx::query(&sql).bind(&id).fetch_optional(pool).await?;
        row.as_ref().map(view_of).transpose()
    })
}

/// Whose requests a list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// A patient's own, newest first.
    Patient(Uuid),
    /// An organisation's worklist, the nearest deadline first.
    Organisation(Uuid),
}

/// Filters of [`list`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DocumentRequestFilter {
    pub statuses: Vec<String>,
    pub kinds: Vec<String>,
    /// Submitted at or after.
    pub submitted_from: Option<DateTime<Utc>>,
    /// Submitted before.
    pub submitted_before: Option<DateTime<Utc>>,
    /// Only open requests past their deadline at this instant.
    pub overdue_at: Option<DateTime<Utc>>,
}

/// A page of requests.
pub async fn list(
    db: &Db,
    scope: Scope,
    filter: &DocumentRequestFilter,
    first: usize,
    offset: usize,
) -> Result<OffsetPage<DocumentRequestView>, sqlx::Error> {
    kabinet_domain::on_db!(db, pool => {
        let mut q = QueryBuilder::new(format!("SELECT {COLUMNS} FROM document_requests WHERE "));
        match scope {
            Scope::Patient(p) => q.push("patient_id = ").push_bind(p.to_string()),
            Scope::Organisation(o) => q.push("organisation_id = ").push_bind(o.to_string()),
        };
        for (column, values) in [("status", &filter.statuses), ("kind", &filter.kinds)] {
            if !values.is_empty() {
                q.push(format!(" AND {column} IN ("));
                let mut list = q.separated(", ");
                for value in values {
                    list.push_bind(value.clone());
                }
                q.push(")");
            }
        }
        if let Some(from) = filter.submitted_from {
            q.push(" AND submitted_at >= ").push_bind(micros(from));
        }
        if let Some(before) = filter.submitted_before {
            q.push(" AND submitted_at < ").push_bind(micros(before));
        }
        if let Some(now) = filter.overdue_at {
            q.push(" AND status IN ('submitted', 'in_progress') AND due_at < ").push_bind(micros(now));
        }
        q.push(match scope {
            Scope::Patient(_) => " ORDER BY submitted_at DESC, id DESC",
            Scope::Organisation(_) => " ORDER BY due_at ASC, id ASC",
        });
        q.push(" LIMIT ").push_bind(first as i64 + 1).push(" OFFSET ").push_bind(offset as i64);
        let rows = q.build().fetch_all(pool).await?;
        let views = rows.iter().map(view_of).collect::<Result<Vec<_>, _>>()?;
        Ok(OffsetPage::from_rows(views, offset, first))
    })
}

/// The journal of request `id`, oldest change first.
pub async fn journal(db: &Db, id: Uuid) -> Result<Vec<JournalEntry>, sqlx::Error> {
    let sql = "SELECT request_id, position, at, action, status, actor_role, organisation_id \
               FROM document_request_journal WHERE request_id = $1 ORDER BY position";
    let id = id.to_string();
    kabinet_domain::on_db!(db, pool => {
        let rows = sqlx::query(sql).bind(&id).fetch_all(pool).await?;
        rows.iter()
            .map(|row| {
                let request: String = row.try_get(0)?;
                let organisation: Option<String> = row.try_get(6)?;
                Ok(JournalEntry {
                    request_id: Uuid::parse_str(&request).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                    position: row.try_get(1)?,
                    at: from_micros(row.try_get(2)?),
                    action: row.try_get(3)?,
                    status: row.try_get(4)?,
                    actor_role: row.try_get(5)?,
                    organisation_id: organisation.and_then(|o| Uuid::parse_str(&o).ok()),
                })
            })
            .collect()
    })
}
