//! Profile updates, verification steps, scan reviews and the SNILS registry.

use super::{
    load_profile, load_verification, verification_view, IdentityVerificationView,
    PassportScanReviewResult, PatientProfile, ScanReviewDecision,
};
use crate::schema::appointments::Sex;
use crate::schema::context::{
    actor, actor_in, forbidden, internal, metadata, read_your_writes, services,
};
use crate::schema::errors::{idempotency_key, run_command, UserError};
use crate::schema::ids;
use async_graphql::{Context, InputObject, Object, SimpleObject, ID};
use kabinet_app::identity::IdentityFailure;
use kabinet_domain::command::Retry;
use kabinet_domain::identity::registry::{RawRegistryEntry, RegistryEntry};
use kabinet_domain::identity::verification::ScanDecision;
use kabinet_domain::patients::{Patient, PatientCommand, ProfileUpdate, RawProfileUpdate};
use kabinet_domain::{Actor, Role};
use kabinet_projections::account_journal;
use serde::Serialize;

/// Input of `updateMyProfile`: omitted fields stay as they are; an empty string
/// clears an optional one (patronymic, documents, contacts, addresses).
#[derive(Debug, Clone, Default, InputObject, Serialize)]
pub struct UpdateMyProfileInput {
    pub surname: Option<String>,
    pub first_name: Option<String>,
    pub patronymic: Option<String>,
    /// `YYYY-MM-DD`.
    pub birth_date: Option<String>,
    pub sex: Option<Sex>,
    /// SNILS, e.g. `112-233-445 95`.
    pub snils: Option<String>,
    /// Unified OMS policy number, 16 digits.
    pub oms_policy: Option<String>,
    /// 4 digits, e.g. `45 08`.
    pub passport_series: Option<String>,
    /// 6 digits.
    pub passport_number: Option<String>,
    /// Russian number in any usual spelling; kept as `+7XXXXXXXXXX`.
    pub phone: Option<String>,
    pub email: Option<String>,
    pub registration_address: Option<String>,
    pub actual_address: Option<String>,
    pub idempotency_key: Option<String>,
}

/// Result of `updateMyProfile`.
#[derive(Debug, SimpleObject)]
pub struct UpdateMyProfilePayload {
    /// The profile as it now stands; `null` when nothing changed because of errors.
    pub profile: Option<PatientProfile>,
    /// Every wrong field at once.
    pub user_errors: Vec<UserError>,
}

/// Input of the verification steps taken by mutation.
#[derive(Debug, Clone, Default, InputObject, Serialize)]
pub struct IdentityStepInput {
    pub idempotency_key: Option<String>,
}

/// Input of `confirmIdentityCode`.
#[derive(Debug, Clone, InputObject, Serialize)]
pub struct ConfirmIdentityCodeInput {
    /// The six digits of the SMS.
    pub code: String,
    pub idempotency_key: Option<String>,
}

/// Result of the verification steps.
#[derive(Debug, SimpleObject)]
pub struct IdentityVerificationPayload {
    pub verification: Option<IdentityVerificationView>,
    pub user_errors: Vec<UserError>,
}

/// One registry entry to load.
#[derive(Debug, Clone, InputObject, Serialize)]
pub struct SnilsRegistryEntryInput {
    pub snils: String,
    pub surname: String,
    pub first_name: String,
    pub patronymic: Option<String>,
    /// `YYYY-MM-DD`.
    pub birth_date: String,
}

/// Input of `loadSnilsRegistry`.
#[derive(Debug, Clone, InputObject, Serialize)]
pub struct LoadSnilsRegistryInput {
    /// At most 1000 entries a call; an entry with a known SNILS replaces it.
    pub entries: Vec<SnilsRegistryEntryInput>,
}

/// Result of `loadSnilsRegistry`.
#[derive(Debug, SimpleObject)]
pub struct LoadSnilsRegistryPayload {
    /// How many entries were written (0 when any was wrong).
    pub loaded: i32,
    pub user_errors: Vec<UserError>,
}

