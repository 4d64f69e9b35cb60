//! One appointment: booked, moved, cancelled, and the visit with its outcome.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{PATIENT_DOCTOR_DAY_SCOPE, PATIENT_TIME_SCOPE, SLOT_SCOPE};
use crate::directory::schedule_grid::{slot_key, GRID_MINUTES};
use crate::directory::{BoundedText, SlotInfo};
use crate::journal::reservations::{conflict, ReservationOp, ReservationTaken, Reserving};
use crate::user_error::{AsUserError, UserError};

/// Where an appointment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppointmentStatus {
    Booked,
    Arrived,
    Fulfilled,
    NoShow,
    Cancelled,
}

impl AppointmentStatus {
    /// The stable lowercase name stored in read models.
    pub fn as_str(self) -> &'static str {
        match self {
            AppointmentStatus::Booked => "booked",
            AppointmentStatus::Arrived => "arrived",
            AppointmentStatus::Fulfilled => "fulfilled",
            AppointmentStatus::NoShow => "no_show",
            AppointmentStatus::Cancelled => "cancelled",
        }
    }
}

/// Who changed an appointment: the patient, or the clinic (registrar, doctor, schedule).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangedBy {
    Patient,
    Clinic,
}

impl ChangedBy {
    /// The stable lowercase name stored in read models.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangedBy::Patient => "patient",
            ChangedBy::Clinic => "clinic",
        }
    }
}

/// The slot an appointment holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookedSlot {
    pub doctor_id: Uuid,
    pub organisation_id: Uuid,
    pub period_id: Uuid,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub day: NaiveDate,
    pub time_zone: String,
    pub room: String,
    pub change_cutoff_hours: u32,
}

impl From<&SlotInfo> for BookedSlot {
    fn from(s: &SlotInfo) -> Self {
        BookedSlot {
            doctor_id: s.doctor_id,
            organisation_id: s.organisation_id,
            period_id: s.period_id,
            start: s.start,
            end: s.end,
            day: s.day,
            time_zone: s.time_zone.clone(),
            room: s.room.clone(),
            change_cutoff_hours: s.change_cutoff_hours,
        }
    }
}

/// A text that is not an ICD-10 code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not an ICD-10 code such as J06.9 or I10")]
pub struct IcdCodeError(pub String);

/// An ICD-10 (МКБ-10) code such as `J06.9` or `I10`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IcdCode(String);

impl IcdCode {
    /// Parses a code: a Latin letter, two digits, optionally a dot and one or two more.
    pub fn parse(raw: &str) -> Result<IcdCode, IcdCodeError> {
        let code = raw.trim().to_ascii_uppercase();
        let bytes = code.as_bytes();
        let head_ok = bytes.len() >= 3
            && bytes[0].is_ascii_uppercase()
            && bytes[1].is_ascii_digit()
            && bytes[2].is_ascii_digit();
        let tail_ok = match &code.get(3..) {
            Some("") => true,
            Some(tail) => {
                tail.len() >= 2
                    && tail.len() <= 3
                    && tail.starts_with('.')
                    && tail[1..].bytes().all(|b| b.is_ascii_digit())
            }
            None => false,
        };
        if head_ok && tail_ok {
            Ok(IcdCode(code))
        } else {
            Err(IcdCodeError(raw.to_string()))
        }
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What the doctor recorded about a visit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisitOutcome {
    pub diagnosis_code: IcdCode,
    pub diagnosis_text: String,
    pub recommendations: String,
    /// References of e-prescriptions issued at the visit.
    pub prescriptions: Vec<String>,
    /// Specialties or services the patient was referred to.
    pub referrals: Vec<String>,
}

/// Commands on an appointment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppointmentCommand {
    Book {
        patient_id: Uuid,
        slot: SlotInfo,
        service_code: Option<String>,
        patient_age: Option<u32>,
        by: ChangedBy,
        now: DateTime<Utc>,
    },
    Reschedule {
        slot: SlotInfo,
        patient_age: Option<u32>,
        by: ChangedBy,
        now: DateTime<Utc>,
    },
    Cancel {
        reason: Option<String>,
        by: ChangedBy,
        now: DateTime<Utc>,
    },
    MarkArrived {
        now: DateTime<Utc>,
        /// How long before the visit's start arrival may be recorded.
        opens_before: Duration,
    },
    Fulfil {
        diagnosis_code: String,
        diagnosis_text: String,
        recommendations: String,
        prescriptions: Vec<String>,
        referrals: Vec<String>,
        now: DateTime<Utc>,
        /// How long before the visit's start its outcome may be recorded.
        opens_before: Duration,
    },
    MarkNoShow {
        now: DateTime<Utc>,
    },
    Review {
        patient_id: Uuid,
        rating: i32,
        text: Option<String>,
    },
}

/// Events of an appointment. Each names its patient and the status it leaves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppointmentEvent {
    AppointmentBooked {
        patient_id: Uuid,
        slot: BookedSlot,
        service_code: Option<String>,
        by: ChangedBy,
        status: AppointmentStatus,
    },
    AppointmentRescheduled {
        patient_id: Uuid,
        previous_start: DateTime<Utc>,
        slot: BookedSlot,
        by: ChangedBy,
        status: AppointmentStatus,
    },
    AppointmentCancelled {
        patient_id: Uuid,
        reason: Option<String>,
        by: ChangedBy,
        status: AppointmentStatus,
    },
    PatientArrived {
        patient_id: Uuid,
        status: AppointmentStatus,
    },
    VisitFulfilled {
        patient_id: Uuid,
        outcome: VisitOutcome,
        status: AppointmentStatus,
    },
    PatientDidNotCome {
        patient_id: Uuid,
        status: AppointmentStatus,
    },
    ReviewLeft {
        patient_id: Uuid,
        doctor_id: Uuid,
        rating: i32,
        text: Option<String>,
    },
}

