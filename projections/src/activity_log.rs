//! The activity log (G1/A5): per account, every action with when, what, on which
//! object, the resulting status and who acted.

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use cqrs_es::Aggregate;
use kabinet_domain::accounts::Account;
use kabinet_domain::appointments::{Appointment, AppointmentEvent, Referral, ReferralEvent};
use kabinet_domain::directory::{
    Doctor, DoctorEvent, MedicalService, Organisation, OrganisationEvent, Schedule, ScheduleEvent,
    ServiceEvent,
};
use kabinet_domain::documents::{DocumentRequest, DocumentRequestEvent};
use kabinet_domain::identity::verification::IdentityVerification;
use kabinet_domain::notifications::NotificationSettings;
use kabinet_domain::patients::{Patient, PatientEvent};
use kabinet_domain::policies::{Policy, PolicyEvent};
use kabinet_domain::prescriptions::{Prescription, PrescriptionEvent};
use kabinet_domain::{Backend, Db, RecordedEvent};
use serde_json::Value;
use sqlx::{QueryBuilder, Row};
use uuid::Uuid;

use crate::page::{push_keyset, Cursor, Page, PageRequest};
use crate::projection::{event_of, Projection, ProjectionError, ProjectionTx};

/// The activity-log projection.
pub struct ActivityLog;

/// Name of the projection and of its table.
pub const NAME: &str = "activity_log";

/// One line of an account's activity log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityEntry {
    pub account_id: Uuid,
    pub position: i64,
    pub occurred_at: DateTime<Utc>,
    pub action: String,
    pub object_type: String,
    pub object_id: String,
    pub status: Option<String>,
    pub actor_id: Uuid,
    pub actor_role: String,
}

/// Filters of [`list`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActivityFilter {
    /// Inclusive lower bound.
    pub from: Option<DateTime<Utc>>,
    /// Exclusive upper bound.
    pub to: Option<DateTime<Utc>>,
    /// Only these actions (event types); empty means all.
    pub actions: Vec<String>,
}

/// What the log reads of one event: the status it leaves its object in and
/// the patient it concerns.
#[derive(Debug, Default, PartialEq, Eq)]
struct Reading {
    status: Option<String>,
    patient: Option<Uuid>,
}

impl Reading {
    fn new(status: Option<&str>, patient: Option<Uuid>) -> Self {
        Reading {
            status: status.map(str::to_string),
            patient,
        }
    }
}

/// Reads `event` through its aggregate's event enum, so a renamed or reshaped
/// event is a compile error here; events of aggregate types outside the domain
/// are read from their JSON.
fn read(event: &RecordedEvent) -> Result<Reading, ProjectionError> {
    if let Some(e) = event_of::<Appointment>(NAME, event)? {
        return Ok(appointment(e));
    }
    if let Some(e) = event_of::<Referral>(NAME, event)? {
        return Ok(match e {
            ReferralEvent::ReferralRequested {
                patient_id, status, ..
            }
            | ReferralEvent::ReferralApproved {
                patient_id, status, ..
            }
            | ReferralEvent::ReferralRejected {
                patient_id, status, ..
            } => Reading::new(Some(status.as_str()), Some(patient_id)),
        });
    }
    if let Some(e) = event_of::<DocumentRequest>(NAME, event)? {
        return Ok(document_request(e));
    }
    if let Some(e) = event_of::<Prescription>(NAME, event)? {
        return Ok(prescription(e));
    }
    if let Some(e) = event_of::<Policy>(NAME, event)? {
        return Ok(policy(e));
    }
    // The patient's own aggregate: its id is the patient's.
    let patient = || Uuid::parse_str(&event.aggregate_id).ok();
    if let Some(e) = event_of::<Patient>(NAME, event)? {
        return Ok(match e {
            PatientEvent::PatientProfileRecorded(_) => Reading::new(Some("recorded"), patient()),
            PatientEvent::PatientDetailsRecorded(_) => Reading::new(None, patient()),
        });
    }
    if let Some(e) = event_of::<Organisation>(NAME, event)? {
        return Ok(match e {
            OrganisationEvent::OrganisationRegistered(_) => Reading::new(Some("registered"), None),
            OrganisationEvent::OrganisationDetailsChanged(_) => Reading::new(Some("updated"), None),
            OrganisationEvent::PharmacyDesignated => Reading::default(),
        });
    }
    if let Some(e) = event_of::<Doctor>(NAME, event)? {
        return Ok(match e {
            DoctorEvent::DoctorRegistered(_) => Reading::new(Some("registered"), None),
            DoctorEvent::DoctorDetailsChanged(_) => Reading::new(Some("updated"), None),
        });
    }
    if let Some(e) = event_of::<MedicalService>(NAME, event)? {
        return Ok(match e {
            ServiceEvent::ServiceRegistered(_) => Reading::new(Some("registered"), None),
        });
    }
    if let Some(e) = event_of::<Schedule>(NAME, event)? {
        return Ok(match e {
            ScheduleEvent::PeriodPublished(_) => Reading::new(Some("published"), None),
            ScheduleEvent::PeriodClosed { .. } => Reading::new(Some("closed"), None),
        });
    }
    // Streams whose events leave no status and name no patient: nothing of
    // them is read, so they are not decoded either. Account streams carry
    // events a newer build wrote (the account journal lists them by type); one
    // this build cannot decode must not stop the log.
    if [
        Account::TYPE,
        IdentityVerification::TYPE,
        NotificationSettings::TYPE,
    ]
    .contains(&event.aggregate_type.as_str())
    {
        return Ok(Reading::default());
    }
    Ok(untyped(event))
}

