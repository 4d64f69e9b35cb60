//! Identity verification (A3): three steps in any order — SNILS matched against the
//! registry, a passport scan approved by a reviewer, the profile's phone confirmed by
//! an SMS code — and, once all three are done, `IdentityVerified` ("Идентификация
//! пройдена").
//!
//! Each step remembers what it relied on (a keyed fingerprint of the profile data it
//! checked, see [`ProfileBases`]). Every command carries the profile as it is now, so
//! a step whose data changed since is undone (`StepUndone`) before anything else, and
//! the identity is never verified with data no step checked.
//!
//! The aggregate is pure: the registry answer, the scan's digest, the code check and
//! the fingerprints come in with the commands (see `IdentityDesk` in `kabinet-app`).
//! The stream id is the patient's account id. Biometric verification is out of scope.

use chrono::{DateTime, Utc};
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::values::{PhoneNumber, Snils};
use crate::directory::BoundedText;
use crate::journal::reservations::{conflict, ReservationOp, ReservationTaken, Reserving};
use crate::user_error::{AsUserError, UserError};

/// Stream type of identity verifications.
pub const AGGREGATE_TYPE: &str = "identity_verification";

/// Longest reason a reviewer may give for refusing a scan.
pub const MAX_REJECTION_REASON: usize = 500;

/// The scan formats accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScanFormat {
    Pdf,
    Jpeg,
    Png,
}

impl ScanFormat {
    /// The stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            ScanFormat::Pdf => "pdf",
            ScanFormat::Jpeg => "jpeg",
            ScanFormat::Png => "png",
        }
    }

    /// The format from its stable name.
    pub fn parse(raw: &str) -> Option<ScanFormat> {
        Some(match raw {
            "pdf" => ScanFormat::Pdf,
            "jpeg" => ScanFormat::Jpeg,
            "png" => ScanFormat::Png,
            _ => return None,
        })
    }

    /// The media type of the format.
    pub fn media_type(self) -> &'static str {
        match self {
            ScanFormat::Pdf => "application/pdf",
            ScanFormat::Jpeg => "image/jpeg",
            ScanFormat::Png => "image/png",
        }
    }
}

/// What the registry said about the profile's SNILS and name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryAnswer {
    /// The SNILS is in the registry with the same name and birth date.
    Matches,
    /// Not in the registry, or with other personal data (not told apart on purpose).
    DoesNotMatch,
}

/// A step of the verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Snils,
    PassportScan,
    Phone,
}

/// Where the latest passport scan stands with its reviewer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScanReview {
    AwaitingReview,
    Approved,
    Rejected,
}

/// The profile as it is now, reduced to what the steps rely on: keyed fingerprints
/// of the SNILS with the name and birth date, of the passport with the name and birth
/// date, and the phone. `None` where the profile lacks the data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileBases {
    pub snils: Option<String>,
    pub passport: Option<String>,
    pub phone: Option<PhoneNumber>,
}

/// A reviewer's decision on a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanDecision {
    /// The scan is a passport matching the profile.
    Approve,
    /// It is not; the reason is shown to the patient.
    Reject { reason: String },
}

/// Commands of a verification. Each that can complete it carries the profile's
/// current [`ProfileBases`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerificationCommand {
    /// Records the registry's answer for `snils`.
    MatchSnils {
        snils: Snils,
        answer: RegistryAnswer,
        bases: ProfileBases,
        now: DateTime<Utc>,
    },
    /// Records a passport scan that was checked and stored encrypted; it awaits review.
    RecordPassportScan {
        sha256: String,
        size: u64,
        format: ScanFormat,
        bases: ProfileBases,
        now: DateTime<Utc>,
    },
    /// A reviewer's decision on the scan awaiting review.
    ReviewPassportScan {
        sha256: String,
        decision: ScanDecision,
        reviewer: Uuid,
        bases: ProfileBases,
        now: DateTime<Utc>,
    },
    /// Records that a code went to `phone`.
    RecordPhoneCodeSent {
        phone: PhoneNumber,
        expires_at: DateTime<Utc>,
    },
    /// Records that the code sent to `phone` was entered correctly.
    ConfirmPhone {
        phone: PhoneNumber,
        bases: ProfileBases,
        now: DateTime<Utc>,
    },
    /// The profile changed: undo the steps whose data is no longer the profile's.
    Revise {
        bases: ProfileBases,
        now: DateTime<Utc>,
    },
}

