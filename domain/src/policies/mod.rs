//! The OMS policy (E3): an application checked field by field, issuance with a
//! unique 16-digit number, a renewal reminder and expiry, and at most one
//! active policy (or open application) per person.

mod application;
mod policy;

pub use application::{
    parse_application, PolicyApplication, PolicyHolder, PolicyKind, RawApplication,
    MAX_POLICY_YEARS, MAX_START_AHEAD_DAYS,
};
pub use policy::{complete_number, Policy, PolicyCommand, PolicyError, PolicyEvent, PolicyStatus};

/// Reservation scope: one active policy or open application per person (by SNILS).
pub const PERSON_SCOPE: &str = "oms-policy-person";
/// Reservation scope: every policy number is given once, ever.
pub const NUMBER_SCOPE: &str = "oms-policy-number";
