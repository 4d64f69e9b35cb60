//! Identity of an account holder: the documents and contacts a profile carries.

pub mod values;

pub use values::{
    field_error, Email, EmailError, OmsPolicyError, OmsPolicyNumber, PassportNumber,
    PassportNumberError, PassportSeries, PassportSeriesError, PhoneError, PhoneNumber, Snils,
    SnilsError, ValueError,
};
