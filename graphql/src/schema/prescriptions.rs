//! E-prescriptions (E2): issuing, sending to a pharmacy, preparing and
//! dispensing, the patient's requests and the doctor's decisions, the journal,
//! and the public verification of printed prescriptions.

use async_graphql::connection::{Connection, Edge, EmptyFields};
use async_graphql::{Context, Enum, InputObject, Object, SimpleObject, ID};
use chrono::{DateTime, Days, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use kabinet_domain::command::{CommandOutcome, Retry};
use kabinet_domain::directory::{Organisation as OrganisationAggregate, OrganisationCommand};
use kabinet_domain::patients::Patient;
use kabinet_domain::prescriptions::{
    Medication, Pharmacy, Prescriber, Prescription as PrescriptionAggregate, PrescriptionCommand,
    PrescriptionStatus as DomainStatus, Validity,
};
use kabinet_domain::{Actor, Role};
use kabinet_projections::prescriptions::{
    self, JournalEntry, Owner, PrescriptionFilter as Filter, PrescriptionView,
};
use kabinet_projections::{activity_log, doctors, organisations};
use serde::Serialize;
use uuid::Uuid;

use super::context::{
    actor, actor_in, bad_input, forbidden, in_care_of_caller, internal, medical_patient,
    read_your_writes, record_medical_read, services as svc, Services,
};
use super::directory::Organisation;
use super::errors::{idempotency_key, run_command, UserError};
use super::ids;
use super::pagination::forward_page;
use kabinet_pdf::{PdfBlock, PdfDocument};

/// Read models a prescription mutation waits for.
const MODELS: &[&str] = &[
    prescriptions::NAME,
    prescriptions::JOURNAL,
    activity_log::NAME,
];

/// Where a prescription stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Serialize)]
pub enum PrescriptionStatus {
    /// Готов к печати: issued, the patient may print it or send it to a pharmacy.
    ReadyToPrint,
    SentToPharmacy,
    ReadyAtPharmacy,
    Dispensed,
    Cancelled,
    Expired,
}

impl PrescriptionStatus {
    fn of(domain: DomainStatus) -> Self {
        match domain {
            DomainStatus::ReadyToPrint => PrescriptionStatus::ReadyToPrint,
            DomainStatus::SentToPharmacy => PrescriptionStatus::SentToPharmacy,
            DomainStatus::ReadyAtPharmacy => PrescriptionStatus::ReadyAtPharmacy,
            DomainStatus::Dispensed => PrescriptionStatus::Dispensed,
            DomainStatus::Cancelled => PrescriptionStatus::Cancelled,
            DomainStatus::Expired => PrescriptionStatus::Expired,
        }
    }

    fn domain(self) -> DomainStatus {
        match self {
            PrescriptionStatus::ReadyToPrint => DomainStatus::ReadyToPrint,
            PrescriptionStatus::SentToPharmacy => DomainStatus::SentToPharmacy,
            PrescriptionStatus::ReadyAtPharmacy => DomainStatus::ReadyAtPharmacy,
            PrescriptionStatus::Dispensed => DomainStatus::Dispensed,
            PrescriptionStatus::Cancelled => DomainStatus::Cancelled,
            PrescriptionStatus::Expired => DomainStatus::Expired,
        }
    }
}

fn status_of(raw: &str) -> DomainStatus {
    DomainStatus::parse(raw).unwrap_or(DomainStatus::ReadyToPrint)
}

/// What a patient asked the prescribing doctor for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum PrescriptionRequestKind {
    Resend,
    Cancellation,
}

/// A patient's request waiting for the prescribing doctor.
#[derive(Debug, Clone, SimpleObject)]
pub struct PrescriptionRequest {
    pub kind: PrescriptionRequestKind,
    /// The pharmacy of a re-send.
    pub pharmacy_name: Option<String>,
    pub reason: Option<String>,
}

/// One change in a prescription's journal.
#[derive(Debug, Clone, SimpleObject)]
pub struct PrescriptionJournalEntry {
    pub occurred_at: DateTime<Utc>,
    /// Local date of the change in the prescribing organisation's time zone.
    pub date: String,
    /// Local time (`HH:MM`).
    pub time: String,
    /// What happened (the event type, e.g. `PrescriptionDispensed`).
    pub action: String,
    pub status: PrescriptionStatus,
    pub status_label_ru: String,
    /// Role of who acted (`doctor`, `patient`, `pharmacist`, `system`).
    pub actor_role: String,
    pub prescribing_doctor: String,
    /// The reason, comment or pharmacy of the change.
    pub note: Option<String>,
}

/// An e-prescription.
#[derive(Debug, Clone)]
pub struct Prescription(pub PrescriptionView);

fn zone(name: &str) -> Tz {
    name.parse().unwrap_or(chrono_tz::Europe::Moscow)
}

