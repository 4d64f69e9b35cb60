//! The prescription aggregate: its states, commands, events and refusals.

use chrono::{DateTime, NaiveDate, Utc};
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::directory::BoundedText;
use crate::journal::reservations::Reserving;
use crate::user_error::{AsUserError, UserError};

/// Longest validity of a prescription, in days.
pub const MAX_VALIDITY_DAYS: i64 = 365;
/// How far ahead of today a validity may start, in days.
pub const MAX_START_AHEAD_DAYS: i64 = 30;
/// Largest quantity (packs) one prescription may name.
const MAX_QUANTITY: u32 = 100;

/// Where a prescription stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrescriptionStatus {
    ReadyToPrint,
    SentToPharmacy,
    ReadyAtPharmacy,
    Dispensed,
    Cancelled,
    Expired,
}

impl PrescriptionStatus {
    /// The stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            PrescriptionStatus::ReadyToPrint => "ready_to_print",
            PrescriptionStatus::SentToPharmacy => "sent_to_pharmacy",
            PrescriptionStatus::ReadyAtPharmacy => "ready_at_pharmacy",
            PrescriptionStatus::Dispensed => "dispensed",
            PrescriptionStatus::Cancelled => "cancelled",
            PrescriptionStatus::Expired => "expired",
        }
    }

    /// The status from its stable name.
    pub fn parse(raw: &str) -> Option<PrescriptionStatus> {
        Some(match raw {
            "ready_to_print" => PrescriptionStatus::ReadyToPrint,
            "sent_to_pharmacy" => PrescriptionStatus::SentToPharmacy,
            "ready_at_pharmacy" => PrescriptionStatus::ReadyAtPharmacy,
            "dispensed" => PrescriptionStatus::Dispensed,
            "cancelled" => PrescriptionStatus::Cancelled,
            "expired" => PrescriptionStatus::Expired,
            _ => return None,
        })
    }

    /// Whether nothing can happen to the prescription any more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            PrescriptionStatus::Dispensed
                | PrescriptionStatus::Cancelled
                | PrescriptionStatus::Expired
        )
    }
}

/// What a patient asked the prescribing doctor for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    /// Send the prescription (again) to a pharmacy.
    Resend,
    /// Cancel the prescription.
    Cancellation,
}

impl RequestKind {
    /// The stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Resend => "resend",
            RequestKind::Cancellation => "cancellation",
        }
    }
}

/// The doctor who prescribed, as printed on the prescription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prescriber {
    pub doctor_id: Uuid,
    pub doctor_name: String,
    pub organisation_id: Uuid,
    pub organisation_name: String,
}

/// A pharmacy of the directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pharmacy {
    pub organisation_id: Uuid,
    pub name: String,
}

/// What is prescribed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Medication {
    /// Name of the medicine (international non-proprietary name or trade name).
    pub name: String,
    /// How to take it, e.g. «по 1 таблетке 2 раза в день».
    pub dosage: String,
    /// Number of packs.
    pub quantity: u32,
}

/// When a prescription may be dispensed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validity {
    /// First day (the prescriber's local date), inclusive.
    pub from: NaiveDate,
    /// Last day, inclusive.
    pub until: NaiveDate,
    /// The instant the prescription expires: the end of `until` in the
    /// prescriber's time zone.
    pub expires_at: DateTime<Utc>,
}

/// Commands on a prescription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrescriptionCommand {
    Issue {
        patient_id: Uuid,
        patient_initials: String,
        prescriber: Prescriber,
        medication: Medication,
        validity: Validity,
        /// The prescriber's local date today.
        today: NaiveDate,
        now: DateTime<Utc>,
    },
    SendToPharmacy {
        patient_id: Uuid,
        pharmacy: Pharmacy,
        now: DateTime<Utc>,
    },
    MarkReady {
        pharmacy_id: Uuid,
    },
    Dispense {
        pharmacy_id: Uuid,
        now: DateTime<Utc>,
    },
    /// The prescribing doctor withdraws the prescription.
    Cancel {
        doctor_id: Uuid,
        reason: String,
    },
    RequestResend {
        patient_id: Uuid,
        pharmacy: Pharmacy,
        reason: Option<String>,
        now: DateTime<Utc>,
    },
    RequestCancellation {
        patient_id: Uuid,
        reason: String,
    },
    DecideRequest {
        doctor_id: Uuid,
        approve: bool,
        comment: Option<String>,
        now: DateTime<Utc>,
    },
    /// Sent by the server's scheduler when the validity has ended.
    Expire {
        now: DateTime<Utc>,
    },
}

