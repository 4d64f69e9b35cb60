//! Appointments and referral requests as the API shows them.

use crate::schema::context::{
    actor, in_care_of_caller, internal, medical_patient, record_medical_read, services as svc,
};
use crate::schema::directory::Organisation;
use crate::schema::doctors::{local, local_time, Doctor};
use crate::schema::ids;
use crate::schema::labels::{specialty_label_ru, LabelRu};
use async_graphql::{Context, Enum, Object, SimpleObject, ID};
use chrono::{DateTime, NaiveDate, Utc};
use kabinet_domain::Role;
use kabinet_projections::appointments::AppointmentView;
use kabinet_projections::doctors;
use kabinet_projections::referrals::ReferralView;
use serde::Serialize;

/// Where an appointment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Serialize)]
pub enum AppointmentStatus {
    Booked,
    Arrived,
    Fulfilled,
    NoShow,
    Cancelled,
}

impl AppointmentStatus {
    pub(crate) fn parse(s: &str) -> AppointmentStatus {
        match s {
            "arrived" => AppointmentStatus::Arrived,
            "fulfilled" => AppointmentStatus::Fulfilled,
            "no_show" => AppointmentStatus::NoShow,
            "cancelled" => AppointmentStatus::Cancelled,
            _ => AppointmentStatus::Booked,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            AppointmentStatus::Booked => "booked",
            AppointmentStatus::Arrived => "arrived",
            AppointmentStatus::Fulfilled => "fulfilled",
            AppointmentStatus::NoShow => "no_show",
            AppointmentStatus::Cancelled => "cancelled",
        }
    }
}

/// What the doctor recorded about a visit.
#[derive(Debug, Clone, SimpleObject)]
pub struct VisitOutcome {
    /// ICD-10 (МКБ-10) code.
    pub diagnosis_code: String,
    pub diagnosis_text: String,
    pub recommendations: String,
    pub prescriptions: Vec<String>,
    pub referrals: Vec<String>,
}

/// An appointment.
#[derive(Debug, Clone)]
pub struct Appointment(pub AppointmentView);

