//! Adapters that connect Kabinet to the world outside its journal: the e-mail
//! relay, the SMS gateway, password hashing, and the tables that hold what must
//! not be an event (secrets, one-time codes, sealed scans, the access record).
//! The domain defines the ports (for example [`kabinet_domain::notify::Notifier`]);
//! the use cases (`kabinet-app`) and the server wire these implementations to
//! them. The auditors' tool (`kabinet-replay`) does not link this crate.

pub mod access_record;
pub mod account_store;
pub mod identity_store;
pub mod outbound;
pub mod password_hash;
pub mod sms;
pub mod smtp;
