//! Medical document requests (E1): patients ask, the organisation's staff take,
//! fulfil (the server renders the PDF) or reject; fulfilled documents download
//! through short-lived signed links and can be sent to another clinic.

pub mod content;

use async_graphql::connection::{Connection, Edge, EmptyFields};
use async_graphql::{Context, Enum, InputObject, Object, SimpleObject, ID};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use kabinet_domain::command::{CommandOutcome, Retry};
use kabinet_domain::documents::{
    DocumentError, DocumentKind, DocumentRequest as DocumentRequestAggregate,
    DocumentRequestCommand, DocumentRequestStatus as DomainStatus, RejectionReason, Submission,
};
use kabinet_domain::patients::Patient;
use kabinet_domain::user_error::AsUserError;
use kabinet_domain::{Actor, Role};
use kabinet_projections::appointments::{
    self as appointment_views, AppointmentFilter, Scope, Sort, When,
};
use kabinet_projections::document_requests::{
    self as views, DocumentRequestFilter as ViewFilter, DocumentRequestView, JournalEntry,
};
use kabinet_projections::organisations::{self, OrganisationView};
use kabinet_projections::{activity_log, doctors};
use serde::Serialize;
use uuid::Uuid;

use super::accounts::UserRole;
use super::context::{
    actor, actor_in, internal, medical_patient, read_your_writes, record_medical_read,
    services as svc,
};
use super::directory::Organisation;
use super::errors::{check, idempotency_key, run_command, UserError};
use super::ids;
use super::labels::LabelRu;
use super::links::DownloadLink;
use super::pagination::forward_page;
use crate::files::DEFAULT_LINK_TTL;

/// Read models a document mutation waits for.
const MODELS: &[&str] = &[views::NAME, views::JOURNAL_NAME, activity_log::NAME];

/// Staff roles that work on document requests.
const STAFF: &[Role] = &[Role::Registrar, Role::Doctor, Role::Lab];

/// Hours the organisation has to answer, per document type (24 by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocumentDeadlines {
    pub history_extract_hours: u32,
    pub health_certificate_hours: u32,
    pub examination_results_hours: u32,
}

impl Default for DocumentDeadlines {
    fn default() -> Self {
        DocumentDeadlines {
            history_extract_hours: 24,
            health_certificate_hours: 24,
            examination_results_hours: 24,
        }
    }
}

impl DocumentDeadlines {
    /// The time allowed for `kind`.
    pub fn for_kind(&self, kind: DocumentKind) -> Duration {
        let hours = match kind {
            DocumentKind::HistoryExtract => self.history_extract_hours,
            DocumentKind::HealthCertificate => self.health_certificate_hours,
            DocumentKind::ExaminationResults => self.examination_results_hours,
        };
        Duration::hours(i64::from(hours))
    }
}

/// A type of medical document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Serialize)]
pub enum DocumentType {
    /// Выписка из истории болезни.
    HistoryExtract,
    /// Справка о состоянии здоровья.
    HealthCertificate,
    /// Результаты обследований.
    ExaminationResults,
}

impl DocumentType {
    pub(crate) fn kind(self) -> DocumentKind {
        match self {
            DocumentType::HistoryExtract => DocumentKind::HistoryExtract,
            DocumentType::HealthCertificate => DocumentKind::HealthCertificate,
            DocumentType::ExaminationResults => DocumentKind::ExaminationResults,
        }
    }

    fn of(kind: DocumentKind) -> DocumentType {
        match kind {
            DocumentKind::HistoryExtract => DocumentType::HistoryExtract,
            DocumentKind::HealthCertificate => DocumentType::HealthCertificate,
            DocumentKind::ExaminationResults => DocumentType::ExaminationResults,
        }
    }
}

/// Where a document request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Serialize)]
pub enum DocumentRequestStatus {
    Submitted,
    InProgress,
    Fulfilled,
    Rejected,
}

impl DocumentRequestStatus {
    pub(crate) fn domain(self) -> DomainStatus {
        match self {
            DocumentRequestStatus::Submitted => DomainStatus::Submitted,
            DocumentRequestStatus::InProgress => DomainStatus::InProgress,
            DocumentRequestStatus::Fulfilled => DomainStatus::Fulfilled,
            DocumentRequestStatus::Rejected => DomainStatus::Rejected,
        }
    }

    fn of(status: DomainStatus) -> DocumentRequestStatus {
        match status {
            DomainStatus::Submitted => DocumentRequestStatus::Submitted,
            DomainStatus::InProgress => DocumentRequestStatus::InProgress,
            DomainStatus::Fulfilled => DocumentRequestStatus::Fulfilled,
            DomainStatus::Rejected => DocumentRequestStatus::Rejected,
        }
    }
}

/// Why a request was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Serialize)]
pub enum RejectionReasonCode {
    /// The policy number, visit date or other supporting data is missing or wrong.
    InvalidSupportingData,
    /// No records of the patient in the period.
    NoRecordsInPeriod,
    /// This organisation does not issue the document.
    NotIssuedHere,
    /// The patient has to come in person.
    VisitRequired,
    Other,
}