/// Events of a verification. None holds the scan or the code itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VerificationEvent {
    SnilsMatched {
        snils: Snils,
        at: DateTime<Utc>,
        /// Fingerprint of the SNILS, name and birth date matched (absent in early events).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        basis: Option<String>,
    },
    /// A scan was stored; it awaits a reviewer.
    PassportScanUploaded {
        sha256: String,
        size: u64,
        format: ScanFormat,
        at: DateTime<Utc>,
        /// Fingerprint of the passport, name and birth date the scan goes with.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        basis: Option<String>,
    },
    PassportScanApproved {
        sha256: String,
        reviewer_id: Uuid,
        at: DateTime<Utc>,
    },
    /// `note` is the reviewer's reason, shown to the patient; it may name personal
    /// data, and exports without personal data drop fields so named.
    PassportScanRejected {
        sha256: String,
        reviewer_id: Uuid,
        note: String,
        at: DateTime<Utc>,
    },
    /// A step was undone because the profile data it relied on changed.
    StepUndone {
        step: Step,
        reason: String,
        at: DateTime<Utc>,
    },
    PhoneCodeSent {
        phone: PhoneNumber,
        expires_at: DateTime<Utc>,
    },
    PhoneConfirmed {
        phone: PhoneNumber,
        at: DateTime<Utc>,
    },
    /// All steps are done; `snils` is the one matched, now bound to this account.
    IdentityVerified { snils: Snils, at: DateTime<Utc> },
}

impl DomainEvent for VerificationEvent {
    fn event_type(&self) -> String {
        match self {
            VerificationEvent::SnilsMatched { .. } => "SnilsMatched",
            VerificationEvent::PassportScanUploaded { .. } => "PassportScanUploaded",
            VerificationEvent::PassportScanApproved { .. } => "PassportScanApproved",
            VerificationEvent::PassportScanRejected { .. } => "PassportScanRejected",
            VerificationEvent::StepUndone { .. } => "VerificationStepUndone",
            VerificationEvent::PhoneCodeSent { .. } => "PhoneCodeSent",
            VerificationEvent::PhoneConfirmed { .. } => "PhoneConfirmed",
            VerificationEvent::IdentityVerified { .. } => "IdentityVerified",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

/// Why a verification step was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerificationError {
    #[error("identity is already verified")]
    AlreadyVerified,
    #[error("the SNILS and personal data of the profile do not match the registry")]
    SnilsNotMatched,
    #[error("no code was sent to this phone; ask for a code first")]
    NoCodeSent,
    #[error("the profile's phone changed after the code was sent; ask for a new code")]
    PhoneChanged,
    #[error("this scan is not awaiting review (replaced, already decided, or never uploaded)")]
    ScanNotAwaitingReview,
    #[error("the patient's name, birth date or passport changed after the scan was uploaded; the scan no longer counts")]
    ScanOutdated,
    #[error("a reason is required to reject a scan: {0}")]
    BadReason(String),
}

impl AsUserError for VerificationError {
    fn to_user_error(&self) -> UserError {
        let message = self.to_string();
        match self {
            VerificationError::AlreadyVerified => {
                UserError::new("IDENTITY_ALREADY_VERIFIED", message)
            }
            VerificationError::SnilsNotMatched => {
                UserError::field("snils", "SNILS_NOT_MATCHED", message)
            }
            VerificationError::NoCodeSent => UserError::field("code", "CODE_NOT_SENT", message),
            VerificationError::PhoneChanged => UserError::field("code", "PHONE_CHANGED", message),
            VerificationError::ScanNotAwaitingReview => {
                UserError::field("sha256", "SCAN_NOT_AWAITING_REVIEW", message)
            }
            VerificationError::ScanOutdated => UserError::field("sha256", "SCAN_OUTDATED", message),
            VerificationError::BadReason(_) => {
                UserError::field("reason", "REASON_REQUIRED", message)
            }
        }
    }
}

/// Where a patient's identity verification stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityVerification {
    pub snils_matched_at: Option<DateTime<Utc>>,
    pub matched_snils: Option<Snils>,
    pub snils_basis: Option<String>,
    pub scan_uploaded_at: Option<DateTime<Utc>>,
    pub scan_sha256: Option<String>,
    pub scan_size: Option<u64>,
    pub scan_format: Option<ScanFormat>,
    pub scan_basis: Option<String>,
    pub scan_review: Option<ScanReview>,
    pub scan_reviewed_at: Option<DateTime<Utc>>,
    pub scan_rejection_reason: Option<String>,
    pub code_sent_to: Option<PhoneNumber>,
    pub code_expires_at: Option<DateTime<Utc>>,
    pub phone_confirmed_at: Option<DateTime<Utc>>,
    pub confirmed_phone: Option<PhoneNumber>,
    /// Why a step was last undone, for the patient.
    pub last_undone: Option<(Step, String)>,
    pub verified_at: Option<DateTime<Utc>>,
}

/// Whether a step's recorded basis still holds: a step recorded without one (before
/// fingerprints existed) is taken as it was.
fn holds(recorded: &Option<String>, current: &Option<String>) -> bool {
    recorded.is_none() || recorded == current
}

impl IdentityVerification {
    /// Whether the status is "identification complete".
    pub fn is_verified(&self) -> bool {
        self.verified_at.is_some()
    }

