//! Identity of an account holder: the documents and contacts a profile carries.

pub mod limits;
pub mod registry;
pub mod scan;
pub mod values;
pub mod verification;

pub use values::{
    field_error, Email, EmailError, OmsPolicyError, OmsPolicyNumber, PassportNumber,
    PassportNumberError, PassportSeries, PassportSeriesError, PhoneError, PhoneNumber, Snils,
    SnilsError, ValueError,
};