/// Events of a prescription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PrescriptionEvent {
    PrescriptionIssued {
        patient_id: Uuid,
        patient_initials: String,
        prescriber: Prescriber,
        medication: Medication,
        validity: Validity,
        issued_at: DateTime<Utc>,
        status: PrescriptionStatus,
    },
    PrescriptionSentToPharmacy {
        patient_id: Uuid,
        pharmacy: Pharmacy,
        status: PrescriptionStatus,
    },
    PrescriptionReadyAtPharmacy {
        patient_id: Uuid,
        pharmacy_id: Uuid,
        status: PrescriptionStatus,
    },
    PrescriptionDispensed {
        patient_id: Uuid,
        pharmacy_id: Uuid,
        status: PrescriptionStatus,
    },
    PrescriptionCancelled {
        patient_id: Uuid,
        reason: String,
        status: PrescriptionStatus,
    },
    PrescriptionExpired {
        patient_id: Uuid,
        status: PrescriptionStatus,
    },
    PrescriptionResendRequested {
        patient_id: Uuid,
        pharmacy: Pharmacy,
        reason: Option<String>,
    },
    PrescriptionCancellationRequested {
        patient_id: Uuid,
        reason: String,
    },
    PrescriptionRequestApproved {
        patient_id: Uuid,
        kind: RequestKind,
        comment: Option<String>,
    },
    PrescriptionRequestDeclined {
        patient_id: Uuid,
        kind: RequestKind,
        comment: Option<String>,
    },
}

impl DomainEvent for PrescriptionEvent {
    fn event_type(&self) -> String {
        match self {
            PrescriptionEvent::PrescriptionIssued { .. } => "PrescriptionIssued",
            PrescriptionEvent::PrescriptionSentToPharmacy { .. } => "PrescriptionSentToPharmacy",
            PrescriptionEvent::PrescriptionReadyAtPharmacy { .. } => "PrescriptionReadyAtPharmacy",
            PrescriptionEvent::PrescriptionDispensed { .. } => "PrescriptionDispensed",
            PrescriptionEvent::PrescriptionCancelled { .. } => "PrescriptionCancelled",
            PrescriptionEvent::PrescriptionExpired { .. } => "PrescriptionExpired",
            PrescriptionEvent::PrescriptionResendRequested { .. } => "PrescriptionResendRequested",
            PrescriptionEvent::PrescriptionCancellationRequested { .. } => {
                "PrescriptionCancellationRequested"
            }
            PrescriptionEvent::PrescriptionRequestApproved { .. } => "PrescriptionRequestApproved",
            PrescriptionEvent::PrescriptionRequestDeclined { .. } => "PrescriptionRequestDeclined",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

/// Why a prescription command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrescriptionError {
    #[error("no such prescription")]
    NotFound,
    #[error("the prescription already exists")]
    AlreadyExists,
    /// The command is not allowed in the prescription's status.
    #[error("cannot {action} a prescription that is {}", status.as_str().replace('_', " "))]
    WrongState {
        action: &'static str,
        status: PrescriptionStatus,
    },
    /// The validity has ended, though the scheduler may not have recorded it yet.
    #[error("the prescription's validity has ended")]
    ValidityEnded,
    #[error("the validity has not ended yet")]
    NotYetDue,
    #[error("a request of the patient is waiting for the doctor's decision")]
    RequestPending,
    #[error("there is no request waiting for a decision")]
    NoPendingRequest,
    #[error("only the prescribing doctor may do this")]
    NotPrescriber,
    #[error("{field}: {message}")]
    InvalidPeriod {
        field: &'static str,
        message: String,
    },
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// Several fields are wrong at once.
    #[error("{} fields are invalid", .0.len())]
    Fields(Vec<PrescriptionError>),
}

impl PrescriptionError {
    /// One error for `errors`: the only one, or all of them together.
    fn all(mut errors: Vec<PrescriptionError>) -> PrescriptionError {
        match (errors.pop(), errors.is_empty()) {
            (Some(only), true) => only,
            (Some(last), false) => {
                errors.push(last);
                PrescriptionError::Fields(errors)
            }
            (None, _) => PrescriptionError::Fields(errors),
        }
    }
}

impl AsUserError for PrescriptionError {
    fn to_user_error(&self) -> UserError {
        let message = self.to_string();
        match self {
            PrescriptionError::NotFound => UserError::field("prescriptionId", "NOT_FOUND", message),
            PrescriptionError::AlreadyExists => UserError::new("ALREADY_EXISTS", message),
            PrescriptionError::WrongState { status, .. } => UserError::new(
                match status {
                    PrescriptionStatus::Cancelled => "PRESCRIPTION_CANCELLED",
                    PrescriptionStatus::Dispensed => "PRESCRIPTION_DISPENSED",
                    PrescriptionStatus::Expired => "PRESCRIPTION_EXPIRED",
                    _ => "INVALID_TRANSITION",
                },
                message,
            ),
            PrescriptionError::ValidityEnded => UserError::new("PRESCRIPTION_EXPIRED", message),
            PrescriptionError::NotYetDue => UserError::new("NOT_YET_DUE", message),
            PrescriptionError::RequestPending => UserError::new("REQUEST_PENDING", message),
            PrescriptionError::NoPendingRequest => UserError::new("NO_PENDING_REQUEST", message),
            PrescriptionError::NotPrescriber => UserError::new("NOT_PRESCRIBER", message),
            PrescriptionError::InvalidPeriod { field, message } => {
                UserError::field(field, "INVALID_PERIOD", message.clone())
            }
            PrescriptionError::Invalid { field, message } => {
                UserError::field(field, "INVALID_INPUT", message.clone())
            }
            PrescriptionError::Fields(errors) => match errors.first() {
                Some(first) => first.to_user_error(),
                None => UserError::new("INVALID_INPUT", message),
            },
        }
    }

    fn to_user_errors(&self) -> Vec<UserError> {
        match self {
            PrescriptionError::Fields(errors) => {
                errors.iter().flat_map(|e| e.to_user_errors()).collect()
            }
            other => vec![other.to_user_error()],
        }
    }
}

/// A prescription.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prescription {
    pub patient_id: Option<Uuid>,
    pub prescriber_id: Option<Uuid>,
    pub status: Option<PrescriptionStatus>,
    /// The pharmacy it was last sent to.
    pub pharmacy_id: Option<Uuid>,
    pub expires_at: Option<DateTime<Utc>>,
    /// The patient's request waiting for the doctor, with the pharmacy of a re-send.
    pub pending: Option<(RequestKind, Option<Pharmacy>, Option<String>)>,
}

fn text(field: &'static str, raw: &str, max: usize) -> Result<String, PrescriptionError> {
    BoundedText::parse(raw, max)
        .map(|t| t.as_str().to_string())
        .map_err(|e| PrescriptionError::Invalid {
            field,
            message: e.to_string(),
        })
}

fn optional_text(
    field: &'static str,
    raw: Option<String>,
    max: usize,
) -> Result<Option<String>, PrescriptionError> {
    match raw.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(t) => text(field, t, max).map(Some),
    }
}