    /// Whether the scan step is done: a reviewer approved the latest scan.
    pub fn scan_approved(&self) -> bool {
        self.scan_review == Some(ScanReview::Approved)
    }

    fn steps_done(&self) -> bool {
        self.snils_matched_at.is_some() && self.scan_approved() && self.phone_confirmed_at.is_some()
    }

    /// The `StepUndone` events for the steps whose data the profile no longer holds.
    fn stale_steps(&self, bases: &ProfileBases, now: DateTime<Utc>) -> Vec<VerificationEvent> {
        let mut undone = Vec::new();
        let mut undo = |step, reason: &str| {
            undone.push(VerificationEvent::StepUndone {
                step,
                reason: reason.to_string(),
                at: now,
            })
        };
        if self.snils_matched_at.is_some() && !holds(&self.snils_basis, &bases.snils) {
            undo(
                Step::Snils,
                "the SNILS, name or birth date in the profile changed after the registry check",
            );
        }
        if matches!(
            self.scan_review,
            Some(ScanReview::AwaitingReview | ScanReview::Approved)
        ) && !holds(&self.scan_basis, &bases.passport)
        {
            undo(
                Step::PassportScan,
                "the passport, name or birth date in the profile changed after the scan was uploaded",
            );
        }
        if let Some(confirmed) = &self.confirmed_phone {
            if self.phone_confirmed_at.is_some() && bases.phone.as_ref() != Some(confirmed) {
                undo(
                    Step::Phone,
                    "the phone in the profile changed after it was confirmed",
                );
            }
        }
        undone
    }

