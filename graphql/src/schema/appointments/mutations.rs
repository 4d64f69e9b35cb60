//! Booking, moving, cancelling, the visit, reviews and referrals.

use super::{may_see, Appointment, ReferralRequest, Sex};
use crate::schema::context::{
    actor, forbidden, internal, medical_patient, metadata, read_your_writes, record_medical_read,
    services as svc,
};
use crate::schema::errors::{idempotency_key, run_command, UserError};
use crate::schema::{ids, slots_ids};
use async_graphql::{Context, InputObject, Object, SimpleObject, ID};
use chrono::NaiveDate;
use kabinet_domain::appointments::{
    AppointmentCommand, BookingError, BookingRequest, ChangedBy, Referral as ReferralAggregate,
    ReferralCommand,
};
use kabinet_domain::command::{CommandOutcome, Retry};
use kabinet_domain::patients::{Patient, PatientCommand, PatientProfile, Sex as DomainSex};
use kabinet_domain::{Actor, Role};
use kabinet_projections::appointments::{self, AppointmentView};
use kabinet_projections::referrals;
use kabinet_projections::{activity_log, doctors, organisations, slots};
use serde::Serialize;
use uuid::Uuid;

/// Read models an appointment mutation waits for.
pub(super) const APPOINTMENT_MODELS: &[&str] = &[
    appointments::NAME,
    slots::NAME,
    activity_log::NAME,
    doctors::NAME,
];

/// Input of `recordPatientProfile`.
#[derive(Debug, Clone, InputObject, Serialize)]
pub struct RecordPatientProfileInput {
    /// The patient (registrars only; patients record their own profile).
    pub patient_id: Option<ID>,
    pub surname: String,
    pub first_name: String,
    pub patronymic: Option<String>,
    /// `YYYY-MM-DD`.
    pub birth_date: String,
    pub sex: Sex,
    pub idempotency_key: Option<String>,
}

/// Result of `recordPatientProfile`.
#[derive(Debug, SimpleObject)]
pub struct PatientProfilePayload {
    pub recorded: bool,
    pub user_errors: Vec<UserError>,
}

/// Input of `bookAppointment`.
#[derive(Debug, Clone, InputObject, Serialize)]
pub struct BookAppointmentInput {
    /// A slot id from `freeSlots`.
    pub slot_id: ID,
    pub service_code: Option<String>,
    /// The patient (registrars booking on a patient's behalf).
    pub patient_id: Option<ID>,
    pub idempotency_key: Option<String>,
}

/// Input of `rescheduleAppointment`.
#[derive(Debug, Clone, InputObject, Serialize)]
pub struct RescheduleAppointmentInput {
    pub appointment_id: ID,
    /// A free slot of the same doctor.
    pub slot_id: ID,
    pub idempotency_key: Option<String>,
}

/// Input of `cancelAppointment`.
#[derive(Debug, Clone, InputObject, Serialize)]
pub struct CancelAppointmentInput {
    pub appointment_id: ID,
    pub reason: Option<String>,
    pub idempotency_key: Option<String>,
}

/// Input of the clinic's simple actions (`markPatientArrived`, `markNoShow`).
#[derive(Debug, Clone, InputObject, Serialize)]
pub struct AppointmentActionInput {
    pub appointment_id: ID,
    pub idempotency_key: Option<String>,
}

/// Input of `fulfilVisit`.
#[derive(Debug, Clone, InputObject, Serialize)]
pub struct FulfilVisitInput {
    pub appointment_id: ID,
    /// ICD-10 (МКБ-10) code, e.g. `J06.9`.
    pub diagnosis_code: String,
    pub diagnosis_text: String,
    #[graphql(default)]
    pub recommendations: String,
    /// References of e-prescriptions issued.
    #[graphql(default)]
    pub prescriptions: Vec<String>,
    /// Specialties the patient is referred to.
    #[graphql(default)]
    pub referrals: Vec<String>,
    pub idempotency_key: Option<String>,
}

