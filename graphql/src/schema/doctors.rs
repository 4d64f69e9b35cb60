//! Doctors, services and schedules (B2, B3, C1): search, registration,
//! publishing and closing working periods, free slots.

use async_graphql::connection::{Connection, Edge, EmptyFields};
use async_graphql::{Context, Enum, InputObject, Object, SimpleObject, ID};
use chrono::{DateTime, Duration, NaiveDate, NaiveTime, TimeZone, Utc};
use kabinet_domain::appointments::BookingError;
use kabinet_domain::command::Retry;
use kabinet_domain::directory::{
    Doctor as DoctorAggregate, DoctorCommand, DoctorDetails, MedicalService as ServiceAggregate,
    Organisation as OrganisationAggregate, PeriodDraft, Schedule, ScheduleCommand, ServiceCommand,
    ServiceDetails, ServiceForm, ServiceKind,
};
use kabinet_domain::{Actor, Role};
use kabinet_projections::doctors::{self, DoctorFilter as Filter, DoctorView};

use kabinet_projections::services::{self, ServiceFilter};
use kabinet_projections::slots::{self, SlotView};
use kabinet_projections::{activity_log, organisations};
use serde::Serialize;
use uuid::Uuid;

use super::context::{
    actor, bad_input, forbidden, internal, metadata, read_your_writes, services as svc,
};
use super::directory::Organisation;
use super::errors::{idempotency_key, run_command, UserError};
use super::ids;
use super::pagination::forward_page;
use super::slots_ids;

/// Read models a directory mutation waits for.
const DIRECTORY_MODELS: &[&str] = &[
    doctors::NAME,
    services::NAME,
    slots::NAME,
    activity_log::NAME,
];

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
        super::directory::node(ctx, self.0.details.organisation_id).await
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
    /// `FREE`, `BOOKED` or `CLOSED`.
    async fn status(&self) -> String {
        self.0.status.to_uppercase()
    }
    async fn doctor_id(&self) -> ID {
        ids::encode("Doctor", self.0.doctor_id)
    }
}