/// The medication as checked, or every field that is wrong.
fn check_medication(m: Medication) -> Result<Medication, Vec<PrescriptionError>> {
    let mut errors = Vec::new();
    let name = text("medication", &m.name, 200).map_err(|e| errors.push(e));
    let dosage = text("dosage", &m.dosage, 500).map_err(|e| errors.push(e));
    if m.quantity == 0 || m.quantity > MAX_QUANTITY {
        errors.push(PrescriptionError::Invalid {
            field: "quantity",
            message: format!("must be between 1 and {MAX_QUANTITY}"),
        });
    }
    match (name, dosage) {
        (Ok(name), Ok(dosage)) if errors.is_empty() => Ok(Medication {
            name,
            dosage,
            quantity: m.quantity,
        }),
        _ => Err(errors),
    }
}

fn check_validity(v: &Validity, today: NaiveDate, now: DateTime<Utc>) -> Vec<PrescriptionError> {
    let period = |field, message: String| PrescriptionError::InvalidPeriod { field, message };
    let mut errors = Vec::new();
    if v.until <= v.from {
        errors.push(period(
            "validUntil",
            "the validity must end after it starts".into(),
        ));
    }
    if v.from < today {
        errors.push(period(
            "validFrom",
            "the validity cannot start in the past".into(),
        ));
    }
    if (v.from - today).num_days() > MAX_START_AHEAD_DAYS {
        errors.push(period(
            "validFrom",
            format!("the validity may start at most {MAX_START_AHEAD_DAYS} days ahead"),
        ));
    }
    if (v.until - v.from).num_days() > MAX_VALIDITY_DAYS {
        errors.push(period(
            "validUntil",
            format!("a prescription is valid for at most {MAX_VALIDITY_DAYS} days"),
        ));
    }
    if v.expires_at <= now {
        errors.push(period(
            "validUntil",
            "the validity has already ended".into(),
        ));
    }
    errors
}

impl Prescription {
    /// The status, refusing commands on a prescription that was never issued.
    fn current(&self) -> Result<(Uuid, PrescriptionStatus), PrescriptionError> {
        match (self.patient_id, self.status) {
            (Some(patient), Some(status)) => Ok((patient, status)),
            _ => Err(PrescriptionError::NotFound),
        }
    }

    fn require(
        status: PrescriptionStatus,
        action: &'static str,
        allowed: &[PrescriptionStatus],
    ) -> Result<(), PrescriptionError> {
        if allowed.contains(&status) {
            Ok(())
        } else {
            Err(PrescriptionError::WrongState { action, status })
        }
    }

    fn still_valid(&self, now: DateTime<Utc>) -> Result<(), PrescriptionError> {
        match self.expires_at {
            Some(end) if now >= end => Err(PrescriptionError::ValidityEnded),
            _ => Ok(()),
        }
    }