impl RejectionReasonCode {
    fn domain(self) -> RejectionReason {
        match self {
            RejectionReasonCode::InvalidSupportingData => RejectionReason::InvalidSupportingData,
            RejectionReasonCode::NoRecordsInPeriod => RejectionReason::NoRecordsInPeriod,
            RejectionReasonCode::NotIssuedHere => RejectionReason::NotIssuedHere,
            RejectionReasonCode::VisitRequired => RejectionReason::VisitRequired,
            RejectionReasonCode::Other => RejectionReason::Other,
        }
    }
}

fn status_of(view: &DocumentRequestView) -> DomainStatus {
    DomainStatus::parse(&view.status).unwrap_or(DomainStatus::Submitted)
}

fn kind_of(view: &DocumentRequestView) -> DocumentKind {
    DocumentKind::parse(&view.kind).unwrap_or(DocumentKind::HistoryExtract)
}

/// A request for a medical document.
#[derive(Debug, Clone)]
pub struct DocumentRequest(pub DocumentRequestView);

#[Object]
impl DocumentRequest {
    /// Global id.
    pub async fn id(&self) -> ID {
        ids::encode("DocumentRequest", self.0.id)
    }
    #[graphql(name = "type")]
    async fn document_type(&self) -> DocumentType {
        DocumentType::of(kind_of(&self.0))
    }
    /// The document type in Russian, e.g. «Выписка из истории болезни».
    async fn type_label_ru(&self) -> &'static str {
        kind_of(&self.0).label_ru()
    }
    async fn status(&self) -> DocumentRequestStatus {
        DocumentRequestStatus::of(status_of(&self.0))
    }
    /// The status in Russian, e.g. «В работе».
    async fn status_label_ru(&self) -> &'static str {
        status_of(&self.0).label_ru()
    }
    /// The organisation asked.
    async fn organisation(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Organisation>> {
        organisation(ctx, self.0.organisation_id).await
    }
    /// Global id of the patient's account.
    async fn patient_id(&self) -> ID {
        ids::encode("Account", self.0.patient_id)
    }
    /// First day of the period, `YYYY-MM-DD`.
    async fn period_from(&self) -> String {
        self.0.period_from.to_string()
    }
    /// Last day of the period, `YYYY-MM-DD`.
    async fn period_to(&self) -> String {
        self.0.period_to.to_string()
    }
    /// The OMS policy number given as supporting data (16 digits).
    async fn policy_number(&self) -> Option<&str> {
        self.0.policy_number.as_deref()
    }
    /// The visit date given as supporting data, `YYYY-MM-DD`.
    async fn visit_date(&self) -> Option<String> {
        self.0.visit_date.map(|d| d.to_string())
    }
    async fn purpose(&self) -> Option<&str> {
        self.0.purpose.as_deref()
    }
    async fn submitted_at(&self) -> DateTime<Utc> {
        self.0.submitted_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    /// By when the organisation is to answer.
    async fn due_at(&self) -> DateTime<Utc> {
        self.0.due_at
    }
    /// Open past its deadline.
    async fn overdue(&self, ctx: &Context<'_>) -> bool {
        self.0.is_overdue(svc(ctx).clock.now())
    }
    /// The stable reason code of a rejection.
    async fn rejection_reason_code(&self) -> Option<&str> {
        self.0.reject_code.as_deref()
    }
    /// The rejection reason in Russian.
    async fn rejection_reason_label_ru(&self) -> Option<&'static str> {
        self.0
            .reject_code
            .as_deref()
            .and_then(RejectionReason::parse)
            .map(RejectionReason::label_ru)
    }
    /// The staff's explanation of a rejection.
    async fn rejection_text(&self) -> Option<&str> {
        self.0.reject_text.as_deref()
    }
    /// The rejected request this one resubmits.
    async fn resubmission_of(&self) -> Option<ID> {
        self.0
            .resubmission_of
            .map(|id| ids::encode("DocumentRequest", id))
    }
    /// The request that resubmitted this rejected one.
    async fn resubmitted_as(&self) -> Option<ID> {
        self.0
            .resubmitted_as
            .map(|id| ids::encode("DocumentRequest", id))
    }
    /// SHA-256 of the fulfilled PDF, as the journal records it.
    async fn file_sha256(&self) -> Option<&str> {
        self.0.file_sha256.as_deref()
    }
    /// A short-lived link to download the fulfilled PDF (`GET` with the same bearer token).
    async fn download(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<DownloadLink>> {
        let Some(sha) = &self.0.file_sha256 else {
            return Ok(None);
        };
        let actor = actor(ctx)?;
        record_medical_read(ctx, self.0.patient_id, "medical_document", Some(self.0.id)).await?;
        let s = svc(ctx);
        Ok(Some(DownloadLink::signed(
            s,
            sha,
            actor.account_id,
            s.clock.now() + DEFAULT_LINK_TTL,
        )))
    }
    /// Every change of the request, oldest first.
    #[graphql(
        complexity = "super::limits::list_complexity(child_complexity, super::limits::JOURNAL_ENTRIES)"
    )]
    async fn journal(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Vec<DocumentRequestChange>> {
        let entries = views::journal(&svc(ctx).db, self.0.id)
            .await
            .map_err(|e| internal(ctx, e))?;
        let zone = match organisations::get(&svc(ctx).db, self.0.organisation_id)
            .await
            .map_err(|e| internal(ctx, e))?
        {
            Some(o) => o.details.time_zone,
            None => "UTC".to_string(),
        };
        Ok(entries
            .into_iter()
            .map(|entry| DocumentRequestChange {
                entry,
                zone: zone.clone(),
            })
            .collect())
    }
}

