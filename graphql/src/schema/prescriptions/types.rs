//! Prescriptions as the API shows them.

use super::{download_link, prescription_pdf, status_of, verification_url, zone};
use crate::schema::accounts::UserRole;
use crate::schema::context::{actor, internal, services as svc};
use crate::schema::directory::Organisation;
use crate::schema::ids;
use crate::schema::labels::LabelRu;
use crate::schema::links::DownloadLink;
use async_graphql::connection::{Connection, EmptyFields};
use async_graphql::{ComplexObject, Context, Enum, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use kabinet_domain::prescriptions::PrescriptionStatus as DomainStatus;
use kabinet_domain::Role;
use kabinet_projections::organisations;
use kabinet_projections::prescriptions::{self, JournalEntry, PrescriptionView};
use serde::Serialize;
use uuid::Uuid;

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
    pub(crate) fn of(domain: DomainStatus) -> Self {
        match domain {
            DomainStatus::ReadyToPrint => PrescriptionStatus::ReadyToPrint,
            DomainStatus::SentToPharmacy => PrescriptionStatus::SentToPharmacy,
            DomainStatus::ReadyAtPharmacy => PrescriptionStatus::ReadyAtPharmacy,
            DomainStatus::Dispensed => PrescriptionStatus::Dispensed,
            DomainStatus::Cancelled => PrescriptionStatus::Cancelled,
            DomainStatus::Expired => PrescriptionStatus::Expired,
        }
    }

    pub(crate) fn domain(self) -> DomainStatus {
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

/// What a patient asked the prescribing doctor for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum PrescriptionRequestKind {
    Resend,
    Cancellation,
}

/// A patient's request waiting for the prescribing doctor.
#[derive(Debug, Clone, SimpleObject)]
#[graphql(complex)]
pub struct PrescriptionRequest {
    pub kind: PrescriptionRequestKind,
    /// The pharmacy of a re-send.
    pub pharmacy_name: Option<String>,
    pub reason: Option<String>,
}

#[ComplexObject]
impl PrescriptionRequest {
    /// The kind in Russian, for display.
    async fn kind_label_ru(&self) -> &'static str {
        self.kind.label_ru()
    }
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
    /// Role of who acted (`DOCTOR`, `PATIENT`, `PHARMACIST`, `SYSTEM`).
    pub actor_role: UserRole,
    /// The role in Russian, for display.
    pub actor_role_label_ru: &'static str,
    pub prescribing_doctor: String,
    /// The reason, comment or pharmacy of the change.
    pub note: Option<String>,
}

/// An e-prescription.
#[derive(Debug, Clone)]
pub struct Prescription(pub PrescriptionView);

pub(super) async fn organisation_zone(ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Tz> {
    let view = organisations::get(&svc(ctx).db, id)
        .await
        .map_err(|e| internal(ctx, e))?;
    Ok(view
        .map(|o| zone(&o.details.time_zone))
        .unwrap_or(chrono_tz::Europe::Moscow))
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
        crate::schema::directory::node(ctx, self.0.organisation_id).await
    }
    /// The pharmacy it was last sent to.
    async fn pharmacy(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Organisation>> {
        match self.0.pharmacy_id {
            Some(id) => crate::schema::directory::node(ctx, id).await,
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
    #[graphql(complexity = "child_complexity + crate::schema::limits::PDF_RENDER_COST")]
    async fn download(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<DownloadLink>> {
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
        complexity = "crate::schema::limits::list_complexity(child_complexity, crate::schema::limits::JOURNAL_ENTRIES)"
    )]
    async fn journal(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Vec<PrescriptionJournalEntry>> {
        let tz = organisation_zone(ctx, self.0.organisation_id).await?;
        let entries = prescriptions::journal(&svc(ctx).db, self.0.id)
            .await
            .map_err(|e| internal(ctx, e))?;
        entries
            .into_iter()
            .map(|e: JournalEntry| {
                let local = e.occurred_at.with_timezone(&tz);
                let status = status_of(&e.status);
                let actor_role = UserRole::of_record(&e.actor_role)?;
                Ok(PrescriptionJournalEntry {
                    occurred_at: e.occurred_at,
                    date: local.format("%Y-%m-%d").to_string(),
                    time: local.format("%H:%M").to_string(),
                    action: e.action,
                    status: PrescriptionStatus::of(status),
                    status_label_ru: status.label_ru().to_string(),
                    actor_role,
                    actor_role_label_ru: actor_role.label_ru(),
                    prescribing_doctor: self.0.doctor_name.clone(),
                    note: e.note,
                })
            })
            .collect()
    }
}

pub(super) type PrescriptionConnection = Connection<String, Prescription, EmptyFields, EmptyFields>;