    /// What `command` writes, decided on a copy so a refusal writes nothing.
    fn decide(
        &self,
        command: VerificationCommand,
    ) -> Result<Vec<VerificationEvent>, VerificationError> {
        if self.is_verified() {
            return match command {
                // A verified profile is locked; nothing to revise.
                VerificationCommand::Revise { .. } => Ok(vec![]),
                _ => Err(VerificationError::AlreadyVerified),
            };
        }
        let mut state = self.clone();
        let mut events = Vec::new();
        let mut push = |state: &mut IdentityVerification, event: VerificationEvent| {
            state.apply(event.clone());
            events.push(event);
        };
        let bases = match &command {
            VerificationCommand::MatchSnils { bases, .. }
            | VerificationCommand::RecordPassportScan { bases, .. }
            | VerificationCommand::ReviewPassportScan { bases, .. }
            | VerificationCommand::ConfirmPhone { bases, .. }
            | VerificationCommand::Revise { bases, .. } => Some(bases.clone()),
            VerificationCommand::RecordPhoneCodeSent { .. } => None,
        };
        let now = match &command {
            VerificationCommand::MatchSnils { now, .. }
            | VerificationCommand::RecordPassportScan { now, .. }
            | VerificationCommand::ReviewPassportScan { now, .. }
            | VerificationCommand::ConfirmPhone { now, .. }
            | VerificationCommand::Revise { now, .. } => Some(*now),
            VerificationCommand::RecordPhoneCodeSent { .. } => None,
        };
        let mut scan_undone = false;
        if let (Some(bases), Some(now)) = (&bases, now) {
            for event in self.stale_steps(bases, now) {
                scan_undone |= matches!(
                    event,
                    VerificationEvent::StepUndone {
                        step: Step::PassportScan,
                        ..
                    }
                );
                push(&mut state, event);
            }
        }
        match command {
            VerificationCommand::MatchSnils {
                snils,
                answer,
                bases,
                now,
            } => {
                if answer != RegistryAnswer::Matches {
                    return Err(VerificationError::SnilsNotMatched);
                }
                let unchanged = state.snils_matched_at.is_some()
                    && state.matched_snils.as_ref() == Some(&snils)
                    && state.snils_basis == bases.snils;
                // Matching the same data again changes nothing and writes nothing.
                if !unchanged {
                    let event = VerificationEvent::SnilsMatched {
                        snils,
                        at: now,
                        basis: bases.snils.clone(),
                    };
                    push(&mut state, event);
                }
            }
            VerificationCommand::RecordPassportScan {
                sha256,
                size,
                format,
                bases,
                now,
            } => push(
                &mut state,
                VerificationEvent::PassportScanUploaded {
                    sha256,
                    size,
                    format,
                    at: now,
                    basis: bases.passport.clone(),
                },
            ),
            VerificationCommand::ReviewPassportScan {
                sha256,
                decision,
                reviewer,
                now,
                ..
            } => {
                if scan_undone && self.scan_sha256.as_deref() == Some(sha256.as_str()) {
                    return Err(VerificationError::ScanOutdated);
                }
                if state.scan_sha256.as_deref() != Some(sha256.as_str())
                    || state.scan_review != Some(ScanReview::AwaitingReview)
                {
                    return Err(VerificationError::ScanNotAwaitingReview);
                }
                let event = match decision {
                    ScanDecision::Approve => VerificationEvent::PassportScanApproved {
                        sha256,
                        reviewer_id: reviewer,
                        at: now,
                    },
                    ScanDecision::Reject { reason } => {
                        let reason = BoundedText::parse(&reason, MAX_REJECTION_REASON)
                            .map_err(|e| VerificationError::BadReason(e.to_string()))?;
                        VerificationEvent::PassportScanRejected {
                            sha256,
                            reviewer_id: reviewer,
                            note: reason.as_str().to_string(),
                            at: now,
                        }
                    }
                };
                push(&mut state, event);
            }
            VerificationCommand::RecordPhoneCodeSent { phone, expires_at } => {
                push(
                    &mut state,
                    VerificationEvent::PhoneCodeSent { phone, expires_at },
                );
                return Ok(events);
            }
            VerificationCommand::ConfirmPhone { phone, bases, now } => {
                if state.code_sent_to.as_ref() != Some(&phone) {
                    return Err(VerificationError::NoCodeSent);
                }
                if bases.phone.as_ref() != Some(&phone) {
                    return Err(VerificationError::PhoneChanged);
                }
                push(
                    &mut state,
                    VerificationEvent::PhoneConfirmed { phone, at: now },
                );
            }
            VerificationCommand::Revise { .. } => {}
        }
        if let (true, Some(snils), Some(now)) =
            (state.steps_done(), state.matched_snils.clone(), now)
        {
            push(
                &mut state,
                VerificationEvent::IdentityVerified { snils, at: now },
            );
        }
        Ok(events)
    }
}

impl Aggregate for IdentityVerification {
    const TYPE: &'static str = AGGREGATE_TYPE;
    type Command = VerificationCommand;
    type Event = VerificationEvent;
    type Error = VerificationError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &cqrs_es::event_sink::EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            VerificationEvent::SnilsMatched { snils, at, basis } => {
                self.matched_snils = Some(snils);
                self.snils_matched_at = Some(at);
                self.snils_basis = basis;
            }
            VerificationEvent::PassportScanUploaded {
                sha256,
                size,
                format,
                at,
                basis,
            } => {
                self.scan_sha256 = Some(sha256);
                self.scan_size = Some(size);
                self.scan_format = Some(format);
                self.scan_uploaded_at = Some(at);
                self.scan_basis = basis;
                self.scan_review = Some(ScanReview::AwaitingReview);
                self.scan_reviewed_at = None;
                self.scan_rejection_reason = None;
            }
            VerificationEvent::PassportScanApproved { at, .. } => {
                self.scan_review = Some(ScanReview::Approved);
                self.scan_reviewed_at = Some(at);
            }
            VerificationEvent::PassportScanRejected { note, at, .. } => {
                self.scan_review = Some(ScanReview::Rejected);
                self.scan_reviewed_at = Some(at);
                self.scan_rejection_reason = Some(note);
            }
            VerificationEvent::StepUndone { step, reason, .. } => {
                match step {
                    Step::Snils => {
                        self.snils_matched_at = None;
                        self.matched_snils = None;
                        self.snils_basis = None;
                    }
                    Step::PassportScan => {
                        self.scan_sha256 = None;
                        self.scan_size = None;
                        self.scan_format = None;
                        self.scan_uploaded_at = None;
                        self.scan_basis = None;
                        self.scan_review = None;
                        self.scan_reviewed_at = None;
                        self.scan_rejection_reason = None;
                    }
                    Step::Phone => {
                        self.phone_confirmed_at = None;
                        self.confirmed_phone = None;
                    }
                }
                self.last_undone = Some((step, reason));
            }
            VerificationEvent::PhoneCodeSent { phone, expires_at } => {
                self.code_sent_to = Some(phone);
                self.code_expires_at = Some(expires_at);
            }
            VerificationEvent::PhoneConfirmed { phone, at } => {
                self.confirmed_phone = Some(phone);
                self.phone_confirmed_at = Some(at);
            }
            VerificationEvent::IdentityVerified { at, .. } => self.verified_at = Some(at),
        }
    }
}
/// Reservation scope: a SNILS belongs to at most one verified account.
pub const VERIFIED_SNILS_SCOPE: &str = "verified_snils";

