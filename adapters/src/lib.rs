//! Adapters that connect Kabinet to the world outside its journal: the e-mail
//! relay, the SMS gateway, and the stores of secrets and files. The domain
//! defines the ports (for example [`kabinet_domain::notify::Notifier`]); the
//! server wires these implementations to them at start-up. The auditors' tool
//! (`kabinet-replay`) does not link this crate.

pub mod outbound;
pub mod sms;
pub mod smtp;
