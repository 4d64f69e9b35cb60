//! Accounts and sign-in: registration with a one-time code, passwords,
//! a second factor (a sent code or TOTP), sessions with rotating refresh
//! tokens, recovery, throttling, and staff accounts.

pub mod account;
pub mod login;
pub mod password;
pub mod secrets;
pub mod service;
pub mod store;
pub mod throttle;
pub mod totp;

pub use account::{
    Account, AccountCommand, AccountError, AccountEvent, AccountState, AccountStatus,
};
pub use login::{Login, LoginKind};
pub use service::{
    AccountFailure, AccountService, AccountView, Challenge, ChallengeMethod, CodeSent, NewSession,
    StaffAccountRequest, TotpEnrolment,
};