impl DomainEvent for AppointmentEvent {
    fn event_type(&self) -> String {
        match self {
            AppointmentEvent::AppointmentBooked { .. } => "AppointmentBooked",
            AppointmentEvent::AppointmentRescheduled { .. } => "AppointmentRescheduled",
            AppointmentEvent::AppointmentCancelled { .. } => "AppointmentCancelled",
            AppointmentEvent::PatientArrived { .. } => "PatientArrived",
            AppointmentEvent::VisitFulfilled { .. } => "VisitFulfilled",
            AppointmentEvent::PatientDidNotCome { .. } => "PatientDidNotCome",
            AppointmentEvent::ReviewLeft { .. } => "ReviewLeft",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

/// Why an appointment command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppointmentError {
    #[error("no such appointment")]
    NotFound,
    #[error("the appointment already exists")]
    AlreadyExists,
    #[error("the slot starts in the past")]
    InThePast,
    #[error("the slot is beyond the booking horizon of {days} days")]
    OutsideBookingHorizon { days: u32 },
    #[error("{0}")]
    NotEligible(String),
    #[error("changes are accepted until {hours} hours before the visit")]
    TooLateToChange { hours: u32 },
    #[error("the appointment is {} and can no longer be {action}", .status.as_str())]
    InvalidState {
        status: AppointmentStatus,
        action: &'static str,
    },
    #[error("the new slot belongs to another doctor; book that doctor instead")]
    SlotOfAnotherDoctor,
    #[error("the appointment already holds this slot")]
    SameSlot,
    #[error("the doctor does not provide service {0} in this slot")]
    ServiceNotOffered(String),
    #[error("a no-show can be recorded only after the visit's start")]
    TooEarly,
    #[error("the visit at {start} is not open yet: arrival and outcome can be recorded from {minutes} minutes before its start")]
    VisitNotOpen { start: String, minutes: i64 },
    #[error("arrival can be recorded only on the visit's day ({day})")]
    VisitDayOver { day: NaiveDate },
    #[error("only the patient of a fulfilled visit may review it, once")]
    CannotReview,
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

impl AsUserError for AppointmentError {
    fn to_user_error(&self) -> UserError {
        let message = self.to_string();
        match self {
            AppointmentError::NotFound => UserError::field("appointmentId", "NOT_FOUND", message),
            AppointmentError::AlreadyExists => UserError::new("ALREADY_EXISTS", message),
            AppointmentError::InThePast => UserError::field("slotId", "IN_THE_PAST", message),
            AppointmentError::OutsideBookingHorizon { .. } => {
                UserError::field("slotId", "OUTSIDE_BOOKING_HORIZON", message)
            }
            AppointmentError::NotEligible(_) => UserError::new("NOT_ELIGIBLE", message),
            AppointmentError::TooLateToChange { .. } => {
                UserError::new("TOO_LATE_TO_CHANGE", message)
            }
            AppointmentError::InvalidState { .. } => UserError::new("INVALID_STATE", message),
            AppointmentError::SlotOfAnotherDoctor => {
                UserError::field("slotId", "SLOT_OF_ANOTHER_DOCTOR", message)
            }
            AppointmentError::SameSlot => UserError::field("slotId", "SAME_SLOT", message),
            AppointmentError::ServiceNotOffered(_) => {
                UserError::field("serviceCode", "SERVICE_NOT_OFFERED", message)
            }
            AppointmentError::TooEarly => UserError::new("TOO_EARLY", message),
            AppointmentError::VisitNotOpen { .. } => {
                UserError::field("appointmentId", "VISIT_NOT_OPEN", message)
            }
            AppointmentError::VisitDayOver { .. } => {
                UserError::field("appointmentId", "VISIT_DAY_OVER", message)
            }
            AppointmentError::CannotReview => UserError::new("CANNOT_REVIEW", message),
            AppointmentError::Invalid { field, message } => {
                UserError::field(field, "INVALID_INPUT", message.clone())
            }
        }
    }
}

/// An appointment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appointment {
    pub patient_id: Option<Uuid>,
    pub slot: Option<BookedSlot>,
    pub status: Option<AppointmentStatus>,
    pub service_code: Option<String>,
    pub outcome: Option<VisitOutcome>,
    pub reviewed: bool,
}

/// The local date of `at` in the zone of `slot` (UTC when the zone is unknown).
fn local_day(slot: &BookedSlot, at: DateTime<Utc>) -> NaiveDate {
    match slot.time_zone.parse::<chrono_tz::Tz>() {
        Ok(zone) => at.with_timezone(&zone).date_naive(),
        Err(_) => at.date_naive(),
    }
}

/// A visit opens for arrival and outcome `opens_before` its start: nobody
/// records a patient as come, or a diagnosis, for a visit still ahead.
fn check_visit_open(
    slot: &BookedSlot,
    now: DateTime<Utc>,
    opens_before: Duration,
) -> Result<(), AppointmentError> {
    if now < slot.start - opens_before {
        let start = match slot.time_zone.parse::<chrono_tz::Tz>() {
            Ok(zone) => slot
                .start
                .with_timezone(&zone)
                .format("%d.%m.%Y %H:%M")
                .to_string(),
            Err(_) => slot.start.format("%d.%m.%Y %H:%M UTC").to_string(),
        };
        return Err(AppointmentError::VisitNotOpen {
            start,
            minutes: opens_before.num_minutes(),
        });
    }
    Ok(())
}

/// Checks that `slot` may be taken by a patient of `age` at `now`.
fn check_slot(
    slot: &SlotInfo,
    age: Option<u32>,
    now: DateTime<Utc>,
) -> Result<(), AppointmentError> {
    if slot.start <= now {
        return Err(AppointmentError::InThePast);
    }
    if slot.start > now + Duration::days(slot.booking_horizon_days as i64) {
        return Err(AppointmentError::OutsideBookingHorizon {
            days: slot.booking_horizon_days,
        });
    }
    if slot.min_age.is_some() || slot.max_age.is_some() {
        let Some(age) = age else {
            return Err(AppointmentError::NotEligible(
                "this schedule admits patients of certain ages: record your birth date in your profile first".into(),
            ));
        };
        let min = slot.min_age.unwrap_or(0);
        let max = slot.max_age.unwrap_or(u32::MAX);
        if age < min || age > max {
            return Err(AppointmentError::NotEligible(format!(
                "this schedule admits patients aged {}{}, the patient is {age}",
                min,
                slot.max_age
                    .map(|m| format!(" to {m}"))
                    .unwrap_or_else(|| " and over".into())
            )));
        }
    }
    Ok(())
}

fn optional_text(
    field: &'static str,
    raw: Option<String>,
    max: usize,
) -> Result<Option<String>, AppointmentError> {
    match raw.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => BoundedText::parse(text, max)
            .map(|t| Some(t.as_str().to_string()))
            .map_err(|e| AppointmentError::Invalid {
                field,
                message: e.to_string(),
            }),
    }
}

fn text_list(field: &'static str, raw: Vec<String>) -> Result<Vec<String>, AppointmentError> {
    if raw.len() > 20 {
        return Err(AppointmentError::Invalid {
            field,
            message: "at most 20 entries".into(),
        });
    }
    raw.iter()
        .map(|r| {
            BoundedText::parse(r, 200)
                .map(|t| t.as_str().to_string())
                .map_err(|e| AppointmentError::Invalid {
                    field,
                    message: e.to_string(),
                })
        })
        .collect()
}

impl Appointment {
    fn current(&self) -> Result<(Uuid, &BookedSlot, AppointmentStatus), AppointmentError> {
        match (self.patient_id, &self.slot, self.status) {
            (Some(p), Some(s), Some(status)) => Ok((p, s, status)),
            _ => Err(AppointmentError::NotFound),
        }
    }

