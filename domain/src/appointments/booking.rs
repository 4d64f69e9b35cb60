//! Bookings: the use case around appointments that reads
//! other aggregates (the doctor's schedule, the patient's age) before deciding.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::{Appointment, AppointmentCommand, AppointmentError, ChangedBy, SLOT_SCOPE};
use crate::clock::Clock;
use crate::command::{CommandError, CommandFault, CommandOutcome, CommandRunner, Retry};
use crate::directory::schedule_grid::{closed_period_owner, slot_key};
use crate::directory::{Schedule, ScheduleCommand, SlotInfo};
use crate::journal::reservations::{ReservationTaken, Reserving};
use crate::journal::JournalOrder;
use crate::metadata::EventMetadata;
use crate::patients::Patient;
use crate::user_error::{AsUserError, UserError};

/// Why a booking action failed.
#[derive(Debug, thiserror::Error)]
pub enum BookingError {
    /// A business error for the caller.
    #[error("{}", .0.message)]
    User(UserError),
    /// A fault of the store; logged and masked.
    #[error("internal error: {0}")]
    Internal(#[from] CommandFault),
}

/// What closing a period did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosePeriodReport {
    pub outcome: CommandOutcome,
    /// Appointments cancelled on the clinic's side.
    pub cancelled: Vec<Uuid>,
    /// The last event written, the close or a cancellation, for read-your-writes.
    pub last_order: Option<JournalOrder>,
}

/// What a booking asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookingRequest {
    pub patient_id: Uuid,
    pub doctor_id: Uuid,
    /// Start of the wanted slot.
    pub start: DateTime<Utc>,
    pub service_code: Option<String>,
    pub by: ChangedBy,
}

/// Books, moves and cancels appointments.
#[derive(Clone)]
pub struct Bookings {
    commands: CommandRunner,
    clock: Arc<dyn Clock>,
}

/// Sorts the failure of a command on aggregate `A` into a user error or a fault.
fn user_error<A>(e: CommandError<A::Error>) -> BookingError
where
    A: Reserving,
    A::Error: AsUserError,
{
    match e {
        CommandError::Rejected(e) => BookingError::User(e.to_user_error()),
        CommandError::Conflict => BookingError::User(UserError::new("CONFLICT", e.to_string())),
        CommandError::IdempotencyKeyReused => BookingError::User(UserError::field(
            "idempotencyKey",
            "IDEMPOTENCY_KEY_REUSED",
            e.to_string(),
        )),
        CommandError::Reserved(taken) => BookingError::User(A::reservation_error(&taken)),
        CommandError::Internal(e) => BookingError::Internal(e),
    }
}

impl Bookings {
    /// Bookings over `commands`, reading time from `clock`.
    pub fn new(commands: CommandRunner, clock: Arc<dyn Clock>) -> Self {
        Bookings { commands, clock }
    }

    /// The current state of an appointment.
    pub async fn appointment(&self, id: Uuid) -> Result<Appointment, BookingError> {
        self.commands
            .load::<Appointment>(&id.to_string())
            .await
            .map_err(BookingError::Internal)
    }

    /// A doctor's schedule.
    pub async fn schedule(&self, doctor_id: Uuid) -> Result<Schedule, BookingError> {
        self.commands
            .load::<Schedule>(&doctor_id.to_string())
            .await
            .map_err(BookingError::Internal)
    }

    /// The patient's age on the slot's day, read only when the slot has an age rule.
    async fn patient_age(
        &self,
        patient_id: Uuid,
        slot: &SlotInfo,
    ) -> Result<Option<u32>, BookingError> {
        if slot.min_age.is_none() && slot.max_age.is_none() {
            return Ok(None);
        }
        let day = slot.day;
        let patient = self
            .commands
            .load::<Patient>(&patient_id.to_string())
            .await
            .map_err(BookingError::Internal)?;
        Ok(patient.profile.map(|p| p.age_on(day)))
    }

    /// Whether every slot of the doctor on `day` is held.
    async fn day_is_full(&self, schedule: &Schedule, day: NaiveDate) -> Result<bool, BookingError> {
        let keys: Vec<String> = schedule
            .slots_on(day)
            .iter()
            .map(|s| slot_key(s.doctor_id, s.start))
            .collect();
        if keys.is_empty() {
            return Ok(true);
        }
        let held = self
            .commands
            .journal()
            .held_reservations(SLOT_SCOPE, &keys)
            .await
            .map_err(|e| BookingError::Internal(e.into()))?;
        Ok(held.len() >= keys.len())
    }

    /// Turns a taken slot into DAY_FULL when no other slot of that day is free.
    async fn explain_taken(
        &self,
        error: CommandError<AppointmentError>,
        schedule: &Schedule,
        day: NaiveDate,
    ) -> BookingError {
        if let CommandError::Reserved(ReservationTaken { scope, .. }) = &error {
            if scope == SLOT_SCOPE {
                match self.day_is_full(schedule, day).await {
                    Ok(true) => {
                        return BookingError::User(UserError::field(
                            "slotId",
                            "DAY_FULL",
                            format!("no free slots are left on {day}; choose another day"),
                        ))
                    }
                    Ok(false) => {}
                    Err(e) => return e,
                }
            }
        }
        user_error::<Appointment>(error)
    }

    async fn run<A>(
        &self,
        id: &str,
        command: A::Command,
        metadata: &EventMetadata,
        input: &Value,
        retry: Retry,
    ) -> Result<(CommandOutcome, A), CommandError<A::Error>>
    where
        A: Reserving<Services = ()> + Clone,
        A::Command: Clone,
    {
        self.commands
            .execute::<A>(id, command, &(), metadata, input, retry)
            .await
    }

