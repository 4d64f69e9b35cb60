//! Issuing, sending, cancelling and dispensing prescriptions.

use super::{zone, Prescription};
use crate::schema::context::{
    actor_in, forbidden, in_care_of_caller, internal, medical_patient, read_your_writes,
    services as svc,
};
use crate::schema::directory::Organisation;
use crate::schema::errors::{check, idempotency_key, run_command, UserError};
use crate::schema::ids;
use async_graphql::{Context, InputObject, Object, SimpleObject, ID};
use chrono::{DateTime, Days, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use kabinet_domain::command::{CommandOutcome, Retry};
use kabinet_domain::directory::{Organisation as OrganisationAggregate, OrganisationCommand};
use kabinet_domain::patients::{Patient, PatientProfile};
use kabinet_domain::prescriptions::{
    Medication, Pharmacy, Prescriber, Prescription as PrescriptionAggregate, PrescriptionCommand,
    Validity,
};
use kabinet_domain::{Actor, Role};
use kabinet_projections::prescriptions::{self, PrescriptionView};
use kabinet_projections::{activity_log, doctors, organisations};
use serde::Serialize;
use uuid::Uuid;

/// Read models a prescription mutation waits for.
pub(super) const MODELS: &[&str] = &[
    prescriptions::NAME,
    prescriptions::JOURNAL,
    activity_log::NAME,
];

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

pub(super) fn failed(e: UserError) -> async_graphql::Result<PrescriptionPayload> {
    Ok(PrescriptionPayload {
        prescription: None,
        user_errors: vec![e],
    })
}

pub(super) fn not_found() -> UserError {
    UserError::on_field("prescriptionId", "NOT_FOUND", "no such prescription")
}

/// The pharmacy a caller named, or the user error saying why it is not one.
pub(super) async fn pharmacy_of(
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
pub(super) fn initials(parts: &[Option<&str>]) -> String {
    parts
        .iter()
        .flatten()
        .filter_map(|p| p.trim().chars().next())
        .map(|c| format!("{}.", c.to_uppercase()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The instant after the last local day `until` in `tz`.
pub(super) fn end_of_day(until: NaiveDate, tz: Tz) -> Option<DateTime<Utc>> {
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

pub(super) fn own(actor: &Actor, v: &PrescriptionView) -> bool {
    actor.account_id == v.patient_id
}

pub(super) fn of_organisation(actor: &Actor, v: &PrescriptionView) -> bool {
    actor.organisation_id == Some(v.organisation_id)
}

pub(super) fn at_pharmacy(actor: &Actor, v: &PrescriptionView) -> bool {
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
        // Every field is checked, so the caller sees all its mistakes at once.
        let mut errors = Vec::new();
        let key = check(&mut errors, idempotency_key(input.idempotency_key.clone()));
        let profile = check(
            &mut errors,
            prescribable(ctx, actor, &input.patient_id).await?,
        );
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
        let (Some(key), Some((patient_id, profile)), Some(from), Some(until)) =
            (key, profile, from, until)
        else {
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
                    organisation: crate::schema::directory::node(ctx, id).await?,
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

/// The patient of `raw` with their recorded profile, if the calling doctor may
/// prescribe to them: a doctor prescribes only to patients in the care of their
/// organisation.
async fn prescribable(
    ctx: &Context<'_>,
    actor: &Actor,
    raw: &ID,
) -> async_graphql::Result<Result<(Uuid, PatientProfile), UserError>> {
    let Some(patient_id) = ids::decode_as(raw, "Account") else {
        return Ok(Err(UserError::on_field(
            "patientId",
            "INVALID_INPUT",
            "not an account id",
        )));
    };
    if !in_care_of_caller(ctx, actor, patient_id).await? {
        return Ok(Err(UserError::on_field(
            "patientId",
            "NOT_IN_CARE",
            "this patient is not in the care of your organisation: prescribing needs an \
             appointment, a referral, an open document request or an active prescription here",
        )));
    }
    let patient = svc(ctx)
        .commands
        .load::<Patient>(&patient_id.to_string())
        .await
        .map_err(|e| internal(ctx, e))?;
    Ok(match patient.profile {
        Some(profile) => Ok((patient_id, profile)),
        None => Err(UserError::on_field(
            "patientId",
            "NOT_FOUND",
            "no patient with a recorded profile has this id",
        )),
    })
}

pub(super) async fn payload(
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
