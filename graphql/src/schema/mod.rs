//! The GraphQL schema: queries, mutations and subscriptions with their limits.

pub mod account_journal;
pub mod accounts;
pub mod activity;
pub mod appointments;
pub mod context;
pub mod directory;
pub mod doctors;
pub mod documents;
pub mod errors;
pub mod identity;
pub mod ids;
pub mod labels;
pub mod limits;
pub mod links;
pub mod notifications;
pub mod pagination;
pub mod policies;
pub mod prescriptions;
pub mod slots_ids;

use async_graphql::{
    Context, Interface, MergedObject, MergedSubscription, Object, Schema, SimpleObject, ID,
};
use kabinet_domain::Role;

use self::context::{actor, actor_in, internal, services};
use self::labels::LabelRu;

/// Anything with a global id.
#[derive(Interface)]
#[graphql(field(name = "id", ty = "ID"))]
pub enum Node {
    Organisation(directory::Organisation),
    Doctor(doctors::Doctor),
    Appointment(appointments::Appointment),
    ReferralRequest(appointments::ReferralRequest),
    Prescription(prescriptions::Prescription),
    Policy(policies::Policy),
    DocumentRequest(documents::DocumentRequest),
}

/// The signed-in caller.
#[derive(Debug, SimpleObject)]
pub struct Viewer {
    /// Global id of the caller's account.
    pub account_id: ID,
    pub role: accounts::UserRole,
    /// The role in Russian, for display.
    pub role_label_ru: &'static str,
    /// Global id of the staff member's organisation.
    pub organisation_id: Option<ID>,
}

/// The journal's digest for auditors to keep.
#[derive(Debug, SimpleObject)]
pub struct JournalDigest {
    /// `HASH@POSITION` of the newest seal.
    pub digest: String,
    pub seal_number: i64,
    pub sealed_events: i64,
    pub sealed_at: chrono::DateTime<chrono::Utc>,
}

/// Queries that do not belong to one feature.
#[derive(Default)]
pub struct CoreQuery;

#[Object]
impl CoreQuery {
    /// Any object by its global id; `null` when it does not exist or is not the caller's to see.
    async fn node(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Node>> {
        match ids::decode(&id) {
            Some((type_name, uuid)) => match type_name.as_str() {
                "Organisation" => Ok(directory::node(ctx, uuid).await?.map(Node::Organisation)),
                "Doctor" => Ok(doctors::node(ctx, uuid).await?.map(Node::Doctor)),
                "Appointment" => Ok(appointments::node(ctx, uuid).await?.map(Node::Appointment)),
                "ReferralRequest" => Ok(appointments::referral_node(ctx, uuid)
                    .await?
                    .map(Node::ReferralRequest)),
                "Prescription" => Ok(prescriptions::node(ctx, uuid)
                    .await?
                    .map(Node::Prescription)),
                "Policy" => Ok(policies::node(ctx, uuid).await?.map(Node::Policy)),
                "DocumentRequest" => {
                    Ok(documents::node(ctx, uuid).await?.map(Node::DocumentRequest))
                }
                _ => Ok(None),
            },
            None => Ok(None),
        }
    }

    /// Who the bearer token speaks for.
    async fn me(&self, ctx: &Context<'_>) -> async_graphql::Result<Viewer> {
        let actor = actor(ctx)?;
        Ok(Viewer {
            account_id: ids::encode("Account", actor.account_id),
            role: actor.role.into(),
            role_label_ru: accounts::UserRole::from(actor.role).label_ru(),
            organisation_id: actor
                .organisation_id
                .map(|o| ids::encode("Organisation", o)),
        })
    }

    /// The newest seal of the journal (auditors); `null` before the first seal.
    async fn journal_digest(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Option<JournalDigest>> {
        actor_in(ctx, &[Role::Auditor, Role::Admin])?;
        let seal = services(ctx)
            .journal
            .latest_seal()
            .await
            .map_err(|e| internal(ctx, e))?;
        Ok(seal.map(|seal| JournalDigest {
            digest: seal.digest(),
            seal_number: seal.seal_no,
            sealed_events: seal.event_count,
            sealed_at: seal.sealed_at,
        }))
    }
}

/// Every query.
#[derive(MergedObject, Default)]
pub struct Query(
    CoreQuery,
    directory::DirectoryQuery,
    doctors::DoctorsQuery,
    appointments::AppointmentsQuery,
    activity::ActivityQuery,
    notifications::NotificationsQuery,
    accounts::AccountsQuery,
    identity::IdentityQuery,
    account_journal::AccountJournalQuery,
    prescriptions::PrescriptionsQuery,
    policies::PoliciesQuery,
    documents::DocumentsQuery,
);

/// Every mutation.
#[derive(MergedObject, Default)]
pub struct Mutation(
    directory::DirectoryMutation,
    doctors::DoctorsMutation,
    appointments::AppointmentsMutation,
    notifications::NotificationsMutation,
    accounts::AccountsMutation,
    accounts::AccountAdminMutation,
    identity::IdentityMutation,
    prescriptions::PrescriptionsMutation,
    policies::PoliciesMutation,
    documents::DocumentsMutation,
);

/// Every subscription.
#[derive(MergedSubscription, Default)]
pub struct Subscription(
    activity::ActivitySubscription,
    policies::PoliciesSubscription,
);

/// The Kabinet schema type.
pub type KabinetSchema = Schema<Query, Mutation, Subscription>;

/// Limits applied to every request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_depth: usize,
    pub max_complexity: usize,
    /// Size of a document with its fragments expanded, checked before validation.
    pub document: limits::DocumentLimits,
    /// Introspection and "did you mean" suggestions (both describe the schema).
    pub introspection: bool,
}

/// Builds the schema with its limits; `services` may be absent when only the SDL is needed.
pub fn build(limits: Limits, services: Option<context::Services>) -> KabinetSchema {
    let mut builder = Schema::build(
        Query::default(),
        Mutation::default(),
        Subscription::default(),
    )
    .limit_depth(limits.max_depth)
    .limit_complexity(limits.max_complexity)
    .limit_recursive_depth(limits::MAX_RECURSIVE_DEPTH)
    .limit_directives(8)
    .extension(limits::CheckErrorCodes)
    .extension(limits::DocumentLimitsCheck(limits.document))
    .extension(accounts::OneCredentialPerOperation);
    if !limits.introspection {
        // A suggestion names fields the caller did not ask for: it would
        // rebuild the schema that introspection hides.
        builder = builder.disable_introspection().disable_suggestions();
    }
    if let Some(services) = services {
        builder = builder.data(services);
    }
    builder.finish()
}

/// The schema's SDL, as exported to `graphql/schema.graphql`.
pub fn sdl() -> String {
    build(
        Limits {
            max_depth: 64,
            max_complexity: usize::MAX,
            document: limits::DocumentLimits {
                max_fields: usize::MAX,
                max_aliases: usize::MAX,
            },
            introspection: true,
        },
        None,
    )
    .sdl()
}