/// Input of `reviewVisit`.
#[derive(Debug, Clone, InputObject, Serialize)]
pub struct ReviewVisitInput {
    pub appointment_id: ID,
    /// 1 to 5.
    pub rating: i32,
    pub text: Option<String>,
    pub idempotency_key: Option<String>,
}

/// Result of every appointment mutation.
#[derive(Debug, SimpleObject)]
pub struct AppointmentPayload {
    /// The appointment as the patient now sees it.
    pub appointment: Option<Appointment>,
    pub user_errors: Vec<UserError>,
}

impl AppointmentPayload {
    fn failed(e: UserError) -> Self {
        AppointmentPayload {
            appointment: None,
            user_errors: vec![e],
        }
    }
}

/// Input of `requestReferral`.
#[derive(Debug, Clone, InputObject, Serialize)]
pub struct RequestReferralInput {
    pub organisation_id: ID,
    /// Specialty wanted, e.g. `cardiologist`.
    pub specialty: String,
    pub reason: String,
    pub idempotency_key: Option<String>,
}

/// Input of `decideReferral`.
#[derive(Debug, Clone, InputObject, Serialize)]
pub struct DecideReferralInput {
    pub referral_id: ID,
    pub approve: bool,
    /// A note when approving; the reason (required) when rejecting.
    pub comment: Option<String>,
    pub idempotency_key: Option<String>,
}

/// Result of referral mutations.
#[derive(Debug, SimpleObject)]
pub struct ReferralPayload {
    pub referral: Option<ReferralRequest>,
    pub user_errors: Vec<UserError>,
}

pub(super) fn not_found() -> UserError {
    UserError::on_field("appointmentId", "NOT_FOUND", "no such appointment")
}

/// The appointment named by `id` if the caller may act on it; NOT_FOUND otherwise,
/// so ids of others' appointments reveal nothing.
pub(super) async fn visible(
    ctx: &Context<'_>,
    actor: &Actor,
    id: &ID,
) -> async_graphql::Result<Option<AppointmentView>> {
    let Some(uuid) = ids::decode_as(id, "Appointment") else {
        return Ok(None);
    };
    let s = svc(ctx);
    let view = match appointments::get(&s.db, uuid)
        .await
        .map_err(|e| internal(ctx, e))?
    {
        Some(view) => Some(view),
        // Booked by another request a moment ago and not projected yet: the
        // aggregate itself is always current.
        None => {
            let state = s
                .booking
                .appointment(uuid)
                .await
                .map_err(|e| internal(ctx, e))?;
            match (state.patient_id, state.slot, state.status) {
                (Some(patient_id), Some(slot), Some(status)) => Some(AppointmentView {
                    id: uuid,
                    patient_id,
                    doctor_id: slot.doctor_id,
                    organisation_id: slot.organisation_id,
                    start: slot.start,
                    end: slot.end,
                    day: slot.day,
                    time_zone: slot.time_zone,
                    room: slot.room,
                    service_code: state.service_code,
                    status: status.as_str().to_string(),
                    cancel_reason: None,
                    cancelled_by: None,
                    outcome: state.outcome,
                    review_rating: None,
                    specialty: None,
                }),
                _ => None,
            }
        }
    };
    Ok(view.filter(|v| may_see(actor, v)))
}

/// Sorts booking failures into user errors and masked faults.
pub(super) fn booking_result(
    ctx: &Context<'_>,
    result: Result<(CommandOutcome, kabinet_domain::appointments::Appointment), BookingError>,
) -> async_graphql::Result<Result<CommandOutcome, UserError>> {
    match result {
        Ok((outcome, _)) => Ok(Ok(outcome)),
        Err(BookingError::User(e)) => Ok(Err(e.into())),
        Err(BookingError::Internal(e)) => Err(internal(ctx, e)),
    }
}