/// One change in a request's journal.
#[derive(Debug, Clone)]
pub struct DocumentRequestChange {
    entry: JournalEntry,
    zone: String,
}

#[Object]
impl DocumentRequestChange {
    /// When the change was recorded.
    async fn at(&self) -> DateTime<Utc> {
        self.entry.at
    }
    /// Local date in the organisation's zone, `YYYY-MM-DD`.
    async fn date(&self) -> String {
        local(self.entry.at, &self.zone).0
    }
    /// Local time in the organisation's zone, `HH:MM`.
    async fn time(&self) -> String {
        local(self.entry.at, &self.zone).1
    }
    /// `submitted`, `started`, `fulfilled`, `rejected` or `sent_to_clinic`.
    async fn action(&self) -> &str {
        &self.entry.action
    }
    /// The status after the change.
    async fn status(&self) -> DocumentRequestStatus {
        DocumentRequestStatus::of(
            DomainStatus::parse(&self.entry.status).unwrap_or(DomainStatus::Submitted),
        )
    }
    async fn status_label_ru(&self) -> &'static str {
        DomainStatus::parse(&self.entry.status)
            .unwrap_or(DomainStatus::Submitted)
            .label_ru()
    }
    /// Role of whoever made the change (`PATIENT`, `REGISTRAR`, `DOCTOR`, `LAB`, …).
    async fn by_role(&self) -> async_graphql::Result<UserRole> {
        UserRole::of_record(&self.entry.actor_role)
    }
    /// The role in Russian, for display.
    async fn by_role_label_ru(&self) -> async_graphql::Result<&'static str> {
        Ok(UserRole::of_record(&self.entry.actor_role)?.label_ru())
    }
    /// For `sent_to_clinic`: the organisation that received the document.
    async fn sent_to(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Organisation>> {
        match self.entry.organisation_id {
            Some(id) => organisation(ctx, id).await,
            None => Ok(None),
        }
    }
}

fn local(at: DateTime<Utc>, zone: &str) -> (String, String) {
    match zone.parse::<chrono_tz::Tz>() {
        Ok(tz) => {
            let l = at.with_timezone(&tz);
            (
                l.format("%Y-%m-%d").to_string(),
                l.format("%H:%M").to_string(),
            )
        }
        Err(_) => (
            at.format("%Y-%m-%d").to_string(),
            at.format("%H:%M").to_string(),
        ),
    }
}

async fn organisation(ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Option<Organisation>> {
    Ok(organisations::get(&svc(ctx).db, id)
        .await
        .map_err(|e| internal(ctx, e))?
        .map(Organisation))
}

/// Filter of a patient's requests.
#[derive(Debug, Clone, Default, InputObject)]
pub struct DocumentRequestFilter {
    pub statuses: Option<Vec<DocumentRequestStatus>>,
    pub types: Option<Vec<DocumentType>>,
    /// Submitted on or after this day (UTC), `YYYY-MM-DD`.
    pub submitted_from: Option<String>,
    /// Submitted on or before this day (UTC), `YYYY-MM-DD`.
    pub submitted_to: Option<String>,
}

/// Filter of an organisation's worklist.
#[derive(Debug, Clone, Default, InputObject)]
pub struct DocumentWorklistFilter {
    pub statuses: Option<Vec<DocumentRequestStatus>>,
    pub types: Option<Vec<DocumentType>>,
    /// Only open requests past their deadline.
    pub overdue_only: Option<bool>,
}

fn view_filter(
    statuses: Option<Vec<DocumentRequestStatus>>,
    types: Option<Vec<DocumentType>>,
) -> ViewFilter {
    ViewFilter {
        statuses: statuses
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.domain().as_str().to_string())
            .collect(),
        kinds: types
            .unwrap_or_default()
            .into_iter()
            .map(|t| t.kind().as_str().to_string())
            .collect(),
        ..ViewFilter::default()
    }
}

