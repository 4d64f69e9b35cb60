//! Doctors, slots and medical services as the API shows them.

use super::local;
use crate::schema::context::{internal, services as svc};
use crate::schema::directory::Organisation;
use crate::schema::labels::{specialty_label_ru, LabelRu};
use crate::schema::{ids, slots_ids};
use async_graphql::{Context, Enum, Object, ID};
use chrono::{DateTime, NaiveDate, Utc};
use kabinet_domain::directory::{ServiceDetails, ServiceForm, ServiceKind};
use kabinet_projections::doctors::DoctorView;
use kabinet_projections::slots::{self, SlotView};
use serde::Serialize;

/// A doctor.
#[derive(Debug, Clone)]
pub struct Doctor(pub DoctorView);

#[Object]
impl Doctor {
    /// Global id.
    pub async fn id(&self) -> ID {
        ids::encode("Doctor", self.0.id)
    }
    async fn surname(&self) -> &str {
        &self.0.details.surname
    }
    async fn first_name(&self) -> &str {
        &self.0.details.first_name
    }
    async fn patronymic(&self) -> Option<&str> {
        self.0.details.patronymic.as_deref()
    }
    async fn full_name(&self) -> String {
        self.0.details.full_name()
    }
    /// Specialty code, e.g. `therapist`.
    async fn specialty(&self) -> &str {
        &self.0.details.specialty
    }
    /// The specialty in Russian, for display.
    async fn specialty_label_ru(&self) -> &str {
        specialty_label_ru(&self.0.details.specialty)
    }
    async fn qualification(&self) -> &str {
        &self.0.details.qualification
    }
    async fn department(&self) -> &str {
        &self.0.details.department
    }
    async fn service_codes(&self) -> &[String] {
        &self.0.details.service_codes
    }
    /// Mean rating from patients' reviews (1–5, one decimal), absent before the first review.
    async fn rating(&self) -> Option<String> {
        self.0.rating()
    }
    async fn review_count(&self) -> i64 {
        self.0.rating_count
    }
    async fn organisation(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Organisation>> {
        crate::schema::directory::node(ctx, self.0.details.organisation_id).await
    }
    /// The earliest free slot from now on.
    async fn next_free_slot(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Slot>> {
        let now = svc(ctx).clock.now();
        slots::next_free(&svc(ctx).db, self.0.id, now)
            .await
            .map(|s| s.map(Slot))
            .map_err(|e| internal(ctx, e))
    }
}

/// A slot of a doctor's calendar, in the organisation's time zone.
#[derive(Debug, Clone)]
pub struct Slot(pub SlotView);

#[Object]
impl Slot {
    /// Opaque id to book with.
    async fn id(&self) -> ID {
        slots_ids::encode(self.0.doctor_id, self.0.start)
    }
    /// Start instant, with the organisation's UTC offset.
    async fn start(&self) -> String {
        local(self.0.start, &self.0.time_zone)
    }
    async fn end(&self) -> String {
        local(self.0.end, &self.0.time_zone)
    }
    /// Local date in the organisation's time zone.
    async fn date(&self) -> NaiveDate {
        self.0.day
    }
    /// Local start time, `HH:MM`.
    async fn time(&self) -> String {
        local_time(self.0.start, &self.0.time_zone)
    }
    async fn time_zone(&self) -> &str {
        &self.0.time_zone
    }
    async fn room(&self) -> &str {
        &self.0.room
    }
    async fn status(&self) -> SlotStatus {
        SlotStatus::parse(&self.0.status)
    }
    /// The status in Russian, for display.
    async fn status_label_ru(&self) -> &'static str {
        SlotStatus::parse(&self.0.status).label_ru()
    }
    async fn doctor_id(&self) -> ID {
        ids::encode("Doctor", self.0.doctor_id)
    }
}

/// Whether a slot can be booked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum SlotStatus {
    Free,
    Booked,
    /// Its working period was closed.
    Closed,
}

impl SlotStatus {
    /// The status of a stored name.
    fn parse(raw: &str) -> SlotStatus {
        match raw {
            "booked" => SlotStatus::Booked,
            "closed" => SlotStatus::Closed,
            _ => SlotStatus::Free,
        }
    }
}

/// The local `HH:MM` of an instant in `zone`.
pub fn local_time(at: DateTime<Utc>, zone: &str) -> String {
    match zone.parse::<chrono_tz::Tz>() {
        Ok(tz) => at.with_timezone(&tz).format("%H:%M").to_string(),
        Err(_) => at.format("%H:%M").to_string(),
    }
}

/// What a service is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Serialize)]
pub enum ServiceType {
    Consultation,
    Diagnostics,
    Treatment,
    Prevention,
}

impl From<ServiceType> for ServiceKind {
    fn from(t: ServiceType) -> Self {
        match t {
            ServiceType::Consultation => ServiceKind::Consultation,
            ServiceType::Diagnostics => ServiceKind::Diagnostics,
            ServiceType::Treatment => ServiceKind::Treatment,
            ServiceType::Prevention => ServiceKind::Prevention,
        }
    }
}

impl From<ServiceKind> for ServiceType {
    fn from(k: ServiceKind) -> Self {
        match k {
            ServiceKind::Consultation => ServiceType::Consultation,
            ServiceKind::Diagnostics => ServiceType::Diagnostics,
            ServiceKind::Treatment => ServiceType::Treatment,
            ServiceKind::Prevention => ServiceType::Prevention,
        }
    }
}

/// How a service is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Serialize)]
pub enum ServiceDelivery {
    InPerson,
    Remote,
}

impl From<ServiceForm> for ServiceDelivery {
    fn from(form: ServiceForm) -> Self {
        match form {
            ServiceForm::InPerson => ServiceDelivery::InPerson,
            ServiceForm::Remote => ServiceDelivery::Remote,
        }
    }
}

/// A medical service.
#[derive(Debug, Clone)]
pub struct MedicalService(pub ServiceDetails);

#[Object]
impl MedicalService {
    async fn code(&self) -> &str {
        &self.0.code
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn service_type(&self) -> ServiceType {
        self.0.kind.into()
    }
    /// The service type in Russian, for display.
    async fn service_type_label_ru(&self) -> &'static str {
        ServiceType::from(self.0.kind).label_ru()
    }
    async fn form(&self) -> ServiceDelivery {
        self.0.form.into()
    }
    /// The form in Russian, for display.
    async fn form_label_ru(&self) -> &'static str {
        ServiceDelivery::from(self.0.form).label_ru()
    }
    /// Cost in roubles as a decimal string, e.g. `"1500.00"`.
    async fn cost(&self) -> &str {
        &self.0.cost
    }
    async fn required_documents(&self) -> &[String] {
        &self.0.required_documents
    }
}