async fn organisation_zone(ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Tz> {
    let view = organisations::get(&svc(ctx).db, id)
        .await
        .map_err(|e| internal(ctx, e))?;
    Ok(view
        .map(|o| zone(&o.details.time_zone))
        .unwrap_or(chrono_tz::Europe::Moscow))
}

/// How long a download link of a rendered document stays valid.
pub const DOWNLOAD_LINK_MINUTES: i64 = 15;

fn ru_date(day: NaiveDate) -> String {
    day.format("%d.%m.%Y").to_string()
}

/// The printable prescription: what a pharmacist needs, and the QR code of its
/// verification link. Built from the read model only, so the same prescription
/// in the same state always renders to the same bytes.
pub fn prescription_pdf(view: &PrescriptionView, verification: String, tz: Tz) -> PdfDocument {
    let field = |label: &str, value: String| PdfBlock::Field {
        label: label.to_string(),
        value,
    };
    let status = status_of(&view.status);
    PdfDocument {
        title: "Рецепт на лекарственный препарат".to_string(),
        blocks: vec![
            field("Номер рецепта", view.id.to_string()),
            field(
                "Дата выписки",
                view.issued_at
                    .with_timezone(&tz)
                    .format("%d.%m.%Y %H:%M")
                    .to_string(),
            ),
            field("Пациент (инициалы)", view.patient_initials.clone()),
            field("Врач", view.doctor_name.clone()),
            field("Медицинская организация", view.organisation_name.clone()),
            PdfBlock::Rule,
            field("Препарат", view.medication.clone()),
            field("Способ применения", view.dosage.clone()),
            field("Количество упаковок", view.quantity.to_string()),
            field(
                "Действителен",
                format!(
                    "с {} по {} включительно",
                    ru_date(view.valid_from),
                    ru_date(view.valid_until)
                ),
            ),
            field("Статус", status.label_ru().to_string()),
            PdfBlock::Rule,
            PdfBlock::Paragraph(
                "Подлинность и статус рецепта проверяются по QR-коду ниже.".to_string(),
            ),
        ],
        qr: Some(verification),
    }
}

/// Stores `doc` rendered and returns a short-lived download link for `account`.
pub async fn download_link(
    ctx: &Context<'_>,
    doc: &PdfDocument,
    account: Uuid,
) -> async_graphql::Result<String> {
    let s = svc(ctx);
    let bytes = kabinet_pdf::render(doc);
    let sha256 = s
        .files
        .store(&bytes, kabinet_pdf::MEDIA_TYPE)
        .await
        .map_err(|e| internal(ctx, e))?;
    let expires = s.clock.now() + chrono::Duration::minutes(DOWNLOAD_LINK_MINUTES);
    let link = s.file_links.download_link(&sha256, account, expires);
    Ok(format!("{}{link}", s.public_url))
}

/// The verification link printed as the prescription's QR code.
pub fn verification_url(s: &Services, view: &PrescriptionView) -> String {
    let token = s.prescription_signer.sign(view.id, view.issued_at);
    format!("{}/verify/prescription/{token}", s.public_url)
}

#[Object]
impl Prescription {
    /// Global id.
    pub async fn id(&self) -> ID {
        ids::encode("Prescription", self.0.id)
    }
    async fn medication(&self) -> &str {
        &self.0.medication
    }
    async fn dosage(&self) -> &str {
        &self.0.dosage
    }
    /// Number of packs.
    async fn quantity(&self) -> i64 {
        self.0.quantity
    }
    /// First day of validity (`YYYY-MM-DD`).
    async fn valid_from(&self) -> String {
        self.0.valid_from.to_string()
    }
    /// Last day of validity, inclusive.
    async fn valid_until(&self) -> String {
        self.0.valid_until.to_string()
    }
    /// The instant the validity ends.
    async fn expires_at(&self) -> DateTime<Utc> {
        self.0.expires_at
    }
    async fn issued_at(&self) -> DateTime<Utc> {
        self.0.issued_at
    }
    async fn status(&self) -> PrescriptionStatus {
        PrescriptionStatus::of(status_of(&self.0.status))
    }
    async fn status_label_ru(&self) -> &'static str {
        status_of(&self.0.status).label_ru()
    }
    /// Full name of the prescribing doctor.
    async fn prescribing_doctor(&self) -> &str {
        &self.0.doctor_name
    }
    async fn patient_initials(&self) -> &str {
        &self.0.patient_initials
    }
    /// The prescribing organisation.
    async fn organisation(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Organisation>> {
        super::directory::node(ctx, self.0.organisation_id).await
    }
    /// The pharmacy it was last sent to.
    async fn pharmacy(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Organisation>> {
        match self.0.pharmacy_id {
            Some(id) => super::directory::node(ctx, id).await,
            None => Ok(None),
        }
    }
    /// The patient's request waiting for the doctor's decision.
    async fn pending_request(&self) -> Option<PrescriptionRequest> {
        let kind = match self.0.pending_request.as_deref()? {
            "resend" => PrescriptionRequestKind::Resend,
            _ => PrescriptionRequestKind::Cancellation,
        };
        Some(PrescriptionRequest {
            kind,
            pharmacy_name: self.0.pending_pharmacy_name.clone(),
            reason: self.0.pending_reason.clone(),
        })
    }
    /// The link the printed QR code encodes (the patient and the prescribing organisation).
    async fn verification_url(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<String>> {
        let actor = actor(ctx)?;
        let allowed = match actor.role {
            Role::Patient => actor.account_id == self.0.patient_id,
            Role::Doctor | Role::Registrar => actor.organisation_id == Some(self.0.organisation_id),
            _ => false,
        };
        Ok(allowed.then(|| verification_url(svc(ctx), &self.0)))
    }
    /// A short-lived link to the printable PDF with its QR code (the patient and
    /// the prescribing organisation; the caller's bearer token is needed to download).
    #[graphql(complexity = "child_complexity + super::limits::PDF_RENDER_COST")]
    async fn download_url(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<String>> {
        let actor = actor(ctx)?;
        let allowed = match actor.role {
            Role::Patient => actor.account_id == self.0.patient_id,
            Role::Doctor | Role::Registrar => actor.organisation_id == Some(self.0.organisation_id),
            _ => false,
        };
        if !allowed {
            return Ok(None);
        }
        let tz = organisation_zone(ctx, self.0.organisation_id).await?;
        let doc = prescription_pdf(&self.0, verification_url(svc(ctx), &self.0), tz);
        download_link(ctx, &doc, actor.account_id).await.map(Some)
    }
    /// Every change, oldest first: date, time, status and the prescribing doctor.
    #[graphql(
        complexity = "super::limits::list_complexity(child_complexity, super::limits::JOURNAL_ENTRIES)"
    )]
    async fn journal(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Vec<PrescriptionJournalEntry>> {
        let tz = organisation_zone(ctx, self.0.organisation_id).await?;
        let entries = prescriptions::journal(&svc(ctx).db, self.0.id)
            .await
            .map_err(|e| internal(ctx, e))?;
        Ok(entries
            .into_iter()
            .map(|e: JournalEntry| {
                let local = e.occurred_at.with_timezone(&tz);
                let status = status_of(&e.status);
                PrescriptionJournalEntry {
                    occurred_at: e.occurred_at,
                    date: local.format("%Y-%m-%d").to_string(),
                    time: local.format("%H:%M").to_string(),
                    action: e.action,
                    status: PrescriptionStatus::of(status),
                    status_label_ru: status.label_ru().to_string(),
                    actor_role: e.actor_role,
                    prescribing_doctor: self.0.doctor_name.clone(),
                    note: e.note,
                }
            })
            .collect())
    }
}

/// Whether `actor` may see prescription `view`.
fn may_see(actor: &Actor, view: &PrescriptionView) -> bool {
    match actor.role {
        Role::Patient => actor.account_id == view.patient_id,
        Role::Doctor | Role::Registrar => actor.organisation_id == Some(view.organisation_id),
        Role::Pharmacist => view.pharmacy_id.is_some() && actor.organisation_id == view.pharmacy_id,
        _ => false,
    }
}

/// Resolves a prescription's global id for callers who may see it.
pub async fn node(ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Option<Prescription>> {
    let actor = actor(ctx)?;
    let view = prescriptions::get(&svc(ctx).db, id)
        .await
        .map_err(|e| internal(ctx, e))?;
    match view.filter(|v| may_see(actor, v)) {
        Some(view) => {
            record_medical_read(ctx, view.patient_id, "prescription", Some(view.id)).await?;
            Ok(Some(Prescription(view)))
        }
        None => Ok(None),
    }
}

/// Filters of prescription lists.
#[derive(Debug, Default, InputObject)]
pub struct PrescriptionsFilter {
    /// Only these statuses.
    pub statuses: Option<Vec<PrescriptionStatus>>,
    /// Issued on or after this date (`YYYY-MM-DD`, UTC).
    pub from: Option<String>,
    /// Issued on or before this date (inclusive).
    pub to: Option<String>,
}

fn filter_of(filter: Option<PrescriptionsFilter>) -> async_graphql::Result<Filter> {
    let filter = filter.unwrap_or_default();
    let day = |name: &str, raw: Option<String>| -> async_graphql::Result<Option<NaiveDate>> {
        raw.map(|r| {
            NaiveDate::parse_from_str(r.trim(), "%Y-%m-%d")
                .map_err(|_| bad_input(format!("filter.{name} must be a date YYYY-MM-DD")))
        })
        .transpose()
    };
    let from = day("from", filter.from)?;
    let to = day("to", filter.to)?;
    if let (Some(from), Some(to)) = (from, to) {
        if to < from {
            return Err(bad_input("filter.to must not be before filter.from"));
        }
    }
    let start = |d: NaiveDate| d.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    Ok(Filter {
        statuses: filter
            .statuses
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.domain().as_str().to_string())
            .collect(),
        from: from.and_then(start),
        to: to
            .and_then(|d| d.checked_add_days(Days::new(1)))
            .and_then(start),
    })
}

type PrescriptionConnection = Connection<String, Prescription, EmptyFields, EmptyFields>;

async fn list(
    ctx: &Context<'_>,
    owner: Owner,
    filter: Option<PrescriptionsFilter>,
    first: Option<i32>,
    after: Option<String>,
) -> async_graphql::Result<PrescriptionConnection> {
    let (first, offset) = forward_page(first, after)?;
    let filter = filter_of(filter)?;
    let page = prescriptions::list(&svc(ctx).db, owner, &filter, first, offset)
        .await
        .map_err(|e| internal(ctx, e))?;
    let mut connection = Connection::new(page.has_previous, page.has_next);
    for (cursor, view) in page.items {
        record_medical_read(ctx, view.patient_id, "prescription", Some(view.id)).await?;
        connection
            .edges
            .push(Edge::new(cursor.encode(), Prescription(view)));
    }
    Ok(connection)
}

/// What a pharmacist needs to know of a scanned prescription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerificationResult {
    /// Genuine and may be dispensed.
    Valid,
    Cancelled,
    Dispensed,
    Expired,
    /// Not a token this service signed (changed, truncated or made up).
    Invalid,
}

/// The answer to a verification: the result and, for a genuine token, only
/// what a pharmacist needs.
#[derive(Debug, Clone, SimpleObject, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PrescriptionVerification {
    pub result: VerificationResult,
    pub medication: Option<String>,
    pub dosage: Option<String>,
    pub quantity: Option<i64>,
    pub valid_from: Option<String>,
    pub valid_until: Option<String>,
    pub prescriber_name: Option<String>,
    pub organisation_name: Option<String>,
    pub patient_initials: Option<String>,
}

impl PrescriptionVerification {
    fn invalid() -> Self {
        PrescriptionVerification {
            result: VerificationResult::Invalid,
            medication: None,
            dosage: None,
            quantity: None,
            valid_from: None,
            valid_until: None,
            prescriber_name: None,
            organisation_name: None,
            patient_initials: None,
        }
    }
}

/// Verifies a prescription token: its signature, then the prescription's state now.
pub async fn verify(s: &Services, token: &str) -> Result<PrescriptionVerification, sqlx::Error> {
    let Ok((id, issued_micros)) = s.prescription_signer.verify(token) else {
        return Ok(PrescriptionVerification::invalid());
    };
    let Some(view) = prescriptions::get(&s.db, id).await? else {
        return Ok(PrescriptionVerification::invalid());
    };
    if view.issued_at.timestamp_micros() != issued_micros {
        return Ok(PrescriptionVerification::invalid());
    }
    let result = match status_of(&view.status) {
        DomainStatus::Cancelled => VerificationResult::Cancelled,
        DomainStatus::Dispensed => VerificationResult::Dispensed,
        DomainStatus::Expired => VerificationResult::Expired,
        // The scheduler may not have recorded an ended validity yet.
        _ if s.clock.now() >= view.expires_at => VerificationResult::Expired,
        _ => VerificationResult::Valid,
    };
    Ok(PrescriptionVerification {
        result,
        medication: Some(view.medication),
        dosage: Some(view.dosage),
        quantity: Some(view.quantity),
        valid_from: Some(view.valid_from.to_string()),
        valid_until: Some(view.valid_until.to_string()),
        prescriber_name: Some(view.doctor_name),
        organisation_name: Some(view.organisation_name),
        patient_initials: Some(view.patient_initials),
    })
}

/// Escapes text for HTML element content and attribute values.
fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `DD.MM.YYYY` of a `YYYY-MM-DD` date, or the text as it is.
fn ru_day_of(raw: &str) -> String {
    NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .map(ru_date)
        .unwrap_or_else(|_| raw.to_string())
}

/// The page a phone's browser shows for the QR code of a printed prescription:
/// the verdict in Russian in large letters, then what a pharmacist checks.
pub fn verification_page(answer: &PrescriptionVerification) -> String {
    let (verdict, tone) = match answer.result {
        VerificationResult::Valid => ("Рецепт действителен", "ok"),
        VerificationResult::Cancelled => ("Рецепт отменён врачом", "bad"),
        VerificationResult::Dispensed => ("Лекарство по этому рецепту уже выдано", "bad"),
        VerificationResult::Expired => ("Срок действия рецепта истёк", "bad"),
        VerificationResult::Invalid => (
            "Рецепт не найден: QR-код изменён, повреждён или выдан не этой системой",
            "bad",
        ),
    };
    let mut rows = String::new();
    let mut row = |label: &str, value: Option<String>| {
        if let Some(value) = value {
            rows.push_str(&format!(
                "<tr><th>{}</th><td>{}</td></tr>\n",
                html_escape(label),
                html_escape(&value)
            ));
        }
    };
    row("Препарат", answer.medication.clone());
    row("Способ применения", answer.dosage.clone());
    row(
        "Количество упаковок",
        answer.quantity.map(|q| q.to_string()),
    );
    if let (Some(from), Some(until)) = (&answer.valid_from, &answer.valid_until) {
        row(
            "Действителен",
            Some(format!(
                "с {} по {} включительно",
                ru_day_of(from),
                ru_day_of(until)
            )),
        );
    }
    row("Врач", answer.prescriber_name.clone());
    row("Медицинская организация", answer.organisation_name.clone());
    row("Пациент (инициалы)", answer.patient_initials.clone());
    let table = if rows.is_empty() {
        String::new()
    } else {
        format!("<table>\n{rows}</table>\n")
    };
    format!(
        "<!DOCTYPE html>\n<html lang=\"ru\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Проверка рецепта — {verdict}</title>\n\
         <style>body{{font-family:sans-serif;margin:1.5em;max-width:40em}}\
         .ok{{color:#11632b}}.bad{{color:#a4161a}}th{{text-align:left;padding-right:1em;\
         vertical-align:top;font-weight:normal;color:#555}}td{{padding-bottom:.4em}}</style>\n\
         </head>\n<body>\n<h1 class=\"{tone}\">{verdict}</h1>\n{table}\
         <p>Проверка электронного рецепта по QR-коду. Сведения показаны на момент проверки.</p>\n\
         </body>\n</html>\n",
        verdict = html_escape(verdict),
    )
}

/// Prescription queries.
#[derive(Default)]
pub struct PrescriptionsQuery;

#[Object]
impl PrescriptionsQuery {
    /// The caller's prescriptions, newest first (patients).
    #[graphql(
        complexity = "super::pagination::connection_complexity(child_complexity, first, None)"
    )]
    async fn my_prescriptions(
        &self,
        ctx: &Context<'_>,
        filter: Option<PrescriptionsFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<PrescriptionConnection> {
        let actor = medical_patient(ctx).await?;
        list(ctx, Owner::Patient(actor.account_id), filter, first, after).await
    }

    /// Prescriptions sent to the caller's pharmacy, newest first (pharmacists).
    #[graphql(
        complexity = "super::pagination::connection_complexity(child_complexity, first, None)"
    )]
    async fn pharmacy_prescriptions(
        &self,
        ctx: &Context<'_>,
        filter: Option<PrescriptionsFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<PrescriptionConnection> {
        let actor = actor_in(ctx, &[Role::Pharmacist])?;
        let pharmacy = actor.organisation_id.ok_or_else(forbidden)?;
        list(ctx, Owner::Pharmacy(pharmacy), filter, first, after).await
    }

    /// Prescriptions issued in the caller's organisation, newest first (doctors, registrars).
    #[graphql(
        complexity = "super::pagination::connection_complexity(child_complexity, first, None)"
    )]
    async fn organisation_prescriptions(
        &self,
        ctx: &Context<'_>,
        filter: Option<PrescriptionsFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<PrescriptionConnection> {
        let actor = actor_in(ctx, &[Role::Doctor, Role::Registrar])?;
        let organisation = actor.organisation_id.ok_or_else(forbidden)?;
        list(ctx, Owner::Organisation(organisation), filter, first, after).await
    }

    /// Organisations that receive e-prescriptions (open to everyone).
    #[graphql(
        complexity = "super::pagination::connection_complexity(child_complexity, first, None)"
    )]
    async fn pharmacies(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, Organisation, EmptyFields, EmptyFields>> {
        let (first, offset) = forward_page(first, after)?;
        let page = prescriptions::list_pharmacies(&svc(ctx).db, first, offset)
            .await
            .map_err(|e| internal(ctx, e))?;
        let mut connection = Connection::new(page.has_previous, page.has_next);
        for (cursor, id) in page.items {
            if let Some(organisation) = super::directory::node(ctx, id).await? {
                connection
                    .edges
                    .push(Edge::new(cursor.encode(), organisation));
            }
        }
        Ok(connection)
    }

    /// Checks the token of a printed prescription's QR code (open to everyone,
    /// as `GET /verify/prescription/{token}` is).
    #[graphql(complexity = "child_complexity + super::limits::SIGNED_LOOKUP_COST")]
    async fn verify_prescription(
        &self,
        ctx: &Context<'_>,
        token: String,
    ) -> async_graphql::Result<PrescriptionVerification> {
        verify(svc(ctx), &token).await.map_err(|e| internal(ctx, e))
    }
}

