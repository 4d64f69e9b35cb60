//! `accountJournal` (A5): the caller's sign-ins, changes of their account, profile
//! and identity verification, and every read of their medical data by anyone —
//! newest first, one list. Events come from the `account_journal` read model, reads
//! from the access record; the two are merged by time.

use async_graphql::connection::{Connection, Edge, EmptyFields};
use async_graphql::{Context, Enum, InputObject, Object, ID};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use kabinet_domain::access::{ReadQuery, RecordedRead};
use kabinet_projections::account_journal::{self, JournalLine, LineQuery};
use kabinet_projections::page::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
use uuid::Uuid;

use super::accounts::UserRole;
use super::context::{actor, bad_input, internal, services};
use super::directory::Organisation;
use super::ids;
use super::labels::LabelRu;
use super::pagination::connection_complexity;

/// What a journal entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum AccountJournalKind {
    /// A sign-in attempt, successful or not.
    SignIn,
    /// A change of the account, the profile or the identity verification.
    Change,
    /// A read of the account holder's medical data (by anyone, themselves included).
    MedicalRead,
}

/// Filters of `accountJournal`.
#[derive(Debug, Default, InputObject)]
pub struct AccountJournalFilter {
    /// Only these kinds; all when omitted.
    pub kinds: Option<Vec<AccountJournalKind>>,
    /// Only entries at or after this instant.
    pub from: Option<DateTime<Utc>>,
    /// Only entries before this instant.
    pub to: Option<DateTime<Utc>>,
}

/// One entry of the account journal.
#[derive(Debug, Clone)]
pub struct AccountJournalEntry {
    occurred_at: DateTime<Utc>,
    kind: AccountJournalKind,
    action: String,
    actor_id: Uuid,
    actor_role: String,
    organisation_id: Option<Uuid>,
    object_id: Option<Uuid>,
    owner: Uuid,
    key: Key,
}

/// English and Russian labels of the kinds of medical data whose reads are recorded.
fn read_label(what: &str) -> Option<(&'static str, &'static str)> {
    Some(match what {
        "visit_history" => ("Visit history viewed", "Просмотр истории посещений"),
        "visit_outcome" => (
            "Visit outcome (diagnosis) viewed",
            "Просмотр результата приёма (диагноза)",
        ),
        "referral_requests" => ("Referral requests viewed", "Просмотр запросов направлений"),
        "referral" => ("Referral request viewed", "Просмотр запроса направления"),
        "profile" => (
            "Profile viewed by clinic staff",
            "Просмотр профиля сотрудником",
        ),
        _ => return None,
    })
}

/// The GraphQL type of the record a read of kind `what` names by id.
fn read_object_type(what: &str) -> Option<&'static str> {
    Some(match what {
        "visit_outcome" => "Appointment",
        "referral" => "ReferralRequest",
        "prescription" => "Prescription",
        "oms_policy" => "Policy",
        // A document request is fulfilled from the visit history it names.
        "document_request" | "medical_document" | "visit_history" => "DocumentRequest",
        _ => return None,
    })
}

#[Object]
impl AccountJournalEntry {
    async fn occurred_at(&self) -> DateTime<Utc> {
        self.occurred_at
    }
    async fn kind(&self) -> AccountJournalKind {
        self.kind
    }
    /// The kind in Russian, for display.
    async fn kind_label_ru(&self) -> &'static str {
        self.kind.label_ru()
    }
    /// The event type (e.g. `SignedIn`, `PatientDetailsRecorded`; ended sessions
    /// add why after a colon, e.g. `SessionsRevoked:refresh_token_reused`) or,
    /// for reads, the kind of data read (e.g. `visit_history`).
    async fn action(&self) -> &str {
        &self.action
    }
    /// The action in English (the action itself when no label is known).
    async fn label_en(&self) -> String {
        self.labels().0
    }
    /// The action in Russian (the action itself when no label is known).
    async fn label_ru(&self) -> String {
        self.labels().1
    }
    /// True when the account holder acted (or read) themselves.
    async fn by_owner(&self) -> bool {
        self.actor_id == self.owner
    }
    /// The role of whoever acted or read (`PATIENT`, `DOCTOR`, `SYSTEM`, …); no names.
    async fn actor_role(&self) -> async_graphql::Result<UserRole> {
        UserRole::of_record(&self.actor_role)
    }
    /// The role in Russian, for display.
    async fn actor_role_label_ru(&self) -> async_graphql::Result<&'static str> {
        Ok(UserRole::of_record(&self.actor_role)?.label_ru())
    }
    /// The organisation of the staff member who acted or read.
    async fn organisation(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Organisation>> {
        match self.organisation_id {
            Some(id) => super::directory::node(ctx, id).await,
            None => Ok(None),
        }
    }
    /// For reads: the global id of the record read, when one.
    async fn object_id(&self) -> Option<ID> {
        let type_name = read_object_type(&self.action)?;
        self.object_id.map(|id| ids::encode(type_name, id))
    }
}

impl AccountJournalEntry {
    fn labels(&self) -> (String, String) {
        let known = match self.kind {
            AccountJournalKind::MedicalRead => read_label(&self.action),
            _ => account_journal::label(&self.action),
        };
        match known {
            Some((en, ru)) => (en.to_string(), ru.to_string()),
            None => (self.action.clone(), self.action.clone()),
        }
    }
}