/// An instant as RFC 3339 with the offset of `zone`.
pub fn local(at: DateTime<Utc>, zone: &str) -> String {
    match zone.parse::<chrono_tz::Tz>() {
        Ok(tz) => at.with_timezone(&tz).to_rfc3339(),
        Err(_) => at.to_rfc3339(),
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
    async fn form(&self) -> ServiceDelivery {
        match self.0.form {
            ServiceForm::InPerson => ServiceDelivery::InPerson,
            ServiceForm::Remote => ServiceDelivery::Remote,
        }
    }
    /// Cost in roubles as a decimal string, e.g. `"1500.00"`.
    async fn cost(&self) -> &str {
        &self.0.cost
    }
    async fn required_documents(&self) -> &[String] {
        &self.0.required_documents
    }
}

/// Doctor search filters; all given filters must match.
#[derive(Debug, Default, InputObject)]
pub struct DoctorFilter {
    /// Specialty code, e.g. `cardiologist`.
    pub specialty: Option<String>,
    /// Beginning of the surname, any case.
    pub surname: Option<String>,
    pub service_code: Option<String>,
    pub organisation_id: Option<ID>,
    /// Region of the organisation.
    pub region: Option<String>,
}

/// Service search filters.
#[derive(Debug, Default, InputObject)]
pub struct MedicalServiceFilter {
    /// Part of the name or code, any case.
    pub text: Option<String>,
    pub service_type: Option<ServiceType>,
}

fn check_len(name: &str, value: &Option<String>) -> async_graphql::Result<()> {
    if value.as_ref().is_some_and(|v| v.chars().count() > 200) {
        return Err(bad_input(format!("{name} must be at most 200 characters")));
    }
    Ok(())
}

/// Longest range of `freeSlots`, in days.
const MAX_SLOT_RANGE_DAYS: i64 = 31;

fn parse_date(field: &str, raw: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(raw.trim(), "%Y-%m-%d")
        .map_err(|_| format!("{field}: '{raw}' is not a date in the form YYYY-MM-DD"))
}

fn parse_time(field: &str, raw: &str) -> Result<NaiveTime, String> {
    NaiveTime::parse_from_str(raw.trim(), "%H:%M")
        .map_err(|_| format!("{field}: '{raw}' is not a local time in the form HH:MM"))
}

/// Directory queries about doctors, services and slots.
#[derive(Default)]
pub struct DoctorsQuery;

#[Object]
impl DoctorsQuery {
    /// Doctors in registration order; open to everyone.
    #[graphql(
        complexity = "super::pagination::connection_complexity(child_complexity, first, None)"
    )]
    async fn doctors(
        &self,
        ctx: &Context<'_>,
        filter: Option<DoctorFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, Doctor, EmptyFields, EmptyFields>> {
        let filter = filter.unwrap_or_default();
        for (name, value) in [
            ("filter.specialty", &filter.specialty),
            ("filter.surname", &filter.surname),
            ("filter.serviceCode", &filter.service_code),
            ("filter.region", &filter.region),
        ] {
            check_len(name, value)?;
        }
        let organisation_id = match &filter.organisation_id {
            None => None,
            Some(id) => Some(
                ids::decode_as(id, "Organisation")
                    .ok_or_else(|| bad_input("filter.organisationId is not an organisation id"))?,
            ),
        };
        let (first, offset) = forward_page(first, after)?;
        let page = doctors::list(
            &svc(ctx).db,
            &Filter {
                specialty: filter.specialty,
                surname: filter.surname,
                service_code: filter.service_code,
                organisation_id,
                region: filter.region,
            },
            first,
            offset,
        )
        .await
        .map_err(|e| internal(ctx, e))?;
        let mut connection = Connection::new(page.has_previous, page.has_next);
        connection.edges.extend(
            page.items
                .into_iter()
                .map(|(c, d)| Edge::new(c.encode(), Doctor(d))),
        );
        Ok(connection)
    }

    /// Medical services; open to everyone.
    #[graphql(
        complexity = "super::pagination::connection_complexity(child_complexity, first, None)"
    )]
    async fn medical_services(
        &self,
        ctx: &Context<'_>,
        filter: Option<MedicalServiceFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, MedicalService, EmptyFields, EmptyFields>> {
        let filter = filter.unwrap_or_default();
        check_len("filter.text", &filter.text)?;
        let (first, offset) = forward_page(first, after)?;
        let page = services::list(
            &svc(ctx).db,
            &ServiceFilter {
                text: filter.text,
                kind: filter
                    .service_type
                    .map(|t| ServiceKind::from(t).as_str().to_string()),
            },
            first,
            offset,
        )
        .await
        .map_err(|e| internal(ctx, e))?;
        let mut connection = Connection::new(page.has_previous, page.has_next);
        connection.edges.extend(
            page.items
                .into_iter()
                .map(|(c, s)| Edge::new(c.encode(), MedicalService(s))),
        );
        Ok(connection)
    }

    /// Free slots of a doctor from local date `from` to local date `to`
    /// (inclusive, at most 31 days), in the organisation's time zone.
    #[graphql(complexity = "super::limits::free_slots_complexity(child_complexity, &from, &to)")]
    async fn free_slots(
        &self,
        ctx: &Context<'_>,
        doctor_id: ID,
        from: String,
        to: String,
    ) -> async_graphql::Result<Vec<Slot>> {
        let doctor = ids::decode_as(&doctor_id, "Doctor")
            .ok_or_else(|| bad_input("doctorId is not a doctor id"))?;
        let from = parse_date("from", &from).map_err(bad_input)?;
        let to = parse_date("to", &to).map_err(bad_input)?;
        if to < from {
            return Err(bad_input("to must not be before from"));
        }
        if (to - from).num_days() >= MAX_SLOT_RANGE_DAYS {
            return Err(bad_input(format!(
                "a range covers at most {MAX_SLOT_RANGE_DAYS} days"
            )));
        }
        let s = svc(ctx);
        let Some(view) = doctors::get(&s.db, doctor)
            .await
            .map_err(|e| internal(ctx, e))?
        else {
            return Err(bad_input("no such doctor"));
        };
        let zone = organisations::get(&s.db, view.details.organisation_id)
            .await
            .map_err(|e| internal(ctx, e))?
            .map(|o| o.details.time_zone)
            .unwrap_or_else(|| "UTC".to_string());
        let tz: chrono_tz::Tz = zone.parse().unwrap_or(chrono_tz::UTC);
        let day_start = |d: NaiveDate| {
            tz.from_local_datetime(&d.and_time(NaiveTime::MIN))
                .earliest()
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_else(|| d.and_time(NaiveTime::MIN).and_utc())
        };
        let now = s.clock.now();
        let start = day_start(from).max(now);
        let end = day_start(to + Duration::days(1));
        let found = slots::free_slots(&s.db, doctor, start, end, 2000)
            .await
            .map_err(|e| internal(ctx, e))?;
        Ok(found.into_iter().map(Slot).collect())
    }
}