fn appointment(e: AppointmentEvent) -> Reading {
    match e {
        AppointmentEvent::AppointmentBooked {
            patient_id, status, ..
        }
        | AppointmentEvent::AppointmentRescheduled {
            patient_id, status, ..
        }
        | AppointmentEvent::AppointmentCancelled {
            patient_id, status, ..
        }
        | AppointmentEvent::PatientArrived { patient_id, status }
        | AppointmentEvent::VisitFulfilled {
            patient_id, status, ..
        }
        | AppointmentEvent::PatientDidNotCome { patient_id, status } => {
            Reading::new(Some(status.as_str()), Some(patient_id))
        }
        AppointmentEvent::ReviewLeft { patient_id, .. } => {
            Reading::new(Some("reviewed"), Some(patient_id))
        }
    }
}

fn document_request(e: DocumentRequestEvent) -> Reading {
    match e {
        DocumentRequestEvent::DocumentRequested {
            patient_id, status, ..
        }
        | DocumentRequestEvent::DocumentRequestStarted {
            patient_id, status, ..
        }
        | DocumentRequestEvent::DocumentRequestFulfilled {
            patient_id, status, ..
        }
        | DocumentRequestEvent::DocumentRequestRejected {
            patient_id, status, ..
        } => Reading::new(Some(status.as_str()), Some(patient_id)),
        DocumentRequestEvent::DocumentSentToClinic { patient_id, .. } => {
            Reading::new(Some("sent_to_clinic"), Some(patient_id))
        }
    }
}

fn prescription(e: PrescriptionEvent) -> Reading {
    match e {
        PrescriptionEvent::PrescriptionIssued {
            patient_id, status, ..
        }
        | PrescriptionEvent::PrescriptionSentToPharmacy {
            patient_id, status, ..
        }
        | PrescriptionEvent::PrescriptionReadyAtPharmacy {
            patient_id, status, ..
        }
        | PrescriptionEvent::PrescriptionDispensed {
            patient_id, status, ..
        }
        | PrescriptionEvent::PrescriptionCancelled {
            patient_id, status, ..
        }
        | PrescriptionEvent::PrescriptionExpired { patient_id, status } => {
            Reading::new(Some(status.as_str()), Some(patient_id))
        }
        PrescriptionEvent::PrescriptionResendRequested { patient_id, .. }
        | PrescriptionEvent::PrescriptionCancellationRequested { patient_id, .. }
        | PrescriptionEvent::PrescriptionRequestApproved { patient_id, .. }
        | PrescriptionEvent::PrescriptionRequestDeclined { patient_id, .. } => {
            Reading::new(None, Some(patient_id))
        }
    }
}

fn policy(e: PolicyEvent) -> Reading {
    match e {
        PolicyEvent::PolicyApplied {
            patient_id, status, ..
        }
        | PolicyEvent::PolicyIssued {
            patient_id, status, ..
        }
        | PolicyEvent::PolicyApplicationRejected {
            patient_id, status, ..
        }
        | PolicyEvent::PolicyExpired { patient_id, status } => {
            Reading::new(Some(status.as_str()), Some(patient_id))
        }
        PolicyEvent::PolicyRenewalDue { patient_id, .. } => Reading::new(None, Some(patient_id)),
    }
}