    /// Books the requested slot for the patient.
    pub async fn book(
        &self,
        metadata: &EventMetadata,
        request: BookingRequest,
        input: &Value,
    ) -> Result<(CommandOutcome, Appointment), BookingError> {
        let BookingRequest {
            patient_id,
            doctor_id,
            start,
            service_code,
            by,
        } = request;
        let schedule = self.schedule(doctor_id).await?;
        let Some(slot) = schedule.slot_at(start) else {
            return Err(BookingError::User(UserError::field(
                "slotId",
                "SLOT_NOT_FOUND",
                "the doctor has no published slot at this time",
            )));
        };
        let day = slot.day;
        let command = AppointmentCommand::Book {
            patient_id,
            patient_age: self.patient_age(patient_id, &slot).await?,
            slot,
            service_code,
            by,
            now: self.clock.now(),
        };
        // A new appointment id per attempt; a retried request with the same
        // idempotency key reports the first appointment instead.
        let id = Uuid::now_v7().to_string();
        match self
            .commands
            .execute_new::<Appointment>(&id, command, &(), metadata, input, Retry::Never)
            .await
        {
            Ok(done) => Ok(done),
            Err(e) => Err(self.explain_taken(e, &schedule, day).await),
        }
    }

    /// Moves an appointment to the slot of the same doctor starting at `start`;
    /// all or nothing: if the new slot is taken the appointment stays as it was.
    pub async fn reschedule(
        &self,
        metadata: &EventMetadata,
        appointment_id: Uuid,
        start: DateTime<Utc>,
        by: ChangedBy,
        input: &Value,
    ) -> Result<(CommandOutcome, Appointment), BookingError> {
        let current = self.appointment(appointment_id).await?;
        let (Some(patient_id), Some(held)) = (current.patient_id, current.slot.as_ref()) else {
            return Err(BookingError::User(
                AppointmentError::NotFound.to_user_error(),
            ));
        };
        let schedule = self.schedule(held.doctor_id).await?;
        let Some(slot) = schedule.slot_at(start) else {
            return Err(BookingError::User(UserError::field(
                "slotId",
                "SLOT_NOT_FOUND",
                "the doctor has no published slot at this time",
            )));
        };
        let day = slot.day;
        let command = AppointmentCommand::Reschedule {
            patient_age: self.patient_age(patient_id, &slot).await?,
            slot,
            by,
            now: self.clock.now(),
        };
        match self
            .run::<Appointment>(
                &appointment_id.to_string(),
                command,
                metadata,
                input,
                Retry::OnConflict,
            )
            .await
        {
            Ok(done) => Ok(done),
            Err(e) => Err(self.explain_taken(e, &schedule, day).await),
        }
    }

    /// Runs a command on an existing appointment (cancel, arrival, outcome, review).
    pub async fn act(
        &self,
        metadata: &EventMetadata,
        appointment_id: Uuid,
        command: AppointmentCommand,
        input: &Value,
    ) -> Result<(CommandOutcome, Appointment), BookingError> {
        self.run::<Appointment>(
            &appointment_id.to_string(),
            command,
            metadata,
            input,
            Retry::OnConflict,
        )
        .await
        .map_err(user_error::<Appointment>)
    }

    /// Closes a published period and cancels, on the clinic's side, every
    /// appointment that holds one of its slots.
    ///
    /// The close reserves the period's free slots in its own transaction, so no
    /// booking can slip in after it; the appointments holding the rest are read
    /// from the reservations, which are exact at that moment.
    pub async fn close_period(
        &self,
        metadata: &EventMetadata,
        doctor_id: Uuid,
        period_id: Uuid,
        reason: String,
        input: &Value,
    ) -> Result<ClosePeriodReport, BookingError> {
        let schedule = self.schedule(doctor_id).await?;
        let keys: Vec<String> = match schedule.period(period_id) {
            Some(period) => period
                .slot_starts()
                .map(|s| slot_key(doctor_id, s))
                .collect(),
            None => Vec::new(),
        };
        let command = ScheduleCommand::Close {
            period_id,
            reason: reason.clone(),
        };
        let (outcome, _) = self
            .run::<Schedule>(
                &doctor_id.to_string(),
                command,
                metadata,
                input,
                Retry::OnConflict,
            )
            .await
            .map_err(user_error::<Schedule>)?;
        let held = self
            .commands
            .journal()
            .held_reservations(SLOT_SCOPE, &keys)
            .await
            .map_err(|e| BookingError::Internal(e.into()))?;
        let closed_owner = closed_period_owner(period_id);
        let mut cancelled = Vec::new();
        let mut last_order = outcome.last_order();
        for (_, owner) in held.into_iter().filter(|(_, owner)| *owner != closed_owner) {
            let Ok(appointment_id) = Uuid::parse_str(&owner) else {
                continue;
            };
            let command = AppointmentCommand::Cancel {
                reason: Some(format!("Приём отменён клиникой: {reason}")),
                by: ChangedBy::Clinic,
                now: self.clock.now(),
            };
            // Same correlation as the close; the key belonged to the close itself.
            let cause = EventMetadata {
                idempotency_key: None,
                ..metadata.clone()
            };
            match self
                .act(&cause, appointment_id, command, &Value::Null)
                .await
            {
                Ok((done, _)) => {
                    cancelled.push(appointment_id);
                    last_order = last_order.max(done.last_order());
                }
                // Already fulfilled or cancelled meanwhile: nothing to do.
                Err(BookingError::User(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(ClosePeriodReport {
            outcome,
            cancelled,
            last_order,
        })
    }
}
