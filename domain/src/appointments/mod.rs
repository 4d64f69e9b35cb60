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

/// Reservation scope: one active appointment per slot.
pub const SLOT_SCOPE: &str = "slot";
/// Reservation scope: a patient's time, in grid cells, so bookings never overlap.
pub const PATIENT_TIME_SCOPE: &str = "patient-time";
/// Reservation scope: one appointment per patient, doctor and local day.
pub const PATIENT_DOCTOR_DAY_SCOPE: &str = "patient-doctor-day";