fn filter_day(name: &str, raw: Option<&str>) -> async_graphql::Result<Option<NaiveDate>> {
    raw.map(|r| {
        NaiveDate::parse_from_str(r.trim(), "%Y-%m-%d").map_err(|_| {
            super::context::bad_input(format!("{name} is not a date in the form YYYY-MM-DD"))
        })
    })
    .transpose()
}

fn connection(
    page: kabinet_projections::page::OffsetPage<DocumentRequestView>,
) -> Connection<String, DocumentRequest, EmptyFields, EmptyFields> {
    let mut connection = Connection::new(page.has_previous, page.has_next);
    connection.edges.extend(
        page.items
            .into_iter()
            .map(|(c, v)| Edge::new(c.encode(), DocumentRequest(v))),
    );
    connection
}

/// Queries of document requests.
#[derive(Default)]
pub struct DocumentsQuery;

#[Object]
impl DocumentsQuery {
    /// The caller's document requests, newest first (patients).
    #[graphql(
        complexity = "super::pagination::connection_complexity(child_complexity, first, None)"
    )]
    async fn document_requests(
        &self,
        ctx: &Context<'_>,
        filter: Option<DocumentRequestFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, DocumentRequest, EmptyFields, EmptyFields>> {
        let actor = medical_patient(ctx).await?;
        let (first, offset) = forward_page(first, after)?;
        let filter = filter.unwrap_or_default();
        let from = filter_day("submittedFrom", filter.submitted_from.as_deref())?;
        let to = filter_day("submittedTo", filter.submitted_to.as_deref())?;
        let mut view = view_filter(filter.statuses, filter.types);
        view.submitted_from = from
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|d| d.and_utc());
        view.submitted_before = to
            .and_then(|d| d.succ_opt())
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|d| d.and_utc());
        record_medical_read(ctx, actor.account_id, "document_requests", None).await?;
        let page = views::list(
            &svc(ctx).db,
            views::Scope::Patient(actor.account_id),
            &view,
            first,
            offset,
        )
        .await
        .map_err(|e| internal(ctx, e))?;
        Ok(connection(page))
    }

    /// The caller's organisation's document requests, nearest deadline first, with the
    /// overdue ones flagged (registrars, doctors, lab staff).
    #[graphql(
        complexity = "super::pagination::connection_complexity(child_complexity, first, None)"
    )]
    async fn organisation_document_requests(
        &self,
        ctx: &Context<'_>,
        filter: Option<DocumentWorklistFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, DocumentRequest, EmptyFields, EmptyFields>> {
        let actor = actor_in(ctx, STAFF)?;
        let Some(organisation_id) = actor.organisation_id else {
            return Err(super::context::forbidden());
        };
        let (first, offset) = forward_page(first, after)?;
        let filter = filter.unwrap_or_default();
        let mut view = view_filter(filter.statuses, filter.types);
        if filter.overdue_only == Some(true) {
            view.overdue_at = Some(svc(ctx).clock.now());
        }
        let page = views::list(
            &svc(ctx).db,
            views::Scope::Organisation(organisation_id),
            &view,
            first,
            offset,
        )
        .await
        .map_err(|e| internal(ctx, e))?;
        for (_, request) in &page.items {
            record_medical_read(
                ctx,
                request.patient_id,
                "document_request",
                Some(request.id),
            )
            .await?;
        }
        Ok(connection(page))
    }
}

/// Input of `requestDocument`.
#[derive(Debug, Clone, InputObject, Serialize)]
pub struct RequestDocumentInput {
    /// The organisation that is to issue the document.
    pub organisation_id: ID,
    #[graphql(name = "type")]
    pub document_type: DocumentType,
    /// First day of the period, `YYYY-MM-DD`.
    pub period_from: String,
    /// Last day of the period, `YYYY-MM-DD` (not before `periodFrom`, not in the future).
    pub period_to: String,
    /// OMS policy number (16 digits with a valid check digit), as supporting data.
    pub policy_number: Option<String>,
    /// Date of a visit the document is about, `YYYY-MM-DD`.
    pub visit_date: Option<String>,
    /// What the document is needed for.
    pub purpose: Option<String>,
    pub idempotency_key: Option<String>,
}

/// Input of `resubmitDocumentRequest`: a new request following a rejected one; fields
/// left out are copied from it.
#[derive(Debug, Clone, InputObject, Serialize)]
pub struct ResubmitDocumentRequestInput {
    /// The rejected request.
    pub request_id: ID,
    pub period_from: Option<String>,
    pub period_to: Option<String>,
    pub policy_number: Option<String>,
    pub visit_date: Option<String>,
    pub purpose: Option<String>,
    pub idempotency_key: Option<String>,
}

/// Input of `sendDocumentToClinic`.
#[derive(Debug, Clone, InputObject, Serialize)]
pub struct SendDocumentToClinicInput {
    /// A fulfilled request of the caller.
    pub request_id: ID,
    /// The organisation to send the document to.
    pub organisation_id: ID,
    pub idempotency_key: Option<String>,
}

