//! Registering doctors and services, publishing and closing schedules.

use super::{parse_date, parse_time, Doctor, MedicalService, ServiceDelivery, ServiceType, Slot};
use crate::schema::context::{
    actor, forbidden, internal, metadata, read_your_writes, services as svc,
};
use crate::schema::errors::{check, idempotency_key, run_command, UserError};
use crate::schema::ids;
use async_graphql::{Context, InputObject, Object, SimpleObject, ID};
use kabinet_domain::appointments::BookingError;
use kabinet_domain::command::Retry;
use kabinet_domain::directory::{
    Doctor as DoctorAggregate, DoctorCommand, DoctorDetails, MedicalService as ServiceAggregate,
    Organisation as OrganisationAggregate, PeriodDraft, Schedule, ScheduleCommand, ServiceCommand,
    ServiceDetails, ServiceForm,
};
use kabinet_domain::{Actor, Role};
use kabinet_projections::activity_log;
use kabinet_projections::doctors;
use kabinet_projections::services;
use kabinet_projections::slots;
use serde::Serialize;
use uuid::Uuid;

/// Read models a directory mutation waits for.
pub(super) const DIRECTORY_MODELS: &[&str] = &[
    doctors::NAME,
    services::NAME,
    slots::NAME,
    activity_log::NAME,
];

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
        complexity = "crate::schema::limits::list_complexity(child_complexity, crate::schema::limits::SLOTS_PER_DAY)"
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
pub(super) fn manages(actor: &Actor, organisation_id: Uuid) -> bool {
    actor.role == Role::Admin
        || (actor.role == Role::Registrar && actor.organisation_id == Some(organisation_id))
}

pub(super) fn non_negative(field: &str, value: i32) -> Result<u32, UserError> {
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
        // Every field is checked, so the caller sees all its mistakes at once.
        let mut errors = Vec::new();
        let date = check(
            &mut errors,
            parse_date("date", &input.date).map_err(UserError::from),
        );
        let start = check(
            &mut errors,
            parse_time("start", &input.start).map_err(UserError::from),
        );
        let end = check(
            &mut errors,
            parse_time("end", &input.end).map_err(UserError::from),
        );
        let slot_minutes = check(&mut errors, non_negative("slotMinutes", input.slot_minutes));
        let booking_horizon_days = check(
            &mut errors,
            non_negative("bookingHorizonDays", input.booking_horizon_days),
        );
        let change_cutoff_hours = check(
            &mut errors,
            non_negative("changeCutoffHours", input.change_cutoff_hours),
        );
        let min_age = check(
            &mut errors,
            input.min_age.map(|a| non_negative("minAge", a)).transpose(),
        );
        let max_age = check(
            &mut errors,
            input.max_age.map(|a| non_negative("maxAge", a)).transpose(),
        );
        let (
            Some(date),
            Some(start),
            Some(end),
            Some(slot_minutes),
            Some(booking_horizon_days),
            Some(change_cutoff_hours),
            Some(min_age),
            Some(max_age),
        ) = (
            date,
            start,
            end,
            slot_minutes,
            booking_horizon_days,
            change_cutoff_hours,
            min_age,
            max_age,
        )
        else {
            return Ok(PublishSchedulePayload {
                period_id: None,
                slots: vec![],
                user_errors: errors,
            });
        };
        let draft = PeriodDraft {
            period_id: Uuid::now_v7(),
            date,
            start,
            end,
            slot_minutes,
            room: input.room.clone(),
            service_codes: input.service_codes.clone(),
            booking_horizon_days,
            change_cutoff_hours,
            min_age,
            max_age,
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
