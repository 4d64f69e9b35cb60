//! Appointments (C2–C6): booking, moving, cancelling, the visit, reviews,
//! referrals, and the lists patients and clinics read.

use async_graphql::connection::{Connection, Edge, EmptyFields};
use async_graphql::{Context, Enum, InputObject, Object, SimpleObject, ID};
use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};
use kabinet_domain::appointments::{
    AppointmentCommand, BookingError, BookingRequest, ChangedBy, Referral as ReferralAggregate,
    ReferralCommand,
};
use kabinet_domain::command::{CommandOutcome, Retry};
use kabinet_domain::patients::{Patient, PatientCommand, PatientProfile, Sex as DomainSex};
use kabinet_domain::{Actor, Role};
use kabinet_projections::appointments::{
    self, AppointmentFilter, AppointmentView, Scope, Sort, When,
};
use kabinet_projections::referrals::{self, ReferralView};
use kabinet_projections::{activity_log, doctors, organisations, slots};
use serde::Serialize;
use uuid::Uuid;

use super::context::{
    actor, bad_input, forbidden, in_care_of_caller, internal, medical_patient, metadata,
    read_your_writes, record_medical_read, services as svc,
};
use super::directory::Organisation;
use super::doctors::{local, local_time, Doctor};
use super::errors::{idempotency_key, run_command, UserError};
use super::ids;
use super::pagination::forward_page;
use super::slots_ids;

/// Read models an appointment mutation waits for.
const APPOINTMENT_MODELS: &[&str] = &[
    appointments::NAME,
    slots::NAME,
    activity_log::NAME,
    doctors::NAME,
];

/// Where an appointment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Serialize)]
pub enum AppointmentStatus {
    Booked,
    Arrived,
    Fulfilled,
    NoShow,
    Cancelled,
}

impl AppointmentStatus {
    fn parse(s: &str) -> AppointmentStatus {
        match s {
            "arrived" => AppointmentStatus::Arrived,
            "fulfilled" => AppointmentStatus::Fulfilled,
            "no_show" => AppointmentStatus::NoShow,
            "cancelled" => AppointmentStatus::Cancelled,
            _ => AppointmentStatus::Booked,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            AppointmentStatus::Booked => "booked",
            AppointmentStatus::Arrived => "arrived",
            AppointmentStatus::Fulfilled => "fulfilled",
            AppointmentStatus::NoShow => "no_show",
            AppointmentStatus::Cancelled => "cancelled",
        }
    }

    fn label_ru(self) -> &'static str {
        match self {
            AppointmentStatus::Booked => "Записан",
            AppointmentStatus::Arrived => "Пациент пришёл",
            AppointmentStatus::Fulfilled => "Приём состоялся",
            AppointmentStatus::NoShow => "Неявка",
            AppointmentStatus::Cancelled => "Отменена",
        }
    }
}

/// What the doctor recorded about a visit.
#[derive(Debug, Clone, SimpleObject)]
pub struct VisitOutcome {
    /// ICD-10 (МКБ-10) code.
    pub diagnosis_code: String,
    pub diagnosis_text: String,
    pub recommendations: String,
    pub prescriptions: Vec<String>,
    pub referrals: Vec<String>,
}

/// An appointment.
#[derive(Debug, Clone)]
pub struct Appointment(pub AppointmentView);

