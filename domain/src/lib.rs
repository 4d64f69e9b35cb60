//! Kabinet's domain: aggregates, commands, events, value types, and the journal.

pub mod access;
pub mod accounts;
pub mod appointments;
pub mod canonical;
pub mod clock;
pub mod command;
pub mod db;
pub mod directory;
pub mod documents;
pub mod identity;
pub mod journal;
pub mod metadata;
pub mod notifications;
pub mod notify;
pub mod patients;
pub mod policies;
pub mod prescriptions;
pub mod user_error;

pub use db::{Backend, Db};
pub use journal::{Journal, JournalOrder, RecordedEvent};
pub use metadata::{Actor, EventMetadata, Role};
