//! The prescription lists of patients, organisations and pharmacies.

use super::{
    verify, Prescription, PrescriptionConnection, PrescriptionStatus, PrescriptionVerification,
};
use crate::schema::context::{
    actor_in, bad_input, forbidden, internal, medical_patient, record_medical_read, services as svc,
};
use crate::schema::directory::Organisation;
use crate::schema::pagination::forward_page;
use async_graphql::connection::{Connection, Edge, EmptyFields};
use async_graphql::{Context, InputObject, Object};
use chrono::{Days, NaiveDate};
use kabinet_domain::Role;
use kabinet_projections::prescriptions::{self, Owner, PrescriptionFilter as Filter};

/// Filters of prescription lists.
#[derive(Debug, Default, InputObject)]
pub struct PrescriptionsFilter {
    /// Only these statuses.
    pub statuses: Option<Vec<PrescriptionStatus>>,
    /// Issued on or after this date (`YYYY-MM-DD`, UTC).
    pub from: Option<String>,
    /// Issued on or before this date (inclusive).
    pub to: Option<String>,
}

pub(super) fn filter_of(filter: Option<PrescriptionsFilter>) -> async_graphql::Result<Filter> {
    let filter = filter.unwrap_or_default();
    let day = |name: &str, raw: Option<String>| -> async_graphql::Result<Option<NaiveDate>> {
        raw.map(|r| {
            NaiveDate::parse_from_str(r.trim(), "%Y-%m-%d")
                .map_err(|_| bad_input(format!("filter.{name} must be a date YYYY-MM-DD")))
        })
        .transpose()
    };
    let from = day("from", filter.from)?;
    let to = day("to", filter.to)?;
    if let (Some(from), Some(to)) = (from, to) {
        if to < from {
            return Err(bad_input("filter.to must not be before filter.from"));
        }
    }
    let start = |d: NaiveDate| d.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    Ok(Filter {
        statuses: filter
            .statuses
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.domain().as_str().to_string())
            .collect(),
        from: from.and_then(start),
        to: to
            .and_then(|d| d.checked_add_days(Days::new(1)))
            .and_then(start),
    })
}

pub(super) async fn list(
    ctx: &Context<'_>,
    owner: Owner,
    filter: Option<PrescriptionsFilter>,
    first: Option<i32>,
    after: Option<String>,
) -> async_graphql::Result<PrescriptionConnection> {
    let (first, offset) = forward_page(first, after)?;
    let filter = filter_of(filter)?;
    let page = prescriptions::list(&svc(ctx).db, owner, &filter, first, offset)
        .await
        .map_err(|e| internal(ctx, e))?;
    let mut connection = Connection::new(page.has_previous, page.has_next);
    for (cursor, view) in page.items {
        record_medical_read(ctx, view.patient_id, "prescription", Some(view.id)).await?;
        connection
            .edges
            .push(Edge::new(cursor.encode(), Prescription(view)));
    }
    Ok(connection)
}

/// Prescription queries.
#[derive(Default)]
pub struct PrescriptionsQuery;

#[Object]
impl PrescriptionsQuery {
    /// The caller's prescriptions, newest first (patients).
    #[graphql(
        complexity = "crate::schema::pagination::connection_complexity(child_complexity, first, None)"
    )]
    async fn my_prescriptions(
        &self,
        ctx: &Context<'_>,
        filter: Option<PrescriptionsFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<PrescriptionConnection> {
        let actor = medical_patient(ctx).await?;
        list(ctx, Owner::Patient(actor.account_id), filter, first, after).await
    }

    /// Prescriptions sent to the caller's pharmacy, newest first (pharmacists).
    #[graphql(
        complexity = "crate::schema::pagination::connection_complexity(child_complexity, first, None)"
    )]
    async fn pharmacy_prescriptions(
        &self,
        ctx: &Context<'_>,
        filter: Option<PrescriptionsFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<PrescriptionConnection> {
        let actor = actor_in(ctx, &[Role::Pharmacist])?;
        let pharmacy = actor.organisation_id.ok_or_else(forbidden)?;
        list(ctx, Owner::Pharmacy(pharmacy), filter, first, after).await
    }

    /// Prescriptions issued in the caller's organisation, newest first (doctors, registrars).
    #[graphql(
        complexity = "crate::schema::pagination::connection_complexity(child_complexity, first, None)"
    )]
    async fn organisation_prescriptions(
        &self,
        ctx: &Context<'_>,
        filter: Option<PrescriptionsFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<PrescriptionConnection> {
        let actor = actor_in(ctx, &[Role::Doctor, Role::Registrar])?;
        let organisation = actor.organisation_id.ok_or_else(forbidden)?;
        list(ctx, Owner::Organisation(organisation), filter, first, after).await
    }

    /// Organisations that receive e-prescriptions (open to everyone).
    #[graphql(
        complexity = "crate::schema::pagination::connection_complexity(child_complexity, first, None)"
    )]
    async fn pharmacies(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, Organisation, EmptyFields, EmptyFields>> {
        let (first, offset) = forward_page(first, after)?;
        let page = prescriptions::list_pharmacies(&svc(ctx).db, first, offset)
            .await
            .map_err(|e| internal(ctx, e))?;
        let mut connection = Connection::new(page.has_previous, page.has_next);
        for (cursor, id) in page.items {
            if let Some(organisation) = crate::schema::directory::node(ctx, id).await? {
                connection
                    .edges
                    .push(Edge::new(cursor.encode(), organisation));
            }
        }
        Ok(connection)
    }

    /// Checks the token of a printed prescription's QR code (open to everyone,
    /// as `GET /verify/prescription/{token}` is).
    #[graphql(complexity = "child_complexity + crate::schema::limits::SIGNED_LOOKUP_COST")]
    async fn verify_prescription(
        &self,
        ctx: &Context<'_>,
        token: String,
    ) -> async_graphql::Result<PrescriptionVerification> {
        verify(svc(ctx), &token).await.map_err(|e| internal(ctx, e))
    }
}