#[Object]
impl Appointment {
    /// Global id.
    pub async fn id(&self) -> ID {
        ids::encode("Appointment", self.0.id)
    }
    async fn status(&self) -> AppointmentStatus {
        AppointmentStatus::parse(&self.0.status)
    }
    /// The status in Russian, for display.
    async fn status_label_ru(&self) -> &'static str {
        AppointmentStatus::parse(&self.0.status).label_ru()
    }
    /// Start, with the organisation's UTC offset.
    async fn start(&self) -> String {
        local(self.0.start, &self.0.time_zone)
    }
    async fn end(&self) -> String {
        local(self.0.end, &self.0.time_zone)
    }
    /// Local date of the visit.
    async fn date(&self) -> NaiveDate {
        self.0.day
    }
    /// Local time of the visit, `HH:MM`.
    async fn time(&self) -> String {
        local_time(self.0.start, &self.0.time_zone)
    }
    async fn time_zone(&self) -> &str {
        &self.0.time_zone
    }
    async fn room(&self) -> &str {
        &self.0.room
    }
    async fn service_code(&self) -> Option<&str> {
        self.0.service_code.as_deref()
    }
    async fn specialty(&self) -> Option<&str> {
        self.0.specialty.as_deref()
    }
    /// Why it was cancelled, when it was.
    async fn cancel_reason(&self) -> Option<&str> {
        self.0.cancel_reason.as_deref()
    }
    /// `PATIENT` or `CLINIC`, when cancelled.
    async fn cancelled_by(&self) -> Option<String> {
        self.0.cancelled_by.as_ref().map(|b| b.to_uppercase())
    }
    /// The doctor's record of the visit (diagnosis): medical data, so patients need a
    /// verified identity, and every read is recorded in the patient's account journal.
    /// Of the staff, only doctors of the visit's organisation see it, while the
    /// patient is in its care; registrars and administrators get `null`.
    async fn outcome(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<VisitOutcome>> {
        if self.0.outcome.is_none() {
            return Ok(None);
        }
        let actor = actor(ctx)?;
        match actor.role {
            Role::Patient => {
                medical_patient(ctx).await?;
            }
            Role::Doctor
                if actor.organisation_id == Some(self.0.organisation_id)
                    && in_care_of_caller(ctx, actor, self.0.patient_id).await? => {}
            _ => return Ok(None),
        }
        record_medical_read(ctx, self.0.patient_id, "visit_outcome", Some(self.0.id)).await?;
        Ok(self.0.outcome.as_ref().map(|o| VisitOutcome {
            diagnosis_code: o.diagnosis_code.as_str().to_string(),
            diagnosis_text: o.diagnosis_text.clone(),
            recommendations: o.recommendations.clone(),
            prescriptions: o.prescriptions.clone(),
            referrals: o.referrals.clone(),
        }))
    }
    /// The patient's rating of the visit, once reviewed.
    async fn review_rating(&self) -> Option<i32> {
        self.0.review_rating
    }
    async fn patient_id(&self) -> ID {
        ids::encode("Account", self.0.patient_id)
    }
    async fn doctor(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Doctor>> {
        doctors::get(&svc(ctx).db, self.0.doctor_id)
            .await
            .map(|d| d.map(Doctor))
            .map_err(|e| internal(ctx, e))
    }
    async fn organisation(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Organisation>> {
        super::directory::node(ctx, self.0.organisation_id).await
    }
}

/// A referral request.
#[derive(Debug, Clone)]
pub struct ReferralRequest(pub ReferralView);

#[Object]
impl ReferralRequest {
    /// Global id.
    pub async fn id(&self) -> ID {
        ids::encode("ReferralRequest", self.0.id)
    }
    async fn specialty(&self) -> &str {
        &self.0.specialty
    }
    async fn reason(&self) -> &str {
        &self.0.reason
    }
    /// `PROCESSING`, `APPROVED` or `REJECTED`.
    async fn status(&self) -> String {
        self.0.status.to_uppercase()
    }
    async fn status_label_ru(&self) -> &'static str {
        match self.0.status.as_str() {
            "approved" => "Одобрено",
            "rejected" => "Отклонено",
            _ => "В обработке",
        }
    }
    /// The clinic's note or reason for the decision.
    async fn decision(&self) -> Option<&str> {
        self.0.decision.as_deref()
    }
    async fn requested_at(&self) -> DateTime<Utc> {
        self.0.requested_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    async fn organisation(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Organisation>> {
        super::directory::node(ctx, self.0.organisation_id).await
    }
}

/// Which appointments to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum AppointmentWhen {
    Upcoming,
    Past,
    Cancelled,
    All,
}

/// Sort orders of appointment lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum AppointmentSort {
    DateAsc,
    DateDesc,
    Status,
}

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
    pub service_type: Option<super::doctors::ServiceType>,
    pub doctor_id: Option<ID>,
}