#[Object]
impl Appointment {
    /// Global id.
    pub async fn id(&self) -> ID {
        ids::encode("Appointment", self.0.id)
    }
    async fn status(&self) -> AppointmentStatus {
        AppointmentStatus::parse(&self.0.status)
    }
    /// The status in Russian, for display.
    async fn status_label_ru(&self) -> &'static str {
        AppointmentStatus::parse(&self.0.status).label_ru()
    }
    /// Start, with the organisation's UTC offset.
    async fn start(&self) -> String {
        local(self.0.start, &self.0.time_zone)
    }
    async fn end(&self) -> String {
        local(self.0.end, &self.0.time_zone)
    }
    /// Local date of the visit.
    async fn date(&self) -> NaiveDate {
        self.0.day
    }
    /// Local time of the visit, `HH:MM`.
    async fn time(&self) -> String {
        local_time(self.0.start, &self.0.time_zone)
    }
    async fn time_zone(&self) -> &str {
        &self.0.time_zone
    }
    async fn room(&self) -> &str {
        &self.0.room
    }
    async fn service_code(&self) -> Option<&str> {
        self.0.service_code.as_deref()
    }
    /// Specialty code, e.g. `therapist`.
    async fn specialty(&self) -> Option<&str> {
        self.0.specialty.as_deref()
    }
    /// The specialty in Russian, for display.
    async fn specialty_label_ru(&self) -> Option<&str> {
        self.0.specialty.as_deref().map(specialty_label_ru)
    }
    /// Why it was cancelled, when it was.
    async fn cancel_reason(&self) -> Option<&str> {
        self.0.cancel_reason.as_deref()
    }
    /// `PATIENT` or `CLINIC`, when cancelled.
    async fn cancelled_by(&self) -> Option<String> {
        self.0.cancelled_by.as_ref().map(|b| b.to_uppercase())
    }
    /// The doctor's record of the visit (diagnosis): medical data, so patients need a
    /// verified identity, and every read is recorded in the patient's account journal.
    /// Of the staff, only doctors of the visit's organisation see it, while the
    /// patient is in its care; registrars and administrators get `null`.
    async fn outcome(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<VisitOutcome>> {
        if self.0.outcome.is_none() {
            return Ok(None);
        }
        let actor = actor(ctx)?;
        match actor.role {
            Role::Patient => {
                medical_patient(ctx).await?;
            }
            Role::Doctor
                if actor.organisation_id == Some(self.0.organisation_id)
                    && in_care_of_caller(ctx, actor, self.0.patient_id).await? => {}
            _ => return Ok(None),
        }
        record_medical_read(ctx, self.0.patient_id, "visit_outcome", Some(self.0.id)).await?;
        Ok(self.0.outcome.as_ref().map(|o| VisitOutcome {
            diagnosis_code: o.diagnosis_code.as_str().to_string(),
            diagnosis_text: o.diagnosis_text.clone(),
            recommendations: o.recommendations.clone(),
            prescriptions: o.prescriptions.clone(),
            referrals: o.referrals.clone(),
        }))
    }
    /// The patient's rating of the visit, once reviewed.
    async fn review_rating(&self) -> Option<i32> {
        self.0.review_rating
    }
    async fn patient_id(&self) -> ID {
        ids::encode("Account", self.0.patient_id)
    }
    async fn doctor(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Doctor>> {
        doctors::get(&svc(ctx).db, self.0.doctor_id)
            .await
            .map(|d| d.map(Doctor))
            .map_err(|e| internal(ctx, e))
    }
    async fn organisation(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Organisation>> {
        crate::schema::directory::node(ctx, self.0.organisation_id).await
    }
}

/// A referral request.
#[derive(Debug, Clone)]
pub struct ReferralRequest(pub ReferralView);

#[Object]
impl ReferralRequest {
    /// Global id.
    pub async fn id(&self) -> ID {
        ids::encode("ReferralRequest", self.0.id)
    }
    /// Specialty code wanted, e.g. `cardiologist`.
    async fn specialty(&self) -> &str {
        &self.0.specialty
    }
    /// The specialty in Russian, for display.
    async fn specialty_label_ru(&self) -> &str {
        specialty_label_ru(&self.0.specialty)
    }
    async fn reason(&self) -> &str {
        &self.0.reason
    }
    async fn status(&self) -> ReferralStatus {
        ReferralStatus::parse(&self.0.status)
    }
    /// The status in Russian, for display.
    async fn status_label_ru(&self) -> &'static str {
        ReferralStatus::parse(&self.0.status).label_ru()
    }
    /// The clinic's note or reason for the decision.
    async fn decision(&self) -> Option<&str> {
        self.0.decision.as_deref()
    }
    async fn requested_at(&self) -> DateTime<Utc> {
        self.0.requested_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    async fn organisation(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Organisation>> {
        crate::schema::directory::node(ctx, self.0.organisation_id).await
    }
}

/// Which appointments to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum AppointmentWhen {
    Upcoming,
    Past,
    Cancelled,
    All,
}

/// Sort orders of appointment lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum AppointmentSort {
    DateAsc,
    DateDesc,
    Status,
}

/// Where a referral request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum ReferralStatus {
    Processing,
    Approved,
    Rejected,
}

impl ReferralStatus {
    /// The status of a stored name; a request is processing until decided.
    pub(crate) fn parse(raw: &str) -> ReferralStatus {
        match raw {
            "approved" => ReferralStatus::Approved,
            "rejected" => ReferralStatus::Rejected,
            _ => ReferralStatus::Processing,
        }
    }

    /// The stable name in the read model.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ReferralStatus::Processing => "processing",
            ReferralStatus::Approved => "approved",
            ReferralStatus::Rejected => "rejected",
        }
    }
}

/// Sex in the patient's documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Serialize)]
pub enum Sex {
    Female,
    Male,
}