    fn decide(
        &self,
        command: PrescriptionCommand,
    ) -> Result<Vec<PrescriptionEvent>, PrescriptionError> {
        use PrescriptionEvent as E;
        use PrescriptionStatus as S;
        const OPEN: [S; 3] = [S::ReadyToPrint, S::SentToPharmacy, S::ReadyAtPharmacy];
        if let PrescriptionCommand::Issue {
            patient_id,
            patient_initials,
            prescriber,
            medication,
            validity,
            today,
            now,
        } = command
        {
            if self.patient_id.is_some() {
                return Err(PrescriptionError::AlreadyExists);
            }
            // Every wrong field is reported at once.
            let mut period_errors = check_validity(&validity, today, now);
            let medication = match check_medication(medication) {
                Ok(m) if period_errors.is_empty() => m,
                Ok(_) => return Err(PrescriptionError::all(period_errors)),
                Err(mut errors) => {
                    errors.append(&mut period_errors);
                    return Err(PrescriptionError::all(errors));
                }
            };
            return Ok(vec![E::PrescriptionIssued {
                patient_id,
                patient_initials,
                prescriber,
                medication,
                validity,
                issued_at: now,
                status: S::ReadyToPrint,
            }]);
        }
        let (patient_id, status) = self.current()?;
        let events = match command {
            PrescriptionCommand::Issue { .. } => return Err(PrescriptionError::AlreadyExists),
            PrescriptionCommand::SendToPharmacy {
                patient_id: asker,
                pharmacy,
                now,
            } => {
                if asker != patient_id {
                    return Err(PrescriptionError::NotFound);
                }
                Self::require(status, "send", &[S::ReadyToPrint])?;
                self.still_valid(now)?;
                vec![E::PrescriptionSentToPharmacy {
                    patient_id,
                    pharmacy,
                    status: S::SentToPharmacy,
                }]
            }
            PrescriptionCommand::MarkReady { pharmacy_id } => {
                if self.pharmacy_id != Some(pharmacy_id) {
                    return Err(PrescriptionError::NotFound);
                }
                Self::require(status, "prepare", &[S::SentToPharmacy])?;
                vec![E::PrescriptionReadyAtPharmacy {
                    patient_id,
                    pharmacy_id,
                    status: S::ReadyAtPharmacy,
                }]
            }
            PrescriptionCommand::Dispense { pharmacy_id, now } => {
                if self.pharmacy_id != Some(pharmacy_id) {
                    return Err(PrescriptionError::NotFound);
                }
                Self::require(status, "dispense", &[S::ReadyAtPharmacy])?;
                self.still_valid(now)?;
                vec![E::PrescriptionDispensed {
                    patient_id,
                    pharmacy_id,
                    status: S::Dispensed,
                }]
            }
            PrescriptionCommand::Cancel { doctor_id, reason } => {
                if self.prescriber_id != Some(doctor_id) {
                    return Err(PrescriptionError::NotPrescriber);
                }
                Self::require(status, "cancel", &OPEN)?;
                vec![E::PrescriptionCancelled {
                    patient_id,
                    reason: text("reason", &reason, 1000)?,
                    status: S::Cancelled,
                }]
            }
            PrescriptionCommand::RequestResend {
                patient_id: asker,
                pharmacy,
                reason,
                now,
            } => {
                if asker != patient_id {
                    return Err(PrescriptionError::NotFound);
                }
                Self::require(
                    status,
                    "ask to re-send",
                    &[S::SentToPharmacy, S::ReadyAtPharmacy],
                )?;
                self.still_valid(now)?;
                if self.pending.is_some() {
                    return Err(PrescriptionError::RequestPending);
                }
                vec![E::PrescriptionResendRequested {
                    patient_id,
                    pharmacy,
                    reason: optional_text("reason", reason, 1000)?,
                }]
            }
            PrescriptionCommand::RequestCancellation {
                patient_id: asker,
                reason,
            } => {
                if asker != patient_id {
                    return Err(PrescriptionError::NotFound);
                }
                Self::require(status, "ask to cancel", &OPEN)?;
                if self.pending.is_some() {
                    return Err(PrescriptionError::RequestPending);
                }
                vec![E::PrescriptionCancellationRequested {
                    patient_id,
                    reason: text("reason", &reason, 1000)?,
                }]
            }
            PrescriptionCommand::DecideRequest {
                doctor_id,
                approve,
                comment,
                now,
            } => {
                if self.prescriber_id != Some(doctor_id) {
                    return Err(PrescriptionError::NotPrescriber);
                }
                let Some((kind, pharmacy, reason)) = self.pending.clone() else {
                    return Err(PrescriptionError::NoPendingRequest);
                };
                let comment = optional_text("comment", comment, 1000)?;
                if !approve {
                    vec![E::PrescriptionRequestDeclined {
                        patient_id,
                        kind,
                        comment,
                    }]
                } else {
                    let then = match (kind, pharmacy) {
                        (RequestKind::Resend, Some(pharmacy)) => {
                            Self::require(
                                status,
                                "re-send",
                                &[S::SentToPharmacy, S::ReadyAtPharmacy],
                            )?;
                            self.still_valid(now)?;
                            E::PrescriptionSentToPharmacy {
                                patient_id,
                                pharmacy,
                                status: S::SentToPharmacy,
                            }
                        }
                        _ => {
                            Self::require(status, "cancel", &OPEN)?;
                            E::PrescriptionCancelled {
                                patient_id,
                                reason: reason.unwrap_or_else(|| "по просьбе пациента".to_string()),
                                status: S::Cancelled,
                            }
                        }
                    };
                    vec![
                        E::PrescriptionRequestApproved {
                            patient_id,
                            kind,
                            comment,
                        },
                        then,
                    ]
                }
            }
            PrescriptionCommand::Expire { now } => {
                Self::require(status, "expire", &OPEN)?;
                if self.still_valid(now).is_ok() {
                    return Err(PrescriptionError::NotYetDue);
                }
                vec![E::PrescriptionExpired {
                    patient_id,
                    status: S::Expired,
                }]
            }
        };
        Ok(events)
    }
}

