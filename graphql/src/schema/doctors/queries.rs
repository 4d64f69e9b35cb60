//! The doctor directory, the service catalogue and free slots.

use super::{parse_date, Doctor, MedicalService, ServiceType, Slot};
use crate::schema::context::{bad_input, internal, services as svc};
use crate::schema::ids;
use crate::schema::pagination::forward_page;
use async_graphql::connection::{Connection, Edge, EmptyFields};
use async_graphql::{Context, InputObject, Object, ID};
use chrono::{Duration, NaiveDate, NaiveTime, TimeZone, Utc};
use kabinet_domain::directory::ServiceKind;
use kabinet_projections::doctors::{self, DoctorFilter as Filter};
use kabinet_projections::organisations;
use kabinet_projections::services::{self, ServiceFilter};
use kabinet_projections::slots;

/// Doctor search filters; all given filters must match.
#[derive(Debug, Default, InputObject)]
pub struct DoctorFilter {
    /// Specialty code, e.g. `cardiologist`.
    pub specialty: Option<String>,
    /// Beginning of the surname, any case.
    pub surname: Option<String>,
    pub service_code: Option<String>,
    pub organisation_id: Option<ID>,
    /// Region of the organisation.
    pub region: Option<String>,
}

/// Service search filters.
#[derive(Debug, Default, InputObject)]
pub struct MedicalServiceFilter {
    /// Part of the name or code, any case.
    pub text: Option<String>,
    pub service_type: Option<ServiceType>,
}

pub(super) fn check_len(name: &str, value: &Option<String>) -> async_graphql::Result<()> {
    if value.as_ref().is_some_and(|v| v.chars().count() > 200) {
        return Err(bad_input(format!("{name} must be at most 200 characters")));
    }
    Ok(())
}

/// Longest range of `freeSlots`, in days.
pub(super) const MAX_SLOT_RANGE_DAYS: i64 = 31;

/// Directory queries about doctors, services and slots.
#[derive(Default)]
pub struct DoctorsQuery;

#[Object]
impl DoctorsQuery {
    /// Doctors in registration order; open to everyone.
    #[graphql(
        complexity = "crate::schema::pagination::connection_complexity(child_complexity, first, None)"
    )]
    async fn doctors(
        &self,
        ctx: &Context<'_>,
        filter: Option<DoctorFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, Doctor, EmptyFields, EmptyFields>> {
        let filter = filter.unwrap_or_default();
        for (name, value) in [
            ("filter.specialty", &filter.specialty),
            ("filter.surname", &filter.surname),
            ("filter.serviceCode", &filter.service_code),
            ("filter.region", &filter.region),
        ] {
            check_len(name, value)?;
        }
        let organisation_id = match &filter.organisation_id {
            None => None,
            Some(id) => Some(
                ids::decode_as(id, "Organisation")
                    .ok_or_else(|| bad_input("filter.organisationId is not an organisation id"))?,
            ),
        };
        let (first, offset) = forward_page(first, after)?;
        let page = doctors::list(
            &svc(ctx).db,
            &Filter {
                specialty: filter.specialty,
                surname: filter.surname,
                service_code: filter.service_code,
                organisation_id,
                region: filter.region,
            },
            first,
            offset,
        )
        .await
        .map_err(|e| internal(ctx, e))?;
        let mut connection = Connection::new(page.has_previous, page.has_next);
        connection.edges.extend(
            page.items
                .into_iter()
                .map(|(c, d)| Edge::new(c.encode(), Doctor(d))),
        );
        Ok(connection)
    }

    /// Medical services; open to everyone.
    #[graphql(
        complexity = "crate::schema::pagination::connection_complexity(child_complexity, first, None)"
    )]
    async fn medical_services(
        &self,
        ctx: &Context<'_>,
        filter: Option<MedicalServiceFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, MedicalService, EmptyFields, EmptyFields>> {
        let filter = filter.unwrap_or_default();
        check_len("filter.text", &filter.text)?;
        let (first, offset) = forward_page(first, after)?;
        let page = services::list(
            &svc(ctx).db,
            &ServiceFilter {
                text: filter.text,
                kind: filter
                    .service_type
                    .map(|t| ServiceKind::from(t).as_str().to_string()),
            },
            first,
            offset,
        )
        .await
        .map_err(|e| internal(ctx, e))?;
        let mut connection = Connection::new(page.has_previous, page.has_next);
        connection.edges.extend(
            page.items
                .into_iter()
                .map(|(c, s)| Edge::new(c.encode(), MedicalService(s))),
        );
        Ok(connection)
    }

    /// Free slots of a doctor from local date `from` to local date `to`
    /// (inclusive, at most 31 days), in the organisation's time zone.
    #[graphql(
        complexity = "crate::schema::limits::free_slots_complexity(child_complexity, &from, &to)"
    )]
    async fn free_slots(
        &self,
        ctx: &Context<'_>,
        doctor_id: ID,
        from: String,
        to: String,
    ) -> async_graphql::Result<Vec<Slot>> {
        let doctor = ids::decode_as(&doctor_id, "Doctor")
            .ok_or_else(|| bad_input("doctorId is not a doctor id"))?;
        let from = parse_date("from", &from).map_err(|e| bad_input(e.to_string()))?;
        let to = parse_date("to", &to).map_err(|e| bad_input(e.to_string()))?;
        if to < from {
            return Err(bad_input("to must not be before from"));
        }
        if (to - from).num_days() >= MAX_SLOT_RANGE_DAYS {
            return Err(bad_input(format!(
                "a range covers at most {MAX_SLOT_RANGE_DAYS} days"
            )));
        }
        let s = svc(ctx);
        let Some(view) = doctors::get(&s.db, doctor)
            .await
            .map_err(|e| internal(ctx, e))?
        else {
            return Err(bad_input("no such doctor"));
        };
        let zone = organisations::get(&s.db, view.details.organisation_id)
            .await
            .map_err(|e| internal(ctx, e))?
            .map(|o| o.details.time_zone)
            .unwrap_or_else(|| "UTC".to_string());
        let tz: chrono_tz::Tz = zone.parse().unwrap_or(chrono_tz::UTC);
        let day_start = |d: NaiveDate| {
            tz.from_local_datetime(&d.and_time(NaiveTime::MIN))
                .earliest()
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_else(|| d.and_time(NaiveTime::MIN).and_utc())
        };
        let now = s.clock.now();
        let start = day_start(from).max(now);
        let end = day_start(to + Duration::days(1));
        let found = slots::free_slots(&s.db, doctor, start, end, 2000)
            .await
            .map_err(|e| internal(ctx, e))?;
        Ok(found.into_iter().map(Slot).collect())
    }
}