/// An event of an aggregate type the domain does not define: its `status` and
/// `patient_id`, at the top of the payload or one level down in the variant.
fn untyped(event: &RecordedEvent) -> Reading {
    let field = |name: &str| {
        event
            .payload
            .as_object()
            .and_then(|o| o.values().find_map(|v| v.get(name)).or(o.get(name)))
            .and_then(Value::as_str)
    };
    Reading {
        status: field("status").map(str::to_string),
        patient: field("patient_id").and_then(|s| Uuid::parse_str(s).ok()),
    }
}

/// The accounts whose log shows `event`: whoever acted, and the patient it concerns.
fn accounts_of(event: &RecordedEvent, patient: Option<Uuid>) -> Vec<Uuid> {
    let mut accounts = Vec::with_capacity(2);
    if let Some(actor) = event.meta("actor_id").and_then(|s| Uuid::parse_str(s).ok()) {
        if !actor.is_nil() {
            accounts.push(actor);
        }
    }
    if let Some(patient) = patient {
        if !accounts.contains(&patient) {
            accounts.push(patient);
        }
    }
    accounts
}

fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

fn from_micros(us: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(us).single().unwrap_or_default()
}

struct Line<'a> {
    account: String,
    event: &'a RecordedEvent,
    status: Option<String>,
}

#[async_trait]
impl Projection for ActivityLog {
    fn name(&self) -> &'static str {
        NAME
    }

    fn create_table(&self, _backend: Backend, table: &str) -> Vec<String> {
        vec![format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                account_id  TEXT   NOT NULL,
                position    BIGINT NOT NULL,
                occurred_at BIGINT NOT NULL,
                action      TEXT   NOT NULL,
                object_type TEXT   NOT NULL,
                object_id   TEXT   NOT NULL,
                status      TEXT,
                actor_id    TEXT   NOT NULL,
                actor_role  TEXT   NOT NULL
            )"
        )]
    }

    fn create_indexes(&self, _backend: Backend, table: &str) -> Vec<String> {
        vec![
            format!("CREATE UNIQUE INDEX IF NOT EXISTS {table}_key ON {table} (account_id, position)"),
            format!(
                "CREATE INDEX IF NOT EXISTS {table}_by_time ON {table} (account_id, occurred_at, position)"
            ),
        ]
    }

    async fn apply(
        &self,
        tx: &mut ProjectionTx<'_>,
        table: &str,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        let mut lines = Vec::with_capacity(events.len() * 2);
        for event in events {
            let Reading { status, patient } = read(event)?;
            for account in accounts_of(event, patient) {
                lines.push(Line {
                    account: account.to_string(),
                    event,
                    status: status.clone(),
                });
            }
        }
        // Nine values a row; stay well under SQLite's bound-parameter limit.
        for chunk in lines.chunks(1000) {
            let head = format!(
                "INSERT INTO {table} (account_id, position, occurred_at, action, object_type, \
                 object_id, status, actor_id, actor_role) "
            );
            match tx {
                ProjectionTx::Postgres(conn) => {
                    let mut q = QueryBuilder::<sqlx::Postgres>::new(head);
                    push_lines(&mut q, chunk);
                    q.build().execute(&mut **conn).await?;
                }
                ProjectionTx::Sqlite(conn) => {
                    let mut q = QueryBuilder::<sqlx::Sqlite>::new(head);
                    push_lines(&mut q, chunk);
                    q.build().execute(&mut **conn).await?;
                }
            }
        }
        Ok(())
    }
}

fn push_lines<'a, DB: sqlx::Database>(q: &mut QueryBuilder<'a, DB>, lines: &'a [Line<'a>])
where
    String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    Option<String>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    q.push_values(lines, |mut row, line| {
        row.push_bind(line.account.as_str())
            .push_bind(line.event.position())
            .push_bind(micros(line.event.recorded_at))
            .push_bind(line.event.event_type.as_str())
            .push_bind(line.event.aggregate_type.as_str())
            .push_bind(line.event.aggregate_id.as_str())
            .push_bind(line.status.clone())
            .push_bind(line.event.meta("actor_id").unwrap_or_default())
            .push_bind(line.event.meta("actor_role").unwrap_or_default());
    });
}

