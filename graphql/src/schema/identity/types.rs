//! Patient profiles and identity verification as the API shows them.

use crate::schema::appointments::Sex;
use crate::schema::links::DownloadLink;
use async_graphql::connection::{Connection, EmptyFields};
use async_graphql::{Enum, SimpleObject, ID};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

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
    /// The sex in Russian, for display.
    pub sex_label_ru: Option<&'static str>,
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
    /// The step in Russian, e.g. "СНИЛС сверен с реестром".
    pub step_label_ru: &'static str,
}

/// A patient's identity verification.
#[derive(Debug, Clone, SimpleObject)]
pub struct IdentityVerificationView {
    pub status: VerificationStatus,
    /// The status in Russian, e.g. "Идентификация пройдена".
    pub status_label_ru: &'static str,
    pub steps: Vec<VerificationStep>,
    pub verified_at: Option<DateTime<Utc>>,
    /// When the last SMS code sent stops working (until the phone is confirmed).
    pub code_expires_at: Option<DateTime<Utc>>,
    /// SHA-256 of the latest passport scan.
    pub passport_scan_sha256: Option<String>,
    /// Where the latest passport scan stands with its reviewer.
    pub passport_scan_review: PassportScanReview,
    /// The review of the passport scan in Russian, for display.
    pub passport_scan_review_label_ru: &'static str,
    /// Why the reviewer refused the latest scan.
    pub passport_scan_rejection_reason: Option<String>,
    /// Why a step was last undone (its profile data changed), if one was.
    pub last_undone_reason: Option<String>,
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
    /// Where reviewers download the scan (bearer token required; it does not expire).
    pub download: DownloadLink,
    /// The profile the scan must match.
    pub profile: PatientProfile,
}

pub(super) type ScanQueueConnection =
    Connection<String, PassportScanForReview, EmptyFields, EmptyFields>;

/// The reviewed scan's standing.
#[derive(Debug, Clone, SimpleObject)]
pub struct PassportScanReviewResult {
    pub patient_id: ID,
    pub sha256: String,
    pub review: PassportScanReview,
    /// The review in Russian, for display.
    pub review_label_ru: &'static str,
    pub rejection_reason: Option<String>,
    /// Whether the patient's identity is now verified.
    pub identity_verified: bool,
}
