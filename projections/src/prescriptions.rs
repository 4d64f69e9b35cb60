//! E-prescription read models (E2): the prescriptions themselves, the journal
//! of each prescription, and which organisations are pharmacies.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use kabinet_domain::directory::{Organisation, OrganisationEvent};
use kabinet_domain::prescriptions::{Prescription, PrescriptionEvent, RequestKind};
use kabinet_domain::{Backend, Db, RecordedEvent};
use sqlx::Row;
use uuid::Uuid;

use crate::page::OffsetPage;
use crate::projection::{event_of, from_micros, micros, Projection, ProjectionError, ProjectionTx};

/// The prescriptions projection.
pub struct Prescriptions;
/// Each prescription's journal: one line per change.
pub struct PrescriptionJournal;
/// Organisations designated as pharmacies.
pub struct Pharmacies;

/// Name of the prescriptions projection and of its table.
pub const NAME: &str = "prescriptions";
/// Name of the journal projection and of its table.
pub const JOURNAL: &str = "prescription_journal";
/// Name of the pharmacies projection and of its table.
pub const PHARMACIES: &str = "pharmacies";

/// Statuses in which a prescription can still change.
const OPEN: [&str; 3] = ["ready_to_print", "sent_to_pharmacy", "ready_at_pharmacy"];

/// A prescription as its patient, prescriber and pharmacy see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrescriptionView {
    pub id: Uuid,
    pub patient_id: Uuid,
    pub patient_initials: String,
    pub doctor_id: Uuid,
    pub doctor_name: String,
    pub organisation_id: Uuid,
    pub organisation_name: String,
    pub medication: String,
    pub dosage: String,
    pub quantity: i64,
    pub valid_from: NaiveDate,
    pub valid_until: NaiveDate,
    pub expires_at: DateTime<Utc>,
    pub issued_at: DateTime<Utc>,
    /// The stable name of a `PrescriptionStatus`.
    pub status: String,
    pub pharmacy_id: Option<Uuid>,
    pub pharmacy_name: Option<String>,
    /// `resend` or `cancellation` while a patient's request waits.
    pub pending_request: Option<String>,
    pub pending_pharmacy_name: Option<String>,
    pub pending_reason: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// One change of a prescription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    pub prescription_id: Uuid,
    pub position: i64,
    pub occurred_at: DateTime<Utc>,
    /// The event type, e.g. `PrescriptionDispensed`.
    pub action: String,
    /// The status after the change.
    pub status: String,
    pub actor_id: Uuid,
    pub actor_role: String,
    /// The reason, comment or pharmacy of the change, when it has one.
    pub note: Option<String>,
}

/// Filters of prescription lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrescriptionFilter {
    /// Only these statuses; empty means all.
    pub statuses: Vec<String>,
    /// Issued at or after.
    pub from: Option<DateTime<Utc>>,
    /// Issued before.
    pub to: Option<DateTime<Utc>>,
}

/// Whose prescriptions to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Patient(Uuid),
    Pharmacy(Uuid),
    Organisation(Uuid),
}

async fn exec(tx: &mut ProjectionTx<'_>, sql: &str, binds: Vec<Bind>) -> Result<(), sqlx::Error> {
    crate::on_tx!(tx, conn => {
        let mut q = sqlx::query(sql);
        for b in binds {
            q = match b {
                Bind::Text(t) => q.bind(t),
                Bind::Int(i) => q.bind(i),
            };
        }
        q.execute(&mut **conn).await?;
    });
    Ok(())
}

enum Bind {
    Text(Option<String>),
    Int(i64),
}

fn t(s: impl ToString) -> Bind {
    Bind::Text(Some(s.to_string()))
}

fn opt(s: Option<impl ToString>) -> Bind {
    Bind::Text(s.map(|s| s.to_string()))
}