/// Waits for the read models and returns the appointment as they show it.
pub(super) async fn payload(
    ctx: &Context<'_>,
    outcome: CommandOutcome,
) -> async_graphql::Result<AppointmentPayload> {
    read_your_writes(ctx, APPOINTMENT_MODELS, outcome.last_order()).await;
    let id = Uuid::parse_str(&outcome.aggregate_id).map_err(|e| internal(ctx, e))?;
    let view = appointments::get(&svc(ctx).db, id)
        .await
        .map_err(|e| internal(ctx, e))?;
    Ok(AppointmentPayload {
        appointment: view.map(Appointment),
        user_errors: vec![],
    })
}

/// Who a change comes from.
pub(super) fn changed_by(actor: &Actor) -> ChangedBy {
    if actor.role == Role::Patient {
        ChangedBy::Patient
    } else {
        ChangedBy::Clinic
    }
}

/// Appointment mutations.
#[derive(Default)]
pub struct AppointmentsMutation;

impl AppointmentsMutation {
    /// Runs a clinic or patient action on a visible appointment.
    async fn act(
        ctx: &Context<'_>,
        roles: &[Role],
        appointment_id: &ID,
        key: Option<String>,
        input: &(impl Serialize + Sync),
        command: impl FnOnce(&Actor, &AppointmentView) -> AppointmentCommand,
    ) -> async_graphql::Result<AppointmentPayload> {
        let actor = actor(ctx)?;
        if !roles.contains(&actor.role) {
            return Err(forbidden());
        }
        let key = match idempotency_key(key) {
            Ok(k) => k,
            Err(e) => return Ok(AppointmentPayload::failed(e)),
        };
        let Some(view) = visible(ctx, actor, appointment_id).await? else {
            return Ok(AppointmentPayload::failed(not_found()));
        };
        let command = command(actor, &view);
        let meta = metadata(ctx, actor, key);
        let input = serde_json::to_value(input).map_err(|e| internal(ctx, e))?;
        match booking_result(
            ctx,
            svc(ctx).booking.act(&meta, view.id, command, &input).await,
        )? {
            Ok(outcome) => payload(ctx, outcome).await,
            Err(e) => Ok(AppointmentPayload::failed(e)),
        }
    }
}

#[Object]
impl AppointmentsMutation {
    /// Records a patient's name, birth date and sex (the patient, or a registrar).
    async fn record_patient_profile(
        &self,
        ctx: &Context<'_>,
        input: RecordPatientProfileInput,
    ) -> async_graphql::Result<PatientProfilePayload> {
        let actor = actor(ctx)?;
        let failed = |e: UserError| {
            Ok(PatientProfilePayload {
                recorded: false,
                user_errors: vec![e],
            })
        };
        let patient = match (actor.role, &input.patient_id) {
            (Role::Patient, None) => actor.account_id,
            (Role::Patient, Some(id))
                if ids::decode_as(id, "Account") == Some(actor.account_id) =>
            {
                actor.account_id
            }
            (Role::Registrar, Some(id)) => match ids::decode_as(id, "Account") {
                Some(p) => p,
                None => {
                    return failed(UserError::on_field(
                        "patientId",
                        "INVALID_INPUT",
                        "not an account id",
                    ))
                }
            },
            (Role::Registrar, None) => {
                return failed(UserError::on_field(
                    "patientId",
                    "INVALID_INPUT",
                    "registrars name the patient",
                ))
            }
            _ => return Err(forbidden()),
        };
        let key = match idempotency_key(input.idempotency_key.clone()) {
            Ok(k) => k,
            Err(e) => return failed(e),
        };
        let Ok(birth_date) = NaiveDate::parse_from_str(input.birth_date.trim(), "%Y-%m-%d") else {
            return failed(UserError::on_field(
                "birthDate",
                "INVALID_INPUT",
                "not a date in the form YYYY-MM-DD",
            ));
        };
        let command = PatientCommand::RecordProfile {
            profile: PatientProfile {
                surname: input.surname.clone(),
                first_name: input.first_name.clone(),
                patronymic: input.patronymic.clone(),
                birth_date,
                sex: match input.sex {
                    Sex::Female => DomainSex::Female,
                    Sex::Male => DomainSex::Male,
                },
            },
            today: svc(ctx).clock.now().date_naive(),
        };
        match run_command::<Patient>(
            ctx,
            actor,
            &patient.to_string(),
            command,
            &(),
            &input,
            key,
            Retry::OnConflict,
        )
        .await?
        {
            Ok((outcome, _)) => {
                read_your_writes(ctx, &[activity_log::NAME], outcome.last_order()).await;
                Ok(PatientProfilePayload {
                    recorded: true,
                    user_errors: vec![],
                })
            }
            Err(errors) => Ok(PatientProfilePayload {
                recorded: false,
                user_errors: errors,
            }),
        }
    }