impl Aggregate for Prescription {
    const TYPE: &'static str = "prescription";
    type Command = PrescriptionCommand;
    type Event = PrescriptionEvent;
    type Error = PrescriptionError;
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
        use PrescriptionEvent as E;
        match event {
            E::PrescriptionIssued {
                patient_id,
                prescriber,
                validity,
                status,
                ..
            } => {
                self.patient_id = Some(patient_id);
                self.prescriber_id = Some(prescriber.doctor_id);
                self.expires_at = Some(validity.expires_at);
                self.status = Some(status);
            }
            E::PrescriptionSentToPharmacy {
                pharmacy, status, ..
            } => {
                self.pharmacy_id = Some(pharmacy.organisation_id);
                self.status = Some(status);
            }
            E::PrescriptionReadyAtPharmacy { status, .. } => self.status = Some(status),
            E::PrescriptionDispensed { status, .. }
            | E::PrescriptionCancelled { status, .. }
            | E::PrescriptionExpired { status, .. } => {
                // A final state closes any request still waiting.
                self.status = Some(status);
                self.pending = None;
            }
            E::PrescriptionResendRequested {
                pharmacy, reason, ..
            } => self.pending = Some((RequestKind::Resend, Some(pharmacy), reason)),
            E::PrescriptionCancellationRequested { reason, .. } => {
                self.pending = Some((RequestKind::Cancellation, None, Some(reason)))
            }
            E::PrescriptionRequestApproved { .. } | E::PrescriptionRequestDeclined { .. } => {
                self.pending = None
            }
        }
    }
}

