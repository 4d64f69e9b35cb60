//! The profile (A2) and identity verification (A3): `myProfile`, `updateMyProfile`,
//! staff's `patientProfile`, `myIdentityVerification` with its three steps, the
//! reviewers' queue of passport scans (`passportScansAwaitingReview`,
//! `reviewPassportScan`), and the administrators' `loadSnilsRegistry`.
//!
//! Profile and verification are read from their own streams (a handful of events per
//! patient), so they are never stale and no read-model copy of passport data exists.

use async_graphql::connection::{Connection, Edge, EmptyFields};
use async_graphql::{Context, Enum, InputObject, Object, SimpleObject, ID};
use chrono::{DateTime, NaiveDate, Utc};
use kabinet_app::identity::IdentityFailure;
use kabinet_domain::command::Retry;
use kabinet_domain::identity::registry::{RawRegistryEntry, RegistryEntry};
use kabinet_domain::identity::verification::{
    IdentityVerification, ScanDecision, ScanReview, Step,
};
use kabinet_domain::patients::{Patient, PatientCommand, ProfileUpdate, RawProfileUpdate};
use kabinet_domain::{Actor, Role};
use kabinet_projections::account_journal;
use serde::Serialize;

use super::appointments::Sex;
use super::context::{
    actor, actor_in, forbidden, in_care_of_caller, internal, metadata, read_your_writes,
    record_medical_read, services,
};
use super::errors::{idempotency_key, run_command, UserError};
use super::ids;
use super::pagination::forward_page;

/// Roles that review passport scans (here and at the scan download route).
pub const REVIEWERS: &[Role] = &[Role::Registrar, Role::Admin];

/// A patient's profile: name, birth date, sex, documents, contacts and addresses.
#[derive(Debug, Clone, SimpleObject)]
pub struct PatientProfile {
    /// Global id of the patient's account.
    pub patient_id: ID,
    pub surname: Option<String>,
    pub first_name: Option<String>,
    pub patronymic: Option<String>,
    pub birth_date: Option<NaiveDate>,
    pub sex: Option<Sex>,
    /// `XXX-XXX-XXX YY`.
    pub snils: Option<String>,
    /// 16 digits.
    pub oms_policy: Option<String>,
    pub passport_series: Option<String>,
    pub passport_number: Option<String>,
    /// `+7XXXXXXXXXX`.
    pub phone: Option<String>,
    pub email: Option<String>,
    pub registration_address: Option<String>,
    pub actual_address: Option<String>,
}

fn profile_of(patient_id: uuid::Uuid, p: &Patient) -> PatientProfile {
    let basic = p.profile.as_ref();
    let d = &p.details;
    PatientProfile {
        patient_id: ids::encode("Account", patient_id),
        surname: basic.map(|b| b.surname.clone()),
        first_name: basic.map(|b| b.first_name.clone()),
        patronymic: basic.and_then(|b| b.patronymic.clone()),
        birth_date: basic.map(|b| b.birth_date),
        sex: basic.map(|b| match b.sex {
            kabinet_domain::patients::Sex::Female => Sex::Female,
            kabinet_domain::patients::Sex::Male => Sex::Male,
        }),
        snils: d.snils.as_ref().map(|v| v.to_string()),
        oms_policy: d.oms_policy.as_ref().map(|v| v.to_string()),
        passport_series: d.passport_series.as_ref().map(|v| v.to_string()),
        passport_number: d.passport_number.as_ref().map(|v| v.to_string()),
        phone: d.phone.as_ref().map(|v| v.to_string()),
        email: d.email.as_ref().map(|v| v.to_string()),
        registration_address: d.registration_address.clone(),
        actual_address: d.actual_address.clone(),
    }
}

async fn load_profile(
    ctx: &Context<'_>,
    patient_id: uuid::Uuid,
) -> async_graphql::Result<PatientProfile> {
    let patient = services(ctx)
        .commands
        .load::<Patient>(&patient_id.to_string())
        .await
        .map_err(|e| internal(ctx, e))?;
    Ok(profile_of(patient_id, &patient))
}

/// A step of identity verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum VerificationStepKind {
    /// The profile's SNILS, name and birth date matched against the registry.
    Snils,
    /// A passport scan uploaded (`POST /identity/passport-scan`) and approved by a
    /// reviewer as matching the profile.
    PassportScan,
    /// The profile's phone confirmed with an SMS code.
    Phone,
}

/// Where verification stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum VerificationStatus {
    NotStarted,
    InProgress,
    /// "Identification complete": medical data is open.
    Verified,
}