    /// Books a free slot (patients for themselves; registrars for a patient at their organisation).
    async fn book_appointment(
        &self,
        ctx: &Context<'_>,
        input: BookAppointmentInput,
    ) -> async_graphql::Result<AppointmentPayload> {
        let actor = actor(ctx)?;
        let patient = match (actor.role, &input.patient_id) {
            (Role::Patient, None) => actor.account_id,
            (Role::Patient, Some(id))
                if ids::decode_as(id, "Account") == Some(actor.account_id) =>
            {
                actor.account_id
            }
            (Role::Patient, Some(_)) => return Err(forbidden()),
            (Role::Registrar, Some(id)) => match ids::decode_as(id, "Account") {
                Some(p) => p,
                None => {
                    return Ok(AppointmentPayload::failed(UserError::on_field(
                        "patientId",
                        "INVALID_INPUT",
                        "not an account id",
                    )))
                }
            },
            (Role::Registrar, None) => {
                return Ok(AppointmentPayload::failed(UserError::on_field(
                    "patientId",
                    "INVALID_INPUT",
                    "registrars name the patient",
                )))
            }
            _ => return Err(forbidden()),
        };
        let key = match idempotency_key(input.idempotency_key.clone()) {
            Ok(k) => k,
            Err(e) => return Ok(AppointmentPayload::failed(e)),
        };
        let Some((doctor_id, start)) = slots_ids::decode(&input.slot_id) else {
            return Ok(AppointmentPayload::failed(UserError::on_field(
                "slotId",
                "SLOT_NOT_FOUND",
                "not a slot id",
            )));
        };
        if actor.role == Role::Registrar {
            let doctor = doctors::get(&svc(ctx).db, doctor_id)
                .await
                .map_err(|e| internal(ctx, e))?;
            if doctor.is_none_or(|d| Some(d.details.organisation_id) != actor.organisation_id) {
                return Ok(AppointmentPayload::failed(UserError::on_field(
                    "slotId",
                    "SLOT_NOT_FOUND",
                    "no such slot at your organisation",
                )));
            }
        }
        let meta = metadata(ctx, actor, key);
        let fingerprint = serde_json::to_value(&input).map_err(|e| internal(ctx, e))?;
        let result = svc(ctx)
            .booking
            .book(
                &meta,
                BookingRequest {
                    patient_id: patient,
                    doctor_id,
                    start,
                    service_code: input.service_code.clone(),
                    by: changed_by(actor),
                },
                &fingerprint,
            )
            .await;
        match booking_result(ctx, result)? {
            Ok(outcome) => payload(ctx, outcome).await,
            Err(e) => Ok(AppointmentPayload::failed(e)),
        }
    }

