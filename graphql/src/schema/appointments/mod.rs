//! Appointments (C2–C6): booking, moving, cancelling, the visit, reviews,
//! referrals, and the lists patients and clinics read.

mod mutations;
mod queries;
mod types;

pub use mutations::*;
pub use queries::*;
pub use types::*;

use super::context::{actor, internal, medical_patient, record_medical_read, services as svc};
use async_graphql::Context;
use kabinet_domain::{Actor, Role};
use kabinet_projections::appointments::{self, AppointmentView};
use kabinet_projections::referrals;
use uuid::Uuid;

/// Whether `actor` may see or act on appointment `view`.
fn may_see(actor: &Actor, view: &AppointmentView) -> bool {
    match actor.role {
        Role::Patient => actor.account_id == view.patient_id,
        Role::Registrar | Role::Doctor => actor.organisation_id == Some(view.organisation_id),
        Role::Admin => true,
        _ => false,
    }
}

/// Resolves an appointment's global id for callers who may see it.
pub async fn node(ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Option<Appointment>> {
    let actor = actor(ctx)?;
    let view = appointments::get(&svc(ctx).db, id)
        .await
        .map_err(|e| internal(ctx, e))?;
    Ok(view.filter(|v| may_see(actor, v)).map(Appointment))
}

/// Resolves a referral request's global id for its patient and its organisation's staff.
pub async fn referral_node(
    ctx: &Context<'_>,
    id: Uuid,
) -> async_graphql::Result<Option<ReferralRequest>> {
    let actor = actor(ctx)?;
    let view = referrals::get(&svc(ctx).db, id)
        .await
        .map_err(|e| internal(ctx, e))?;
    let Some(view) = view.filter(|v| match actor.role {
        Role::Patient => v.patient_id == actor.account_id,
        Role::Doctor | Role::Registrar => actor.organisation_id == Some(v.organisation_id),
        Role::Admin => true,
        _ => false,
    }) else {
        return Ok(None);
    };
    if actor.role == Role::Patient {
        medical_patient(ctx).await?;
    }
    record_medical_read(ctx, view.patient_id, "referral", Some(view.id)).await?;
    Ok(Some(ReferralRequest(view)))
}
