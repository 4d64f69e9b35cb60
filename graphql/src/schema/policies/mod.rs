//! The OMS policy (E3): applying, issuing or rejecting, the policy's status
//! (queried, or followed live), and renewal reminders.

mod mutations;
mod printing;
mod queries;
mod subscriptions;
mod types;

pub use mutations::*;
use printing::policy_pdf;
pub use queries::*;
pub use subscriptions::*;
pub use types::*;

use super::context::{actor, internal, record_medical_read, services as svc};
use super::pagination::forward_page;
use async_graphql::connection::{Connection, Edge};
use async_graphql::Context;
use kabinet_domain::policies::PolicyStatus as DomainStatus;
use kabinet_domain::Role;
use kabinet_projections::policies::{self, PolicyView};
use uuid::Uuid;

fn status_of(raw: &str) -> DomainStatus {
    DomainStatus::parse(raw).unwrap_or(DomainStatus::Applied)
}

fn today(ctx: &Context<'_>) -> chrono::NaiveDate {
    svc(ctx).clock.now().date_naive()
}

/// Whether `view` is in force on `today`.
fn in_force(view: &PolicyView, today: chrono::NaiveDate) -> bool {
    view.status == DomainStatus::Active.as_str() && view.valid_from <= today
}

/// The policy to show as the holder's current one: in force, else issued and
/// starting later, else an application in progress, else the newest.
fn pick_current(views: &[PolicyView], today: chrono::NaiveDate) -> Option<PolicyView> {
    views
        .iter()
        .find(|v| in_force(v, today))
        .or_else(|| views.iter().find(|v| v.status == "active"))
        .or_else(|| views.iter().find(|v| v.status == "applied"))
        .or(views.first())
        .cloned()
}

/// Resolves a policy's global id for its holder and administrators.
pub async fn node(ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Option<Policy>> {
    let actor = actor(ctx)?;
    let view = policies::get(&svc(ctx).db, id)
        .await
        .map_err(|e| internal(ctx, e))?;
    match view.filter(|v| match actor.role {
        Role::Patient => v.patient_id == actor.account_id,
        Role::Admin => true,
        _ => false,
    }) {
        Some(v) => {
            record_medical_read(ctx, v.patient_id, "oms_policy", Some(v.id)).await?;
            Ok(Some(Policy(v)))
        }
        None => Ok(None),
    }
}

async fn list(
    ctx: &Context<'_>,
    patient: Option<Uuid>,
    status: Option<PolicyStatus>,
    first: Option<i32>,
    after: Option<String>,
) -> async_graphql::Result<PolicyConnection> {
    let (first, offset) = forward_page(first, after)?;
    let starts = match status {
        Some(PolicyStatus::Active) => Some(policies::Starts::ByDay(today(ctx))),
        Some(PolicyStatus::Issued) => Some(policies::Starts::AfterDay(today(ctx))),
        _ => None,
    };
    let status = status.map(|s| s.domain().as_str());
    let page = policies::list(&svc(ctx).db, patient, status, starts, first, offset)
        .await
        .map_err(|e| internal(ctx, e))?;
    let mut connection = Connection::new(page.has_previous, page.has_next);
    for (cursor, view) in page.items {
        record_medical_read(ctx, view.patient_id, "oms_policy", Some(view.id)).await?;
        connection
            .edges
            .push(Edge::new(cursor.encode(), Policy(view)));
    }
    Ok(connection)
}