impl Reserving for Prescription {}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;
    use PrescriptionCommand as C;
    use PrescriptionEvent as E;
    use PrescriptionStatus as S;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("instant").to_utc()
    }
    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date")
    }
    fn now() -> DateTime<Utc> {
        at("2026-12-01T09:00:00Z")
    }
    fn patient() -> Uuid {
        Uuid::from_u128(1)
    }
    fn doctor() -> Uuid {
        Uuid::from_u128(2)
    }
    fn pharmacy() -> Pharmacy {
        Pharmacy {
            organisation_id: Uuid::from_u128(3),
            name: "Аптека №1".into(),
        }
    }
    fn other_pharmacy() -> Pharmacy {
        Pharmacy {
            organisation_id: Uuid::from_u128(4),
            name: "Аптека №2".into(),
        }
    }
    fn prescriber() -> Prescriber {
        Prescriber {
            doctor_id: doctor(),
            doctor_name: "Иванова Анна Сергеевна".into(),
            organisation_id: Uuid::from_u128(5),
            organisation_name: "Поликлиника №3".into(),
        }
    }
    fn medication() -> Medication {
        Medication {
            name: "Амоксициллин 500 мг".into(),
            dosage: "по 1 капсуле 3 раза в день".into(),
            quantity: 2,
        }
    }
    fn validity() -> Validity {
        Validity {
            from: day("2026-12-01"),
            until: day("2026-12-30"),
            expires_at: at("2026-12-30T21:00:00Z"),
        }
    }
    fn issue() -> C {
        issue_with(medication(), validity())
    }
    fn issue_with(medication: Medication, validity: Validity) -> C {
        C::Issue {
            patient_id: patient(),
            patient_initials: "И. М. П.".into(),
            prescriber: prescriber(),
            medication,
            validity,
            today: day("2026-12-01"),
            now: now(),
        }
    }
    fn issued() -> E {
        E::PrescriptionIssued {
            patient_id: patient(),
            patient_initials: "И. М. П.".into(),
            prescriber: prescriber(),
            medication: medication(),
            validity: validity(),
            issued_at: now(),
            status: S::ReadyToPrint,
        }
    }
    fn sent() -> E {
        E::PrescriptionSentToPharmacy {
            patient_id: patient(),
            pharmacy: pharmacy(),
            status: S::SentToPharmacy,
        }
    }
    fn ready() -> E {
        E::PrescriptionReadyAtPharmacy {
            patient_id: patient(),
            pharmacy_id: pharmacy().organisation_id,
            status: S::ReadyAtPharmacy,
        }
    }
    fn cancelled() -> E {
        E::PrescriptionCancelled {
            patient_id: patient(),
            reason: "ошибка".into(),
            status: S::Cancelled,
        }
    }
    fn dispensed() -> E {
        E::PrescriptionDispensed {
            patient_id: patient(),
            pharmacy_id: pharmacy().organisation_id,
            status: S::Dispensed,
        }
    }
    fn expired() -> E {
        E::PrescriptionExpired {
            patient_id: patient(),
            status: S::Expired,
        }
    }
    fn send() -> C {
        C::SendToPharmacy {
            patient_id: patient(),
            pharmacy: pharmacy(),
            now: now(),
        }
    }
    fn dispense() -> C {
        C::Dispense {
            pharmacy_id: pharmacy().organisation_id,
            now: now(),
        }
    }
    fn given(events: Vec<E>) -> cqrs_es::test::AggregateTestExecutor<Prescription> {
        TestFramework::<Prescription>::with(()).given(events)
    }

    #[test]
    fn issuing_makes_a_prescription_ready_to_print() {
        TestFramework::<Prescription>::with(())
            .given_no_previous_events()
            .when(issue())
            .then_expect_events(vec![issued()]);
    }

    #[test]
    fn cannot_issue_twice() {
        given(vec![issued()])
            .when(issue())
            .then_expect_error(PrescriptionError::AlreadyExists);
    }

    #[test]
    fn a_validity_ending_before_it_starts_is_refused() {
        let bad = issue_with(
            medication(),
            Validity {
                from: day("2026-12-10"),
                until: day("2026-12-09"),
                expires_at: at("2026-12-09T21:00:00Z"),
            },
        );
        let result = TestFramework::<Prescription>::with(())
            .given_no_previous_events()
            .when(bad)
            .inspect_result();
        assert!(matches!(
            result,
            Err(PrescriptionError::InvalidPeriod {
                field: "validUntil",
                ..
            })
        ));
    }

    #[test]
    fn validities_are_bounded() {
        for (from, until, field) in [
            ("2026-11-30", "2026-12-05", "validFrom"),
            ("2027-01-05", "2027-01-10", "validFrom"),
            ("2026-12-01", "2027-12-02", "validUntil"),
        ] {
            let bad = issue_with(
                medication(),
                Validity {
                    from: day(from),
                    until: day(until),
                    expires_at: at("2027-12-30T21:00:00Z"),
                },
            );
            let result = TestFramework::<Prescription>::with(())
                .given_no_previous_events()
                .when(bad)
                .inspect_result();
            match result {
                Err(PrescriptionError::InvalidPeriod { field: f, .. }) => {
                    assert_eq!(f, field, "{from}..{until}")
                }
                other => panic!("{from}..{until}: {other:?}"),
            }
        }
    }

    #[test]
    fn every_wrong_field_of_an_issue_is_reported_at_once() {
        let bad = issue_with(
            Medication {
                name: " ".into(),
                dosage: "по 1 капсуле".into(),
                quantity: 0,
            },
            Validity {
                from: day("2026-11-30"),
                until: day("2026-11-29"),
                expires_at: at("2026-11-29T21:00:00Z"),
            },
        );
        let error = TestFramework::<Prescription>::with(())
            .given_no_previous_events()
            .when(bad)
            .inspect_result()
            .expect_err("refused");
        let fields: Vec<_> = error
            .to_user_errors()
            .into_iter()
            .map(|e| e.field.expect("field")[1].clone())
            .collect();
        assert_eq!(
            fields,
            [
                "medication",
                "quantity",
                "validUntil",
                "validFrom",
                "validUntil"
            ]
        );
    }

    #[test]
    fn medication_fields_are_checked() {
        let bad = issue_with(
            Medication {
                quantity: 0,
                ..medication()
            },
            validity(),
        );
        let result = TestFramework::<Prescription>::with(())
            .given_no_previous_events()
            .when(bad)
            .inspect_result();
        assert!(matches!(
            result,
            Err(PrescriptionError::Invalid {
                field: "quantity",
                ..
            })
        ));
        let bad = issue_with(
            Medication {
                name: " ".into(),
                ..medication()
            },
            validity(),
        );
        let result = TestFramework::<Prescription>::with(())
            .given_no_previous_events()
            .when(bad)
            .inspect_result();
        assert!(matches!(
            result,
            Err(PrescriptionError::Invalid {
                field: "medication",
                ..
            })
        ));
    }

    #[test]
    fn the_patient_sends_it_to_a_pharmacy() {
        given(vec![issued()])
            .when(send())
            .then_expect_events(vec![sent()]);
    }

    #[test]
    fn another_patient_cannot_send_it() {
        given(vec![issued()])
            .when(C::SendToPharmacy {
                patient_id: Uuid::from_u128(99),
                pharmacy: pharmacy(),
                now: now(),
            })
            .then_expect_error(PrescriptionError::NotFound);
    }

    #[test]
    fn cannot_send_twice_without_the_doctor() {
        given(vec![issued(), sent()])
            .when(send())
            .then_expect_error(PrescriptionError::WrongState {
                action: "send",
                status: S::SentToPharmacy,
            });
    }

    #[test]
    fn the_pharmacy_marks_it_ready() {
        given(vec![issued(), sent()])
            .when(C::MarkReady {
                pharmacy_id: pharmacy().organisation_id,
            })
            .then_expect_events(vec![ready()]);
    }

    #[test]
    fn another_pharmacy_cannot_mark_it_ready() {
        given(vec![issued(), sent()])
            .when(C::MarkReady {
                pharmacy_id: other_pharmacy().organisation_id,
            })
            .then_expect_error(PrescriptionError::NotFound);
    }

    #[test]
    fn cannot_mark_ready_before_it_was_sent() {
        given(vec![issued()])
            .when(C::MarkReady {
                pharmacy_id: pharmacy().organisation_id,
            })
            .then_expect_error(PrescriptionError::NotFound);
    }

    #[test]
    fn the_pharmacy_dispenses_it_when_ready() {
        given(vec![issued(), sent(), ready()])
            .when(dispense())
            .then_expect_events(vec![dispensed()]);
    }

    #[test]
    fn cannot_dispense_before_it_is_ready() {
        given(vec![issued(), sent()])
            .when(dispense())
            .then_expect_error(PrescriptionError::WrongState {
                action: "dispense",
                status: S::SentToPharmacy,
            });
    }

    #[test]
    fn cannot_dispense_a_cancelled_prescription() {
        let error = PrescriptionError::WrongState {
            action: "dispense",
            status: S::Cancelled,
        };
        assert_eq!(error.to_user_error().code, "PRESCRIPTION_CANCELLED");
        given(vec![issued(), sent(), ready(), cancelled()])
            .when(dispense())
            .then_expect_error(error);
    }

    #[test]
    fn cannot_dispense_twice() {
        given(vec![issued(), sent(), ready(), dispensed()])
            .when(dispense())
            .then_expect_error(PrescriptionError::WrongState {
                action: "dispense",
                status: S::Dispensed,
            });
    }

    #[test]
    fn cannot_dispense_after_the_validity_ended_even_before_the_scheduler_ran() {
        given(vec![issued(), sent(), ready()])
            .when(C::Dispense {
                pharmacy_id: pharmacy().organisation_id,
                now: at("2026-12-30T21:00:00Z"),
            })
            .then_expect_error(PrescriptionError::ValidityEnded);
    }

    #[test]
    fn the_prescriber_cancels_it() {
        given(vec![issued()])
            .when(C::Cancel {
                doctor_id: doctor(),
                reason: "ошибка".into(),
            })
            .then_expect_events(vec![cancelled()]);
    }

    #[test]
    fn only_the_prescriber_cancels() {
        given(vec![issued()])
            .when(C::Cancel {
                doctor_id: Uuid::from_u128(77),
                reason: "ошибка".into(),
            })
            .then_expect_error(PrescriptionError::NotPrescriber);
    }

    #[test]
    fn cannot_cancel_a_dispensed_prescription() {
        given(vec![issued(), sent(), ready(), dispensed()])
            .when(C::Cancel {
                doctor_id: doctor(),
                reason: "ошибка".into(),
            })
            .then_expect_error(PrescriptionError::WrongState {
                action: "cancel",
                status: S::Dispensed,
            });
    }

    #[test]
    fn the_scheduler_expires_it_once_the_validity_ended() {
        given(vec![issued(), sent()])
            .when(C::Expire {
                now: at("2026-12-30T21:00:00Z"),
            })
            .then_expect_events(vec![expired()]);
    }

    #[test]
    fn expiry_before_the_end_is_refused() {
        given(vec![issued()])
            .when(C::Expire {
                now: at("2026-12-30T20:59:59Z"),
            })
            .then_expect_error(PrescriptionError::NotYetDue);
    }

    #[test]
    fn a_second_expiry_is_refused() {
        given(vec![issued(), expired()])
            .when(C::Expire {
                now: at("2026-12-31T00:00:00Z"),
            })
            .then_expect_error(PrescriptionError::WrongState {
                action: "expire",
                status: S::Expired,
            });
    }

    #[test]
    fn a_dispensed_prescription_does_not_expire() {
        given(vec![issued(), sent(), ready(), dispensed()])
            .when(C::Expire {
                now: at("2026-12-31T00:00:00Z"),
            })
            .then_expect_error(PrescriptionError::WrongState {
                action: "expire",
                status: S::Dispensed,
            });
    }

    fn resend_requested() -> E {
        E::PrescriptionResendRequested {
            patient_id: patient(),
            pharmacy: other_pharmacy(),
            reason: Some("нет в наличии".into()),
        }
    }

    fn cancellation_requested() -> E {
        E::PrescriptionCancellationRequested {
            patient_id: patient(),
            reason: "передумал".into(),
        }
    }

    #[test]
    fn the_patient_asks_for_a_resend() {
        given(vec![issued(), sent()])
            .when(C::RequestResend {
                patient_id: patient(),
                pharmacy: other_pharmacy(),
                reason: Some(" нет в наличии ".into()),
                now: now(),
            })
            .then_expect_events(vec![resend_requested()]);
    }

    #[test]
    fn a_resend_needs_an_earlier_send() {
        given(vec![issued()])
            .when(C::RequestResend {
                patient_id: patient(),
                pharmacy: other_pharmacy(),
                reason: None,
                now: now(),
            })
            .then_expect_error(PrescriptionError::WrongState {
                action: "ask to re-send",
                status: S::ReadyToPrint,
            });
    }

    #[test]
    fn one_request_at_a_time() {
        given(vec![issued(), sent(), resend_requested()])
            .when(C::RequestCancellation {
                patient_id: patient(),
                reason: "передумал".into(),
            })
            .then_expect_error(PrescriptionError::RequestPending);
    }

    #[test]
    fn an_approved_resend_sends_it_to_the_new_pharmacy() {
        given(vec![issued(), sent(), resend_requested()])
            .when(C::DecideRequest {
                doctor_id: doctor(),
                approve: true,
                comment: None,
                now: now(),
            })
            .then_expect_events(vec![
                E::PrescriptionRequestApproved {
                    patient_id: patient(),
                    kind: RequestKind::Resend,
                    comment: None,
                },
                E::PrescriptionSentToPharmacy {
                    patient_id: patient(),
                    pharmacy: other_pharmacy(),
                    status: S::SentToPharmacy,
                },
            ]);
    }

    #[test]
    fn an_approved_cancellation_cancels() {
        given(vec![issued(), cancellation_requested()])
            .when(C::DecideRequest {
                doctor_id: doctor(),
                approve: true,
                comment: Some("хорошо".into()),
                now: now(),
            })
            .then_expect_events(vec![
                E::PrescriptionRequestApproved {
                    patient_id: patient(),
                    kind: RequestKind::Cancellation,
                    comment: Some("хорошо".into()),
                },
                E::PrescriptionCancelled {
                    patient_id: patient(),
                    reason: "передумал".into(),
                    status: S::Cancelled,
                },
            ]);
    }

    #[test]
    fn a_declined_request_changes_nothing_else() {
        given(vec![issued(), cancellation_requested()])
            .when(C::DecideRequest {
                doctor_id: doctor(),
                approve: false,
                comment: Some("нужен для лечения".into()),
                now: now(),
            })
            .then_expect_events(vec![E::PrescriptionRequestDeclined {
                patient_id: patient(),
                kind: RequestKind::Cancellation,
                comment: Some("нужен для лечения".into()),
            }]);
    }

    #[test]
    fn only_the_prescriber_decides() {
        given(vec![issued(), cancellation_requested()])
            .when(C::DecideRequest {
                doctor_id: Uuid::from_u128(77),
                approve: true,
                comment: None,
                now: now(),
            })
            .then_expect_error(PrescriptionError::NotPrescriber);
    }

    #[test]
    fn nothing_to_decide_without_a_request() {
        given(vec![issued()])
            .when(C::DecideRequest {
                doctor_id: doctor(),
                approve: true,
                comment: None,
                now: now(),
            })
            .then_expect_error(PrescriptionError::NoPendingRequest);
    }

    #[test]
    fn a_final_state_closes_a_waiting_request() {
        given(vec![
            issued(),
            sent(),
            ready(),
            resend_requested(),
            dispensed(),
        ])
        .when(C::DecideRequest {
            doctor_id: doctor(),
            approve: true,
            comment: None,
            now: now(),
        })
        .then_expect_error(PrescriptionError::NoPendingRequest);
    }

    #[test]
    fn commands_on_an_unknown_prescription_are_not_found() {
        TestFramework::<Prescription>::with(())
            .given_no_previous_events()
            .when(dispense())
            .then_expect_error(PrescriptionError::NotFound);
    }

    #[test]
    fn statuses_have_stable_names() {
        for s in [
            S::ReadyToPrint,
            S::SentToPharmacy,
            S::ReadyAtPharmacy,
            S::Dispensed,
            S::Cancelled,
            S::Expired,
        ] {
            assert_eq!(S::parse(s.as_str()), Some(s));
        }
    }
}