/// Input of `startDocumentRequest` and `fulfilDocumentRequest`.
#[derive(Debug, Clone, InputObject, Serialize)]
pub struct DocumentRequestActionInput {
    pub request_id: ID,
    pub idempotency_key: Option<String>,
}

/// Input of `rejectDocumentRequest`.
#[derive(Debug, Clone, InputObject, Serialize)]
pub struct RejectDocumentRequestInput {
    pub request_id: ID,
    pub reason_code: RejectionReasonCode,
    /// An explanation for the patient (1 to 1000 characters).
    pub text: String,
    pub idempotency_key: Option<String>,
}

/// Result of document request mutations.
#[derive(Debug, SimpleObject)]
pub struct DocumentRequestPayload {
    pub document_request: Option<DocumentRequest>,
    pub user_errors: Vec<UserError>,
}

impl DocumentRequestPayload {
    fn failed(e: UserError) -> async_graphql::Result<Self> {
        Ok(DocumentRequestPayload {
            document_request: None,
            user_errors: vec![e],
        })
    }
}

fn not_found() -> UserError {
    UserError::on_field("requestId", "NOT_FOUND", "no such document request")
}

fn parse_day(field: &str, raw: &str) -> Result<NaiveDate, UserError> {
    NaiveDate::parse_from_str(raw.trim(), "%Y-%m-%d").map_err(|_| {
        UserError::on_field(field, "INVALID_INPUT", "not a date in the form YYYY-MM-DD")
    })
}

fn optional_day(field: &str, raw: Option<&str>) -> Result<Option<NaiveDate>, UserError> {
    match raw.map(str::trim) {
        None | Some("") => Ok(None),
        Some(r) => parse_day(field, r).map(Some),
    }
}

/// The organisation of a global id, or `UNKNOWN_ORGANISATION` on `field`.
async fn known_organisation(
    ctx: &Context<'_>,
    field: &str,
    raw: &ID,
) -> async_graphql::Result<Result<OrganisationView, UserError>> {
    let found = match ids::decode_as(raw, "Organisation") {
        Some(id) => organisations::get(&svc(ctx).db, id)
            .await
            .map_err(|e| internal(ctx, e))?,
        None => None,
    };
    Ok(found.ok_or_else(|| {
        UserError::on_field(
            field,
            "UNKNOWN_ORGANISATION",
            "no such organisation in the directory",
        )
    }))
}

/// Today in `zone` (the organisation's), for the "not in the future" rules.
fn today_in(now: DateTime<Utc>, zone: &str) -> NaiveDate {
    match zone.parse::<chrono_tz::Tz>() {
        Ok(tz) => now.with_timezone(&tz).date_naive(),
        Err(_) => now.date_naive(),
    }
}

/// A request the caller may act on: the patient's own, or their organisation's for staff.
async fn visible_request(
    ctx: &Context<'_>,
    actor: &Actor,
    raw: &ID,
) -> async_graphql::Result<Option<DocumentRequestView>> {
    let Some(id) = ids::decode_as(raw, "DocumentRequest") else {
        return Ok(None);
    };
    let view = views::get(&svc(ctx).db, id)
        .await
        .map_err(|e| internal(ctx, e))?;
    Ok(view.filter(|v| may_see(actor, v)))
}

fn may_see(actor: &Actor, view: &DocumentRequestView) -> bool {
    match actor.role {
        Role::Patient => view.patient_id == actor.account_id,
        Role::Registrar | Role::Doctor | Role::Lab => {
            actor.organisation_id == Some(view.organisation_id)
        }
        _ => false,
    }
}

async fn payload(
    ctx: &Context<'_>,
    outcome: CommandOutcome,
) -> async_graphql::Result<DocumentRequestPayload> {
    read_your_writes(ctx, MODELS, outcome.last_order()).await;
    let id = Uuid::parse_str(&outcome.aggregate_id).map_err(|e| internal(ctx, e))?;
    let view = views::get(&svc(ctx).db, id)
        .await
        .map_err(|e| internal(ctx, e))?;
    Ok(DocumentRequestPayload {
        document_request: view.map(DocumentRequest),
        user_errors: vec![],
    })
}

/// Runs `command` on an existing request and answers with its fresh read model.
async fn act(
    ctx: &Context<'_>,
    actor: &Actor,
    id: Uuid,
    command: DocumentRequestCommand,
    input: &impl Serialize,
    key: Option<String>,
) -> async_graphql::Result<DocumentRequestPayload> {
    match run_command::<DocumentRequestAggregate>(
        ctx,
        actor,
        &id.to_string(),
        command,
        &(),
        input,
        key,
        Retry::OnConflict,
    )
    .await?
    {
        Ok((outcome, _)) => payload(ctx, outcome).await,
        Err(errors) => Ok(DocumentRequestPayload {
            document_request: None,
            user_errors: errors,
        }),
    }
}

/// Mutations of document requests.
#[derive(Default)]
pub struct DocumentsMutation;