#[async_trait]
impl Projection for Prescriptions {
    fn name(&self) -> &'static str {
        NAME
    }

    fn create_table(&self, _backend: Backend, table: &str) -> Vec<String> {
        vec![format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                id                    TEXT   NOT NULL,
                patient_id            TEXT   NOT NULL,
                patient_initials      TEXT   NOT NULL,
                doctor_id             TEXT   NOT NULL,
                doctor_name           TEXT   NOT NULL,
                organisation_id       TEXT   NOT NULL,
                organisation_name     TEXT   NOT NULL,
                medication            TEXT   NOT NULL,
                dosage                TEXT   NOT NULL,
                quantity              BIGINT NOT NULL,
                valid_from            TEXT   NOT NULL,
                valid_until           TEXT   NOT NULL,
                expires_at            BIGINT NOT NULL,
                issued_at             BIGINT NOT NULL,
                status                TEXT   NOT NULL,
                pharmacy_id           TEXT,
                pharmacy_name         TEXT,
                pending_request       TEXT,
                pending_pharmacy_name TEXT,
                pending_reason        TEXT,
                updated_at            BIGINT NOT NULL
            )"
        )]
    }

    fn create_indexes(&self, _backend: Backend, table: &str) -> Vec<String> {
        vec![
            format!("CREATE UNIQUE INDEX IF NOT EXISTS {table}_key ON {table} (id)"),
            format!("CREATE INDEX IF NOT EXISTS {table}_by_patient ON {table} (patient_id, issued_at)"),
            format!("CREATE INDEX IF NOT EXISTS {table}_by_pharmacy ON {table} (pharmacy_id, status, issued_at)"),
            format!("CREATE INDEX IF NOT EXISTS {table}_by_organisation ON {table} (organisation_id, issued_at)"),
            format!("CREATE INDEX IF NOT EXISTS {table}_due ON {table} (status, expires_at)"),
        ]
    }

    async fn apply(
        &self,
        tx: &mut ProjectionTx<'_>,
        table: &str,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        use PrescriptionEvent as E;
        for event in events {
            let Some(decoded) = event_of::<Prescription>(NAME, event)? else {
                continue;
            };
            let id = event.aggregate_id.clone();
            let at = micros(event.recorded_at);
            let set = |assignments: &str| {
                format!("UPDATE {table} SET {assignments}, updated_at = $2 WHERE id = $1")
            };
            match decoded {
                E::PrescriptionIssued {
                    patient_id,
                    patient_initials,
                    prescriber,
                    medication,
                    validity,
                    issued_at,
                    status,
                } => {
                    let sql = format!(
                        "INSERT INTO {table} (id, patient_id, patient_initials, doctor_id, doctor_name, \
                         organisation_id, organisation_name, medication, dosage, quantity, valid_from, \
                         valid_until, expires_at, issued_at, status, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
                    );
                    exec(
                        tx,
                        &sql,
                        vec![
                            t(id),
                            t(patient_id),
                            t(patient_initials),
                            t(prescriber.doctor_id),
                            t(prescriber.doctor_name),
                            t(prescriber.organisation_id),
                            t(prescriber.organisation_name),
                            t(medication.name),
                            t(medication.dosage),
                            Bind::Int(i64::from(medication.quantity)),
                            t(validity.from),
                            t(validity.until),
                            Bind::Int(micros(validity.expires_at)),
                            Bind::Int(micros(issued_at)),
                            t(status.as_str()),
                            Bind::Int(at),
                        ],
                    )
                    .await?;
                }
                E::PrescriptionSentToPharmacy {
                    pharmacy, status, ..
                } => {
                    let sql = set("status = $3, pharmacy_id = $4, pharmacy_name = $5");
                    exec(
                        tx,
                        &sql,
                        vec![
                            t(id),
                            Bind::Int(at),
                            t(status.as_str()),
                            t(pharmacy.organisation_id),
                            t(pharmacy.name),
                        ],
                    )
                    .await?;
                }
                E::PrescriptionReadyAtPharmacy { status, .. } => {
                    let sql = set("status = $3");
                    exec(tx, &sql, vec![t(id), Bind::Int(at), t(status.as_str())]).await?;
                }
                E::PrescriptionDispensed { status, .. }
                | E::PrescriptionCancelled { status, .. }
                | E::PrescriptionExpired { status, .. } => {
                    let sql = set(
                        "status = $3, pending_request = NULL, pending_pharmacy_name = NULL, pending_reason = NULL",
                    );
                    exec(tx, &sql, vec![t(id), Bind::Int(at), t(status.as_str())]).await?;
                }
                E::PrescriptionResendRequested {
                    pharmacy, reason, ..
                } => {
                    let sql = set(
                        "pending_request = $3, pending_pharmacy_name = $4, pending_reason = $5",
                    );
                    exec(
                        tx,
                        &sql,
                        vec![
                            t(id),
                            Bind::Int(at),
                            t(RequestKind::Resend.as_str()),
                            t(pharmacy.name),
                            opt(reason),
                        ],
                    )
                    .await?;
                }
                E::PrescriptionCancellationRequested { reason, .. } => {
                    let sql = set(
                        "pending_request = $3, pending_pharmacy_name = NULL, pending_reason = $4",
                    );
                    exec(
                        tx,
                        &sql,
                        vec![
                            t(id),
                            Bind::Int(at),
                            t(RequestKind::Cancellation.as_str()),
                            t(reason),
                        ],
                    )
                    .await?;
                }
                E::PrescriptionRequestApproved { .. } | E::PrescriptionRequestDeclined { .. } => {
                    let sql = set(
                        "pending_request = NULL, pending_pharmacy_name = NULL, pending_reason = NULL",
                    );
                    exec(tx, &sql, vec![t(id), Bind::Int(at)]).await?;
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Projection for PrescriptionJournal {
    fn name(&self) -> &'static str {
        JOURNAL
    }

    fn create_table(&self, _backend: Backend, table: &str) -> Vec<String> {
        vec![format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                prescription_id TEXT   NOT NULL,
                position        BIGINT NOT NULL,
                occurred_at     BIGINT NOT NULL,
                action          TEXT   NOT NULL,
                status          TEXT   NOT NULL,
                actor_id        TEXT   NOT NULL,
                actor_role      TEXT   NOT NULL,
                note            TEXT
            )"
        )]
    }

    fn create_indexes(&self, _backend: Backend, table: &str) -> Vec<String> {
        vec![format!(
            "CREATE UNIQUE INDEX IF NOT EXISTS {table}_key ON {table} (prescription_id, position)"
        )]
    }

    async fn apply(
        &self,
        tx: &mut ProjectionTx<'_>,
        table: &str,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        use PrescriptionEvent as E;
        // The status each line shows is the one the prescription is left in;
        // request events keep it, so it is read back from this table.
        for event in events {
            let Some(decoded) = event_of::<Prescription>(JOURNAL, event)? else {
                continue;
            };
            let (status, note): (Option<String>, Option<String>) = match decoded {
                E::PrescriptionIssued { status, .. }
                | E::PrescriptionReadyAtPharmacy { status, .. }
                | E::PrescriptionDispensed { status, .. }
                | E::PrescriptionExpired { status, .. } => {
                    (Some(status.as_str().to_string()), None)
                }
                E::PrescriptionSentToPharmacy {
                    status, pharmacy, ..
                } => (Some(status.as_str().to_string()), Some(pharmacy.name)),
                E::PrescriptionCancelled { status, reason, .. } => {
                    (Some(status.as_str().to_string()), Some(reason))
                }
                E::PrescriptionResendRequested {
                    pharmacy, reason, ..
                } => (
                    None,
                    Some(match reason {
                        Some(r) => format!("{}: {r}", pharmacy.name),
                        None => pharmacy.name,
                    }),
                ),
                E::PrescriptionCancellationRequested { reason, .. } => (None, Some(reason)),
                E::PrescriptionRequestApproved { comment, .. }
                | E::PrescriptionRequestDeclined { comment, .. } => (None, comment),
            };
            let status = match status {
                Some(s) => s,
                None => {
                    let sql = format!(
                        "SELECT status FROM {table} WHERE prescription_id = $1 ORDER BY position DESC LIMIT 1"
                    );
                    let found: Option<String> = crate::on_tx!(tx, conn => {
                        sqlx::query_scalar(&sql)
                            .bind(&event.aggregate_id)
                            .fetch_optional(&mut **conn)
                            .await?
                    });
                    found.unwrap_or_default()
                }
            };
            let sql = format!(
                "INSERT INTO {table} (prescription_id, position, occurred_at, action, status, actor_id, \
                 actor_role, note) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            );
            exec(
                tx,
                &sql,
                vec![
                    t(&event.aggregate_id),
                    Bind::Int(event.position()),
                    Bind::Int(micros(event.recorded_at)),
                    t(&event.event_type),
                    t(status),
                    t(event.meta("actor_id").unwrap_or_default()),
                    t(event.meta("actor_role").unwrap_or_default()),
                    opt(note),
                ],
            )
            .await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Projection for Pharmacies {
    fn name(&self) -> &'static str {
        PHARMACIES
    }

    fn create_table(&self, _backend: Backend, table: &str) -> Vec<String> {
        vec![format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                id            TEXT   NOT NULL,
                designated_at BIGINT NOT NULL
            )"
        )]
    }

    fn create_indexes(&self, _backend: Backend, table: &str) -> Vec<String> {
        vec![format!(
            "CREATE UNIQUE INDEX IF NOT EXISTS {table}_key ON {table} (id)"
        )]
    }

    async fn apply(
        &self,
        tx: &mut ProjectionTx<'_>,
        table: &str,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        for event in events {
            if let Some(OrganisationEvent::PharmacyDesignated) =
                event_of::<Organisation>(PHARMACIES, event)?
            {
                let sql = format!("INSERT INTO {table} (id, designated_at) VALUES ($1, $2)");
                exec(
                    tx,
                    &sql,
                    vec![t(&event.aggregate_id), Bind::Int(micros(event.recorded_at))],
                )
                .await?;
            }
        }
        Ok(())
    }
}

const COLUMNS: &str = "id, patient_id, patient_initials, doctor_id, doctor_name, organisation_id, \
    organisation_name, medication, dosage, quantity, valid_from, valid_until, expires_at, issued_at, \
    status, pharmacy_id, pharmacy_name, pending_request, pending_pharmacy_name, pending_reason, updated_at";

fn view_of<R: Row>(row: &R) -> Result<PrescriptionView, sqlx::Error>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let bad = |e: Box<dyn std::error::Error + Send + Sync>| sqlx::Error::Decode(e);
    let uuid = |i: usize| -> Result<Uuid, sqlx::Error> {
        let text: String = row.try_get(i)?;
        Uuid::parse_str(&text).map_err(|e| bad(Box::new(e)))
    };
    let date = |i: usize| -> Result<NaiveDate, sqlx::Error> {
        let text: String = row.try_get(i)?;
        NaiveDate::parse_from_str(&text, "%Y-%m-%d").map_err(|e| bad(Box::new(e)))
    };
    let pharmacy: Option<String> = row.try_get(15)?;
    Ok(PrescriptionView {
        id: uuid(0)?,
        patient_id: uuid(1)?,
        patient_initials: row.try_get(2)?,
        doctor_id: uuid(3)?,
        doctor_name: row.try_get(4)?,
        organisation_id: uuid(5)?,
        organisation_name: row.try_get(6)?,
        medication: row.try_get(7)?,
        dosage: row.try_get(8)?,
        quantity: row.try_get(9)?,
        valid_from: date(10)?,
        valid_until: date(11)?,
        expires_at: from_micros(row.try_get(12)?),
        issued_at: from_micros(row.try_get(13)?),
        status: row.try_get(14)?,
        pharmacy_id: pharmacy
            .map(|p| Uuid::parse_str(&p).map_err(|e| bad(Box::new(e))))
            .transpose()?,
        pharmacy_name: row.try_get(16)?,
        pending_request: row.try_get(17)?,
        pending_pharmacy_name: row.try_get(18)?,
        pending_reason: row.try_get(19)?,
        updated_at: from_micros(row.try_get(20)?),
    })
}

/// One prescription by id.
pub async fn get(db: &Db, id: Uuid) -> Result<Option<PrescriptionView>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM prescriptions WHERE id = $1");
    let id = id.to_string();
    kabinet_domain::on_db!(db, pool => {
        let row = sqlx::query(&sql).bind(&id).fetch_optional(pool).await?;
        row.as_ref().map(view_of).transpose()
    })
}