/// Details of a doctor as entered.
#[derive(Debug, Clone, InputObject, Serialize)]
pub struct DoctorInput {
    pub surname: String,
    pub first_name: String,
    pub patronymic: Option<String>,
    pub specialty: String,
    pub qualification: String,
    pub organisation_id: ID,
    pub department: String,
    pub service_codes: Vec<String>,
}

/// Input of `registerDoctor`.
#[derive(Debug, InputObject)]
pub struct RegisterDoctorInput {
    pub doctor: DoctorInput,
    pub idempotency_key: Option<String>,
}

/// Result of `registerDoctor`.
#[derive(Debug, SimpleObject)]
pub struct DoctorPayload {
    pub doctor: Option<Doctor>,
    pub user_errors: Vec<UserError>,
}

/// Input of `registerMedicalService`.
#[derive(Debug, Clone, InputObject, Serialize)]
pub struct RegisterMedicalServiceInput {
    pub code: String,
    pub name: String,
    pub service_type: ServiceType,
    pub form: ServiceDelivery,
    /// Cost in roubles, e.g. `"1500"` or `"1500.50"`.
    pub cost: String,
    pub required_documents: Vec<String>,
    pub idempotency_key: Option<String>,
}

/// Result of `registerMedicalService`.
#[derive(Debug, SimpleObject)]
pub struct MedicalServicePayload {
    pub service: Option<MedicalService>,
    pub user_errors: Vec<UserError>,
}

/// Input of `publishSchedule`: one working period of a doctor.
#[derive(Debug, Clone, InputObject, Serialize)]
pub struct PublishScheduleInput {
    pub doctor_id: ID,
    /// Local date, `YYYY-MM-DD`.
    pub date: String,
    /// Local start, `HH:MM`.
    pub start: String,
    /// Local end, `HH:MM`.
    pub end: String,
    pub slot_minutes: i32,
    pub room: String,
    pub service_codes: Vec<String>,
    #[graphql(default = 14)]
    pub booking_horizon_days: i32,
    #[graphql(default = 2)]
    pub change_cutoff_hours: i32,
    pub min_age: Option<i32>,
    pub max_age: Option<i32>,
    pub idempotency_key: Option<String>,
}

/// Result of `publishSchedule`.
#[derive(Debug, SimpleObject)]
pub struct PublishSchedulePayload {
    /// Id of the published period (to close it later).
    pub period_id: Option<ID>,
    /// The slots the period opened.
    #[graphql(
        complexity = "super::limits::list_complexity(child_complexity, super::limits::SLOTS_PER_DAY)"
    )]
    pub slots: Vec<Slot>,
    pub user_errors: Vec<UserError>,
}

/// Input of `closeSchedulePeriod`.
#[derive(Debug, Clone, InputObject, Serialize)]
pub struct CloseSchedulePeriodInput {
    pub doctor_id: ID,
    pub period_id: ID,
    /// Shown to patients whose appointments are cancelled, e.g. "больничный".
    pub reason: String,
    pub idempotency_key: Option<String>,
}

/// Result of `closeSchedulePeriod`.
#[derive(Debug, SimpleObject)]
pub struct CloseSchedulePeriodPayload {
    /// Appointments cancelled on the clinic's side.
    pub cancelled_appointments: i32,
    pub user_errors: Vec<UserError>,
}