#[Object]
impl DocumentsMutation {
    /// Asks an organisation for a medical document (patients).
    async fn request_document(
        &self,
        ctx: &Context<'_>,
        input: RequestDocumentInput,
    ) -> async_graphql::Result<DocumentRequestPayload> {
        let actor = medical_patient(ctx).await?;
        // Every field is checked, so the caller sees all its mistakes at once.
        let mut errors = Vec::new();
        let key = check(&mut errors, idempotency_key(input.idempotency_key.clone()));
        let organisation = check(
            &mut errors,
            known_organisation(ctx, "organisationId", &input.organisation_id).await?,
        );
        let period_from = check(&mut errors, parse_day("periodFrom", &input.period_from));
        let period_to = check(&mut errors, parse_day("periodTo", &input.period_to));
        let visit_date = check(
            &mut errors,
            optional_day("visitDate", input.visit_date.as_deref()),
        );
        let (Some(key), Some(organisation), Some(period_from), Some(period_to), Some(visit_date)) =
            (key, organisation, period_from, period_to, visit_date)
        else {
            return Ok(DocumentRequestPayload {
                document_request: None,
                user_errors: errors,
            });
        };
        let kind = input.document_type.kind();
        let now = svc(ctx).clock.now();
        let submission = Submission {
            patient_id: actor.account_id,
            organisation_id: organisation.id,
            kind,
            period_from,
            period_to,
            policy_number: input.policy_number.clone(),
            visit_date,
            purpose: input.purpose.clone(),
            resubmission_of: None,
            due_at: now + svc(ctx).document_deadlines.for_kind(kind),
            today: today_in(now, &organisation.details.time_zone),
        };
        submit(ctx, actor, submission, &input, key).await
    }

    /// Submits a rejected request again as a new request linked to it (patients).
    async fn resubmit_document_request(
        &self,
        ctx: &Context<'_>,
        input: ResubmitDocumentRequestInput,
    ) -> async_graphql::Result<DocumentRequestPayload> {
        let actor = medical_patient(ctx).await?;
        // Every field is checked, so the caller sees all its mistakes at once.
        let mut errors = Vec::new();
        let key = check(&mut errors, idempotency_key(input.idempotency_key.clone()));
        let previous = visible_request(ctx, actor, &input.request_id).await?;
        let previous = check(
            &mut errors,
            match previous {
                None => Err(not_found()),
                Some(p) if status_of(&p) != DomainStatus::Rejected => Err(UserError::on_field(
                    "requestId",
                    "REQUEST_NOT_REJECTED",
                    format!(
                        "only a rejected request can be resubmitted; this one is {}",
                        status_of(&p).as_str().replace('_', " ")
                    ),
                )),
                Some(p) if p.resubmitted_as.is_some() => Err(resubmitted()),
                Some(p) => Ok(p),
            },
        );
        let period_from = check(
            &mut errors,
            input
                .period_from
                .as_deref()
                .map(|raw| parse_day("periodFrom", raw))
                .transpose(),
        );
        let period_to = check(
            &mut errors,
            input
                .period_to
                .as_deref()
                .map(|raw| parse_day("periodTo", raw))
                .transpose(),
        );
        let visit_date = check(
            &mut errors,
            input
                .visit_date
                .as_deref()
                .map(|raw| optional_day("visitDate", Some(raw)))
                .transpose(),
        );
        let (Some(key), Some(previous), Some(period_from), Some(period_to), Some(visit_date)) =
            (key, previous, period_from, period_to, visit_date)
        else {
            return Ok(DocumentRequestPayload {
                document_request: None,
                user_errors: errors,
            });
        };
        // Fields left out keep the rejected request's values.
        let period_from = period_from.unwrap_or(previous.period_from);
        let period_to = period_to.unwrap_or(previous.period_to);
        let visit_date = visit_date.unwrap_or(previous.visit_date);
        let zone = organisations::get(&svc(ctx).db, previous.organisation_id)
            .await
            .map_err(|e| internal(ctx, e))?
            .map(|o| o.details.time_zone)
            .unwrap_or_else(|| "UTC".to_string());
        let kind = kind_of(&previous);
        let now = svc(ctx).clock.now();
        let submission = Submission {
            patient_id: actor.account_id,
            organisation_id: previous.organisation_id,
            kind,
            period_from,
            period_to,
            policy_number: input
                .policy_number
                .clone()
                .or(previous.policy_number.clone()),
            visit_date,
            purpose: input.purpose.clone().or(previous.purpose.clone()),
            resubmission_of: Some(previous.id),
            due_at: now + svc(ctx).document_deadlines.for_kind(kind),
            today: today_in(now, &zone),
        };
        submit(ctx, actor, submission, &input, key).await
    }