    /// Moves an appointment to another free slot of the same doctor; if that slot
    /// is taken the appointment stays as it was.
    async fn reschedule_appointment(
        &self,
        ctx: &Context<'_>,
        input: RescheduleAppointmentInput,
    ) -> async_graphql::Result<AppointmentPayload> {
        let actor = actor(ctx)?;
        if !matches!(actor.role, Role::Patient | Role::Registrar) {
            return Err(forbidden());
        }
        let key = match idempotency_key(input.idempotency_key.clone()) {
            Ok(k) => k,
            Err(e) => return Ok(AppointmentPayload::failed(e)),
        };
        let Some(view) = visible(ctx, actor, &input.appointment_id).await? else {
            return Ok(AppointmentPayload::failed(not_found()));
        };
        let Some((doctor_id, start)) = slots_ids::decode(&input.slot_id) else {
            return Ok(AppointmentPayload::failed(UserError::on_field(
                "slotId",
                "SLOT_NOT_FOUND",
                "not a slot id",
            )));
        };
        if doctor_id != view.doctor_id {
            return Ok(AppointmentPayload::failed(UserError::on_field(
                "slotId",
                "SLOT_OF_ANOTHER_DOCTOR",
                "the new slot belongs to another doctor; book that doctor instead",
            )));
        }
        let meta = metadata(ctx, actor, key);
        let fingerprint = serde_json::to_value(&input).map_err(|e| internal(ctx, e))?;
        let result = svc(ctx)
            .booking
            .reschedule(&meta, view.id, start, changed_by(actor), &fingerprint)
            .await;
        match booking_result(ctx, result)? {
            Ok(outcome) => payload(ctx, outcome).await,
            Err(e) => Ok(AppointmentPayload::failed(e)),
        }
    }

    /// Cancels an appointment (its patient before the cut-off; the clinic at any time).
    async fn cancel_appointment(
        &self,
        ctx: &Context<'_>,
        input: CancelAppointmentInput,
    ) -> async_graphql::Result<AppointmentPayload> {
        let now = svc(ctx).clock.now();
        let reason = input.reason.clone();
        Self::act(
            ctx,
            &[Role::Patient, Role::Registrar],
            &input.appointment_id,
            input.idempotency_key.clone(),
            &input,
            |actor, _| AppointmentCommand::Cancel {
                reason,
                by: changed_by(actor),
                now,
            },
        )
        .await
    }

    /// Records that the patient came (the organisation's registrars and doctors).
    async fn mark_patient_arrived(
        &self,
        ctx: &Context<'_>,
        input: AppointmentActionInput,
    ) -> async_graphql::Result<AppointmentPayload> {
        let now = svc(ctx).clock.now();
        Self::act(
            ctx,
            &[Role::Registrar, Role::Doctor],
            &input.appointment_id,
            input.idempotency_key.clone(),
            &input,
            |_, _| AppointmentCommand::MarkArrived {
                now,
                opens_before: svc(ctx).visit_opens_before,
            },
        )
        .await
    }

    /// Records that the patient did not come (after the visit's start).
    async fn mark_no_show(
        &self,
        ctx: &Context<'_>,
        input: AppointmentActionInput,
    ) -> async_graphql::Result<AppointmentPayload> {
        let now = svc(ctx).clock.now();
        Self::act(
            ctx,
            &[Role::Registrar, Role::Doctor],
            &input.appointment_id,
            input.idempotency_key.clone(),
            &input,
            |_, _| AppointmentCommand::MarkNoShow { now },
        )
        .await
    }

    /// Records the visit as done with its outcome (the organisation's doctors).
    async fn fulfil_visit(
        &self,
        ctx: &Context<'_>,
        input: FulfilVisitInput,
    ) -> async_graphql::Result<AppointmentPayload> {
        let now = svc(ctx).clock.now();
        let opens_before = svc(ctx).visit_opens_before;
        let i = input.clone();
        Self::act(
            ctx,
            &[Role::Doctor],
            &input.appointment_id,
            input.idempotency_key.clone(),
            &input,
            move |_, _| AppointmentCommand::Fulfil {
                diagnosis_code: i.diagnosis_code,
                diagnosis_text: i.diagnosis_text,
                recommendations: i.recommendations,
                prescriptions: i.prescriptions,
                referrals: i.referrals,
                now,
                opens_before,
            },
        )
        .await
    }

    /// Rates a fulfilled visit, once (its patient).
    async fn review_visit(
        &self,
        ctx: &Context<'_>,
        input: ReviewVisitInput,
    ) -> async_graphql::Result<AppointmentPayload> {
        medical_patient(ctx).await?;
        let (rating, text) = (input.rating, input.text.clone());
        Self::act(
            ctx,
            &[Role::Patient],
            &input.appointment_id,
            input.idempotency_key.clone(),
            &input,
            |actor, _| AppointmentCommand::Review {
                patient_id: actor.account_id,
                rating,
                text,
            },
        )
        .await
    }