/// Input of `reviewPassportScan`.
#[derive(Debug, Clone, InputObject, Serialize)]
pub struct ReviewPassportScanInput {
    pub patient_id: ID,
    pub sha256: String,
    pub decision: ScanReviewDecision,
    /// Required to reject (shown to the patient), at most 500 characters.
    pub reason: Option<String>,
    pub idempotency_key: Option<String>,
}

/// Result of `reviewPassportScan`.
#[derive(Debug, SimpleObject)]
pub struct ReviewPassportScanPayload {
    pub result: Option<PassportScanReviewResult>,
    pub user_errors: Vec<UserError>,
}

/// Most entries one `loadSnilsRegistry` call takes.
pub(super) const MAX_REGISTRY_ENTRIES: usize = 1000;

/// Profile and verification mutations.
#[derive(Default)]
pub struct IdentityMutation;

pub(super) fn failed_step(errors: Vec<UserError>) -> IdentityVerificationPayload {
    IdentityVerificationPayload {
        verification: None,
        user_errors: errors,
    }
}

pub(super) async fn step_result(
    ctx: &Context<'_>,
    actor: &Actor,
    result: Result<kabinet_domain::command::CommandOutcome, IdentityFailure>,
) -> async_graphql::Result<IdentityVerificationPayload> {
    match result {
        Ok(outcome) => {
            read_your_writes(ctx, &[account_journal::NAME], outcome.last_order()).await;
            Ok(IdentityVerificationPayload {
                verification: Some(load_verification(ctx, actor.account_id).await?),
                user_errors: vec![],
            })
        }
        Err(IdentityFailure::User(errors)) => Ok(failed_step(
            errors.into_iter().map(UserError::from).collect(),
        )),
        Err(IdentityFailure::Internal(e)) => Err(internal(ctx, e)),
    }
}

#[Object]
impl IdentityMutation {
    /// Changes any part of the caller's profile (patients). All wrong fields are
    /// reported at once, and then nothing changes.
    async fn update_my_profile(
        &self,
        ctx: &Context<'_>,
        input: UpdateMyProfileInput,
    ) -> async_graphql::Result<UpdateMyProfilePayload> {
        let actor = actor_in(ctx, &[Role::Patient])?;
        let failed = |errors: Vec<UserError>| {
            Ok(UpdateMyProfilePayload {
                profile: None,
                user_errors: errors,
            })
        };
        let key = match idempotency_key(input.idempotency_key.clone()) {
            Ok(k) => k,
            Err(e) => return failed(vec![e]),
        };
        let raw = RawProfileUpdate {
            surname: input.surname.clone(),
            first_name: input.first_name.clone(),
            patronymic: input.patronymic.clone(),
            birth_date: input.birth_date.clone(),
            sex: input.sex.map(|s| match s {
                Sex::Female => kabinet_domain::patients::Sex::Female,
                Sex::Male => kabinet_domain::patients::Sex::Male,
            }),
            snils: input.snils.clone(),
            oms_policy: input.oms_policy.clone(),
            passport_series: input.passport_series.clone(),
            passport_number: input.passport_number.clone(),
            phone: input.phone.clone(),
            email: input.email.clone(),
            registration_address: input.registration_address.clone(),
            actual_address: input.actual_address.clone(),
        };
        let today = services(ctx).clock.now().date_naive();
        let update = match ProfileUpdate::parse(&raw, today) {
            Ok(update) => update,
            Err(errors) => return failed(errors.into_iter().map(UserError::from).collect()),
        };
        let s = services(ctx);
        if s.identity
            .is_verified(actor.account_id)
            .await
            .map_err(|e| internal(ctx, e))?
        {
            let current = s
                .commands
                .load::<Patient>(&actor.account_id.to_string())
                .await
                .map_err(|e| internal(ctx, e))?;
            let locked = update.identity_changes(&current);
            if !locked.is_empty() {
                return failed(
                    locked
                        .into_iter()
                        .map(|field| {
                            UserError::on_field(
                                field,
                                "LOCKED_AFTER_IDENTIFICATION",
                                "identity data cannot change once identification is complete",
                            )
                        })
                        .collect(),
                );
            }
        }
        match run_command::<Patient>(
            ctx,
            actor,
            &actor.account_id.to_string(),
            PatientCommand::UpdateProfile { update, today },
            &(),
            &input,
            key,
            Retry::OnConflict,
        )
        .await?
        {
            Ok((outcome, _)) => {
                // Steps that checked data the profile no longer holds are undone.
                let meta = metadata(ctx, actor, None);
                let revised = match s
                    .identity
                    .revise(&meta, actor.account_id, s.clock.now())
                    .await
                {
                    Ok(revision) => revision.last_order(),
                    Err(IdentityFailure::User(errors)) => {
                        tracing::warn!(?errors, "identity revision refused after a profile change");
                        None
                    }
                    Err(IdentityFailure::Internal(e)) => return Err(internal(ctx, e)),
                };
                let last = revised.max(outcome.last_order());
                read_your_writes(ctx, &[account_journal::NAME], last).await;
                Ok(UpdateMyProfilePayload {
                    profile: Some(load_profile(ctx, actor.account_id).await?),
                    user_errors: vec![],
                })
            }
            Err(errors) => failed(errors),
        }
    }