impl Reserving for IdentityVerification {
    fn reservations(aggregate_id: &str, events: &[Self::Event]) -> Vec<ReservationOp> {
        events
            .iter()
            .filter_map(|e| match e {
                VerificationEvent::IdentityVerified { snils, .. } => Some(ReservationOp::Take {
                    scope: VERIFIED_SNILS_SCOPE,
                    key: snils.digits(),
                    owner: aggregate_id.to_string(),
                }),
                _ => None,
            })
            .collect()
    }

    fn reservation_error(taken: &ReservationTaken) -> UserError {
        match taken.scope.as_str() {
            VERIFIED_SNILS_SCOPE => UserError::field(
                "snils",
                "SNILS_ALREADY_VERIFIED",
                "this SNILS belongs to another verified account; contact support",
            ),
            _ => conflict(taken),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    type Framework = TestFramework<IdentityVerification>;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-20T10:00:00Z")
            .expect("time")
            .with_timezone(&Utc)
    }

    fn snils() -> Snils {
        Snils::parse("112-233-445 95").expect("snils")
    }

    fn phone() -> PhoneNumber {
        PhoneNumber::parse("+79123456789").expect("phone")
    }

    fn reviewer() -> Uuid {
        Uuid::from_u128(7)
    }

    fn bases() -> ProfileBases {
        ProfileBases {
            snils: Some("person-a".into()),
            passport: Some("passport-a".into()),
            phone: Some(phone()),
        }
    }

    fn matched() -> VerificationEvent {
        VerificationEvent::SnilsMatched {
            snils: snils(),
            at: now(),
            basis: bases().snils,
        }
    }

    fn scan() -> VerificationEvent {
        VerificationEvent::PassportScanUploaded {
            sha256: "ab".repeat(32),
            size: 1000,
            format: ScanFormat::Pdf,
            at: now(),
            basis: bases().passport,
        }
    }

    fn approved() -> VerificationEvent {
        VerificationEvent::PassportScanApproved {
            sha256: "ab".repeat(32),
            reviewer_id: reviewer(),
            at: now(),
        }
    }

    fn phone_done() -> Vec<VerificationEvent> {
        vec![
            VerificationEvent::PhoneCodeSent {
                phone: phone(),
                expires_at: now(),
            },
            VerificationEvent::PhoneConfirmed {
                phone: phone(),
                at: now(),
            },
        ]
    }

    fn match_snils(bases: ProfileBases) -> VerificationCommand {
        VerificationCommand::MatchSnils {
            snils: snils(),
            answer: RegistryAnswer::Matches,
            bases,
            now: now(),
        }
    }

    #[test]
    fn the_last_step_in_any_order_completes_the_verification() {
        let mut given = vec![scan(), approved()];
        given.extend(phone_done());
        Framework::with(())
            .given(given)
            .when(match_snils(bases()))
            .then_expect_events(vec![
                matched(),
                VerificationEvent::IdentityVerified {
                    snils: snils(),
                    at: now(),
                },
            ]);
    }

    #[test]
    fn one_step_alone_does_not_verify() {
        Framework::with(())
            .given_no_previous_events()
            .when(match_snils(bases()))
            .then_expect_events(vec![matched()]);
    }

    #[test]
    fn matching_the_same_data_again_writes_nothing() {
        Framework::with(())
            .given(vec![matched()])
            .when(match_snils(bases()))
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_scan_awaiting_review_does_not_complete_the_verification() {
        let mut given = vec![matched()];
        given.extend(phone_done());
        Framework::with(())
            .given(given)
            .when(VerificationCommand::RecordPassportScan {
                sha256: "ab".repeat(32),
                size: 1000,
                format: ScanFormat::Pdf,
                bases: bases(),
                now: now(),
            })
            .then_expect_events(vec![scan()]);
    }

    #[test]
    fn a_reviewers_approval_completes_the_verification() {
        let mut given = vec![matched(), scan()];
        given.extend(phone_done());
        Framework::with(())
            .given(given)
            .when(VerificationCommand::ReviewPassportScan {
                sha256: "ab".repeat(32),
                decision: ScanDecision::Approve,
                reviewer: reviewer(),
                bases: bases(),
                now: now(),
            })
            .then_expect_events(vec![
                approved(),
                VerificationEvent::IdentityVerified {
                    snils: snils(),
                    at: now(),
                },
            ]);
    }

    #[test]
    fn a_rejection_needs_a_reason() {
        Framework::with(())
            .given(vec![scan()])
            .when(VerificationCommand::ReviewPassportScan {
                sha256: "ab".repeat(32),
                decision: ScanDecision::Reject {
                    reason: "  ".into(),
                },
                reviewer: reviewer(),
                bases: bases(),
                now: now(),
            })
            .then_expect_error(VerificationError::BadReason("must not be empty".into()));
    }

    #[test]
    fn only_the_scan_awaiting_review_can_be_decided() {
        Framework::with(())
            .given(vec![scan(), approved()])
            .when(VerificationCommand::ReviewPassportScan {
                sha256: "ab".repeat(32),
                decision: ScanDecision::Approve,
                reviewer: reviewer(),
                bases: bases(),
                now: now(),
            })
            .then_expect_error(VerificationError::ScanNotAwaitingReview);
    }

    #[test]
    fn a_changed_name_or_snils_undoes_the_registry_match() {
        let changed = ProfileBases {
            snils: Some("person-b".into()),
            ..bases()
        };
        Framework::with(())
            .given(vec![matched()])
            .when(VerificationCommand::Revise {
                bases: changed,
                now: now(),
            })
            .then_expect_events(vec![VerificationEvent::StepUndone {
                step: Step::Snils,
                reason:
                    "the SNILS, name or birth date in the profile changed after the registry check"
                        .into(),
                at: now(),
            }]);
    }

    #[test]
    fn stale_steps_are_undone_before_a_step_can_complete_the_verification() {
        // The SNILS step matched other data than the profile now holds.
        let changed = ProfileBases {
            snils: Some("person-b".into()),
            ..bases()
        };
        let mut given = vec![matched(), scan()];
        given.extend(phone_done());
        Framework::with(())
            .given(given)
            .when(VerificationCommand::ReviewPassportScan {
                sha256: "ab".repeat(32),
                decision: ScanDecision::Approve,
                reviewer: reviewer(),
                bases: changed,
                now: now(),
            })
            .then_expect_events(vec![
                VerificationEvent::StepUndone {
                    step: Step::Snils,
                    reason: "the SNILS, name or birth date in the profile changed after the registry check".into(),
                    at: now(),
                },
                approved(),
            ]);
    }

    #[test]
    fn a_scan_of_another_passport_cannot_be_approved() {
        let changed = ProfileBases {
            passport: Some("passport-b".into()),
            ..bases()
        };
        Framework::with(())
            .given(vec![scan()])
            .when(VerificationCommand::ReviewPassportScan {
                sha256: "ab".repeat(32),
                decision: ScanDecision::Approve,
                reviewer: reviewer(),
                bases: changed,
                now: now(),
            })
            .then_expect_error(VerificationError::ScanOutdated);
    }

    #[test]
    fn a_code_sent_to_an_old_phone_does_not_confirm_the_new_one() {
        let changed = ProfileBases {
            phone: Some(PhoneNumber::parse("+79990001122").expect("phone")),
            ..bases()
        };
        Framework::with(())
            .given(vec![VerificationEvent::PhoneCodeSent {
                phone: phone(),
                expires_at: now(),
            }])
            .when(VerificationCommand::ConfirmPhone {
                phone: phone(),
                bases: changed,
                now: now(),
            })
            .then_expect_error(VerificationError::PhoneChanged);
    }

    #[test]
    fn a_registry_mismatch_is_refused() {
        Framework::with(())
            .given_no_previous_events()
            .when(VerificationCommand::MatchSnils {
                snils: snils(),
                answer: RegistryAnswer::DoesNotMatch,
                bases: bases(),
                now: now(),
            })
            .then_expect_error(VerificationError::SnilsNotMatched);
    }

    #[test]
    fn a_phone_without_a_code_sent_cannot_be_confirmed() {
        Framework::with(())
            .given_no_previous_events()
            .when(VerificationCommand::ConfirmPhone {
                phone: phone(),
                bases: bases(),
                now: now(),
            })
            .then_expect_error(VerificationError::NoCodeSent);
    }

    #[test]
    fn a_verified_identity_takes_no_more_steps() {
        Framework::with(())
            .given(vec![VerificationEvent::IdentityVerified {
                snils: snils(),
                at: now(),
            }])
            .when(VerificationCommand::RecordPassportScan {
                sha256: "cd".repeat(32),
                size: 10,
                format: ScanFormat::Jpeg,
                bases: bases(),
                now: now(),
            })
            .then_expect_error(VerificationError::AlreadyVerified);
    }
}
