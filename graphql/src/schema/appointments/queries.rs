//! The appointment lists patients and clinics read, and referral requests.

use super::{
    Appointment, AppointmentSort, AppointmentStatus, AppointmentWhen, ReferralRequest,
    ReferralStatus,
};
use crate::schema::context::{
    actor, bad_input, forbidden, internal, medical_patient, record_medical_read, services as svc,
};
use crate::schema::ids;
use crate::schema::pagination::forward_page;
use async_graphql::connection::{Connection, Edge, EmptyFields};
use async_graphql::{Context, InputObject, Object, ID};
use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};
use kabinet_domain::Role;
use kabinet_projections::appointments::{
    self, AppointmentFilter, AppointmentView, Scope, Sort, When,
};
use kabinet_projections::referrals;

/// Filters of `myAppointments`.
#[derive(Debug, Default, InputObject)]
pub struct MyAppointmentsFilter {
    /// Default: all.
    pub when: Option<AppointmentWhen>,
    /// Only from this local date (`YYYY-MM-DD`, inclusive).
    pub from: Option<String>,
    /// Only up to this local date (inclusive).
    pub to: Option<String>,
    pub specialty: Option<String>,
    pub statuses: Option<Vec<AppointmentStatus>>,
}

/// Filters of `visitHistory`.
#[derive(Debug, Default, InputObject)]
pub struct VisitHistoryFilter {
    pub from: Option<String>,
    pub to: Option<String>,
    pub service_type: Option<crate::schema::doctors::ServiceType>,
    pub doctor_id: Option<ID>,
}

/// Lower (inclusive) and upper (exclusive) instants of a date filter.
pub(super) type DateBounds = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// A date range in UTC from optional local dates (read as Moscow-independent UTC
/// day bounds widened by a day, then narrowed by the local date column).
pub(super) fn date_bounds(
    from: Option<String>,
    to: Option<String>,
) -> async_graphql::Result<DateBounds> {
    let parse = |name: &str, raw: String| -> async_graphql::Result<NaiveDate> {
        NaiveDate::parse_from_str(raw.trim(), "%Y-%m-%d").map_err(|_| {
            bad_input(format!(
                "filter.{name}: '{raw}' is not a date in the form YYYY-MM-DD"
            ))
        })
    };
    let from = from.map(|f| parse("from", f)).transpose()?;
    let to = to.map(|t| parse("to", t)).transpose()?;
    if let (Some(f), Some(t)) = (from, to) {
        if t < f {
            return Err(bad_input("filter.to must not be before filter.from"));
        }
    }
    // Local days span at most UTC-12..UTC+14 around the UTC day.
    Ok((
        from.map(|d| d.and_time(NaiveTime::MIN).and_utc() - Duration::hours(14)),
        to.map(|d| {
            (d + Duration::days(1)).and_time(NaiveTime::MIN).and_utc() + Duration::hours(12)
        }),
    ))
}

pub(super) fn in_local_range(
    view: &AppointmentView,
    from: &Option<String>,
    to: &Option<String>,
) -> bool {
    let day = view.day.to_string();
    from.as_ref().is_none_or(|f| day.as_str() >= f.trim())
        && to.as_ref().is_none_or(|t| day.as_str() <= t.trim())
}

pub(super) fn connection_of(
    page: kabinet_projections::page::OffsetPage<AppointmentView>,
) -> Connection<String, Appointment, EmptyFields, EmptyFields> {
    let mut connection = Connection::new(page.has_previous, page.has_next);
    connection.edges.extend(
        page.items
            .into_iter()
            .map(|(c, a)| Edge::new(c.encode(), Appointment(a))),
    );
    connection
}

/// Appointment queries.
#[derive(Default)]
pub struct AppointmentsQuery;