    /// A patient's change must come before the cut-off and before the visit.
    fn check_patient_change(
        slot: &BookedSlot,
        by: ChangedBy,
        now: DateTime<Utc>,
    ) -> Result<(), AppointmentError> {
        if slot.start <= now {
            return Err(AppointmentError::InThePast);
        }
        if by == ChangedBy::Patient
            && now + Duration::hours(slot.change_cutoff_hours as i64) > slot.start
        {
            return Err(AppointmentError::TooLateToChange {
                hours: slot.change_cutoff_hours,
            });
        }
        Ok(())
    }

    fn decide(&self, command: AppointmentCommand) -> Result<AppointmentEvent, AppointmentError> {
        use AppointmentCommand as C;
        use AppointmentEvent as E;
        use AppointmentStatus as S;
        match command {
            C::Book {
                patient_id,
                slot,
                service_code,
                patient_age,
                by,
                now,
            } => {
                if self.status.is_some() {
                    return Err(AppointmentError::AlreadyExists);
                }
                let service_code = service_code
                    .map(|c| {
                        crate::directory::parse_code(&c).map_err(|e| AppointmentError::Invalid {
                            field: "serviceCode",
                            message: e.to_string(),
                        })
                    })
                    .transpose()?;
                if let Some(code) = &service_code {
                    if !slot.service_codes.is_empty() && !slot.service_codes.contains(code) {
                        return Err(AppointmentError::ServiceNotOffered(code.clone()));
                    }
                }
                check_slot(&slot, patient_age, now)?;
                Ok(E::AppointmentBooked {
                    patient_id,
                    slot: BookedSlot::from(&slot),
                    service_code,
                    by,
                    status: S::Booked,
                })
            }
            C::Reschedule {
                slot,
                patient_age,
                by,
                now,
            } => {
                let (patient_id, current, status) = self.current()?;
                if status != S::Booked {
                    return Err(AppointmentError::InvalidState {
                        status,
                        action: "moved",
                    });
                }
                if slot.doctor_id != current.doctor_id {
                    return Err(AppointmentError::SlotOfAnotherDoctor);
                }
                if slot.start == current.start {
                    return Err(AppointmentError::SameSlot);
                }
                Self::check_patient_change(current, by, now)?;
                check_slot(&slot, patient_age, now)?;
                Ok(E::AppointmentRescheduled {
                    patient_id,
                    previous_start: current.start,
                    slot: BookedSlot::from(&slot),
                    by,
                    status: S::Booked,
                })
            }
            C::Cancel { reason, by, now } => {
                let (patient_id, current, status) = self.current()?;
                let cancellable = match by {
                    ChangedBy::Patient => status == S::Booked,
                    ChangedBy::Clinic => matches!(status, S::Booked | S::Arrived),
                };
                if !cancellable {
                    return Err(AppointmentError::InvalidState {
                        status,
                        action: "cancelled",
                    });
                }
                if by == ChangedBy::Patient {
                    Self::check_patient_change(current, by, now)?;
                }
                Ok(E::AppointmentCancelled {
                    patient_id,
                    reason: optional_text("reason", reason, 500)?,
                    by,
                    status: S::Cancelled,
                })
            }
            C::MarkArrived { now, opens_before } => {
                let (patient_id, slot, status) = self.current()?;
                if status != S::Booked {
                    return Err(AppointmentError::InvalidState {
                        status,
                        action: "marked as arrived",
                    });
                }
                check_visit_open(slot, now, opens_before)?;
                if local_day(slot, now) > slot.day {
                    return Err(AppointmentError::VisitDayOver { day: slot.day });
                }
                Ok(E::PatientArrived {
                    patient_id,
                    status: S::Arrived,
                })
            }
            C::Fulfil {
                diagnosis_code,
                diagnosis_text,
                recommendations,
                prescriptions,
                referrals,
                now,
                opens_before,
            } => {
                let (patient_id, slot, status) = self.current()?;
                if !matches!(status, S::Booked | S::Arrived) {
                    return Err(AppointmentError::InvalidState {
                        status,
                        action: "fulfilled",
                    });
                }
                check_visit_open(slot, now, opens_before)?;
                let diagnosis_code =
                    IcdCode::parse(&diagnosis_code).map_err(|e| AppointmentError::Invalid {
                        field: "diagnosisCode",
                        message: e.to_string(),
                    })?;
                let diagnosis_text = BoundedText::parse(&diagnosis_text, 500).map_err(|e| {
                    AppointmentError::Invalid {
                        field: "diagnosisText",
                        message: e.to_string(),
                    }
                })?;
                Ok(E::VisitFulfilled {
                    patient_id,
                    outcome: VisitOutcome {
                        diagnosis_code,
                        diagnosis_text: diagnosis_text.as_str().to_string(),
                        recommendations: optional_text(
                            "recommendations",
                            Some(recommendations),
                            4000,
                        )?
                        .unwrap_or_default(),
                        prescriptions: text_list("prescriptions", prescriptions)?,
                        referrals: text_list("referrals", referrals)?,
                    },
                    status: S::Fulfilled,
                })
            }
            C::MarkNoShow { now } => {
                let (patient_id, slot, status) = self.current()?;
                if status != S::Booked {
                    return Err(AppointmentError::InvalidState {
                        status,
                        action: "marked as a no-show",
                    });
                }
                if now < slot.start {
                    return Err(AppointmentError::TooEarly);
                }
                Ok(E::PatientDidNotCome {
                    patient_id,
                    status: S::NoShow,
                })
            }
            C::Review {
                patient_id,
                rating,
                text,
            } => {
                let (owner, slot, status) = self.current()?;
                if owner != patient_id || status != S::Fulfilled || self.reviewed {
                    return Err(AppointmentError::CannotReview);
                }
                if !(1..=5).contains(&rating) {
                    return Err(AppointmentError::Invalid {
                        field: "rating",
                        message: "must be from 1 to 5".into(),
                    });
                }
                Ok(E::ReviewLeft {
                    patient_id,
                    doctor_id: slot.doctor_id,
                    rating,
                    text: optional_text("text", text, 2000)?,
                })
            }
        }
    }
}

impl Aggregate for Appointment {
    const TYPE: &'static str = "appointment";
    type Command = AppointmentCommand;
    type Event = AppointmentEvent;
    type Error = AppointmentError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &cqrs_es::event_sink::EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = self.decide(command)?;
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        use AppointmentEvent as E;
        match event {
            E::AppointmentBooked {
                patient_id,
                slot,
                service_code,
                status,
                ..
            } => {
                self.patient_id = Some(patient_id);
                self.slot = Some(slot);
                self.service_code = service_code;
                self.status = Some(status);
            }
            E::AppointmentRescheduled { slot, status, .. } => {
                self.slot = Some(slot);
                self.status = Some(status);
            }
            E::AppointmentCancelled { status, .. }
            | E::PatientArrived { status, .. }
            | E::PatientDidNotCome { status, .. } => self.status = Some(status),
            E::VisitFulfilled {
                outcome, status, ..
            } => {
                self.outcome = Some(outcome);
                self.status = Some(status);
            }
            E::ReviewLeft { .. } => self.reviewed = true,
        }
    }
}