    /// Approves a passport scan as matching the patient's profile, or rejects it with
    /// a reason the patient sees (registrars and administrators).
    async fn review_passport_scan(
        &self,
        ctx: &Context<'_>,
        input: ReviewPassportScanInput,
    ) -> async_graphql::Result<ReviewPassportScanPayload> {
        let actor = actor_in(ctx, super::REVIEWERS)?;
        let failed = |errors: Vec<UserError>| {
            Ok(ReviewPassportScanPayload {
                result: None,
                user_errors: errors,
            })
        };
        let key = match idempotency_key(input.idempotency_key.clone()) {
            Ok(k) => k,
            Err(e) => return failed(vec![e]),
        };
        let Some(patient) = ids::decode_as(&input.patient_id, "Account") else {
            return failed(vec![UserError::on_field(
                "patientId",
                "NOT_FOUND",
                "no such patient",
            )]);
        };
        let decision = match (input.decision, input.reason.as_deref().map(str::trim)) {
            (ScanReviewDecision::Approve, _) => ScanDecision::Approve,
            (ScanReviewDecision::Reject, Some(reason)) if !reason.is_empty() => {
                ScanDecision::Reject {
                    reason: reason.to_string(),
                }
            }
            (ScanReviewDecision::Reject, _) => {
                return failed(vec![UserError::on_field(
                    "reason",
                    "REASON_REQUIRED",
                    "say why the scan is rejected; the patient sees it",
                )])
            }
        };
        let sha256 = input.sha256.trim().to_ascii_lowercase();
        let s = services(ctx);
        let meta = metadata(ctx, actor, key);
        match s
            .identity
            .review_scan(&meta, patient, &sha256, decision, s.clock.now())
            .await
        {
            Ok(outcome) => {
                read_your_writes(ctx, &[account_journal::NAME], outcome.last_order()).await;
                let v = s
                    .identity
                    .status(patient)
                    .await
                    .map_err(|e| internal(ctx, e))?;
                let view = verification_view(&v);
                Ok(ReviewPassportScanPayload {
                    result: Some(PassportScanReviewResult {
                        patient_id: input.patient_id.clone(),
                        sha256,
                        review: view.passport_scan_review,
                        review_label_ru: view.passport_scan_review_label_ru,
                        rejection_reason: view.passport_scan_rejection_reason,
                        identity_verified: v.is_verified(),
                    }),
                    user_errors: vec![],
                })
            }
            Err(IdentityFailure::User(errors)) => {
                failed(errors.into_iter().map(UserError::from).collect())
            }
            Err(IdentityFailure::Internal(e)) => Err(internal(ctx, e)),
        }
    }

