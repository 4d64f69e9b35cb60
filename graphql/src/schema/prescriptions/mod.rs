//! E-prescriptions (E2): issuing, sending to a pharmacy, preparing and
//! dispensing, the patient's requests and the doctor's decisions, the journal,
//! and the public verification of printed prescriptions.

mod mutations;
mod printing;
mod queries;
mod types;
mod verification;

pub use mutations::*;
pub use printing::*;
pub use queries::*;
pub use types::*;
pub use verification::*;

use super::context::{actor, internal, record_medical_read, services as svc};
use async_graphql::Context;
use chrono_tz::Tz;
use kabinet_domain::prescriptions::PrescriptionStatus as DomainStatus;
use kabinet_domain::{Actor, Role};
use kabinet_projections::prescriptions::{self, PrescriptionView};
use uuid::Uuid;

fn status_of(raw: &str) -> DomainStatus {
    DomainStatus::parse(raw).unwrap_or(DomainStatus::ReadyToPrint)
}

fn zone(name: &str) -> Tz {
    name.parse().unwrap_or(chrono_tz::Europe::Moscow)
}

/// Whether `actor` may see prescription `view`.
fn may_see(actor: &Actor, view: &PrescriptionView) -> bool {
    match actor.role {
        Role::Patient => actor.account_id == view.patient_id,
        Role::Doctor | Role::Registrar => actor.organisation_id == Some(view.organisation_id),
        Role::Pharmacist => view.pharmacy_id.is_some() && actor.organisation_id == view.pharmacy_id,
        _ => false,
    }
}

/// Resolves a prescription's global id for callers who may see it.
pub async fn node(ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Option<Prescription>> {
    let actor = actor(ctx)?;
    let view = prescriptions::get(&svc(ctx).db, id)
        .await
        .map_err(|e| internal(ctx, e))?;
    match view.filter(|v| may_see(actor, v)) {
        Some(view) => {
            record_medical_read(ctx, view.patient_id, "prescription", Some(view.id)).await?;
            Ok(Some(Prescription(view)))
        }
        None => Ok(None),
    }
}
