//! Accounts: the account aggregate, logins, the password policy, one-time
//! secrets and their hashes, TOTP, and the throttling policies. The flows that
//! use them with the stores (registration, sign-in, sessions, recovery, staff)
//! are the `Accounts` use case in `kabinet-app`.

pub mod account;
pub mod login;
pub mod password;
pub mod secrets;
pub mod throttle;
pub mod totp;

pub use account::{
    Account, AccountCommand, AccountError, AccountEvent, AccountState, AccountStatus,
};
pub use login::{Login, LoginKind};