/// The reservations a held slot takes: the slot, the patient's time cells, and
/// the patient's day with the doctor.
fn take_slot(owner: &str, patient_id: Uuid, slot: &BookedSlot, ops: &mut Vec<ReservationOp>) {
    ops.push(ReservationOp::Take {
        scope: SLOT_SCOPE,
        key: slot_key(slot.doctor_id, slot.start),
        owner: owner.to_string(),
    });
    ops.push(ReservationOp::Take {
        scope: PATIENT_DOCTOR_DAY_SCOPE,
        key: format!("{patient_id}/{}/{}", slot.doctor_id, slot.day),
        owner: owner.to_string(),
    });
    let mut cell = slot.start.timestamp() / 60 / GRID_MINUTES;
    let end = (slot.end.timestamp() / 60 + GRID_MINUTES - 1) / GRID_MINUTES;
    while cell < end {
        ops.push(ReservationOp::Take {
            scope: PATIENT_TIME_SCOPE,
            key: format!("{patient_id}@{cell}"),
            owner: owner.to_string(),
        });
        cell += 1;
    }
}

impl Reserving for Appointment {
    fn reservations(aggregate_id: &str, events: &[AppointmentEvent]) -> Vec<ReservationOp> {
        let mut ops = Vec::new();
        for event in events {
            match event {
                AppointmentEvent::AppointmentBooked {
                    patient_id, slot, ..
                } => take_slot(aggregate_id, *patient_id, slot, &mut ops),
                AppointmentEvent::AppointmentRescheduled {
                    patient_id, slot, ..
                } => {
                    ops.push(ReservationOp::ReleaseAll {
                        owner: aggregate_id.to_string(),
                    });
                    take_slot(aggregate_id, *patient_id, slot, &mut ops);
                }
                AppointmentEvent::AppointmentCancelled { .. } => {
                    ops.push(ReservationOp::ReleaseAll {
                        owner: aggregate_id.to_string(),
                    })
                }
                _ => {}
            }
        }
        ops
    }

