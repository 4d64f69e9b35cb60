//! The organisation directory (B1): search, registration and updates.

use async_graphql::connection::{Connection, Edge, EmptyFields};
use async_graphql::{Context, InputObject, Object, SimpleObject, ID};
use kabinet_domain::command::Retry;
use kabinet_domain::directory::{
    Organisation as OrganisationAggregate, OrganisationCommand, OrganisationDetails,
};
use kabinet_domain::Role;
use kabinet_projections::organisations::{self, OrganisationFilter as Filter, OrganisationView};
use kabinet_projections::page::PageRequest;
use serde::Serialize;
use uuid::Uuid;

use super::context::{actor, actor_in, bad_input, internal, read_your_writes, services};
use super::errors::{idempotency_key, run_command, UserError};
use super::ids;
use super::pagination::{connection_complexity, page_info, page_request};

/// A medical organisation.
#[derive(Debug, Clone)]
pub struct Organisation(pub OrganisationView);

#[Object]
impl Organisation {
    /// Global id.
    pub async fn id(&self) -> ID {
        ids::encode("Organisation", self.0.id)
    }
    async fn name(&self) -> &str {
        &self.0.details.name
    }
    async fn region(&self) -> &str {
        &self.0.details.region
    }
    async fn address(&self) -> &str {
        &self.0.details.address
    }
    /// IANA time zone of the organisation's schedules and day boundaries.
    async fn time_zone(&self) -> &str {
        &self.0.details.time_zone
    }
    async fn working_hours(&self) -> &str {
        &self.0.details.working_hours
    }
    async fn departments(&self) -> &[String] {
        &self.0.details.departments
    }
    async fn specialisations(&self) -> &[String] {
        &self.0.details.specialisations
    }
    /// Whether the organisation is a pharmacy that receives e-prescriptions.
    async fn is_pharmacy(&self, ctx: &Context<'_>) -> async_graphql::Result<bool> {
        kabinet_projections::prescriptions::is_pharmacy(&services(ctx).db, self.0.id)
            .await
            .map_err(|e| internal(ctx, e))
    }
}

/// Directory search filters; all given filters must match.
#[derive(Debug, Default, InputObject)]
pub struct OrganisationFilter {
    /// Part of the name, any case.
    pub name: Option<String>,
    /// The region, any case.
    pub region: Option<String>,
    /// A specialisation the organisation offers (e.g. `cardiologist`).
    pub specialisation: Option<String>,
}

/// Longest text a search filter accepts.
const MAX_FILTER_LEN: usize = 200;

/// Directory queries.
#[derive(Default)]
pub struct DirectoryQuery;