    /// Matches the profile's SNILS, name and birth date against the registry (patients).
    async fn verify_snils(
        &self,
        ctx: &Context<'_>,
        input: Option<IdentityStepInput>,
    ) -> async_graphql::Result<IdentityVerificationPayload> {
        let actor = actor_in(ctx, &[Role::Patient])?;
        let key = match idempotency_key(input.unwrap_or_default().idempotency_key) {
            Ok(k) => k,
            Err(e) => return Ok(failed_step(vec![e])),
        };
        let s = services(ctx);
        let meta = metadata(ctx, actor, key);
        let result = s
            .identity
            .match_snils(&meta, actor.account_id, s.clock.now())
            .await;
        step_result(ctx, actor, result).await
    }

    /// Sends a six-digit code to the profile's phone (patients); valid 10 minutes,
    /// 5 tries, one code a minute.
    async fn send_identity_code(
        &self,
        ctx: &Context<'_>,
        input: Option<IdentityStepInput>,
    ) -> async_graphql::Result<IdentityVerificationPayload> {
        let actor = actor_in(ctx, &[Role::Patient])?;
        let key = match idempotency_key(input.unwrap_or_default().idempotency_key) {
            Ok(k) => k,
            Err(e) => return Ok(failed_step(vec![e])),
        };
        let s = services(ctx);
        let meta = metadata(ctx, actor, key);
        let result = s
            .identity
            .send_phone_code(&meta, actor.account_id, s.notifier.as_ref(), s.clock.now())
            .await;
        step_result(ctx, actor, result).await
    }

    /// Confirms the phone with the code from the SMS (patients).
    async fn confirm_identity_code(
        &self,
        ctx: &Context<'_>,
        input: ConfirmIdentityCodeInput,
    ) -> async_graphql::Result<IdentityVerificationPayload> {
        let actor = actor_in(ctx, &[Role::Patient])?;
        let key = match idempotency_key(input.idempotency_key.clone()) {
            Ok(k) => k,
            Err(e) => return Ok(failed_step(vec![e])),
        };
        let s = services(ctx);
        let meta = metadata(ctx, actor, key);
        let result = s
            .identity
            .confirm_phone_code(&meta, actor.account_id, &input.code, s.clock.now())
            .await;
        step_result(ctx, actor, result).await
    }

    /// Adds or replaces entries of the SNILS registry (administrators).
    async fn load_snils_registry(
        &self,
        ctx: &Context<'_>,
        input: LoadSnilsRegistryInput,
    ) -> async_graphql::Result<LoadSnilsRegistryPayload> {
        let actor = actor(ctx)?;
        if actor.role != Role::Admin {
            return Err(forbidden());
        }
        let failed = |errors: Vec<UserError>| {
            Ok(LoadSnilsRegistryPayload {
                loaded: 0,
                user_errors: errors,
            })
        };
        if input.entries.len() > MAX_REGISTRY_ENTRIES {
            return failed(vec![UserError::on_field(
                "entries",
                "TOO_MANY_ENTRIES",
                format!("at most {MAX_REGISTRY_ENTRIES} entries a call"),
            )]);
        }
        let raw: Vec<RawRegistryEntry> = input
            .entries
            .iter()
            .map(|e| RawRegistryEntry {
                snils: e.snils.clone(),
                surname: e.surname.clone(),
                first_name: e.first_name.clone(),
                patronymic: e.patronymic.clone(),
                birth_date: e.birth_date.clone(),
            })
            .collect();
        let entries = match RegistryEntry::parse_all(&raw) {
            Ok(entries) => entries,
            Err(errors) => return failed(errors.into_iter().map(UserError::from).collect()),
        };
        let s = services(ctx);
        let loaded = s
            .snils_registry
            .load(&entries, s.clock.now())
            .await
            .map_err(|e| internal(ctx, e))?;
        Ok(LoadSnilsRegistryPayload {
            loaded: loaded as i32,
            user_errors: vec![],
        })
    }
}