    fn reservation_error(taken: &ReservationTaken) -> UserError {
        match taken.scope.as_str() {
            SLOT_SCOPE => UserError::field(
                "slotId",
                "SLOT_TAKEN",
                "this slot is already taken; choose another",
            ),
            PATIENT_TIME_SCOPE => UserError::field(
                "slotId",
                "OVERLAPPING_BOOKING",
                "the patient already has an appointment at this time",
            ),
            PATIENT_DOCTOR_DAY_SCOPE => UserError::field(
                "slotId",
                "DUPLICATE_BOOKING",
                "the patient already has an appointment with this doctor on this day",
            ),
            _ => conflict(taken),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use cqrs_es::test::TestFramework;

    #[test]
    fn a_held_reservation_becomes_the_appointments_own_user_error() {
        let taken = |scope: &str| ReservationTaken {
            scope: scope.to_string(),
            key: "k".to_string(),
        };
        assert_eq!(
            Appointment::reservation_error(&taken(SLOT_SCOPE)).code,
            "SLOT_TAKEN"
        );
        assert_eq!(
            Appointment::reservation_error(&taken(PATIENT_TIME_SCOPE)).code,
            "OVERLAPPING_BOOKING"
        );
        assert_eq!(
            Appointment::reservation_error(&taken(PATIENT_DOCTOR_DAY_SCOPE)).code,
            "DUPLICATE_BOOKING"
        );
        assert_eq!(
            Appointment::reservation_error(&taken("oms-policy-person")).code,
            "CONFLICT"
        );
    }

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, h, m, 0)
            .single()
            .expect("time")
    }