#[Object]
impl DirectoryQuery {
    /// Organisations in registration order; open to everyone, signed in or not.
    #[graphql(complexity = "connection_complexity(child_complexity, first, None)")]
    async fn organisations(
        &self,
        ctx: &Context<'_>,
        filter: Option<OrganisationFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, Organisation, EmptyFields, EmptyFields>> {
        let filter = filter.unwrap_or_default();
        for (name, value) in [
            ("filter.name", &filter.name),
            ("filter.region", &filter.region),
            ("filter.specialisation", &filter.specialisation),
        ] {
            if value
                .as_ref()
                .is_some_and(|v| v.chars().count() > MAX_FILTER_LEN)
            {
                return Err(bad_input(format!(
                    "{name} must be at most {MAX_FILTER_LEN} characters"
                )));
            }
        }
        let PageRequest::Forward { first, after } = page_request(first, after, None, None)? else {
            return Err(bad_input("organisations page forwards only"));
        };
        let filter = Filter {
            name: filter.name,
            region: filter.region,
            specialisation: filter.specialisation,
        };
        let page = organisations::list(&services(ctx).db, &filter, first, after)
            .await
            .map_err(|e| internal(ctx, e))?;
        let info = page_info(&page);
        let mut connection = Connection::new(info.has_previous_page, info.has_next_page);
        connection.edges.extend(
            page.items
                .into_iter()
                .map(|(cursor, view)| Edge::new(cursor.encode(), Organisation(view))),
        );
        Ok(connection)
    }
}

/// Details of an organisation as entered.
#[derive(Debug, Clone, InputObject, Serialize)]
pub struct OrganisationDetailsInput {
    pub name: String,
    pub region: String,
    pub address: String,
    /// IANA time zone, e.g. `Europe/Moscow`.
    pub time_zone: String,
    pub working_hours: String,
    pub departments: Vec<String>,
    pub specialisations: Vec<String>,
}

impl From<OrganisationDetailsInput> for OrganisationDetails {
    fn from(i: OrganisationDetailsInput) -> Self {
        OrganisationDetails {
            name: i.name,
            region: i.region,
            address: i.address,
            time_zone: i.time_zone,
            working_hours: i.working_hours,
            departments: i.departments,
            specialisations: i.specialisations,
        }
    }
}

/// Input of `registerOrganisation`.
#[derive(Debug, InputObject)]
pub struct RegisterOrganisationInput {
    pub details: OrganisationDetailsInput,
    /// Repeat a request safely: the same key returns the first result.
    pub idempotency_key: Option<String>,
}

/// Input of `updateOrganisation`.
#[derive(Debug, InputObject)]
pub struct UpdateOrganisationInput {
    /// Global id of the organisation.
    pub id: ID,
    pub details: OrganisationDetailsInput,
    pub idempotency_key: Option<String>,
}

/// Result of an organisation mutation.
#[derive(Debug, SimpleObject)]
pub struct OrganisationPayload {
    /// The organisation as the directory now shows it.
    pub organisation: Option<Organisation>,
    pub user_errors: Vec<UserError>,
}

impl OrganisationPayload {
    fn failed(user_errors: Vec<UserError>) -> Self {
        OrganisationPayload {
            organisation: None,
            user_errors,
        }
    }
}

/// Directory mutations.
#[derive(Default)]
pub struct DirectoryMutation;

impl DirectoryMutation {
    async fn execute(
        ctx: &Context<'_>,
        id: Uuid,
        command: OrganisationCommand,
        input: &(impl Serialize + Sync),
        key: Option<String>,
    ) -> async_graphql::Result<OrganisationPayload> {
        let actor = actor(ctx)?;
        let key = match idempotency_key(key) {
            Ok(key) => key,
            Err(e) => return Ok(OrganisationPayload::failed(vec![e])),
        };
        let outcome = match run_command::<OrganisationAggregate>(
            ctx,
            actor,
            &id.to_string(),
            command,
            &(),
            input,
            key,
            Retry::OnConflict,
        )
        .await?
        {
            Ok((outcome, _)) => outcome,
            Err(errors) => return Ok(OrganisationPayload::failed(errors)),
        };
        read_your_writes(
            ctx,
            &[organisations::NAME, kabinet_projections::activity_log::NAME],
            outcome.last_order(),
        )
        .await;
        let id = Uuid::parse_str(&outcome.aggregate_id).map_err(|e| internal(ctx, e))?;
        let view = organisations::get(&services(ctx).db, id)
            .await
            .map_err(|e| internal(ctx, e))?;
        Ok(OrganisationPayload {
            organisation: view.map(Organisation),
            user_errors: vec![],
        })
    }
}

#[Object]
impl DirectoryMutation {
    /// Registers a medical organisation (administrators).
    async fn register_organisation(
        &self,
        ctx: &Context<'_>,
        input: RegisterOrganisationInput,
    ) -> async_graphql::Result<OrganisationPayload> {
        actor_in(ctx, &[Role::Admin])?;
        let command = OrganisationCommand::Register(input.details.clone().into());
        // The new id is not part of the request: a retry with the same key reports
        // the organisation the first request created.
        Self::execute(
            ctx,
            Uuid::now_v7(),
            command,
            &input.details,
            input.idempotency_key,
        )
        .await
    }

    /// Changes an organisation's details (administrators, or its own registrars).
    async fn update_organisation(
        &self,
        ctx: &Context<'_>,
        input: UpdateOrganisationInput,
    ) -> async_graphql::Result<OrganisationPayload> {
        let actor = actor(ctx)?;
        let id = ids::decode_as(&input.id, "Organisation");
        let allowed = match (actor.role, id) {
            (Role::Admin, Some(_)) => true,
            (Role::Registrar, Some(id)) => actor.organisation_id == Some(id),
            _ => false,
        };
        let Some(id) = id.filter(|_| allowed) else {
            if matches!(actor.role, Role::Admin | Role::Registrar) {
                return Ok(OrganisationPayload::failed(vec![UserError::on_field(
                    "id",
                    "NOT_FOUND",
                    "no such organisation",
                )]));
            }
            return Err(super::context::forbidden());
        };
        let command = OrganisationCommand::UpdateDetails(input.details.clone().into());
        Self::execute(
            ctx,
            id,
            command,
            &(id, &input.details),
            input.idempotency_key,
        )
        .await
    }
}

/// Resolves a global id of the directory.
pub async fn node(ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Option<Organisation>> {
    organisations::get(&services(ctx).db, id)
        .await
        .map(|v| v.map(Organisation))
        .map_err(|e| internal(ctx, e))
}