/// A page of `account`'s activity, newest first.
pub async fn list(
    db: &Db,
    account: Uuid,
    filter: &ActivityFilter,
    page: PageRequest,
) -> Result<Page<ActivityEntry>, sqlx::Error> {
    let account_text = account.to_string();
    kabinet_domain::on_db!(db, pool => {
        let mut q = QueryBuilder::new(
            "SELECT account_id, position, occurred_at, action, object_type, object_id, status, \
             actor_id, actor_role FROM activity_log WHERE account_id = ",
        );
        q.push_bind(&account_text);
        if let Some(from) = filter.from {
            q.push(" AND occurred_at >= ").push_bind(micros(from));
        }
        if let Some(to) = filter.to {
            q.push(" AND occurred_at < ").push_bind(micros(to));
        }
        if !filter.actions.is_empty() {
            q.push(" AND action IN (");
            let mut list = q.separated(", ");
            for action in &filter.actions {
                list.push_bind(action.as_str());
            }
            q.push(")");
        }
        push_keyset(&mut q, "occurred_at", page);
        let rows = q.build().fetch_all(pool).await?;
        let mut items = Vec::with_capacity(rows.len());
        for row in &rows {
            let account_id: String = row.try_get(0)?;
            let actor_id: String = row.try_get(7)?;
            let entry = ActivityEntry {
                account_id: Uuid::parse_str(&account_id).unwrap_or_default(),
                position: row.try_get(1)?,
                occurred_at: from_micros(row.try_get(2)?),
                action: row.try_get(3)?,
                object_type: row.try_get(4)?,
                object_id: row.try_get(5)?,
                status: row.try_get(6)?,
                actor_id: Uuid::parse_str(&actor_id).unwrap_or_default(),
                actor_role: row.try_get(8)?,
            };
            let cursor = Cursor { at_micros: micros(entry.occurred_at), position: entry.position };
            items.push((cursor, entry));
        }
        Ok(Page::from_keyset_rows(items, page))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kabinet_domain::appointments::AppointmentStatus;
    use kabinet_domain::journal::chain::Hash;
    use kabinet_domain::JournalOrder;
    use serde_json::json;

    fn recorded(aggregate_type: &str, aggregate_id: &str, payload: Value) -> RecordedEvent {
        RecordedEvent {
            order: JournalOrder { tx: 1, position: 3 },
            recorded_at: Utc::now(),
            aggregate_type: aggregate_type.into(),
            aggregate_id: aggregate_id.into(),
            sequence: 1,
            event_type: "Whatever".into(),
            event_version: "1".into(),
            payload,
            metadata: json!({}),
            hash: Hash::default(),
        }
    }

    #[test]
    fn a_domain_event_is_read_through_its_enum() {
        let patient = Uuid::now_v7();
        let arrived = AppointmentEvent::PatientArrived {
            patient_id: patient,
            status: AppointmentStatus::Arrived,
        };
        let payload = serde_json::to_value(&arrived).expect("serialises");
        let reading = read(&recorded("appointment", "a-1", payload)).expect("decodes");
        assert_eq!(reading, Reading::new(Some("arrived"), Some(patient)));

        let closed = json!({ "PeriodClosed": {
            "period_id": Uuid::now_v7(), "doctor_id": Uuid::now_v7(), "reason": "отпуск",
            "starts_at": "2026-01-01T08:00:00Z", "ends_at": "2026-01-01T12:00:00Z",
            "slot_minutes": 15 } });
        let reading = read(&recorded("schedule", "s-1", closed)).expect("decodes");
        assert_eq!(reading, Reading::new(Some("closed"), None));
    }

    #[test]
    fn a_domain_payload_that_does_not_decode_is_an_error() {
        let broken = json!({ "PatientArrived": { "patient_id": "nobody" } });
        match read(&recorded("appointment", "a-1", broken)) {
            Err(ProjectionError::BadEvent {
                projection,
                position,
                ..
            }) => assert_eq!((projection, position), (NAME, 3)),
            other => panic!("expected a decoding error, got {other:?}"),
        }
    }

    #[test]
    fn an_event_outside_the_domain_is_read_from_its_json() {
        let patient = Uuid::now_v7();
        let nested = json!({ "Added": { "status": "counted", "patient_id": patient } });
        assert_eq!(
            read(&recorded("tally", "t-1", nested)).expect("read"),
            Reading::new(Some("counted"), Some(patient))
        );
        let top = json!({ "status": "open" });
        assert_eq!(
            read(&recorded("tally", "t-1", top)).expect("read"),
            Reading::new(Some("open"), None)
        );
        // Not a patient aggregate: its id names no patient.
        let bare = recorded("tally", &patient.to_string(), json!("Reset"));
        assert_eq!(read(&bare).expect("read"), Reading::default());
    }
}