    fn slot(h: u32) -> SlotInfo {
        SlotInfo {
            doctor_id: Uuid::from_u128(7),
            organisation_id: Uuid::from_u128(9),
            period_id: Uuid::from_u128(1),
            start: at(h, 0),
            end: at(h, 20),
            day: NaiveDate::from_ymd_opt(2026, 11, 23).expect("date"),
            time_zone: "Europe/Moscow".into(),
            room: "214".into(),
            service_codes: vec![],
            booking_horizon_days: 14,
            change_cutoff_hours: 2,
            min_age: Some(18),
            max_age: None,
        }
    }

    fn patient() -> Uuid {
        Uuid::from_u128(42)
    }

    fn book(h: u32, now: DateTime<Utc>, age: Option<u32>) -> AppointmentCommand {
        AppointmentCommand::Book {
            patient_id: patient(),
            slot: slot(h),
            service_code: None,
            patient_age: age,
            by: ChangedBy::Patient,
            now,
        }
    }

    fn booked(h: u32) -> AppointmentEvent {
        AppointmentEvent::AppointmentBooked {
            patient_id: patient(),
            slot: BookedSlot::from(&slot(h)),
            service_code: None,
            by: ChangedBy::Patient,
            status: AppointmentStatus::Booked,
        }
    }