    /// Sends a fulfilled document to a chosen organisation (patients).
    async fn send_document_to_clinic(
        &self,
        ctx: &Context<'_>,
        input: SendDocumentToClinicInput,
    ) -> async_graphql::Result<DocumentRequestPayload> {
        let actor = medical_patient(ctx).await?;
        let key = match idempotency_key(input.idempotency_key.clone()) {
            Ok(k) => k,
            Err(e) => return DocumentRequestPayload::failed(e),
        };
        let Some(view) = visible_request(ctx, actor, &input.request_id).await? else {
            return DocumentRequestPayload::failed(not_found());
        };
        let to = match known_organisation(ctx, "organisationId", &input.organisation_id).await? {
            Ok(o) => o,
            Err(e) => return DocumentRequestPayload::failed(e),
        };
        let command = DocumentRequestCommand::SendToClinic {
            organisation_id: to.id,
        };
        act(ctx, actor, view.id, command, &input, key).await
    }

    /// Takes a submitted request into work (the organisation's staff).
    async fn start_document_request(
        &self,
        ctx: &Context<'_>,
        input: DocumentRequestActionInput,
    ) -> async_graphql::Result<DocumentRequestPayload> {
        let actor = actor_in(ctx, STAFF)?;
        let key = match idempotency_key(input.idempotency_key.clone()) {
            Ok(k) => k,
            Err(e) => return DocumentRequestPayload::failed(e),
        };
        let Some(view) = visible_request(ctx, actor, &input.request_id).await? else {
            return DocumentRequestPayload::failed(not_found());
        };
        let command = DocumentRequestCommand::Start {
            staff_id: actor.account_id,
        };
        act(ctx, actor, view.id, command, &input, key).await
    }

    /// Renders the requested document as a PDF, stores it and fulfils the request
    /// (the organisation's staff; the request must be in progress).
    async fn fulfil_document_request(
        &self,
        ctx: &Context<'_>,
        input: DocumentRequestActionInput,
    ) -> async_graphql::Result<DocumentRequestPayload> {
        let actor = actor_in(ctx, STAFF)?;
        let key = match idempotency_key(input.idempotency_key.clone()) {
            Ok(k) => k,
            Err(e) => return DocumentRequestPayload::failed(e),
        };
        let Some(view) = visible_request(ctx, actor, &input.request_id).await? else {
            return DocumentRequestPayload::failed(not_found());
        };
        let s = svc(ctx);
        // Refuse before rendering, so a wrong state stores nothing; the aggregate
        // checks again when the event is committed.
        let current = s
            .commands
            .load::<DocumentRequestAggregate>(&view.id.to_string())
            .await
            .map_err(|e| internal(ctx, e))?;
        let replay = key.is_some() && current.status == Some(DomainStatus::Fulfilled);
        match current.status {
            Some(DomainStatus::InProgress) => {}
            _ if replay => {}
            Some(status) => {
                let error = DocumentError::IllegalTransition {
                    action: "fulfil",
                    status,
                };
                return DocumentRequestPayload::failed(error.to_user_error().into());
            }
            None => return DocumentRequestPayload::failed(not_found()),
        }
        let file_sha256 = match current.file_sha256.clone().filter(|_| replay) {
            Some(sha) => sha,
            None => match render_request(ctx, &view).await? {
                Ok(pdf) => s
                    .files
                    .store(&pdf, kabinet_pdf::MEDIA_TYPE)
                    .await
                    .map_err(|e| internal(ctx, e))?,
                Err(e) => return DocumentRequestPayload::failed(e),
            },
        };
        record_medical_read(ctx, view.patient_id, "visit_history", Some(view.id)).await?;
        let command = DocumentRequestCommand::Fulfil { file_sha256 };
        act(ctx, actor, view.id, command, &input, key).await
    }

    /// Rejects a submitted or in-progress request with a reason (the organisation's staff).
    async fn reject_document_request(
        &self,
        ctx: &Context<'_>,
        input: RejectDocumentRequestInput,
    ) -> async_graphql::Result<DocumentRequestPayload> {
        let actor = actor_in(ctx, STAFF)?;
        let key = match idempotency_key(input.idempotency_key.clone()) {
            Ok(k) => k,
            Err(e) => return DocumentRequestPayload::failed(e),
        };
        let Some(view) = visible_request(ctx, actor, &input.request_id).await? else {
            return DocumentRequestPayload::failed(not_found());
        };
        let command = DocumentRequestCommand::Reject {
            reason: input.reason_code.domain(),
            text: input.text.clone(),
        };
        act(ctx, actor, view.id, command, &input, key).await
    }
}

fn resubmitted() -> UserError {
    UserError::on_field(
        "requestId",
        "ALREADY_RESUBMITTED",
        "this rejected request was already resubmitted; resubmit the newer one if it is rejected too",
    )
}

