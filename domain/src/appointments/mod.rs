//! Appointments (C2–C6): booking, rescheduling, cancelling, the visit and its
//! outcome, reviews and referrals.

mod appointment;
mod booking;
mod referral;

pub use appointment::{
    Appointment, AppointmentCommand, AppointmentError, AppointmentEvent, AppointmentStatus,
    BookedSlot, ChangedBy, IcdCode, VisitOutcome,
};
pub use booking::{BookingError, BookingRequest, Bookings, ClosePeriodReport};
pub use referral::{Referral, ReferralCommand, ReferralError, ReferralEvent, ReferralStatus};

use crate::journal::reservations::ReservationTaken;
use crate::user_error::UserError;

/// Reservation scope: one active appointment per slot.
pub const SLOT_SCOPE: &str = "slot";
/// Reservation scope: a patient's time, in grid cells, so bookings never overlap.
pub const PATIENT_TIME_SCOPE: &str = "patient-time";
/// Reservation scope: one appointment per patient, doctor and local day.
pub const PATIENT_DOCTOR_DAY_SCOPE: &str = "patient-doctor-day";

/// The user error for a reservation another booking holds.
pub fn reservation_error(taken: &ReservationTaken) -> UserError {
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
        crate::documents::RESUBMISSION_SCOPE => UserError::field(
            "requestId",
            "ALREADY_RESUBMITTED",
            "this rejected request was already resubmitted",
        ),
        _ => UserError::new(
            "CONFLICT",
            "the request conflicts with another one; try again",
        ),
    }
}
