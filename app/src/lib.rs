//! Kabinet's use cases: the flows that combine the domain (aggregates, the
//! command runner) with the adapters (stores of secrets and scans, password
//! hashing, message channels). Today: [`accounts::Accounts`] and
//! [`identity::IdentityDesk`].

pub mod accounts;
pub mod identity;

pub use accounts::{
    AccountFailure, AccountFault, AccountView, Accounts, Challenge, ChallengeMethod, CodeSent,
    NewSession, StaffAccountRequest, TotpEnrolment,
};
pub use identity::{IdentityDesk, IdentityFailure, IdentityFault};