async fn submit(
    ctx: &Context<'_>,
    actor: &Actor,
    submission: Submission,
    input: &impl Serialize,
    key: Option<String>,
) -> async_graphql::Result<DocumentRequestPayload> {
    let id = Uuid::now_v7();
    let resubmission = submission.resubmission_of.is_some();
    let result = svc(ctx)
        .commands
        .execute_new::<DocumentRequestAggregate>(
            &id.to_string(),
            DocumentRequestCommand::Submit(submission),
            &(),
            &super::context::metadata(ctx, actor, key),
            &serde_json::to_value(input).map_err(|e| internal(ctx, e))?,
            Retry::Never,
        )
        .await;
    use kabinet_domain::command::CommandError;
    match result {
        Ok((outcome, _)) => payload(ctx, outcome).await,
        Err(CommandError::Reserved(_)) if resubmission => {
            DocumentRequestPayload::failed(resubmitted())
        }
        Err(CommandError::Rejected(e)) => Ok(DocumentRequestPayload {
            document_request: None,
            user_errors: e
                .to_user_errors()
                .into_iter()
                .map(UserError::from)
                .collect(),
        }),
        Err(CommandError::IdempotencyKeyReused) => {
            DocumentRequestPayload::failed(UserError::on_field(
                "idempotencyKey",
                "IDEMPOTENCY_KEY_REUSED",
                CommandError::<DocumentError>::IdempotencyKeyReused.to_string(),
            ))
        }
        Err(e @ (CommandError::Conflict | CommandError::Reserved(_))) => {
            DocumentRequestPayload::failed(UserError {
                field: None,
                message: e.to_string(),
                code: "CONFLICT".into(),
            })
        }
        Err(CommandError::Internal(e)) => Err(internal(ctx, e)),
    }
}

/// Renders the document of `view` from the patient's profile and the visits of the period.
async fn render_request(
    ctx: &Context<'_>,
    view: &DocumentRequestView,
) -> async_graphql::Result<Result<Vec<u8>, UserError>> {
    let s = svc(ctx);
    let patient = s
        .commands
        .load::<Patient>(&view.patient_id.to_string())
        .await
        .map_err(|e| internal(ctx, e))?;
    let Some(profile) = patient.profile else {
        return Ok(Err(UserError::on_field(
            "requestId",
            "PATIENT_PROFILE_MISSING",
            "the patient has not recorded their name and birth date yet; the document cannot name them",
        )));
    };
    let Some(organisation) = organisations::get(&s.db, view.organisation_id)
        .await
        .map_err(|e| internal(ctx, e))?
    else {
        return Ok(Err(not_found()));
    };
    let zone = organisation.details.time_zone.clone();
    let tz: chrono_tz::Tz = zone.parse().unwrap_or(chrono_tz::UTC);
    let start_of = |day: NaiveDate| {
        day.and_hms_opt(0, 0, 0)
            .and_then(|d| d.and_local_timezone(tz).earliest())
            .map(|d| d.with_timezone(&Utc))
    };
    let filter = AppointmentFilter {
        when: When::All,
        from: start_of(view.period_from),
        to: view.period_to.succ_opt().and_then(start_of),
        statuses: vec!["fulfilled".to_string()],
        ..AppointmentFilter::default()
    };
    let mut visits = Vec::new();
    let mut offset = 0;
    loop {
        let page = appointment_views::list(
            &s.db,
            &Scope::Patient(view.patient_id),
            &filter,
            Sort::StartAsc,
            s.clock.now(),
            100,
            offset,
        )
        .await
        .map_err(|e| internal(ctx, e))?;
        offset += page.items.len();
        for (_, a) in page.items {
            if a.organisation_id != view.organisation_id {
                continue;
            }
            let Some(outcome) = a.outcome else { continue };
            let doctor = doctors::get(&s.db, a.doctor_id)
                .await
                .map_err(|e| internal(ctx, e))?
                .map(|d| format!("{} {}", d.details.surname, d.details.first_name));
            visits.push(content::Visit {
                when: a
                    .start
                    .with_timezone(&tz)
                    .format("%d.%m.%Y %H:%M")
                    .to_string(),
                specialty: a.specialty,
                doctor,
                outcome,
            });
        }
        if !page.has_next {
            break;
        }
    }
    let facts = content::DocumentFacts {
        request: view,
        kind: kind_of(view),
        profile: &profile,
        organisation_name: &organisation.details.name,
        organisation_address: &organisation.details.address,
        submitted_on: view.submitted_at.with_timezone(&tz).date_naive(),
        visits: &visits,
    };
    Ok(Ok(kabinet_pdf::render(&content::document(&facts))))
}

/// Resolves a document request's global id for its patient and its organisation's staff.
pub async fn node(ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Option<DocumentRequest>> {
    let actor = actor(ctx)?;
    let view = views::get(&svc(ctx).db, id)
        .await
        .map_err(|e| internal(ctx, e))?;
    let Some(view) = view.filter(|v| may_see(actor, v)) else {
        return Ok(None);
    };
    record_medical_read(ctx, view.patient_id, "document_request", Some(view.id)).await?;
    Ok(Some(DocumentRequest(view)))
}