/// Whether `actor` may manage the directory entries of `organisation_id`.
fn manages(actor: &Actor, organisation_id: Uuid) -> bool {
    actor.role == Role::Admin
        || (actor.role == Role::Registrar && actor.organisation_id == Some(organisation_id))
}

fn non_negative(field: &str, value: i32) -> Result<u32, UserError> {
    u32::try_from(value)
        .map_err(|_| UserError::on_field(field, "INVALID_INPUT", "must not be negative"))
}

/// Directory mutations for doctors, services and schedules.
#[derive(Default)]
pub struct DoctorsMutation;

#[Object]
impl DoctorsMutation {
    /// Registers a doctor at an organisation (administrators, or that organisation's registrars).
    async fn register_doctor(
        &self,
        ctx: &Context<'_>,
        input: RegisterDoctorInput,
    ) -> async_graphql::Result<DoctorPayload> {
        let actor = actor(ctx)?;
        if !matches!(actor.role, Role::Admin | Role::Registrar) {
            return Err(forbidden());
        }
        let failed = |e: UserError| {
            Ok(DoctorPayload {
                doctor: None,
                user_errors: vec![e],
            })
        };
        let key = match idempotency_key(input.idempotency_key.clone()) {
            Ok(k) => k,
            Err(e) => return failed(e),
        };
        let d = &input.doctor;
        let Some(organisation_id) =
            ids::decode_as(&d.organisation_id, "Organisation").filter(|o| manages(actor, *o))
        else {
            return failed(UserError::on_field(
                "organisationId",
                "NOT_FOUND",
                "no such organisation",
            ));
        };
        let organisation = svc(ctx)
            .commands
            .load::<OrganisationAggregate>(&organisation_id.to_string())
            .await
            .map_err(|e| internal(ctx, e))?;
        if organisation.details.is_none() {
            return failed(UserError::on_field(
                "organisationId",
                "NOT_FOUND",
                "no such organisation",
            ));
        }
        let details = DoctorDetails {
            surname: d.surname.clone(),
            first_name: d.first_name.clone(),
            patronymic: d.patronymic.clone(),
            specialty: d.specialty.clone(),
            qualification: d.qualification.clone(),
            organisation_id,
            department: d.department.clone(),
            service_codes: d.service_codes.clone(),
        };
        let id = Uuid::now_v7();
        let outcome = match run_command::<DoctorAggregate>(
            ctx,
            actor,
            &id.to_string(),
            DoctorCommand::Register(details),
            &(),
            &input.doctor,
            key,
            Retry::Never,
        )
        .await?
        {
            Ok((outcome, _)) => outcome,
            Err(errors) => {
                return Ok(DoctorPayload {
                    doctor: None,
                    user_errors: errors,
                })
            }
        };
        read_your_writes(ctx, DIRECTORY_MODELS, outcome.last_order()).await;
        let id = Uuid::parse_str(&outcome.aggregate_id).map_err(|e| internal(ctx, e))?;
        let doctor = doctors::get(&svc(ctx).db, id)
            .await
            .map_err(|e| internal(ctx, e))?;
        Ok(DoctorPayload {
            doctor: doctor.map(Doctor),
            user_errors: vec![],
        })
    }

