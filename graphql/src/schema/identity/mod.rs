//! The profile (A2) and identity verification (A3): `myProfile`, `updateMyProfile`,
//! staff's `patientProfile`, `myIdentityVerification` with its three steps, the
//! reviewers' queue of passport scans (`passportScansAwaitingReview`,
//! `reviewPassportScan`), and the administrators' `loadSnilsRegistry`.
//!
//! Profile and verification are read from their own streams (a handful of events per
//! patient), so they are never stale and no read-model copy of passport data exists.

mod mutations;
mod queries;
mod types;

pub use mutations::*;
pub use queries::*;
pub use types::*;

use super::appointments::Sex;
use super::context::{internal, services};
use super::ids;
use crate::schema::labels::LabelRu;
use async_graphql::Context;
use kabinet_domain::identity::verification::{IdentityVerification, ScanReview, Step};
use kabinet_domain::patients::Patient;
use kabinet_domain::Role;

/// Roles that review passport scans (here and at the scan download route).
pub const REVIEWERS: &[Role] = &[Role::Registrar, Role::Admin];

fn profile_of(patient_id: uuid::Uuid, p: &Patient) -> PatientProfile {
    let basic = p.profile.as_ref();
    let d = &p.details;
    let sex = basic.map(|b| match b.sex {
        kabinet_domain::patients::Sex::Female => Sex::Female,
        kabinet_domain::patients::Sex::Male => Sex::Male,
    });
    PatientProfile {
        patient_id: ids::encode("Account", patient_id),
        surname: basic.map(|b| b.surname.clone()),
        first_name: basic.map(|b| b.first_name.clone()),
        patronymic: basic.and_then(|b| b.patronymic.clone()),
        birth_date: basic.map(|b| b.birth_date),
        sex,
        sex_label_ru: sex.map(LabelRu::label_ru),
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

fn verification_view(v: &IdentityVerification) -> IdentityVerificationView {
    let steps = vec![
        VerificationStep {
            step: VerificationStepKind::Snils,
            done: v.snils_matched_at.is_some(),
            done_at: v.snils_matched_at,
            step_label_ru: VerificationStepKind::Snils.label_ru(),
        },
        VerificationStep {
            step: VerificationStepKind::PassportScan,
            done: v.scan_approved(),
            done_at: v.scan_reviewed_at.filter(|_| v.scan_approved()),
            step_label_ru: VerificationStepKind::PassportScan.label_ru(),
        },
        VerificationStep {
            step: VerificationStepKind::Phone,
            done: v.phone_confirmed_at.is_some(),
            done_at: v.phone_confirmed_at,
            step_label_ru: VerificationStepKind::Phone.label_ru(),
        },
    ];
    let status = if v.is_verified() {
        VerificationStatus::Verified
    } else if steps.iter().any(|s| s.done)
        || v.code_sent_to.is_some()
        || v.scan_review.is_some()
        || v.last_undone.is_some()
    {
        VerificationStatus::InProgress
    } else {
        VerificationStatus::NotStarted
    };
    let passport_scan_review = match v.scan_review {
        None => PassportScanReview::None,
        Some(ScanReview::AwaitingReview) => PassportScanReview::AwaitingReview,
        Some(ScanReview::Approved) => PassportScanReview::Approved,
        Some(ScanReview::Rejected) => PassportScanReview::Rejected,
    };
    IdentityVerificationView {
        status,
        status_label_ru: status.label_ru(),
        steps,
        verified_at: v.verified_at,
        code_expires_at: v.code_expires_at.filter(|_| v.phone_confirmed_at.is_none()),
        passport_scan_sha256: v.scan_sha256.clone(),
        passport_scan_review,
        passport_scan_review_label_ru: passport_scan_review.label_ru(),
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