/// Input of `issuePrescription`.
#[derive(Debug, Clone, InputObject, Serialize)]
pub struct IssuePrescriptionInput {
    /// Global id of the patient's account.
    pub patient_id: ID,
    pub medication: String,
    pub dosage: String,
    /// Number of packs, 1 to 100.
    pub quantity: i32,
    /// First day of validity (`YYYY-MM-DD`, the organisation's local date; today or up to 30 days ahead).
    pub valid_from: String,
    /// Last day of validity, after `validFrom`, at most 365 days later.
    pub valid_until: String,
    pub idempotency_key: Option<String>,
}

/// Input of `sendPrescriptionToPharmacy` and `requestPrescriptionResend`.
#[derive(Debug, Clone, InputObject, Serialize)]
pub struct SendPrescriptionInput {
    pub prescription_id: ID,
    /// Global id of a pharmacy (see `pharmacies`).
    pub pharmacy_id: ID,
    /// Why (re-sends only).
    pub reason: Option<String>,
    pub idempotency_key: Option<String>,
}

/// Input of `requestPrescriptionCancellation` and `cancelPrescription`.
#[derive(Debug, Clone, InputObject, Serialize)]
pub struct CancelPrescriptionInput {
    pub prescription_id: ID,
    pub reason: String,
    pub idempotency_key: Option<String>,
}

