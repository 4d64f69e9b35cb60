//! A doctor's schedule (C1): published working periods that open slots, and
//! closed periods (sick leave) whose appointments the clinic cancels.

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, TimeZone, Timelike, Utc};
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::values::{parse_time_zone, BoundedText};
use crate::journal::reservations::{ReservationOp, Reserving};
use crate::user_error::{AsUserError, UserError};

/// Slot boundaries and lengths are multiples of this many minutes, so that
/// overlapping bookings can be caught by reserving fixed time cells.
pub const GRID_MINUTES: i64 = 5;

/// The reservation key of a slot.
pub fn slot_key(doctor_id: Uuid, start: DateTime<Utc>) -> String {
    format!("{doctor_id}@{}", start.timestamp())
}

/// A working period as the clinic enters it (local date and times).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeriodDraft {
    pub period_id: Uuid,
    pub date: NaiveDate,
    pub start: NaiveTime,
    pub end: NaiveTime,
    pub slot_minutes: u32,
    pub room: String,
    pub service_codes: Vec<String>,
    pub booking_horizon_days: u32,
    pub change_cutoff_hours: u32,
    pub min_age: Option<u32>,
    pub max_age: Option<u32>,
}

/// A published working period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Period {
    pub period_id: Uuid,
    pub doctor_id: Uuid,
    pub organisation_id: Uuid,
    pub time_zone: String,
    /// The local date of the period in the organisation's time zone.
    pub date: NaiveDate,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub slot_minutes: u32,
    pub room: String,
    pub service_codes: Vec<String>,
    /// Slots open for booking at most this many days ahead.
    pub booking_horizon_days: u32,
    /// Patients may change or cancel until this many hours before the start.
    pub change_cutoff_hours: u32,
    pub min_age: Option<u32>,
    pub max_age: Option<u32>,
}

impl Period {
    /// Starts of every slot of the period.
    pub fn slot_starts(&self) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        let step = Duration::minutes(self.slot_minutes.max(1) as i64);
        let mut at = self.starts_at;
        std::iter::from_fn(move || {
            if at + step > self.ends_at {
                return None;
            }
            let start = at;
            at += step;
            Some(start)
        })
    }

    fn slot(&self, start: DateTime<Utc>) -> SlotInfo {
        SlotInfo {
            doctor_id: self.doctor_id,
            organisation_id: self.organisation_id,
            period_id: self.period_id,
            start,
            end: start + Duration::minutes(self.slot_minutes as i64),
            day: self.date,
            time_zone: self.time_zone.clone(),
            room: self.room.clone(),
            service_codes: self.service_codes.clone(),
            booking_horizon_days: self.booking_horizon_days,
            change_cutoff_hours: self.change_cutoff_hours,
            min_age: self.min_age,
            max_age: self.max_age,
        }
    }
}

/// Everything a booking needs to know about one slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotInfo {
    pub doctor_id: Uuid,
    pub organisation_id: Uuid,
    pub period_id: Uuid,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Local date in the organisation's time zone.
    pub day: NaiveDate,
    pub time_zone: String,
    pub room: String,
    pub service_codes: Vec<String>,
    pub booking_horizon_days: u32,
    pub change_cutoff_hours: u32,
    pub min_age: Option<u32>,
    pub max_age: Option<u32>,
}

/// Commands on a schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleCommand {
    Publish {
        doctor_id: Uuid,
        organisation_id: Uuid,
        time_zone: String,
        draft: PeriodDraft,
        now: DateTime<Utc>,
    },
    Close {
        period_id: Uuid,
        reason: String,
    },
}

/// Events of a schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScheduleEvent {
    PeriodPublished(Period),
    PeriodClosed {
        period_id: Uuid,
        doctor_id: Uuid,
        reason: String,
        starts_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
        slot_minutes: u32,
    },
}

