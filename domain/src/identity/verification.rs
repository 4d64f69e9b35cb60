//! Identity verification (A3): three steps in any order — SNILS matched against the
//! registry, a passport scan uploaded, the profile's phone confirmed by an SMS code —
//! and, once all three are done, `IdentityVerified` ("Идентификация пройдена").
//!
//! The aggregate is pure: the registry answer, the scan's digest and the code check
//! come in with the commands (see [`super::service::IdentityService`]). The stream id is
//! the patient's account id. Biometric verification is out of scope.

use chrono::{DateTime, Utc};
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use super::values::{PhoneNumber, Snils};
use crate::journal::reservations::{ReservationOp, Reserving};
use crate::user_error::{AsUserError, UserError};

/// Stream type of identity verifications.
pub const AGGREGATE_TYPE: &str = "identity_verification";

/// The two scan formats accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScanFormat {
    Pdf,
    Jpeg,
}

impl ScanFormat {
    /// The stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            ScanFormat::Pdf => "pdf",
            ScanFormat::Jpeg => "jpeg",
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

/// Commands of a verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerificationCommand {
    /// Records the registry's answer for `snils`.
    MatchSnils {
        snils: Snils,
        answer: RegistryAnswer,
        now: DateTime<Utc>,
    },
    /// Records a passport scan that was checked and stored encrypted.
    RecordPassportScan {
        sha256: String,
        size: u64,
        format: ScanFormat,
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
        now: DateTime<Utc>,
    },
}

/// Events of a verification. None holds the scan or the code itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VerificationEvent {
    SnilsMatched {
        snils: Snils,
        at: DateTime<Utc>,
    },
    PassportScanUploaded {
        sha256: String,
        size: u64,
        format: ScanFormat,
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
    IdentityVerified {
        snils: Snils,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for VerificationEvent {
    fn event_type(&self) -> String {
        match self {
            VerificationEvent::SnilsMatched { .. } => "SnilsMatched",
            VerificationEvent::PassportScanUploaded { .. } => "PassportScanUploaded",
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
}

impl AsUserError for VerificationError {
    fn to_user_error(&self) -> UserError {
        match self {
            VerificationError::AlreadyVerified => {
                UserError::new("IDENTITY_ALREADY_VERIFIED", self.to_string())
            }
            VerificationError::SnilsNotMatched => {
                UserError::field("snils", "SNILS_NOT_MATCHED", self.to_string())
            }
            VerificationError::NoCodeSent => {
                UserError::field("code", "CODE_NOT_SENT", self.to_string())
            }
        }
    }
}

/// Where a patient's identity verification stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityVerification {
    pub snils_matched_at: Option<DateTime<Utc>>,
    pub matched_snils: Option<Snils>,
    pub scan_uploaded_at: Option<DateTime<Utc>>,
    pub scan_sha256: Option<String>,
    pub scan_size: Option<u64>,
    pub scan_format: Option<ScanFormat>,
    pub code_sent_to: Option<PhoneNumber>,
    pub code_expires_at: Option<DateTime<Utc>>,
    pub phone_confirmed_at: Option<DateTime<Utc>>,
    pub confirmed_phone: Option<PhoneNumber>,
    pub verified_at: Option<DateTime<Utc>>,
}

impl IdentityVerification {
    /// Whether the status is "identification complete".
    pub fn is_verified(&self) -> bool {
        self.verified_at.is_some()
    }

    fn steps_done(&self) -> bool {
        self.snils_matched_at.is_some()
            && self.scan_uploaded_at.is_some()
            && self.phone_confirmed_at.is_some()
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
        if self.is_verified() {
            return Err(VerificationError::AlreadyVerified);
        }
        let (event, now) = match command {
            VerificationCommand::MatchSnils { snils, answer, now } => {
                if answer != RegistryAnswer::Matches {
                    return Err(VerificationError::SnilsNotMatched);
                }
                (VerificationEvent::SnilsMatched { snils, at: now }, now)
            }
            VerificationCommand::RecordPassportScan {
                sha256,
                size,
                format,
                now,
            } => (
                VerificationEvent::PassportScanUploaded {
                    sha256,
                    size,
                    format,
                    at: now,
                },
                now,
            ),
            VerificationCommand::RecordPhoneCodeSent { phone, expires_at } => {
                sink.write(VerificationEvent::PhoneCodeSent { phone, expires_at }, self)
                    .await;
                return Ok(());
            }
            VerificationCommand::ConfirmPhone { phone, now } => {
                if self.code_sent_to.as_ref() != Some(&phone) {
                    return Err(VerificationError::NoCodeSent);
                }
                (VerificationEvent::PhoneConfirmed { phone, at: now }, now)
            }
        };
        sink.write(event, self).await;
        if let (true, Some(snils)) = (self.steps_done(), self.matched_snils.clone()) {
            sink.write(VerificationEvent::IdentityVerified { snils, at: now }, self)
                .await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            VerificationEvent::SnilsMatched { snils, at } => {
                self.matched_snils = Some(snils);
                self.snils_matched_at = Some(at);
            }
            VerificationEvent::PassportScanUploaded {
                sha256,
                size,
                format,
                at,
            } => {
                self.scan_sha256 = Some(sha256);
                self.scan_size = Some(size);
                self.scan_format = Some(format);
                self.scan_uploaded_at = Some(at);
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

    fn scan() -> VerificationEvent {
        VerificationEvent::PassportScanUploaded {
            sha256: "ab".repeat(32),
            size: 1000,
            format: ScanFormat::Pdf,
            at: now(),
        }
    }

    #[test]
    fn the_last_step_in_any_order_completes_the_verification() {
        Framework::with(())
            .given(vec![
                scan(),
                VerificationEvent::PhoneCodeSent {
                    phone: phone(),
                    expires_at: now(),
                },
                VerificationEvent::PhoneConfirmed {
                    phone: phone(),
                    at: now(),
                },
            ])
            .when(VerificationCommand::MatchSnils {
                snils: snils(),
                answer: RegistryAnswer::Matches,
                now: now(),
            })
            .then_expect_events(vec![
                VerificationEvent::SnilsMatched {
                    snils: snils(),
                    at: now(),
                },
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
            .when(VerificationCommand::MatchSnils {
                snils: snils(),
                answer: RegistryAnswer::Matches,
                now: now(),
            })
            .then_expect_events(vec![VerificationEvent::SnilsMatched {
                snils: snils(),
                at: now(),
            }]);
    }

    #[test]
    fn a_registry_mismatch_is_refused() {
        Framework::with(())
            .given_no_previous_events()
            .when(VerificationCommand::MatchSnils {
                snils: snils(),
                answer: RegistryAnswer::DoesNotMatch,
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
                now: now(),
            })
            .then_expect_error(VerificationError::AlreadyVerified);
    }
}
