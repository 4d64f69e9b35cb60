//! Kabinet's read models and the catch-up projector that keeps them.

pub mod activity_log;
pub mod organisations;
pub mod page;
mod projection;
mod projector;
mod rebuild;
mod wakeup;

pub use projection::{Projection, ProjectionError, ProjectionTx};
pub use projector::{Projector, ProjectorConfig, WaitTimeout};
pub use rebuild::{rebuild, RebuildError, RebuildReport};
pub use wakeup::Wakeups;

use std::sync::Arc;

/// Every projection of the product, in the order they are run.
pub fn all_projections() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(activity_log::ActivityLog),
        Arc::new(organisations::Organisations),
    ]
}