/// Input of `decidePrescriptionRequest`.
#[derive(Debug, Clone, InputObject, Serialize)]
pub struct DecidePrescriptionRequestInput {
    pub prescription_id: ID,
    pub approve: bool,
    pub comment: Option<String>,
    pub idempotency_key: Option<String>,
}

/// Input of `markPrescriptionReady` and `dispensePrescription`.
#[derive(Debug, Clone, InputObject, Serialize)]
pub struct PharmacyPrescriptionInput {
    pub prescription_id: ID,
    pub idempotency_key: Option<String>,
}

/// Input of `designatePharmacy`.
#[derive(Debug, Clone, InputObject, Serialize)]
pub struct DesignatePharmacyInput {
    pub organisation_id: ID,
    pub idempotency_key: Option<String>,
}

/// Result of prescription mutations.
#[derive(Debug, SimpleObject)]
pub struct PrescriptionPayload {
    pub prescription: Option<Prescription>,
    pub user_errors: Vec<UserError>,
}

/// Result of `designatePharmacy`.
#[derive(Debug, SimpleObject)]
pub struct DesignatePharmacyPayload {
    pub organisation: Option<Organisation>,
    pub user_errors: Vec<UserError>,
}

fn failed(e: UserError) -> async_graphql::Result<PrescriptionPayload> {
    Ok(PrescriptionPayload {
        prescription: None,
        user_errors: vec![e],
    })
}