    /// Asks an organisation for a referral to a specialist (patients).
    async fn request_referral(
        &self,
        ctx: &Context<'_>,
        input: RequestReferralInput,
    ) -> async_graphql::Result<ReferralPayload> {
        let actor = medical_patient(ctx).await?;
        let failed = |e: UserError| {
            Ok(ReferralPayload {
                referral: None,
                user_errors: vec![e],
            })
        };
        let key = match idempotency_key(input.idempotency_key.clone()) {
            Ok(k) => k,
            Err(e) => return failed(e),
        };
        let organisation = match ids::decode_as(&input.organisation_id, "Organisation") {
            Some(id) => organisations::get(&svc(ctx).db, id)
                .await
                .map_err(|e| internal(ctx, e))?,
            None => None,
        };
        let Some(organisation) = organisation else {
            return failed(UserError::on_field(
                "organisationId",
                "NOT_FOUND",
                "no such organisation",
            ));
        };
        let command = ReferralCommand::Request {
            patient_id: actor.account_id,
            organisation_id: organisation.id,
            specialty: input.specialty.clone(),
            reason: input.reason.clone(),
        };
        let id = Uuid::now_v7();
        match run_command::<ReferralAggregate>(
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
            Ok((outcome, _)) => referral_payload(ctx, outcome).await,
            Err(errors) => Ok(ReferralPayload {
                referral: None,
                user_errors: errors,
            }),
        }
    }

    /// Approves or rejects a referral request (the organisation's doctors and registrars).
    async fn decide_referral(
        &self,
        ctx: &Context<'_>,
        input: DecideReferralInput,
    ) -> async_graphql::Result<ReferralPayload> {
        let actor = actor(ctx)?;
        if !matches!(actor.role, Role::Doctor | Role::Registrar) {
            return Err(forbidden());
        }
        let failed = |e: UserError| {
            Ok(ReferralPayload {
                referral: None,
                user_errors: vec![e],
            })
        };
        let key = match idempotency_key(input.idempotency_key.clone()) {
            Ok(k) => k,
            Err(e) => return failed(e),
        };
        let view = match ids::decode_as(&input.referral_id, "ReferralRequest") {
            Some(id) => referrals::get(&svc(ctx).db, id)
                .await
                .map_err(|e| internal(ctx, e))?,
            None => None,
        };
        let Some(view) = view.filter(|v| actor.organisation_id == Some(v.organisation_id)) else {
            return failed(UserError::on_field(
                "referralId",
                "NOT_FOUND",
                "no such referral request",
            ));
        };
        let command = if input.approve {
            ReferralCommand::Approve {
                note: input.comment.clone(),
            }
        } else {
            ReferralCommand::Reject {
                reason: input.comment.clone().unwrap_or_default(),
            }
        };
        match run_command::<ReferralAggregate>(
            ctx,
            actor,
            &view.id.to_string(),
            command,
            &(),
            &input,
            key,
            Retry::OnConflict,
        )
        .await?
        {
            Ok((outcome, _)) => referral_payload(ctx, outcome).await,
            Err(errors) => Ok(ReferralPayload {
                referral: None,
                user_errors: errors,
            }),
        }
    }
}

pub(super) async fn referral_payload(
    ctx: &Context<'_>,
    outcome: CommandOutcome,
) -> async_graphql::Result<ReferralPayload> {
    read_your_writes(
        ctx,
        &[referrals::NAME, activity_log::NAME],
        outcome.last_order(),
    )
    .await;
    let id = Uuid::parse_str(&outcome.aggregate_id).map_err(|e| internal(ctx, e))?;
    let view = referrals::get(&svc(ctx).db, id)
        .await
        .map_err(|e| internal(ctx, e))?;
    if let Some(v) = &view {
        record_medical_read(ctx, v.patient_id, "referral", Some(v.id)).await?;
    }
    Ok(ReferralPayload {
        referral: view.map(ReferralRequest),
        user_errors: vec![],
    })
}