/// Where the latest passport scan stands with its reviewer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum PassportScanReview {
    /// No scan, or the last one no longer goes with the profile.
    None,
    /// Uploaded; a registrar or administrator has yet to compare it with the profile.
    AwaitingReview,
    /// A reviewer confirmed it matches the profile: the step is done.
    Approved,
    /// A reviewer refused it (see `passportScanRejectionReason`); upload another.
    Rejected,
}

/// A reviewer's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Serialize)]
pub enum ScanReviewDecision {
    Approve,
    Reject,
}

/// One step and whether it is done.
#[derive(Debug, Clone, SimpleObject)]
pub struct VerificationStep {
    pub step: VerificationStepKind,
    pub done: bool,
    pub done_at: Option<DateTime<Utc>>,
    pub label_ru: &'static str,
}

/// A patient's identity verification.
#[derive(Debug, Clone, SimpleObject)]
pub struct IdentityVerificationView {
    pub status: VerificationStatus,
    /// The status in Russian, e.g. "Идентификация пройдена".
    pub label_ru: &'static str,
    pub steps: Vec<VerificationStep>,
    pub verified_at: Option<DateTime<Utc>>,
    /// When the last SMS code sent stops working (until the phone is confirmed).
    pub code_expires_at: Option<DateTime<Utc>>,
    /// SHA-256 of the latest passport scan.
    pub passport_scan_sha256: Option<String>,
    /// Where the latest passport scan stands with its reviewer.
    pub passport_scan_review: PassportScanReview,
    /// Why the reviewer refused the latest scan.
    pub passport_scan_rejection_reason: Option<String>,
    /// Why a step was last undone (its profile data changed), if one was.
    pub last_undone_reason: Option<String>,
}

fn verification_view(v: &IdentityVerification) -> IdentityVerificationView {
    let steps = vec![
        VerificationStep {
            step: VerificationStepKind::Snils,
            done: v.snils_matched_at.is_some(),
            done_at: v.snils_matched_at,
            label_ru: "СНИЛС сверен с реестром",
        },
        VerificationStep {
            step: VerificationStepKind::PassportScan,
            done: v.scan_approved(),
            done_at: v.scan_reviewed_at.filter(|_| v.scan_approved()),
            label_ru: "Скан паспорта проверен сотрудником",
        },
        VerificationStep {
            step: VerificationStepKind::Phone,
            done: v.phone_confirmed_at.is_some(),
            done_at: v.phone_confirmed_at,
            label_ru: "Телефон подтверждён кодом из SMS",
        },
    ];
    let (status, label_ru) = if v.is_verified() {
        (VerificationStatus::Verified, "Идентификация пройдена")
    } else if steps.iter().any(|s| s.done)
        || v.code_sent_to.is_some()
        || v.scan_review.is_some()
        || v.last_undone.is_some()
    {
        (VerificationStatus::InProgress, "Идентификация в процессе")
    } else {
        (VerificationStatus::NotStarted, "Идентификация не пройдена")
    };
    IdentityVerificationView {
        status,
        label_ru,
        steps,
        verified_at: v.verified_at,
        code_expires_at: v.code_expires_at.filter(|_| v.phone_confirmed_at.is_none()),
        passport_scan_sha256: v.scan_sha256.clone(),
        passport_scan_review: match v.scan_review {
            None => PassportScanReview::None,
            Some(ScanReview::AwaitingReview) => PassportScanReview::AwaitingReview,
            Some(ScanReview::Approved) => PassportScanReview::Approved,
            Some(ScanReview::Rejected) => PassportScanReview::Rejected,
        },
        passport_scan_rejection_reason: v.scan_rejection_reason.clone(),
        last_undone_reason: v.last_undone.as_ref().map(|(step, reason)| {
            let step = match step {
                Step::Snils => "SNILS",
                Step::PassportScan => "passport scan",
                Step::Phone => "phone",
            };
            format!("{step} step undone: {reason}")
        }),
    }
}

async fn load_verification(
    ctx: &Context<'_>,
    patient_id: uuid::Uuid,
) -> async_graphql::Result<IdentityVerificationView> {
    let v = services(ctx)
        .identity
        .status(patient_id)
        .await
        .map_err(|e| internal(ctx, e))?;
    Ok(verification_view(&v))
}

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

/// A passport scan in the reviewers' queue, with the profile data it must match.
#[derive(Debug, Clone, SimpleObject)]
pub struct PassportScanForReview {
    /// Global id of the patient's account.
    pub patient_id: ID,
    /// SHA-256 of the scan: what `reviewPassportScan` decides on.
    pub sha256: String,
    pub size: i64,
    /// `pdf`, `jpeg` or `png`.
    pub format: String,
    pub uploaded_at: DateTime<Utc>,
    /// The path that serves the scan to reviewers (bearer token required).
    pub download_path: String,
    /// The profile the scan must match.
    pub profile: PatientProfile,
}