/// A page of prescriptions of `owner`, newest first.
pub async fn list(
    db: &Db,
    owner: Owner,
    filter: &PrescriptionFilter,
    first: usize,
    offset: usize,
) -> Result<OffsetPage<PrescriptionView>, sqlx::Error> {
    let (column, id) = match owner {
        Owner::Patient(id) => ("patient_id", id),
        Owner::Pharmacy(id) => ("pharmacy_id", id),
        Owner::Organisation(id) => ("organisation_id", id),
    };
    kabinet_domain::on_db!(db, pool => {
        let mut q = sqlx::QueryBuilder::new(format!("SELECT {COLUMNS} FROM prescriptions WHERE {column} = "));
        q.push_bind(id.to_string());
        if !filter.statuses.is_empty() {
            q.push(" AND status IN (");
            let mut list = q.separated(", ");
            for s in &filter.statuses {
                list.push_bind(s.clone());
            }
            q.push(")");
        }
        if let Some(from) = filter.from {
            q.push(" AND issued_at >= ").push_bind(micros(from));
        }
        if let Some(to) = filter.to {
            q.push(" AND issued_at < ").push_bind(micros(to));
        }
        q.push(" ORDER BY issued_at DESC, id DESC LIMIT ")
            .push_bind(first as i64 + 1)
            .push(" OFFSET ")
            .push_bind(offset as i64);
        let rows = q.build().fetch_all(pool).await?;
        let views = rows.iter().map(view_of).collect::<Result<Vec<_>, _>>()?;
        Ok(OffsetPage::from_rows(views, offset, first))
    })
}