#[Object]
impl AppointmentsQuery {
    /// The caller's appointments (patients).
    #[graphql(
        complexity = "crate::schema::pagination::connection_complexity(child_complexity, first, None)"
    )]
    async fn my_appointments(
        &self,
        ctx: &Context<'_>,
        filter: Option<MyAppointmentsFilter>,
        sort: Option<AppointmentSort>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, Appointment, EmptyFields, EmptyFields>> {
        let actor = actor(ctx)?;
        if actor.role != Role::Patient {
            return Err(forbidden());
        }
        let filter = filter.unwrap_or_default();
        if filter.specialty.as_ref().is_some_and(|s| s.len() > 60) {
            return Err(bad_input("filter.specialty must be at most 60 characters"));
        }
        let (first, offset) = forward_page(first, after)?;
        let (from, to) = date_bounds(filter.from.clone(), filter.to.clone())?;
        let when = match filter.when.unwrap_or(AppointmentWhen::All) {
            AppointmentWhen::Upcoming => When::Upcoming,
            AppointmentWhen::Past => When::Past,
            AppointmentWhen::Cancelled => When::Cancelled,
            AppointmentWhen::All => When::All,
        };
        let sort = match sort.unwrap_or(AppointmentSort::DateAsc) {
            AppointmentSort::DateAsc => Sort::StartAsc,
            AppointmentSort::DateDesc => Sort::StartDesc,
            AppointmentSort::Status => Sort::Status,
        };
        let query = AppointmentFilter {
            when,
            from,
            to,
            specialty: filter.specialty.clone(),
            statuses: filter
                .statuses
                .unwrap_or_default()
                .into_iter()
                .map(|s| s.as_str().to_string())
                .collect(),
            ..AppointmentFilter::default()
        };
        let s = svc(ctx);
        let mut page = appointments::list(
            &s.db,
            &Scope::Patient(actor.account_id),
            &query,
            sort,
            s.clock.now(),
            first,
            offset,
        )
        .await
        .map_err(|e| internal(ctx, e))?;
        page.items
            .retain(|(_, a)| in_local_range(a, &filter.from, &filter.to));
        Ok(connection_of(page))
    }

    /// The caller's past visits with their outcome (patients): fulfilled visits and no-shows.
    #[graphql(
        complexity = "crate::schema::pagination::connection_complexity(child_complexity, first, None)"
    )]
    async fn visit_history(
        &self,
        ctx: &Context<'_>,
        filter: Option<VisitHistoryFilter>,
        sort: Option<AppointmentSort>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, Appointment, EmptyFields, EmptyFields>> {
        let actor = medical_patient(ctx).await?;
        let filter = filter.unwrap_or_default();
        let (first, offset) = forward_page(first, after)?;
        let (from, to) = date_bounds(filter.from.clone(), filter.to.clone())?;
        record_medical_read(ctx, actor.account_id, "visit_history", None).await?;
        let doctor_id = match &filter.doctor_id {
            None => None,
            Some(id) => Some(
                ids::decode_as(id, "Doctor")
                    .ok_or_else(|| bad_input("filter.doctorId is not a doctor id"))?,
            ),
        };
        let sort = match sort.unwrap_or(AppointmentSort::DateDesc) {
            AppointmentSort::DateAsc => Sort::StartAsc,
            AppointmentSort::DateDesc => Sort::StartDesc,
            AppointmentSort::Status => Sort::Status,
        };
        // A fulfilled visit or a no-show has happened, whatever the clock says.
        let query = AppointmentFilter {
            when: When::All,
            from,
            to,
            statuses: vec!["fulfilled".into(), "no_show".into()],
            doctor_id,
            service_kind: filter.service_type.map(|t| {
                kabinet_domain::directory::ServiceKind::from(t)
                    .as_str()
                    .to_string()
            }),
            ..AppointmentFilter::default()
        };
        let s = svc(ctx);
        let mut page = appointments::list(
            &s.db,
            &Scope::Patient(actor.account_id),
            &query,
            sort,
            s.clock.now(),
            first,
            offset,
        )
        .await
        .map_err(|e| internal(ctx, e))?;
        page.items
            .retain(|(_, a)| in_local_range(a, &filter.from, &filter.to));
        Ok(connection_of(page))
    }

    /// An organisation's appointments on one local date (its registrars and doctors).
    #[graphql(
        complexity = "crate::schema::pagination::connection_complexity(child_complexity, first, None)"
    )]
    async fn organisation_appointments(
        &self,
        ctx: &Context<'_>,
        organisation_id: ID,
        date: String,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, Appointment, EmptyFields, EmptyFields>> {
        let actor = actor(ctx)?;
        let organisation = ids::decode_as(&organisation_id, "Organisation");
        let allowed = match actor.role {
            Role::Admin => organisation.is_some(),
            Role::Registrar | Role::Doctor => {
                organisation.is_some() && actor.organisation_id == organisation
            }
            _ => false,
        };
        let (Some(organisation), true) = (organisation, allowed) else {
            return Err(forbidden());
        };
        let day = NaiveDate::parse_from_str(date.trim(), "%Y-%m-%d").map_err(|_| {
            bad_input(format!(
                "date: '{date}' is not a date in the form YYYY-MM-DD"
            ))
        })?;
        let (first, offset) = forward_page(first, after)?;
        let s = svc(ctx);
        let page = appointments::list(
            &s.db,
            &Scope::Organisation {
                id: organisation,
                day,
            },
            &AppointmentFilter::default(),
            Sort::StartAsc,
            s.clock.now(),
            first,
            offset,
        )
        .await
        .map_err(|e| internal(ctx, e))?;
        Ok(connection_of(page))
    }

    /// The caller's referral requests, newest first (patients).
    #[graphql(
        complexity = "crate::schema::pagination::connection_complexity(child_complexity, first, None)"
    )]
    async fn my_referral_requests(
        &self,
        ctx: &Context<'_>,
        status: Option<ReferralStatus>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, ReferralRequest, EmptyFields, EmptyFields>> {
        let actor = medical_patient(ctx).await?;
        let (first, offset) = forward_page(first, after)?;
        record_medical_read(ctx, actor.account_id, "referral_requests", None).await?;
        let status = status.map(ReferralStatus::as_str);
        let page =
            referrals::list_for_patient(&svc(ctx).db, actor.account_id, status, first, offset)
                .await
                .map_err(|e| internal(ctx, e))?;
        let mut connection = Connection::new(page.has_previous, page.has_next);
        connection.edges.extend(
            page.items
                .into_iter()
                .map(|(c, r)| Edge::new(c.encode(), ReferralRequest(r))),
        );
        Ok(connection)
    }
}
