//! The directory: medical organisations (B1), doctors (B2), the medical services
//! a clinic offers (B3, module `offering`) and doctors' schedules (C1).

mod doctor;
mod organisation;
mod schedule;
/// The slot grid and slot keys shared with bookings.
pub mod schedule_grid {
    pub use super::schedule::{closed_period_owner, slot_key, GRID_MINUTES};
}
mod offering;
mod values;

pub use doctor::{Doctor, DoctorCommand, DoctorDetails, DoctorError, DoctorEvent};
pub use offering::{
    parse_code, parse_cost, CostError, MedicalService, ServiceCodeError, ServiceCommand,
    ServiceDetails, ServiceError, ServiceEvent, ServiceForm, ServiceKind,
};
pub use organisation::{
    Organisation, OrganisationCommand, OrganisationDetails, OrganisationError, OrganisationEvent,
};
pub use schedule::{
    Period, PeriodDraft, Schedule, ScheduleCommand, ScheduleError, ScheduleEvent, SlotInfo,
};
pub use values::{parse_time_zone, BoundedText, TextError, TimeZoneError};