/// Lower (inclusive) and upper (exclusive) instants of a date filter.
type DateBounds = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// A date range in UTC from optional local dates (read as Moscow-independent UTC
/// day bounds widened by a day, then narrowed by the local date column).
fn date_bounds(from: Option<String>, to: Option<String>) -> async_graphql::Result<DateBounds> {
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

fn in_local_range(view: &AppointmentView, from: &Option<String>, to: &Option<String>) -> bool {
    let day = view.day.to_string();
    from.as_ref().is_none_or(|f| day.as_str() >= f.trim())
        && to.as_ref().is_none_or(|t| day.as_str() <= t.trim())
}

fn connection_of(
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

/// Whether `actor` may see or act on appointment `view`.
fn may_see(actor: &Actor, view: &AppointmentView) -> bool {
    match actor.role {
        Role::Patient => actor.account_id == view.patient_id,
        Role::Registrar | Role::Doctor => actor.organisation_id == Some(view.organisation_id),
        Role::Admin => true,
        _ => false,
    }
}

/// Appointment queries.
#[derive(Default)]
pub struct AppointmentsQuery;

#[Object]
impl AppointmentsQuery {
    /// The caller's appointments (patients).
    #[graphql(
        complexity = "super::pagination::connection_complexity(child_complexity, first, None)"
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
        complexity = "super::pagination::connection_complexity(child_complexity, first, None)"
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
        complexity = "super::pagination::connection_complexity(child_complexity, first, None)"
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
        complexity = "super::pagination::connection_complexity(child_complexity, first, None)"
    )]
    async fn my_referral_requests(
        &self,
        ctx: &Context<'_>,
        status: Option<ReferralDecisionStatus>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, ReferralRequest, EmptyFields, EmptyFields>> {
        let actor = medical_patient(ctx).await?;
        let (first, offset) = forward_page(first, after)?;
        record_medical_read(ctx, actor.account_id, "referral_requests", None).await?;
        let status = status.map(|s| match s {
            ReferralDecisionStatus::Processing => "processing",
            ReferralDecisionStatus::Approved => "approved",
            ReferralDecisionStatus::Rejected => "rejected",
        });
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

/// Status filter of referral requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum ReferralDecisionStatus {
    Processing,
    Approved,
    Rejected,
}

/// Sex in the patient's documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Serialize)]
pub enum Sex {
    Female,
    Male,
}

/// Input of `recordPatientProfile`.
#[derive(Debug, Clone, InputObject, Serialize)]
pub struct RecordPatientProfileInput {
    /// The patient (registrars only; patients record their own profile).
    pub patient_id: Option<ID>,
    pub surname: String,
    pub first_name: String,
    pub patronymic: Option<String>,
    /// `YYYY-MM-DD`.
    pub birth_date: String,
    pub sex: Sex,
    pub idempotency_key: Option<String>,
}

/// Result of `recordPatientProfile`.
#[derive(Debug, SimpleObject)]
pub struct PatientProfilePayload {
    pub recorded: bool,
    pub user_errors: Vec<UserError>,
}

/// Input of `bookAppointment`.
#[derive(Debug, Clone, InputObject, Serialize)]
pub struct BookAppointmentInput {
    /// A slot id from `freeSlots`.
    pub slot_id: ID,
    pub service_code: Option<String>,
    /// The patient (registrars booking on a patient's behalf).
    pub patient_id: Option<ID>,
    pub idempotency_key: Option<String>,
}

/// Input of `rescheduleAppointment`.
#[derive(Debug, Clone, InputObject, Serialize)]
pub struct RescheduleAppointmentInput {
    pub appointment_id: ID,
    /// A free slot of the same doctor.
    pub slot_id: ID,
    pub idempotency_key: Option<String>,
}

/// Input of `cancelAppointment`.
#[derive(Debug, Clone, InputObject, Serialize)]
pub struct CancelAppointmentInput {
    pub appointment_id: ID,
    pub reason: Option<String>,
    pub idempotency_key: Option<String>,
}

/// Input of the clinic's simple actions (`markPatientArrived`, `markNoShow`).
#[derive(Debug, Clone, InputObject, Serialize)]
pub struct AppointmentActionInput {
    pub appointment_id: ID,
    pub idempotency_key: Option<String>,
}

/// Input of `fulfilVisit`.
#[derive(Debug, Clone, InputObject, Serialize)]
pub struct FulfilVisitInput {
    pub appointment_id: ID,
    /// ICD-10 (МКБ-10) code, e.g. `J06.9`.
    pub diagnosis_code: String,
    pub diagnosis_text: String,
    #[graphql(default)]
    pub recommendations: String,
    /// References of e-prescriptions issued.
    #[graphql(default)]
    pub prescriptions: Vec<String>,
    /// Specialties the patient is referred to.
    #[graphql(default)]
    pub referrals: Vec<String>,
    pub idempotency_key: Option<String>,
}

/// Input of `reviewVisit`.
#[derive(Debug, Clone, InputObject, Serialize)]
pub struct ReviewVisitInput {
    pub appointment_id: ID,
    /// 1 to 5.
    pub rating: i32,
    pub text: Option<String>,
    pub idempotency_key: Option<String>,
}

/// Result of every appointment mutation.
#[derive(Debug, SimpleObject)]
pub struct AppointmentPayload {
    /// The appointment as the patient now sees it.
    pub appointment: Option<Appointment>,
    pub user_errors: Vec<UserError>,
}

impl AppointmentPayload {
    fn failed(e: UserError) -> Self {
        AppointmentPayload {
            appointment: None,
            user_errors: vec![e],
        }
    }
}

/// Input of `requestReferral`.
#[derive(Debug, Clone, InputObject, Serialize)]
pub struct RequestReferralInput {
    pub organisation_id: ID,
    /// Specialty wanted, e.g. `cardiologist`.
    pub specialty: String,
    pub reason: String,
    pub idempotency_key: Option<String>,
}

/// Input of `decideReferral`.
#[derive(Debug, Clone, InputObject, Serialize)]
pub struct DecideReferralInput {
    pub referral_id: ID,
    pub approve: bool,
    /// A note when approving; the reason (required) when rejecting.
    pub comment: Option<String>,
    pub idempotency_key: Option<String>,
}

/// Result of referral mutations.
#[derive(Debug, SimpleObject)]
pub struct ReferralPayload {
    pub referral: Option<ReferralRequest>,
    pub user_errors: Vec<UserError>,
}

fn not_found() -> UserError {
    UserError::on_field("appointmentId", "NOT_FOUND", "no such appointment")
}

/// The appointment named by `id` if the caller may act on it; NOT_FOUND otherwise,
/// so ids of others' appointments reveal nothing.
async fn visible(
    ctx: &Context<'_>,
    actor: &Actor,
    id: &ID,
) -> async_graphql::Result<Option<AppointmentView>> {
    let Some(uuid) = ids::decode_as(id, "Appointment") else {
        return Ok(None);
    };
    let s = svc(ctx);
    let view = match appointments::get(&s.db, uuid)
        .await
        .map_err(|e| internal(ctx, e))?
    {
        Some(view) => Some(view),
        // Booked by another request a moment ago and not projected yet: the
        // aggregate itself is always current.
        None => {
            let state = s
                .booking
                .appointment(uuid)
                .await
                .map_err(|e| internal(ctx, e))?;
            match (state.patient_id, state.slot, state.status) {
                (Some(patient_id), Some(slot), Some(status)) => Some(AppointmentView {
                    id: uuid,
                    patient_id,
                    doctor_id: slot.doctor_id,
                    organisation_id: slot.organisation_id,
                    start: slot.start,
                    end: slot.end,
                    day: slot.day,
                    time_zone: slot.time_zone,
                    room: slot.room,
                    service_code: state.service_code,
                    status: status.as_str().to_string(),
                    cancel_reason: None,
                    cancelled_by: None,
                    outcome: state.outcome,
                    review_rating: None,
                    specialty: None,
                }),
                _ => None,
            }
        }
    };
    Ok(view.filter(|v| may_see(actor, v)))
}

/// Sorts booking failures into user errors and masked faults.
fn booking_result(
    ctx: &Context<'_>,
    result: Result<(CommandOutcome, kabinet_domain::appointments::Appointment), BookingError>,
) -> async_graphql::Result<Result<CommandOutcome, UserError>> {
    match result {
        Ok((outcome, _)) => Ok(Ok(outcome)),
        Err(BookingError::User(e)) => Ok(Err(e.into())),
        Err(BookingError::Internal(e)) => Err(internal(ctx, e)),
    }
}

/// Waits for the read models and returns the appointment as they show it.
async fn payload(
    ctx: &Context<'_>,
    outcome: CommandOutcome,
) -> async_graphql::Result<AppointmentPayload> {
    read_your_writes(ctx, APPOINTMENT_MODELS, outcome.last_order()).await;
    let id = Uuid::parse_str(&outcome.aggregate_id).map_err(|e| internal(ctx, e))?;
    let view = appointments::get(&svc(ctx).db, id)
        .await
        .map_err(|e| internal(ctx, e))?;
    Ok(AppointmentPayload {
        appointment: view.map(Appointment),
        user_errors: vec![],
    })
}

/// Who a change comes from.
fn changed_by(actor: &Actor) -> ChangedBy {
    if actor.role == Role::Patient {
        ChangedBy::Patient
    } else {
        ChangedBy::Clinic
    }
}

/// Appointment mutations.
#[derive(Default)]
pub struct AppointmentsMutation;

impl AppointmentsMutation {
    /// Runs a clinic or patient action on a visible appointment.
    async fn act(
        ctx: &Context<'_>,
        roles: &[Role],
        appointment_id: &ID,
        key: Option<String>,
        input: &(impl Serialize + Sync),
        command: impl FnOnce(&Actor, &AppointmentView) -> AppointmentCommand,
    ) -> async_graphql::Result<AppointmentPayload> {
        let actor = actor(ctx)?;
        if !roles.contains(&actor.role) {
            return Err(forbidden());
        }
        let key = match idempotency_key(key) {
            Ok(k) => k,
            Err(e) => return Ok(AppointmentPayload::failed(e)),
        };
        let Some(view) = visible(ctx, actor, appointment_id).await? else {
            return Ok(AppointmentPayload::failed(not_found()));
        };
        let command = command(actor, &view);
        let meta = metadata(ctx, actor, key);
        let input = serde_json::to_value(input).map_err(|e| internal(ctx, e))?;
        match booking_result(
            ctx,
            svc(ctx).booking.act(&meta, view.id, command, &input).await,
        )? {
            Ok(outcome) => payload(ctx, outcome).await,
            Err(e) => Ok(AppointmentPayload::failed(e)),
        }
    }
}

#[Object]
impl AppointmentsMutation {
    /// Records a patient's name, birth date and sex (the patient, or a registrar).
    async fn record_patient_profile(
        &self,
        ctx: &Context<'_>,
        input: RecordPatientProfileInput,
    ) -> async_graphql::Result<PatientProfilePayload> {
        let actor = actor(ctx)?;
        let failed = |e: UserError| {
            Ok(PatientProfilePayload {
                recorded: false,
                user_errors: vec![e],
            })
        };
        let patient = match (actor.role, &input.patient_id) {
            (Role::Patient, None) => actor.account_id,
            (Role::Patient, Some(id))
                if ids::decode_as(id, "Account") == Some(actor.account_id) =>
            {
                actor.account_id
            }
            (Role::Registrar, Some(id)) => match ids::decode_as(id, "Account") {
                Some(p) => p,
                None => {
                    return failed(UserError::on_field(
                        "patientId",
                        "INVALID_INPUT",
                        "not an account id",
                    ))
                }
            },
            (Role::Registrar, None) => {
                return failed(UserError::on_field(
                    "patientId",
                    "INVALID_INPUT",
                    "registrars name the patient",
                ))
            }
            _ => return Err(forbidden()),
        };
        let key = match idempotency_key(input.idempotency_key.clone()) {
            Ok(k) => k,
            Err(e) => return failed(e),
        };
        let Ok(birth_date) = NaiveDate::parse_from_str(input.birth_date.trim(), "%Y-%m-%d") else {
            return failed(UserError::on_field(
                "birthDate",
                "INVALID_INPUT",
                "not a date in the form YYYY-MM-DD",
            ));
        };
        let command = PatientCommand::RecordProfile {
            profile: PatientProfile {
                surname: input.surname.clone(),
                first_name: input.first_name.clone(),
                patronymic: input.patronymic.clone(),
                birth_date,
                sex: match input.sex {
                    Sex::Female => DomainSex::Female,
                    Sex::Male => DomainSex::Male,
                },
            },
            today: svc(ctx).clock.now().date_naive(),
        };
        match run_command::<Patient>(
            ctx,
            actor,
            &patient.to_string(),
            command,
            &(),
            &input,
            key,
            Retry::OnConflict,
        )
        .await?
        {
            Ok((outcome, _)) => {
                read_your_writes(ctx, &[activity_log::NAME], outcome.last_order()).await;
                Ok(PatientProfilePayload {
                    recorded: true,
                    user_errors: vec![],
                })
            }
            Err(errors) => Ok(PatientProfilePayload {
                recorded: false,
                user_errors: errors,
            }),
        }
    }

    /// Books a free slot (patients for themselves; registrars for a patient at their organisation).
    async fn book_appointment(
        &self,
        ctx: &Context<'_>,
        input: BookAppointmentInput,
    ) -> async_graphql::Result<AppointmentPayload> {
        let actor = actor(ctx)?;
        let patient = match (actor.role, &input.patient_id) {
            (Role::Patient, None) => actor.account_id,
            (Role::Patient, Some(id))
                if ids::decode_as(id, "Account") == Some(actor.account_id) =>
            {
                actor.account_id
            }
            (Role::Patient, Some(_)) => return Err(forbidden()),
            (Role::Registrar, Some(id)) => match ids::decode_as(id, "Account") {
                Some(p) => p,
                None => {
                    return Ok(AppointmentPayload::failed(UserError::on_field(
                        "patientId",
                        "INVALID_INPUT",
                        "not an account id",
                    )))
                }
            },
            (Role::Registrar, None) => {
                return Ok(AppointmentPayload::failed(UserError::on_field(
                    "patientId",
                    "INVALID_INPUT",
                    "registrars name the patient",
                )))
            }
            _ => return Err(forbidden()),
        };
        let key = match idempotency_key(input.idempotency_key.clone()) {
            Ok(k) => k,
            Err(e) => return Ok(AppointmentPayload::failed(e)),
        };
        let Some((doctor_id, start)) = slots_ids::decode(&input.slot_id) else {
            return Ok(AppointmentPayload::failed(UserError::on_field(
                "slotId",
                "SLOT_NOT_FOUND",
                "not a slot id",
            )));
        };
        if actor.role == Role::Registrar {
            let doctor = doctors::get(&svc(ctx).db, doctor_id)
                .await
                .map_err(|e| internal(ctx, e))?;
            if doctor.is_none_or(|d| Some(d.details.organisation_id) != actor.organisation_id) {
                return Ok(AppointmentPayload::failed(UserError::on_field(
                    "slotId",
                    "SLOT_NOT_FOUND",
                    "no such slot at your organisation",
                )));
            }
        }
        let meta = metadata(ctx, actor, key);
        let fingerprint = serde_json::to_value(&input).map_err(|e| internal(ctx, e))?;
        let result = svc(ctx)
            .booking
            .book(
                &meta,
                BookingRequest {
                    patient_id: patient,
                    doctor_id,
                    start,
                    service_code: input.service_code.clone(),
                    by: changed_by(actor),
                },
                &fingerprint,
            )
            .await;
        match booking_result(ctx, result)? {
            Ok(outcome) => payload(ctx, outcome).await,
            Err(e) => Ok(AppointmentPayload::failed(e)),
        }
    }

    /// Moves an appointment to another free slot of the same doctor; if that slot
    /// is taken the appointment stays as it was.
    async fn reschedule_appointment(
        &self,
        ctx: &Context<'_>,
        input: RescheduleAppointmentInput,
    ) -> async_graphql::Result<AppointmentPayload> {
        let actor = actor(ctx)?;
        if !matches!(actor.role, Role::Patient | Role::Registrar) {
            return Err(forbidden());
        }
        let key = match idempotency_key(input.idempotency_key.clone()) {
            Ok(k) => k,
            Err(e) => return Ok(AppointmentPayload::failed(e)),
        };
        let Some(view) = visible(ctx, actor, &input.appointment_id).await? else {
            return Ok(AppointmentPayload::failed(not_found()));
        };
        let Some((doctor_id, start)) = slots_ids::decode(&input.slot_id) else {
            return Ok(AppointmentPayload::failed(UserError::on_field(
                "slotId",
                "SLOT_NOT_FOUND",
                "not a slot id",
            )));
        };
        if doctor_id != view.doctor_id {
            return Ok(AppointmentPayload::failed(UserError::on_field(
                "slotId",
                "SLOT_OF_ANOTHER_DOCTOR",
                "the new slot belongs to another doctor; book that doctor instead",
            )));
        }
        let meta = metadata(ctx, actor, key);
        let fingerprint = serde_json::to_value(&input).map_err(|e| internal(ctx, e))?;
        let result = svc(ctx)
            .booking
            .reschedule(&meta, view.id, start, changed_by(actor), &fingerprint)
            .await;
        match booking_result(ctx, result)? {
            Ok(outcome) => payload(ctx, outcome).await,
            Err(e) => Ok(AppointmentPayload::failed(e)),
        }
    }

    /// Cancels an appointment (its patient before the cut-off; the clinic at any time).
    async fn cancel_appointment(
        &self,
        ctx: &Context<'_>,
        input: CancelAppointmentInput,
    ) -> async_graphql::Result<AppointmentPayload> {
        let now = svc(ctx).clock.now();
        let reason = input.reason.clone();
        Self::act(
            ctx,
            &[Role::Patient, Role::Registrar],
            &input.appointment_id,
            input.idempotency_key.clone(),
            &input,
            |actor, _| AppointmentCommand::Cancel {
                reason,
                by: changed_by(actor),
                now,
            },
        )
        .await
    }

    /// Records that the patient came (the organisation's registrars and doctors).
    async fn mark_patient_arrived(
        &self,
        ctx: &Context<'_>,
        input: AppointmentActionInput,
    ) -> async_graphql::Result<AppointmentPayload> {
        let now = svc(ctx).clock.now();
        Self::act(
            ctx,
            &[Role::Registrar, Role::Doctor],
            &input.appointment_id,
            input.idempotency_key.clone(),
            &input,
            |_, _| AppointmentCommand::MarkArrived {
                now,
                opens_before: svc(ctx).visit_opens_before,
            },
        )
        .await
    }

    /// Records that the patient did not come (after the visit's start).
    async fn mark_no_show(
        &self,
        ctx: &Context<'_>,
        input: AppointmentActionInput,
    ) -> async_graphql::Result<AppointmentPayload> {
        let now = svc(ctx).clock.now();
        Self::act(
            ctx,
            &[Role::Registrar, Role::Doctor],
            &input.appointment_id,
            input.idempotency_key.clone(),
            &input,
            |_, _| AppointmentCommand::MarkNoShow { now },
        )
        .await
    }

    /// Records the visit as done with its outcome (the organisation's doctors).
    async fn fulfil_visit(
        &self,
        ctx: &Context<'_>,
        input: FulfilVisitInput,
    ) -> async_graphql::Result<AppointmentPayload> {
        let now = svc(ctx).clock.now();
        let opens_before = svc(ctx).visit_opens_before;
        let i = input.clone();
        Self::act(
            ctx,
            &[Role::Doctor],
            &input.appointment_id,
            input.idempotency_key.clone(),
            &input,
            move |_, _| AppointmentCommand::Fulfil {
                diagnosis_code: i.diagnosis_code,
                diagnosis_text: i.diagnosis_text,
                recommendations: i.recommendations,
                prescriptions: i.prescriptions,
                referrals: i.referrals,
                now,
                opens_before,
            },
        )
        .await
    }

    /// Rates a fulfilled visit, once (its patient).
    async fn review_visit(
        &self,
        ctx: &Context<'_>,
        input: ReviewVisitInput,
    ) -> async_graphql::Result<AppointmentPayload> {
        medical_patient(ctx).await?;
        let (rating, text) = (input.rating, input.text.clone());
        Self::act(
            ctx,
            &[Role::Patient],
            &input.appointment_id,
            input.idempotency_key.clone(),
            &input,
            |actor, _| AppointmentCommand::Review {
                patient_id: actor.account_id,
                rating,
                text,
            },
        )
        .await
    }

    /// Asks an organisation for a referral to a specialist (patients).
    async fn request_referral(
        &self,
        ctx: &Context<'_>,
        input: RequestReferralInput,
    ) -> async_graphql::Result<ReferralPayload> {
        let actor = medical_patient(ctx).await?;
        let failed = |e: UserError| {
            Ok(ReferralPayload {
                referral: None,
                user_errors: vec![e],
            })
        };
        let key = match idempotency_key(input.idempotency_key.clone()) {
            Ok(k) => k,
            Err(e) => return failed(e),
        };
        let organisation = match ids::decode_as(&input.organisation_id, "Organisation") {
            Some(id) => organisations::get(&svc(ctx).db, id)
                .await
                .map_err(|e| internal(ctx, e))?,
            None => None,
        };
        let Some(organisation) = organisation else {
            return failed(UserError::on_field(
                "organisationId",
                "NOT_FOUND",
                "no such organisation",
            ));
        };
        let command = ReferralCommand::Request {
            patient_id: actor.account_id,
            organisation_id: organisation.id,
            specialty: input.specialty.clone(),
            reason: input.reason.clone(),
        };
        let id = Uuid::now_v7();
        match run_command::<ReferralAggregate>(
            ctx,
            actor,
            &id.to_string(),
            command,
            &(),
            &input,
            key,
            Retry::Never,
        )
        .await?
        {
            Ok((outcome, _)) => referral_payload(ctx, outcome).await,
            Err(errors) => Ok(ReferralPayload {
                referral: None,
                user_errors: errors,
            }),
        }
    }

    /// Approves or rejects a referral request (the organisation's doctors and registrars).
    async fn decide_referral(
        &self,
        ctx: &Context<'_>,
        input: DecideReferralInput,
    ) -> async_graphql::Result<ReferralPayload> {
        let actor = actor(ctx)?;
        if !matches!(actor.role, Role::Doctor | Role::Registrar) {
            return Err(forbidden());
        }
        let failed = |e: UserError| {
            Ok(ReferralPayload {
                referral: None,
                user_errors: vec![e],
            })
        };
        let key = match idempotency_key(input.idempotency_key.clone()) {
            Ok(k) => k,
            Err(e) => return failed(e),
        };
        let view = match ids::decode_as(&input.referral_id, "ReferralRequest") {
            Some(id) => referrals::get(&svc(ctx).db, id)
                .await
                .map_err(|e| internal(ctx, e))?,
            None => None,
        };
        let Some(view) = view.filter(|v| actor.organisation_id == Some(v.organisation_id)) else {
            return failed(UserError::on_field(
                "referralId",
                "NOT_FOUND",
                "no such referral request",
            ));
        };
        let command = if input.approve {
            ReferralCommand::Approve {
                note: input.comment.clone(),
            }
        } else {
            ReferralCommand::Reject {
                reason: input.comment.clone().unwrap_or_default(),
            }
        };
        match run_command::<ReferralAggregate>(
            ctx,
            actor,
            &view.id.to_string(),
            command,
            &(),
            &input,
            key,
            Retry::OnConflict,
        )
        .await?
        {
            Ok((outcome, _)) => referral_payload(ctx, outcome).await,
            Err(errors) => Ok(ReferralPayload {
                referral: None,
                user_errors: errors,
            }),
        }
    }
}

async fn referral_payload(
    ctx: &Context<'_>,
    outcome: CommandOutcome,
) -> async_graphql::Result<ReferralPayload> {
    read_your_writes(
        ctx,
        &[referrals::NAME, activity_log::NAME],
        outcome.last_order(),
    )
    .await;
    let id = Uuid::parse_str(&outcome.aggregate_id).map_err(|e| internal(ctx, e))?;
    let view = referrals::get(&svc(ctx).db, id)
        .await
        .map_err(|e| internal(ctx, e))?;
    if let Some(v) = &view {
        record_medical_read(ctx, v.patient_id, "referral", Some(v.id)).await?;
    }
    Ok(ReferralPayload {
        referral: view.map(ReferralRequest),
        user_errors: vec![],
    })
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
