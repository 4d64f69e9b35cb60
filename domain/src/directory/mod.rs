//! The directory of medical organisations (B1).

mod organisation;
mod values;

pub use organisation::{
    Organisation, OrganisationCommand, OrganisationDetails, OrganisationError, OrganisationEvent,
};
pub use values::{parse_time_zone, BoundedText, TextError};
