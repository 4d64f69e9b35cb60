//! The activity log (G1/A5): per account, every action with when, what, on which
//! object, the resulting status and who acted.

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use kabinet_domain::{Backend, Db, RecordedEvent};
use serde_json::Value;
use sqlx::{QueryBuilder, Row};
use uuid::Uuid;

use crate::page::{push_keyset, Cursor, Page, PageRequest};
use crate::projection::{Projection, ProjectionError, ProjectionTx};

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

/// The status an event leaves its object in, for events that do not carry one.
fn status_after(event_type: &str) -> Option<&'static str> {
    match event_type {
        "OrganisationRegistered" | "DoctorRegistered" | "ServiceRegistered" => Some("registered"),
        "OrganisationDetailsChanged" | "DoctorDetailsChanged" => Some("updated"),
        "PeriodPublished" => Some("published"),
        "PeriodClosed" => Some("closed"),
        "PatientProfileRecorded" => Some("recorded"),
        "ReviewLeft" => Some("reviewed"),
        "DocumentSentToClinic" => Some("sent_to_clinic"),
        _ => None,
    }
}

/// The accounts whose log shows `event`: whoever acted, and the patient it concerns.
fn accounts_of(event: &RecordedEvent) -> Vec<Uuid> {
    let mut accounts = Vec::with_capacity(2);
    if let Some(actor) = event.meta("actor_id").and_then(|s| Uuid::parse_str(s).ok()) {
        if !actor.is_nil() {
            accounts.push(actor);
        }
    }
    let patient = if event.aggregate_type == "patient" {
        Uuid::parse_str(&event.aggregate_id).ok()
    } else {
        event
            .payload
            .as_object()
            .and_then(|o| {
                o.values()
                    .find_map(|v| v.get("patient_id"))
                    .or(o.get("patient_id"))
            })
            .and_then(Value::as_str)
            .and_then(|s| Uuid::parse_str(s).ok())
    };
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
            let status = event
                .payload
                .as_object()
                .and_then(|o| o.values().find_map(|v| v.get("status")).or(o.get("status")))
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| status_after(&event.event_type).map(str::to_string));
            for account in accounts_of(event) {
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