    /// Registers a medical service in the catalogue (administrators).
    async fn register_medical_service(
        &self,
        ctx: &Context<'_>,
        input: RegisterMedicalServiceInput,
    ) -> async_graphql::Result<MedicalServicePayload> {
        let actor = actor(ctx)?;
        if actor.role != Role::Admin {
            return Err(forbidden());
        }
        let failed = |e: Vec<UserError>| {
            Ok(MedicalServicePayload {
                service: None,
                user_errors: e,
            })
        };
        let key = match idempotency_key(input.idempotency_key.clone()) {
            Ok(k) => k,
            Err(e) => return failed(vec![e]),
        };
        let code = match kabinet_domain::directory::parse_code(&input.code) {
            Ok(code) => code,
            Err(e) => {
                return failed(vec![UserError::on_field(
                    "code",
                    "INVALID_INPUT",
                    e.to_string(),
                )])
            }
        };
        let details = ServiceDetails {
            code: code.clone(),
            name: input.name.clone(),
            kind: input.service_type.into(),
            form: match input.form {
                ServiceDelivery::InPerson => ServiceForm::InPerson,
                ServiceDelivery::Remote => ServiceForm::Remote,
            },
            cost: input.cost.clone(),
            required_documents: input.required_documents.clone(),
        };
        let outcome = match run_command::<ServiceAggregate>(
            ctx,
            actor,
            &code,
            ServiceCommand::Register(details),
            &(),
            &input,
            key,
            Retry::Never,
        )
        .await?
        {
            Ok((outcome, _)) => outcome,
            Err(errors) => return failed(errors),
        };
        read_your_writes(ctx, DIRECTORY_MODELS, outcome.last_order()).await;
        let service = services::get(&svc(ctx).db, &code)
            .await
            .map_err(|e| internal(ctx, e))?;
        Ok(MedicalServicePayload {
            service: service.map(MedicalService),
            user_errors: vec![],
        })
    }