fn not_found() -> UserError {
    UserError::on_field("prescriptionId", "NOT_FOUND", "no such prescription")
}

/// The pharmacy a caller named, or the user error saying why it is not one.
async fn pharmacy_of(
    ctx: &Context<'_>,
    raw: &ID,
) -> async_graphql::Result<Result<Pharmacy, UserError>> {
    let s = svc(ctx);
    let organisation = match ids::decode_as(raw, "Organisation") {
        Some(id) => organisations::get(&s.db, id)
            .await
            .map_err(|e| internal(ctx, e))?,
        None => None,
    };
    let Some(organisation) = organisation else {
        return Ok(Err(UserError::on_field(
            "pharmacyId",
            "NOT_FOUND",
            "no such pharmacy",
        )));
    };
    if !prescriptions::is_pharmacy(&s.db, organisation.id)
        .await
        .map_err(|e| internal(ctx, e))?
    {
        return Ok(Err(UserError::on_field(
            "pharmacyId",
            "NOT_A_PHARMACY",
            "this organisation does not receive e-prescriptions",
        )));
    }
    Ok(Ok(Pharmacy {
        organisation_id: organisation.id,
        name: organisation.details.name,
    }))
}

/// Initials of a full name, e.g. «И. М. П.».
fn initials(parts: &[Option<&str>]) -> String {
    parts
        .iter()
        .flatten()
        .filter_map(|p| p.trim().chars().next())
        .map(|c| format!("{}.", c.to_uppercase()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The instant after the last local day `until` in `tz`.
fn end_of_day(until: NaiveDate, tz: Tz) -> Option<DateTime<Utc>> {
    let next = until.checked_add_days(Days::new(1))?.and_hms_opt(0, 0, 0)?;
    tz.from_local_datetime(&next)
        .earliest()
        .or_else(|| {
            tz.from_local_datetime(&(next + chrono::Duration::hours(1)))
                .earliest()
        })
        .map(|t| t.with_timezone(&Utc))
}

/// Prescription mutations.
#[derive(Default)]
pub struct PrescriptionsMutation;

impl PrescriptionsMutation {
    /// Loads the prescription for `actor` (or NOT_FOUND), builds the command, runs it.
    async fn act<I: Serialize>(
        ctx: &Context<'_>,
        actor: &Actor,
        raw_id: &ID,
        key: Option<String>,
        input: &I,
        allowed: impl Fn(&Actor, &PrescriptionView) -> bool,
        command: impl FnOnce(&PrescriptionView) -> PrescriptionCommand,
    ) -> async_graphql::Result<PrescriptionPayload> {
        let key = match idempotency_key(key) {
            Ok(k) => k,
            Err(e) => return failed(e),
        };
        let view = match ids::decode_as(raw_id, "Prescription") {
            Some(id) => prescriptions::get(&svc(ctx).db, id)
                .await
                .map_err(|e| internal(ctx, e))?,
            None => None,
        };
        let Some(view) = view.filter(|v| allowed(actor, v)) else {
            return failed(not_found());
        };
        let command = command(&view);
        match run_command::<PrescriptionAggregate>(
            ctx,
            actor,
            &view.id.to_string(),
            command,
            &(),
            input,
            key,
            Retry::OnConflict,
        )
        .await?
        {
            Ok((outcome, _)) => payload(ctx, outcome).await,
            Err(errors) => Ok(PrescriptionPayload {
                prescription: None,
                user_errors: errors,
            }),
        }
    }
}

fn own(actor: &Actor, v: &PrescriptionView) -> bool {
    actor.account_id == v.patient_id
}

fn of_organisation(actor: &Actor, v: &PrescriptionView) -> bool {
    actor.organisation_id == Some(v.organisation_id)
}

fn at_pharmacy(actor: &Actor, v: &PrescriptionView) -> bool {
    v.pharmacy_id.is_some() && actor.organisation_id == v.pharmacy_id
}

#[Object]
impl PrescriptionsMutation {
    /// Issues a prescription to a patient (doctors, as themselves, in their organisation).
    async fn issue_prescription(
        &self,
        ctx: &Context<'_>,
        input: IssuePrescriptionInput,
    ) -> async_graphql::Result<PrescriptionPayload> {
        let actor = actor_in(ctx, &[Role::Doctor])?;
        let organisation_id = actor.organisation_id.ok_or_else(forbidden)?;
        let s = svc(ctx);
        let key = match idempotency_key(input.idempotency_key.clone()) {
            Ok(k) => k,
            Err(e) => return failed(e),
        };
        let doctor = doctors::get(&s.db, actor.account_id)
            .await
            .map_err(|e| internal(ctx, e))?
            .filter(|d| d.details.organisation_id == organisation_id);
        let Some(doctor) = doctor else {
            return failed(UserError {
                field: None,
                message: "your account is not a doctor of your organisation in the directory"
                    .into(),
                code: "NOT_A_DOCTOR".into(),
            });
        };
        let Some(organisation) = organisations::get(&s.db, organisation_id)
            .await
            .map_err(|e| internal(ctx, e))?
        else {
            return Err(forbidden());
        };
        let patient_id = match ids::decode_as(&input.patient_id, "Account") {
            Some(id) => id,
            None => {
                return failed(UserError::on_field(
                    "patientId",
                    "INVALID_INPUT",
                    "not an account id",
                ))
            }
        };
        // A doctor prescribes only to patients in the care of their organisation.
        if !in_care_of_caller(ctx, actor, patient_id).await? {
            return failed(UserError::on_field(
                "patientId",
                "NOT_IN_CARE",
                "this patient is not in the care of your organisation: prescribing needs an \
                 appointment, a referral, an open document request or an active prescription here",
            ));
        }
        let patient = s
            .commands
            .load::<Patient>(&patient_id.to_string())
            .await
            .map_err(|e| internal(ctx, e))?;
        let Some(profile) = patient.profile else {
            return failed(UserError::on_field(
                "patientId",
                "NOT_FOUND",
                "no patient with a recorded profile has this id",
            ));
        };
        let mut errors = Vec::new();
        let mut day =
            |field: &str, raw: &str| match NaiveDate::parse_from_str(raw.trim(), "%Y-%m-%d") {
                Ok(d) => Some(d),
                Err(_) => {
                    errors.push(UserError::on_field(
                        field,
                        "INVALID_DATE",
                        "must be a date YYYY-MM-DD",
                    ));
                    None
                }
            };
        let from = day("validFrom", &input.valid_from);
        let until = day("validUntil", &input.valid_until);
        let (Some(from), Some(until)) = (from, until) else {
            return Ok(PrescriptionPayload {
                prescription: None,
                user_errors: errors,
            });
        };
        let tz = zone(&organisation.details.time_zone);
        let Some(expires_at) = end_of_day(until, tz) else {
            return failed(UserError::on_field(
                "validUntil",
                "INVALID_DATE",
                "the date is out of range",
            ));
        };
        let now = s.clock.now();
        let command = PrescriptionCommand::Issue {
            patient_id,
            patient_initials: initials(&[
                Some(profile.surname.as_str()),
                Some(profile.first_name.as_str()),
                profile.patronymic.as_deref(),
            ]),
            prescriber: Prescriber {
                doctor_id: doctor.id,
                doctor_name: doctor.details.full_name(),
                organisation_id,
                organisation_name: organisation.details.name.clone(),
            },
            medication: Medication {
                name: input.medication.clone(),
                dosage: input.dosage.clone(),
                quantity: u32::try_from(input.quantity).unwrap_or(0),
            },
            validity: Validity {
                from,
                until,
                expires_at,
            },
            today: now.with_timezone(&tz).date_naive(),
            now,
        };
        let id = Uuid::now_v7();
        match run_command::<PrescriptionAggregate>(
            ctx,
            actor,
            &id.to_string(),
            command,
            &(),
            &input,
            key,
            Retry::Never,
        )
        .await?
        {
            Ok((outcome, _)) => payload(ctx, outcome).await,
            Err(errors) => Ok(PrescriptionPayload {
                prescription: None,
                user_errors: errors,
            }),
        }
    }

    /// Sends a ready-to-print prescription to a pharmacy (its patient).
    async fn send_prescription_to_pharmacy(
        &self,
        ctx: &Context<'_>,
        input: SendPrescriptionInput,
    ) -> async_graphql::Result<PrescriptionPayload> {
        let actor = medical_patient(ctx).await?;
        let pharmacy = match pharmacy_of(ctx, &input.pharmacy_id).await? {
            Ok(p) => p,
            Err(e) => return failed(e),
        };
        let now = svc(ctx).clock.now();
        Self::act(
            ctx,
            actor,
            &input.prescription_id,
            input.idempotency_key.clone(),
            &input,
            own,
            |_| PrescriptionCommand::SendToPharmacy {
                patient_id: actor.account_id,
                pharmacy,
                now,
            },
        )
        .await
    }

    /// Asks the prescribing doctor to send the prescription to a pharmacy again (its patient).
    async fn request_prescription_resend(
        &self,
        ctx: &Context<'_>,
        input: SendPrescriptionInput,
    ) -> async_graphql::Result<PrescriptionPayload> {
        let actor = medical_patient(ctx).await?;
        let pharmacy = match pharmacy_of(ctx, &input.pharmacy_id).await? {
            Ok(p) => p,
            Err(e) => return failed(e),
        };
        let now = svc(ctx).clock.now();
        let reason = input.reason.clone();
        Self::act(
            ctx,
            actor,
            &input.prescription_id,
            input.idempotency_key.clone(),
            &input,
            own,
            |_| PrescriptionCommand::RequestResend {
                patient_id: actor.account_id,
                pharmacy,
                reason,
                now,
            },
        )
        .await
    }

    /// Asks the prescribing doctor to cancel the prescription (its patient).
    async fn request_prescription_cancellation(
        &self,
        ctx: &Context<'_>,
        input: CancelPrescriptionInput,
    ) -> async_graphql::Result<PrescriptionPayload> {
        let actor = medical_patient(ctx).await?;
        let reason = input.reason.clone();
        Self::act(
            ctx,
            actor,
            &input.prescription_id,
            input.idempotency_key.clone(),
            &input,
            own,
            |_| PrescriptionCommand::RequestCancellation {
                patient_id: actor.account_id,
                reason,
            },
        )
        .await
    }

    /// Approves or declines the patient's waiting request (the prescribing doctor).
    async fn decide_prescription_request(
        &self,
        ctx: &Context<'_>,
        input: DecidePrescriptionRequestInput,
    ) -> async_graphql::Result<PrescriptionPayload> {
        let actor = actor_in(ctx, &[Role::Doctor])?;
        let now = svc(ctx).clock.now();
        let (approve, comment) = (input.approve, input.comment.clone());
        Self::act(
            ctx,
            actor,
            &input.prescription_id,
            input.idempotency_key.clone(),
            &input,
            of_organisation,
            |_| PrescriptionCommand::DecideRequest {
                doctor_id: actor.account_id,
                approve,
                comment,
                now,
            },
        )
        .await
    }

    /// Withdraws a prescription (the prescribing doctor).
    async fn cancel_prescription(
        &self,
        ctx: &Context<'_>,
        input: CancelPrescriptionInput,
    ) -> async_graphql::Result<PrescriptionPayload> {
        let actor = actor_in(ctx, &[Role::Doctor])?;
        let reason = input.reason.clone();
        Self::act(
            ctx,
            actor,
            &input.prescription_id,
            input.idempotency_key.clone(),
            &input,
            of_organisation,
            |_| PrescriptionCommand::Cancel {
                doctor_id: actor.account_id,
                reason,
            },
        )
        .await
    }

    /// Marks a prescription sent to the caller's pharmacy as ready to collect (pharmacists).
    async fn mark_prescription_ready(
        &self,
        ctx: &Context<'_>,
        input: PharmacyPrescriptionInput,
    ) -> async_graphql::Result<PrescriptionPayload> {
        let actor = actor_in(ctx, &[Role::Pharmacist])?;
        let pharmacy_id = actor.organisation_id.ok_or_else(forbidden)?;
        Self::act(
            ctx,
            actor,
            &input.prescription_id,
            input.idempotency_key.clone(),
            &input,
            at_pharmacy,
            |_| PrescriptionCommand::MarkReady { pharmacy_id },
        )
        .await
    }

    /// Records that the caller's pharmacy handed the medicine over (pharmacists).
    async fn dispense_prescription(
        &self,
        ctx: &Context<'_>,
        input: PharmacyPrescriptionInput,
    ) -> async_graphql::Result<PrescriptionPayload> {
        let actor = actor_in(ctx, &[Role::Pharmacist])?;
        let pharmacy_id = actor.organisation_id.ok_or_else(forbidden)?;
        let now = svc(ctx).clock.now();
        Self::act(
            ctx,
            actor,
            &input.prescription_id,
            input.idempotency_key.clone(),
            &input,
            at_pharmacy,
            |_| PrescriptionCommand::Dispense { pharmacy_id, now },
        )
        .await
    }

    /// Marks an organisation of the directory as a pharmacy (administrators).
    async fn designate_pharmacy(
        &self,
        ctx: &Context<'_>,
        input: DesignatePharmacyInput,
    ) -> async_graphql::Result<DesignatePharmacyPayload> {
        let actor = actor_in(ctx, &[Role::Admin])?;
        let fail = |e: UserError| {
            Ok(DesignatePharmacyPayload {
                organisation: None,
                user_errors: vec![e],
            })
        };
        let key = match idempotency_key(input.idempotency_key.clone()) {
            Ok(k) => k,
            Err(e) => return fail(e),
        };
        let Some(id) = ids::decode_as(&input.organisation_id, "Organisation") else {
            return fail(UserError::on_field(
                "organisationId",
                "NOT_FOUND",
                "no such organisation",
            ));
        };
        match run_command::<OrganisationAggregate>(
            ctx,
            actor,
            &id.to_string(),
            OrganisationCommand::DesignatePharmacy,
            &(),
            &input,
            key,
            Retry::OnConflict,
        )
        .await?
        {
            Ok((outcome, _)) => {
                read_your_writes(ctx, &[prescriptions::PHARMACIES], outcome.last_order()).await;
                Ok(DesignatePharmacyPayload {
                    organisation: super::directory::node(ctx, id).await?,
                    user_errors: vec![],
                })
            }
            Err(errors) => Ok(DesignatePharmacyPayload {
                organisation: None,
                user_errors: errors
                    .into_iter()
                    .map(|e| UserError {
                        field: Some(vec!["input".into(), "organisationId".into()]),
                        ..e
                    })
                    .collect(),
            }),
        }
    }
}

async fn payload(
    ctx: &Context<'_>,
    outcome: CommandOutcome,
) -> async_graphql::Result<PrescriptionPayload> {
    read_your_writes(ctx, MODELS, outcome.last_order()).await;
    let id = Uuid::parse_str(&outcome.aggregate_id).map_err(|e| internal(ctx, e))?;
    let view = prescriptions::get(&svc(ctx).db, id)
        .await
        .map_err(|e| internal(ctx, e))?;
    Ok(PrescriptionPayload {
        prescription: view.map(Prescription),
        user_errors: vec![],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initials_take_the_first_letter_of_each_name() {
        assert_eq!(initials(&[Some("иванова"), Some("Мария"), None]), "И. М.");
        assert_eq!(
            initials(&[Some("Иванова"), Some("Мария"), Some("Петровна")]),
            "И. М. П."
        );
    }

    #[test]
    fn validity_ends_at_local_midnight_after_the_last_day() {
        let until = NaiveDate::from_ymd_opt(2026, 12, 30).expect("date");
        let end = end_of_day(until, chrono_tz::Europe::Moscow).expect("instant");
        assert_eq!(end.to_rfc3339(), "2026-12-30T21:00:00+00:00");
    }
}