    fn arrive(now: DateTime<Utc>) -> AppointmentCommand {
        AppointmentCommand::MarkArrived {
            now,
            opens_before: Duration::minutes(60),
        }
    }

    fn fulfil(now: DateTime<Utc>) -> AppointmentCommand {
        AppointmentCommand::Fulfil {
            diagnosis_code: "J06.9".into(),
            diagnosis_text: "ОРВИ".into(),
            recommendations: String::new(),
            prescriptions: vec![],
            referrals: vec![],
            now,
            opens_before: Duration::minutes(60),
        }
    }

    #[test]
    fn arrival_is_recorded_from_the_window_before_the_start() {
        TestFramework::<Appointment>::with(())
            .given(vec![booked(9)])
            .when(arrive(at(8, 0)))
            .then_expect_events(vec![AppointmentEvent::PatientArrived {
                patient_id: patient(),
                status: AppointmentStatus::Arrived,
            }]);
    }

    #[test]
    fn arrival_cannot_be_recorded_before_the_visit_opens() {
        TestFramework::<Appointment>::with(())
            .given(vec![booked(9)])
            .when(arrive(at(7, 59)))
            .then_expect_error(AppointmentError::VisitNotOpen {
                start: "23.11.2026 12:00".into(),
                minutes: 60,
            });
    }

    #[test]
    fn arrival_cannot_be_recorded_after_the_visit_day() {
        TestFramework::<Appointment>::with(())
            .given(vec![booked(9)])
            .when(arrive(at(21, 0)))
            .then_expect_error(AppointmentError::VisitDayOver {
                day: NaiveDate::from_ymd_opt(2026, 11, 23).expect("date"),
            });
    }

    #[test]
    fn an_outcome_cannot_be_recorded_for_a_visit_a_day_ahead() {
        TestFramework::<Appointment>::with(())
            .given(vec![booked(9)])
            .when(fulfil(at(9, 0) - Duration::hours(31)))
            .then_expect_error(AppointmentError::VisitNotOpen {
                start: "23.11.2026 12:00".into(),
                minutes: 60,
            });
    }

    #[test]
    fn a_free_slot_in_the_horizon_is_booked() {
        TestFramework::<Appointment>::with(())
            .given_no_previous_events()
            .when(book(9, at(6, 0), Some(30)))
            .then_expect_events(vec![booked(9)]);
    }

    #[test]
    fn cannot_book_in_the_past() {
        TestFramework::<Appointment>::with(())
            .given_no_previous_events()
            .when(book(9, at(9, 0), Some(30)))
            .then_expect_error(AppointmentError::InThePast);
    }

    #[test]
    fn cannot_book_beyond_the_horizon() {
        let now = at(6, 0) - Duration::days(15);
        TestFramework::<Appointment>::with(())
            .given_no_previous_events()
            .when(book(9, now, Some(30)))
            .then_expect_error(AppointmentError::OutsideBookingHorizon { days: 14 });
    }

    #[test]
    fn patients_outside_the_age_range_are_not_eligible() {
        let result = TestFramework::<Appointment>::with(())
            .given_no_previous_events()
            .when(book(9, at(6, 0), Some(12)))
            .inspect_result();
        assert!(matches!(result, Err(AppointmentError::NotEligible(_))));
    }