impl DomainEvent for ScheduleEvent {
    fn event_type(&self) -> String {
        match self {
            ScheduleEvent::PeriodPublished(_) => "PeriodPublished",
            ScheduleEvent::PeriodClosed { .. } => "PeriodClosed",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

/// Why a schedule command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("the period starts in the past")]
    InThePast,
    #[error("the period overlaps a published period of this doctor")]
    OverlappingPeriod,
    #[error("a period with this id is already published")]
    AlreadyPublished,
    #[error("no such period")]
    PeriodNotFound,
    #[error("the period is already closed")]
    AlreadyClosed,
}

impl AsUserError for ScheduleError {
    fn to_user_error(&self) -> UserError {
        let message = self.to_string();
        match self {
            ScheduleError::Invalid { field, message } => {
                UserError::field(field, "INVALID_INPUT", message.clone())
            }
            ScheduleError::InThePast => UserError::field("date", "IN_THE_PAST", message),
            ScheduleError::OverlappingPeriod => UserError::new("OVERLAPPING_PERIOD", message),
            ScheduleError::AlreadyPublished => UserError::new("ALREADY_EXISTS", message),
            ScheduleError::PeriodNotFound => UserError::field("periodId", "NOT_FOUND", message),
            ScheduleError::AlreadyClosed => UserError::new("ALREADY_CLOSED", message),
        }
    }
}

/// A doctor's schedule; its stream id is the doctor's id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// Open periods in start order.
    pub periods: Vec<Period>,
    /// Closed periods, kept so their ids are never reused.
    pub closed: Vec<Uuid>,
}

impl Schedule {
    /// The open slot starting at `start`, if the schedule has one.
    pub fn slot_at(&self, start: DateTime<Utc>) -> Option<SlotInfo> {
        self.periods
            .iter()
            .filter(|p| p.starts_at <= start && start < p.ends_at)
            .find(|p| p.slot_starts().any(|s| s == start))
            .map(|p| p.slot(start))
    }

    /// Every open slot on local date `day`.
    pub fn slots_on(&self, day: NaiveDate) -> Vec<SlotInfo> {
        self.periods
            .iter()
            .filter(|p| p.date == day)
            .flat_map(|p| p.slot_starts().map(|s| p.slot(s)).collect::<Vec<_>>())
            .collect()
    }

    /// A published (open) period by id.
    pub fn period(&self, period_id: Uuid) -> Option<&Period> {
        self.periods.iter().find(|p| p.period_id == period_id)
    }