    /// Publishes a working period of a doctor, opening its slots (the
    /// organisation's registrars, or administrators).
    async fn publish_schedule(
        &self,
        ctx: &Context<'_>,
        input: PublishScheduleInput,
    ) -> async_graphql::Result<PublishSchedulePayload> {
        let actor = actor(ctx)?;
        if !matches!(actor.role, Role::Admin | Role::Registrar) {
            return Err(forbidden());
        }
        let failed = |e: UserError| {
            Ok(PublishSchedulePayload {
                period_id: None,
                slots: vec![],
                user_errors: vec![e],
            })
        };
        let key = match idempotency_key(input.idempotency_key.clone()) {
            Ok(k) => k,
            Err(e) => return failed(e),
        };
        let s = svc(ctx);
        let doctor = match ids::decode_as(&input.doctor_id, "Doctor") {
            Some(id) => s
                .commands
                .load::<DoctorAggregate>(&id.to_string())
                .await
                .map_err(|e| internal(ctx, e))?
                .details
                .map(|d| (id, d)),
            None => None,
        };
        let Some((doctor_id, doctor)) = doctor.filter(|(_, d)| manages(actor, d.organisation_id))
        else {
            return failed(UserError::on_field(
                "doctorId",
                "NOT_FOUND",
                "no such doctor",
            ));
        };
        let organisation = s
            .commands
            .load::<OrganisationAggregate>(&doctor.organisation_id.to_string())
            .await
            .map_err(|e| internal(ctx, e))?;
        let Some(organisation) = organisation.details else {
            return failed(UserError::on_field(
                "doctorId",
                "NOT_FOUND",
                "the doctor's organisation is not registered",
            ));
        };
        let parsed = (|| -> Result<PeriodDraft, UserError> {
            let field_error = |field: &'static str| {
                move |m: String| UserError::on_field(field, "INVALID_INPUT", m)
            };
            Ok(PeriodDraft {
                period_id: Uuid::now_v7(),
                date: parse_date("date", &input.date).map_err(field_error("date"))?,
                start: parse_time("start", &input.start).map_err(field_error("start"))?,
                end: parse_time("end", &input.end).map_err(field_error("end"))?,
                slot_minutes: non_negative("slotMinutes", input.slot_minutes)?,
                room: input.room.clone(),
                service_codes: input.service_codes.clone(),
                booking_horizon_days: non_negative(
                    "bookingHorizonDays",
                    input.booking_horizon_days,
                )?,
                change_cutoff_hours: non_negative("changeCutoffHours", input.change_cutoff_hours)?,
                min_age: input
                    .min_age
                    .map(|a| non_negative("minAge", a))
                    .transpose()?,
                max_age: input
                    .max_age
                    .map(|a| non_negative("maxAge", a))
                    .transpose()?,
            })
        })();
        let draft = match parsed {
            Ok(d) => d,
            Err(e) => return failed(e),
        };
        let period_id = draft.period_id;
        let command = ScheduleCommand::Publish {
            doctor_id,
            organisation_id: doctor.organisation_id,
            time_zone: organisation.time_zone,
            draft,
            now: s.clock.now(),
        };
        let (outcome, schedule) = match run_command::<Schedule>(
            ctx,
            actor,
            &doctor_id.to_string(),
            command,
            &(),
            &input,
            key,
            Retry::OnConflict,
        )
        .await?
        {
            Ok(done) => done,
            Err(errors) => {
                return Ok(PublishSchedulePayload {
                    period_id: None,
                    slots: vec![],
                    user_errors: errors,
                })
            }
        };
        read_your_writes(ctx, DIRECTORY_MODELS, outcome.last_order()).await;
        // A replayed request reports the period it published first: the newest one.
        let period = if outcome.replayed {
            schedule.periods.iter().max_by_key(|p| p.period_id).cloned()
        } else {
            schedule.period(period_id).cloned()
        };
        let Some(period) = period else {
            return Ok(PublishSchedulePayload {
                period_id: None,
                slots: vec![],
                user_errors: vec![],
            });
        };
        let opened = slots::free_slots(&s.db, doctor_id, period.starts_at, period.ends_at, 1000)
            .await
            .map_err(|e| internal(ctx, e))?;
        Ok(PublishSchedulePayload {
            period_id: Some(ids::encode("Period", period.period_id)),
            slots: opened.into_iter().map(Slot).collect(),
            user_errors: vec![],
        })
    }

    /// Closes a published period (e.g. sick leave): its free slots close and its
    /// appointments are cancelled on the clinic's side with the reason.
    async fn close_schedule_period(
        &self,
        ctx: &Context<'_>,
        input: CloseSchedulePeriodInput,
    ) -> async_graphql::Result<CloseSchedulePeriodPayload> {
        let actor = actor(ctx)?;
        if !matches!(actor.role, Role::Admin | Role::Registrar) {
            return Err(forbidden());
        }
        let failed = |e: UserError| {
            Ok(CloseSchedulePeriodPayload {
                cancelled_appointments: 0,
                user_errors: vec![e],
            })
        };
        let key = match idempotency_key(input.idempotency_key.clone()) {
            Ok(k) => k,
            Err(e) => return failed(e),
        };
        let s = svc(ctx);
        let doctor = match ids::decode_as(&input.doctor_id, "Doctor") {
            Some(id) => s
                .commands
                .load::<DoctorAggregate>(&id.to_string())
                .await
                .map_err(|e| internal(ctx, e))?
                .details
                .map(|d| (id, d)),
            None => None,
        };
        let Some((doctor_id, _)) = doctor.filter(|(_, d)| manages(actor, d.organisation_id)) else {
            return failed(UserError::on_field(
                "doctorId",
                "NOT_FOUND",
                "no such doctor",
            ));
        };
        let Some(period_id) = ids::decode_as(&input.period_id, "Period") else {
            return failed(UserError::on_field(
                "periodId",
                "NOT_FOUND",
                "no such period",
            ));
        };
        let meta = metadata(ctx, actor, key);
        let fingerprint = serde_json::to_value(&input).map_err(|e| internal(ctx, e))?;
        match s
            .booking
            .close_period(
                &meta,
                doctor_id,
                period_id,
                input.reason.clone(),
                &fingerprint,
            )
            .await
        {
            Ok(report) => {
                let last = report.last_order;
                read_your_writes(
                    ctx,
                    &[
                        slots::NAME,
                        kabinet_projections::appointments::NAME,
                        activity_log::NAME,
                    ],
                    last,
                )
                .await;
                Ok(CloseSchedulePeriodPayload {
                    cancelled_appointments: report.cancelled.len() as i32,
                    user_errors: vec![],
                })
            }
            Err(BookingError::User(e)) => failed(e.into()),
            Err(BookingError::Internal(e)) => Err(internal(ctx, e)),
        }
    }
}

/// Resolves a doctor's global id.
pub async fn node(ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Option<Doctor>> {
    doctors::get(&svc(ctx).db, id)
        .await
        .map(|d| d.map(Doctor))
        .map_err(|e| internal(ctx, e))
}
