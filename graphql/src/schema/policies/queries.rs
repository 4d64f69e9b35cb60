//! The policies of a patient and the applications staff review.

use super::{list, pick_current, today, Policy, PolicyConnection, PolicyStatus};
use crate::schema::context::{
    actor_in, internal, medical_patient, record_medical_read, services as svc,
};
use async_graphql::{Context, Object};
use kabinet_domain::Role;
use kabinet_projections::policies::{self, PolicyView};
use uuid::Uuid;

/// The caller's current policy: the active one, else an application in
/// progress, else the newest.
pub(super) async fn current_policy(
    ctx: &Context<'_>,
    patient: Uuid,
) -> async_graphql::Result<Option<Policy>> {
    let page = policies::list(&svc(ctx).db, Some(patient), None, None, 100, 0)
        .await
        .map_err(|e| internal(ctx, e))?;
    let views: Vec<PolicyView> = page.items.into_iter().map(|(_, v)| v).collect();
    let pick = pick_current(&views, today(ctx));
    match pick {
        Some(v) => {
            record_medical_read(ctx, v.patient_id, "oms_policy", Some(v.id)).await?;
            Ok(Some(Policy(v)))
        }
        None => Ok(None),
    }
}

/// Policy queries.
#[derive(Default)]
pub struct PoliciesQuery;

#[Object]
impl PoliciesQuery {
    /// The caller's current OMS policy (patients): active, else in progress, else the newest.
    async fn my_policy(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Policy>> {
        let actor = medical_patient(ctx).await?;
        current_policy(ctx, actor.account_id).await
    }

    /// All the caller's policies and applications, newest first (patients).
    #[graphql(
        complexity = "crate::schema::pagination::connection_complexity(child_complexity, first, None)"
    )]
    async fn my_policies(
        &self,
        ctx: &Context<'_>,
        status: Option<PolicyStatus>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<PolicyConnection> {
        let actor = medical_patient(ctx).await?;
        list(ctx, Some(actor.account_id), status, first, after).await
    }

    /// Every policy and application, newest first (administrators).
    #[graphql(
        complexity = "crate::schema::pagination::connection_complexity(child_complexity, first, None)"
    )]
    async fn policy_applications(
        &self,
        ctx: &Context<'_>,
        status: Option<PolicyStatus>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<PolicyConnection> {
        actor_in(ctx, &[Role::Admin])?;
        list(ctx, None, status, first, after).await
    }
}