    fn publish(
        &self,
        doctor_id: Uuid,
        organisation_id: Uuid,
        time_zone: &str,
        draft: PeriodDraft,
        now: DateTime<Utc>,
    ) -> Result<Period, ScheduleError> {
        let invalid =
            |field: &'static str, message: String| ScheduleError::Invalid { field, message };
        if self.period(draft.period_id).is_some() || self.closed.contains(&draft.period_id) {
            return Err(ScheduleError::AlreadyPublished);
        }
        let tz = parse_time_zone(time_zone).map_err(|e| invalid("timeZone", e.to_string()))?;
        if !(GRID_MINUTES as u32..=240).contains(&draft.slot_minutes)
            || draft.slot_minutes as i64 % GRID_MINUTES != 0
        {
            return Err(invalid(
                "slotMinutes",
                format!("must be a multiple of {GRID_MINUTES} between {GRID_MINUTES} and 240"),
            ));
        }
        for (field, time) in [("start", draft.start), ("end", draft.end)] {
            if time.minute() as i64 % GRID_MINUTES != 0
                || time.second() != 0
                || time.nanosecond() != 0
            {
                return Err(invalid(
                    field,
                    format!("must fall on a {GRID_MINUTES}-minute boundary, e.g. 09:00 or 09:05"),
                ));
            }
        }
        if draft.end <= draft.start {
            return Err(invalid("end", "must be after start".into()));
        }
        let length = (draft.end - draft.start).num_minutes();
        if length % draft.slot_minutes as i64 != 0 {
            return Err(invalid(
                "end",
                format!(
                    "the period of {length} minutes is not a whole number of {}-minute slots",
                    draft.slot_minutes
                ),
            ));
        }
        let local = |field: &'static str, time: NaiveTime| {
            tz.from_local_datetime(&draft.date.and_time(time))
                .single()
                .map(|t| t.with_timezone(&Utc))
                .ok_or_else(|| invalid(field, format!("{} {time} does not exist or is ambiguous in {time_zone} (a clock change)", draft.date)))
        };
        let starts_at = local("start", draft.start)?;
        let ends_at = local("end", draft.end)?;
        if starts_at <= now {
            return Err(ScheduleError::InThePast);
        }
        let room = BoundedText::parse(&draft.room, 50)
            .map_err(|e| invalid("room", e.to_string()))?
            .as_str()
            .to_string();
        if draft.service_codes.len() > 50 {
            return Err(invalid("serviceCodes", "at most 50 services".into()));
        }
        let mut service_codes = draft
            .service_codes
            .iter()
            .map(|c| {
                super::offering::parse_code(c).map_err(|e| invalid("serviceCodes", e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        service_codes.sort();
        service_codes.dedup();
        if !(1..=365).contains(&draft.booking_horizon_days) {
            return Err(invalid(
                "bookingHorizonDays",
                "must be between 1 and 365".into(),
            ));
        }
        if draft.change_cutoff_hours > 168 {
            return Err(invalid(
                "changeCutoffHours",
                "must be between 0 and 168".into(),
            ));
        }
        for (field, age) in [("minAge", draft.min_age), ("maxAge", draft.max_age)] {
            if age.is_some_and(|a| a > 130) {
                return Err(invalid(field, "must be between 0 and 130".into()));
            }
        }
        if let (Some(min), Some(max)) = (draft.min_age, draft.max_age) {
            if min > max {
                return Err(invalid("maxAge", "must not be below minAge".into()));
            }
        }
        if self
            .periods
            .iter()
            .any(|p| p.starts_at < ends_at && starts_at < p.ends_at)
        {
            return Err(ScheduleError::OverlappingPeriod);
        }
        Ok(Period {
            period_id: draft.period_id,
            doctor_id,
            organisation_id,
            time_zone: tz.name().to_string(),
            date: draft.date,
            starts_at,
            ends_at,
            slot_minutes: draft.slot_minutes,
            room,
            service_codes,
            booking_horizon_days: draft.booking_horizon_days,
            change_cutoff_hours: draft.change_cutoff_hours,
            min_age: draft.min_age,
            max_age: draft.max_age,
        })
    }
}

impl Aggregate for Schedule {
    const TYPE: &'static str = "schedule";
    type Command = ScheduleCommand;
    type Event = ScheduleEvent;
    type Error = ScheduleError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &cqrs_es::event_sink::EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = match command {
            ScheduleCommand::Publish {
                doctor_id,
                organisation_id,
                time_zone,
                draft,
                now,
            } => ScheduleEvent::PeriodPublished(self.publish(
                doctor_id,
                organisation_id,
                &time_zone,
                draft,
                now,
            )?),
            ScheduleCommand::Close { period_id, reason } => {
                if self.closed.contains(&period_id) {
                    return Err(ScheduleError::AlreadyClosed);
                }
                let period = self
                    .period(period_id)
                    .ok_or(ScheduleError::PeriodNotFound)?;
                let reason =
                    BoundedText::parse(&reason, 500).map_err(|e| ScheduleError::Invalid {
                        field: "reason",
                        message: e.to_string(),
                    })?;
                ScheduleEvent::PeriodClosed {
                    period_id,
                    doctor_id: period.doctor_id,
                    reason: reason.as_str().to_string(),
                    starts_at: period.starts_at,
                    ends_at: period.ends_at,
                    slot_minutes: period.slot_minutes,
                }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            ScheduleEvent::PeriodPublished(period) => {
                let at = self
                    .periods
                    .partition_point(|p| p.starts_at < period.starts_at);
                self.periods.insert(at, period);
            }
            ScheduleEvent::PeriodClosed { period_id, .. } => {
                self.periods.retain(|p| p.period_id != period_id);
                self.closed.push(period_id);
            }
        }
    }
}

/// Owner of the reservations that keep a closed period's free slots from being booked.
pub fn closed_period_owner(period_id: Uuid) -> String {
    format!("period:{period_id}")
}

impl Reserving for Schedule {
    fn reservations(_aggregate_id: &str, events: &[ScheduleEvent]) -> Vec<ReservationOp> {
        let mut ops = Vec::new();
        for event in events {
            if let ScheduleEvent::PeriodClosed {
                period_id,
                doctor_id,
                starts_at,
                ends_at,
                slot_minutes,
                ..
            } = event
            {
                let step = Duration::minutes((*slot_minutes).max(1) as i64);
                let mut at = *starts_at;
                while at + step <= *ends_at {
                    ops.push(ReservationOp::TakeIfFree {
                        scope: crate::appointments::SLOT_SCOPE,
                        key: slot_key(*doctor_id, at),
                        owner: closed_period_owner(*period_id),
                    });
                    at += step;
                }
            }
        }
        ops
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 20, 6, 0, 0)
            .single()
            .expect("time")
    }

    fn draft() -> PeriodDraft {
        PeriodDraft {
            period_id: Uuid::from_u128(1),
            date: NaiveDate::from_ymd_opt(2026, 11, 23).expect("date"),
            start: NaiveTime::from_hms_opt(9, 0, 0).expect("time"),
            end: NaiveTime::from_hms_opt(10, 0, 0).expect("time"),
            slot_minutes: 20,
            room: "214".into(),
            service_codes: vec!["b01.047.001".into()],
            booking_horizon_days: 14,
            change_cutoff_hours: 2,
            min_age: Some(18),
            max_age: None,
        }
    }

    fn publish(draft: PeriodDraft) -> ScheduleCommand {
        ScheduleCommand::Publish {
            doctor_id: Uuid::from_u128(7),
            organisation_id: Uuid::from_u128(9),
            time_zone: "Europe/Moscow".into(),
            draft,
            now: now(),
        }
    }

    fn published() -> Period {
        Period {
            period_id: Uuid::from_u128(1),
            doctor_id: Uuid::from_u128(7),
            organisation_id: Uuid::from_u128(9),
            time_zone: "Europe/Moscow".into(),
            date: NaiveDate::from_ymd_opt(2026, 11, 23).expect("date"),
            starts_at: Utc
                .with_ymd_and_hms(2026, 11, 23, 6, 0, 0)
                .single()
                .expect("time"),
            ends_at: Utc
                .with_ymd_and_hms(2026, 11, 23, 7, 0, 0)
                .single()
                .expect("time"),
            slot_minutes: 20,
            room: "214".into(),
            service_codes: vec!["B01.047.001".into()],
            booking_horizon_days: 14,
            change_cutoff_hours: 2,
            min_age: Some(18),
            max_age: None,
        }
    }

    #[test]
    fn publishing_converts_local_times_to_utc() {
        TestFramework::<Schedule>::with(())
            .given_no_previous_events()
            .when(publish(draft()))
            .then_expect_events(vec![ScheduleEvent::PeriodPublished(published())]);
    }

    #[test]
    fn a_period_opens_whole_slots() {
        let mut schedule = Schedule::default();
        schedule.apply(ScheduleEvent::PeriodPublished(published()));
        let starts: Vec<_> = published().slot_starts().map(|s| s.to_rfc3339()).collect();
        assert_eq!(
            starts,
            [
                "2026-11-23T06:00:00+00:00",
                "2026-11-23T06:20:00+00:00",
                "2026-11-23T06:40:00+00:00"
            ]
        );
        assert!(schedule
            .slot_at(published().starts_at + Duration::minutes(20))
            .is_some());
        assert!(schedule
            .slot_at(published().starts_at + Duration::minutes(10))
            .is_none());
    }

    #[test]
    fn cannot_publish_overlapping_periods() {
        let mut other = draft();
        other.period_id = Uuid::from_u128(2);
        other.start = NaiveTime::from_hms_opt(9, 40, 0).expect("time");
        other.end = NaiveTime::from_hms_opt(10, 40, 0).expect("time");
        TestFramework::<Schedule>::with(())
            .given(vec![ScheduleEvent::PeriodPublished(published())])
            .when(publish(other))
            .then_expect_error(ScheduleError::OverlappingPeriod);
    }

    #[test]
    fn cannot_publish_in_the_past() {
        let mut past = draft();
        past.date = NaiveDate::from_ymd_opt(2026, 11, 19).expect("date");
        TestFramework::<Schedule>::with(())
            .given_no_previous_events()
            .when(publish(past))
            .then_expect_error(ScheduleError::InThePast);
    }

    #[test]
    fn slots_must_fill_the_period() {
        let mut odd = draft();
        odd.slot_minutes = 25;
        let result = TestFramework::<Schedule>::with(())
            .given_no_previous_events()
            .when(publish(odd))
            .inspect_result();
        assert!(matches!(
            result,
            Err(ScheduleError::Invalid { field: "end", .. })
        ));
    }

    #[test]
    fn closing_reserves_the_free_slots_of_the_period() {
        let events = vec![ScheduleEvent::PeriodClosed {
            period_id: Uuid::from_u128(1),
            doctor_id: Uuid::from_u128(7),
            reason: "больничный".into(),
            starts_at: published().starts_at,
            ends_at: published().ends_at,
            slot_minutes: 20,
        }];
        let ops = Schedule::reservations("x", &events);
        assert_eq!(ops.len(), 3);
        assert!(ops
            .iter()
            .all(|op| matches!(op, ReservationOp::TakeIfFree { .. })));
    }
}