type ScanQueueConnection = Connection<String, PassportScanForReview, EmptyFields, EmptyFields>;

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

/// The reviewed scan's standing.
#[derive(Debug, Clone, SimpleObject)]
pub struct PassportScanReviewResult {
    pub patient_id: ID,
    pub sha256: String,
    pub review: PassportScanReview,
    pub rejection_reason: Option<String>,
    /// Whether the patient's identity is now verified.
    pub identity_verified: bool,
}

/// Result of `reviewPassportScan`.
#[derive(Debug, SimpleObject)]
pub struct ReviewPassportScanPayload {
    pub result: Option<PassportScanReviewResult>,
    pub user_errors: Vec<UserError>,
}

/// Most entries one `loadSnilsRegistry` call takes.
const MAX_REGISTRY_ENTRIES: usize = 1000;

/// Profile and verification queries.
#[derive(Default)]
pub struct IdentityQuery;

#[Object]
impl IdentityQuery {
    /// The caller's profile (patients).
    async fn my_profile(&self, ctx: &Context<'_>) -> async_graphql::Result<PatientProfile> {
        let actor = actor_in(ctx, &[Role::Patient])?;
        load_profile(ctx, actor.account_id).await
    }

    /// A patient's profile, for registrars and doctors of an organisation the patient
    /// is in the care of (an appointment, a referral, an open document request or an
    /// active prescription there); `null` otherwise. Doctors see the whole profile;
    /// registrars only what booking needs: name, birth date, sex and phone. Every
    /// such read is recorded.
    async fn patient_profile(
        &self,
        ctx: &Context<'_>,
        patient_id: ID,
    ) -> async_graphql::Result<Option<PatientProfile>> {
        let actor = actor_in(ctx, &[Role::Registrar, Role::Doctor])?;
        let Some(patient) = ids::decode_as(&patient_id, "Account") else {
            return Ok(None);
        };
        if !in_care_of_caller(ctx, actor, patient).await? {
            return Ok(None);
        }
        record_medical_read(ctx, patient, "profile", None).await?;
        let profile = load_profile(ctx, patient).await?;
        Ok(Some(match actor.role {
            Role::Doctor => profile,
            _ => PatientProfile {
                snils: None,
                oms_policy: None,
                passport_series: None,
                passport_number: None,
                email: None,
                registration_address: None,
                actual_address: None,
                ..profile
            },
        }))
    }

    /// Passport scans awaiting review, oldest first (registrars and administrators).
    /// Each read of a patient's data here is recorded.
    #[graphql(
        complexity = "super::pagination::connection_complexity(child_complexity, first, None)"
    )]
    async fn passport_scans_awaiting_review(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<ScanQueueConnection> {
        actor_in(ctx, REVIEWERS)?;
        let (first, offset) = forward_page(first, after)?;
        let mut queue = services(ctx)
            .identity
            .scans_awaiting_review(first + 1, offset)
            .await
            .map_err(|e| internal(ctx, e))?;
        let has_next = queue.len() > first;
        queue.truncate(first);
        let mut connection = Connection::new(offset > 0, has_next);
        for (i, scan) in queue.into_iter().enumerate() {
            record_medical_read(ctx, scan.patient_id, "passport_scan_review", None).await?;
            let profile = load_profile(ctx, scan.patient_id).await?;
            let patient_id = ids::encode("Account", scan.patient_id);
            let cursor = kabinet_projections::page::OffsetCursor(offset + i + 1).encode();
            connection.edges.push(Edge::new(
                cursor,
                PassportScanForReview {
                    download_path: format!(
                        "/identity/passport-scans/{}/{}",
                        patient_id.as_str(),
                        scan.sha256
                    ),
                    patient_id,
                    sha256: scan.sha256,
                    size: scan.size as i64,
                    format: scan.format.as_str().to_string(),
                    uploaded_at: scan.uploaded_at,
                    profile,
                },
            ));
        }
        Ok(connection)
    }

    /// The caller's identity verification and its steps (patients).
    async fn my_identity_verification(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<IdentityVerificationView> {
        let actor = actor_in(ctx, &[Role::Patient])?;
        load_verification(ctx, actor.account_id).await
    }
}

/// Profile and verification mutations.
#[derive(Default)]
pub struct IdentityMutation;

fn failed_step(errors: Vec<UserError>) -> IdentityVerificationPayload {
    IdentityVerificationPayload {
        verification: None,
        user_errors: errors,
    }
}

async fn step_result(
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
        let actor = actor_in(ctx, REVIEWERS)?;
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