/// The journal of one prescription, oldest first.
pub async fn journal(db: &Db, id: Uuid) -> Result<Vec<JournalEntry>, sqlx::Error> {
    const SQL: &str = "SELECT prescription_id, position, occurred_at, action, status, actor_id, actor_role, note \
        FROM prescription_journal WHERE prescription_id = $1 ORDER BY position LIMIT 500";
    let id = id.to_string();
    kabinet_domain::on_db!(db, pool => {
        let rows = sqlx::query(SQL).bind(&id).fetch_all(pool).await?;
        rows.iter()
            .map(|r| {
                let uuid = |i: usize| -> Result<Uuid, sqlx::Error> {
                    let text: String = r.try_get(i)?;
                    Uuid::parse_str(&text).map_err(|e| sqlx::Error::Decode(Box::new(e)))
                };
                Ok(JournalEntry {
                    prescription_id: uuid(0)?,
                    position: r.try_get(1)?,
                    occurred_at: from_micros(r.try_get(2)?),
                    action: r.try_get(3)?,
                    status: r.try_get(4)?,
                    actor_id: uuid(5).unwrap_or_default(),
                    actor_role: r.try_get(6)?,
                    note: r.try_get(7)?,
                })
            })
            .collect()
    })
}

/// Open prescriptions whose validity ended by `now`, at most `limit`, oldest end first.
pub async fn due_for_expiry(
    db: &Db,
    now: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<Uuid>, sqlx::Error> {
    let sql = "SELECT id FROM prescriptions WHERE status IN ($1, $2, $3) AND expires_at <= $4 \
               ORDER BY expires_at LIMIT $5";
    kabinet_domain::on_db!(db, pool => {
        let ids: Vec<String> = sqlx::query_scalar(sql)
            .bind(OPEN[0])
            .bind(OPEN[1])
            .bind(OPEN[2])
            .bind(micros(now))
            .bind(limit as i64)
            .fetch_all(pool)
            .await?;
        Ok(ids.iter().filter_map(|s| Uuid::parse_str(s).ok()).collect())
    })
}

/// Whether organisation `id` is a pharmacy.
pub async fn is_pharmacy(db: &Db, id: Uuid) -> Result<bool, sqlx::Error> {
    let id = id.to_string();
    kabinet_domain::on_db!(db, pool => {
        let found: Option<String> = sqlx::query_scalar("SELECT id FROM pharmacies WHERE id = $1")
            .bind(&id)
            .fetch_optional(pool)
            .await?;
        Ok(found.is_some())
    })
}

/// A page of pharmacy ids, in designation order.
pub async fn list_pharmacies(
    db: &Db,
    first: usize,
    offset: usize,
) -> Result<OffsetPage<Uuid>, sqlx::Error> {
    kabinet_domain::on_db!(db, pool => {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM pharmacies ORDER BY designated_at, id LIMIT $1 OFFSET $2",
        )
        .bind(first as i64 + 1)
        .bind(offset as i64)
        .fetch_all(pool)
        .await?;
        let ids = ids.iter().filter_map(|s| Uuid::parse_str(s).ok()).collect();
        Ok(OffsetPage::from_rows(ids, offset, first))
    })
}