/// Sort key: newest first by time, then events before reads, then sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    at: i64,
    /// 1 for events, 0 for reads.
    source: i64,
    seq: i64,
}

impl Key {
    fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("aj1:{}:{}:{}", self.at, self.source, self.seq))
    }

    fn decode(raw: &str) -> Option<Key> {
        let text = String::from_utf8(URL_SAFE_NO_PAD.decode(raw).ok()?).ok()?;
        let mut parts = text.split(':');
        match (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) {
            (Some("aj1"), Some(at), Some(source), Some(seq), None) => Some(Key {
                at: at.parse().ok()?,
                source: source.parse().ok().filter(|s| *s == 0 || *s == 1)?,
                seq: seq.parse().ok()?,
            }),
            _ => None,
        }
    }
}

fn from_line(owner: Uuid, line: JournalLine) -> AccountJournalEntry {
    AccountJournalEntry {
        key: Key {
            at: line.occurred_at.timestamp_micros(),
            source: 1,
            seq: line.position,
        },
        occurred_at: line.occurred_at,
        kind: if line.kind == "sign_in" {
            AccountJournalKind::SignIn
        } else {
            AccountJournalKind::Change
        },
        action: line.action,
        actor_id: line.actor_id,
        actor_role: line.actor_role,
        organisation_id: line.actor_organisation_id,
        object_id: None,
        owner,
    }
}

fn from_read(owner: Uuid, read: RecordedRead) -> AccountJournalEntry {
    AccountJournalEntry {
        key: Key {
            at: read.at.timestamp_micros(),
            source: 0,
            seq: read.seq,
        },
        occurred_at: read.at,
        kind: AccountJournalKind::MedicalRead,
        action: read.what,
        actor_id: read.reader_id,
        actor_role: read.reader_role,
        organisation_id: read.reader_organisation_id,
        object_id: read.object_id,
        owner,
    }
}

/// The account journal query.
#[derive(Default)]
pub struct AccountJournalQuery;

#[Object]
impl AccountJournalQuery {
    /// The caller's account journal, newest first (any signed-in account, own only).
    #[graphql(complexity = "connection_complexity(child_complexity, first, None)")]
    async fn account_journal(
        &self,
        ctx: &Context<'_>,
        filter: Option<AccountJournalFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, AccountJournalEntry, EmptyFields, EmptyFields>>
    {
        let owner = actor(ctx)?.account_id;
        let filter = filter.unwrap_or_default();
        if let (Some(from), Some(to)) = (filter.from, filter.to) {
            if to < from {
                return Err(bad_input("filter.to must not be before filter.from"));
            }
        }
        let limit = match first {
            None => DEFAULT_PAGE_SIZE,
            Some(n) if n < 0 || n as usize > MAX_PAGE_SIZE => {
                return Err(bad_input(format!(
                    "first must be between 0 and {MAX_PAGE_SIZE}, got {n}"
                )))
            }
            Some(n) => n as usize,
        };
        let cursor = after
            .as_deref()
            .map(|c| {
                Key::decode(c)
                    .ok_or_else(|| bad_input("after: the cursor is not valid for this list"))
            })
            .transpose()?;
        let kinds = filter.kinds.unwrap_or_default();
        let wants = |k: AccountJournalKind| kinds.is_empty() || kinds.contains(&k);
        let s = services(ctx);
        let mut entries = Vec::new();
        let event_kinds: Vec<String> = [
            (AccountJournalKind::SignIn, "sign_in"),
            (AccountJournalKind::Change, "change"),
        ]
        .into_iter()
        .filter(|(k, _)| wants(*k))
        .map(|(_, name)| name.to_string())
        .collect();
        if !event_kinds.is_empty() {
            let query = LineQuery {
                kinds: event_kinds,
                from: filter.from,
                to: filter.to,
                // A read's cursor admits events of an earlier instant only.
                older_than: cursor.map(|c| match c.source {
                    1 => (c.at, c.seq),
                    _ => (c.at, i64::MIN),
                }),
            };
            let lines = account_journal::list(&s.db, owner, &query, limit + 1)
                .await
                .map_err(|e| internal(ctx, e))?;
            entries.extend(lines.into_iter().map(|l| from_line(owner, l)));
        }
        if wants(AccountJournalKind::MedicalRead) {
            let query = ReadQuery {
                from: filter.from,
                to: filter.to,
                older_than: cursor.map(|c| (c.at, c.seq)),
                // After an event's cursor, every read of the same instant is older.
                whole_instant_older: cursor.is_some_and(|c| c.source == 1),
            };
            let reads = s
                .access
                .list(owner, &query, limit + 1)
                .await
                .map_err(|e| internal(ctx, e))?;
            entries.extend(reads.into_iter().map(|r| from_read(owner, r)));
        }
        entries.sort_by_key(|e| std::cmp::Reverse(e.key));
        let has_next = entries.len() > limit;
        entries.truncate(limit);
        let mut connection = Connection::new(cursor.is_some(), has_next);
        connection
            .edges
            .extend(entries.into_iter().map(|e| Edge::new(e.key.encode(), e)));
        Ok(connection)
    }
}