    #[test]
    fn patients_cannot_change_after_the_cut_off() {
        TestFramework::<Appointment>::with(())
            .given(vec![booked(9)])
            .when(AppointmentCommand::Cancel {
                reason: None,
                by: ChangedBy::Patient,
                now: at(7, 30),
            })
            .then_expect_error(AppointmentError::TooLateToChange { hours: 2 });
    }

    #[test]
    fn the_clinic_may_cancel_after_the_cut_off() {
        TestFramework::<Appointment>::with(())
            .given(vec![booked(9)])
            .when(AppointmentCommand::Cancel {
                reason: Some("больничный".into()),
                by: ChangedBy::Clinic,
                now: at(8, 30),
            })
            .then_expect_events(vec![AppointmentEvent::AppointmentCancelled {
                patient_id: patient(),
                reason: Some("больничный".into()),
                by: ChangedBy::Clinic,
                status: AppointmentStatus::Cancelled,
            }]);
    }

    #[test]
    fn cannot_reschedule_to_another_doctors_slot() {
        let mut other = slot(11);
        other.doctor_id = Uuid::from_u128(8);
        TestFramework::<Appointment>::with(())
            .given(vec![booked(9)])
            .when(AppointmentCommand::Reschedule {
                slot: other,
                patient_age: Some(30),
                by: ChangedBy::Patient,
                now: at(5, 0),
            })
            .then_expect_error(AppointmentError::SlotOfAnotherDoctor);
    }

    #[test]
    fn a_reschedule_releases_the_old_slot_and_takes_the_new_one_in_one_commit() {
        let event = AppointmentEvent::AppointmentRescheduled {
            patient_id: patient(),
            previous_start: at(9, 0),
            slot: BookedSlot::from(&slot(11)),
            by: ChangedBy::Patient,
            status: AppointmentStatus::Booked,
        };
        let ops = Appointment::reservations("a1", &[event]);
        assert_eq!(ops[0], ReservationOp::ReleaseAll { owner: "a1".into() });
        assert!(ops.iter().any(|op| matches!(op, ReservationOp::Take { scope: SLOT_SCOPE, key, .. } if *key == slot_key(Uuid::from_u128(7), at(11, 0)))));
        // A 20-minute slot holds four 5-minute cells of the patient's time.
        let cells = ops
            .iter()
            .filter(|op| {
                matches!(
                    op,
                    ReservationOp::Take {
                        scope: PATIENT_TIME_SCOPE,
                        ..
                    }
                )
            })
            .count();
        assert_eq!(cells, 4);
    }

    #[test]
    fn only_the_patient_reviews_a_fulfilled_visit_once() {
        let fulfilled = AppointmentEvent::VisitFulfilled {
            patient_id: patient(),
            outcome: VisitOutcome {
                diagnosis_code: IcdCode::parse("J06.9").expect("icd"),
                diagnosis_text: "ОРВИ".into(),
                recommendations: String::new(),
                prescriptions: vec![],
                referrals: vec![],
            },
            status: AppointmentStatus::Fulfilled,
        };
        let review = |by: Uuid| AppointmentCommand::Review {
            patient_id: by,
            rating: 5,
            text: None,
        };
        TestFramework::<Appointment>::with(())
            .given(vec![booked(9), fulfilled.clone()])
            .when(review(Uuid::from_u128(43)))
            .then_expect_error(AppointmentError::CannotReview);
        let left = AppointmentEvent::ReviewLeft {
            patient_id: patient(),
            doctor_id: Uuid::from_u128(7),
            rating: 5,
            text: None,
        };
        TestFramework::<Appointment>::with(())
            .given(vec![booked(9), fulfilled, left])
            .when(review(patient()))
            .then_expect_error(AppointmentError::CannotReview);
    }

    #[test]
    fn icd_codes_are_checked() {
        assert!(IcdCode::parse("j06.9").is_ok());
        assert!(IcdCode::parse("I10").is_ok());
        assert!(IcdCode::parse("I1").is_err());
        assert!(IcdCode::parse("I10.").is_err());
        assert!(IcdCode::parse("ЖЖЖ").is_err());
    }
}
