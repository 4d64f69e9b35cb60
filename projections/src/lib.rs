//! Kabinet's read models and the catch-up projector that keeps them.

pub mod account_journal;
pub mod activity_log;
pub mod appointments;
pub mod care;
pub mod doctors;
pub mod document_requests;
pub mod notifications;
pub mod organisations;
pub mod page;
pub mod policies;
pub mod prescriptions;
mod projection;
mod projector;
mod rebuild;
pub mod referrals;
pub mod services;
pub mod slots;
mod wakeup;

pub use projection::{
    bad_event, event_of, from_micros, micros, Projection, ProjectionError, ProjectionTx,
};
pub use projector::{events_behind, Projector, ProjectorConfig, WaitTimeout};
pub use rebuild::{rebuild, RebuildError, RebuildReport};
pub use wakeup::Wakeups;

use std::sync::Arc;

/// Every projection of the product, in the order they are run.
pub fn all_projections() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(activity_log::ActivityLog),
        Arc::new(organisations::Organisations),
        Arc::new(doctors::Doctors),
        Arc::new(services::Services),
        Arc::new(slots::Slots),
        Arc::new(appointments::Appointments),
        Arc::new(referrals::Referrals),
        Arc::new(notifications::NotificationPreferences),
        Arc::new(notifications::Notifications),
        Arc::new(account_journal::AccountJournal),
        Arc::new(prescriptions::Prescriptions),
        Arc::new(prescriptions::PrescriptionJournal),
        Arc::new(prescriptions::Pharmacies),
        Arc::new(policies::Policies),
        Arc::new(document_requests::DocumentRequests),
        Arc::new(document_requests::DocumentRequestJournal),
    ]
}
