//! The OMS policy (E3): applying, issuing or rejecting, the policy's status
//! (queried, or followed live), and renewal reminders.

use async_graphql::connection::{Connection, Edge, EmptyFields};
use async_graphql::{Context, Enum, InputObject, Object, SimpleObject, Subscription, ID};
use chrono::{DateTime, Utc};
use futures::Stream;
use kabinet_domain::command::{CommandOutcome, Retry};
use kabinet_domain::patients::Patient;
use kabinet_domain::policies::{
    complete_number, parse_application, Policy as PolicyAggregate, PolicyCommand, PolicyHolder,
    PolicyKind as DomainKind, PolicyStatus as DomainStatus, RawApplication,
};
use kabinet_domain::Role;
use kabinet_projections::activity_log;
use kabinet_projections::policies::{self, PolicyView};
use serde::Serialize;
use uuid::Uuid;

use super::context::{
    actor, actor_in, internal, medical_patient, read_your_writes, record_medical_read,
    services as svc,
};
use super::errors::{idempotency_key, run_command, UserError};
use super::ids;
use super::pagination::forward_page;
use kabinet_pdf::{PdfBlock, PdfDocument};

/// Read models a policy mutation waits for.
const MODELS: &[&str] = &[policies::NAME, activity_log::NAME];

/// How many numbers are drawn before giving up on a (vanishingly unlikely) run of collisions.
const NUMBER_DRAWS: usize = 5;

/// Regional or federal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Serialize)]
pub enum PolicyKind {
    Regional,
    Federal,
}

/// Where a policy stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Serialize)]
pub enum PolicyStatus {
    Applied,
    /// Issued, but its period has not begun: it becomes active on `validFrom`.
    Issued,
    Active,
    Rejected,
    Expired,
}

fn status_of(raw: &str) -> DomainStatus {
    DomainStatus::parse(raw).unwrap_or(DomainStatus::Applied)
}

/// The status a holder sees on `today`: an issued policy is active only from its
/// first day.
fn status_on(view: &PolicyView, today: chrono::NaiveDate) -> PolicyStatus {
    match status_of(&view.status) {
        DomainStatus::Active if view.valid_from > today => PolicyStatus::Issued,
        other => PolicyStatus::of(other),
    }
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

impl PolicyStatus {
    fn of(s: DomainStatus) -> Self {
        match s {
            DomainStatus::Applied => PolicyStatus::Applied,
            DomainStatus::Active => PolicyStatus::Active,
            DomainStatus::Rejected => PolicyStatus::Rejected,
            DomainStatus::Expired => PolicyStatus::Expired,
        }
    }

    fn domain(self) -> DomainStatus {
        match self {
            PolicyStatus::Applied => DomainStatus::Applied,
            PolicyStatus::Active | PolicyStatus::Issued => DomainStatus::Active,
            PolicyStatus::Rejected => DomainStatus::Rejected,
            PolicyStatus::Expired => DomainStatus::Expired,
        }
    }
}

/// An OMS policy, or an application for one.
#[derive(Debug, Clone)]
pub struct Policy(pub PolicyView);

#[Object]
impl Policy {
    /// Global id.
    pub async fn id(&self) -> ID {
        ids::encode("Policy", self.0.id)
    }
    /// `ISSUED` until the first day of the period, `ACTIVE` from it.
    async fn status(&self, ctx: &Context<'_>) -> PolicyStatus {
        status_on(&self.0, today(ctx))
    }
    async fn status_label_ru(&self, ctx: &Context<'_>) -> String {
        match status_on(&self.0, today(ctx)) {
            PolicyStatus::Issued => format!(
                "Оформлен, действует с {}",
                self.0.valid_from.format("%d.%m.%Y")
            ),
            _ => status_of(&self.0.status).label_ru().to_string(),
        }
    }
    /// The 16-digit unified policy number, once issued.
    async fn number(&self) -> Option<&str> {
        self.0.number.as_deref()
    }
    async fn kind(&self) -> PolicyKind {
        match self.0.kind.as_str() {
            "regional" => PolicyKind::Regional,
            _ => PolicyKind::Federal,
        }
    }
    async fn region(&self) -> Option<&str> {
        self.0.region.as_deref()
    }
    async fn valid_from(&self) -> String {
        self.0.valid_from.to_string()
    }
    /// Last day of validity, inclusive.
    async fn valid_until(&self) -> String {
        self.0.valid_until.to_string()
    }
    /// The holder's full name.
    async fn holder_name(&self) -> String {
        [
            Some(self.0.surname.as_str()),
            Some(self.0.first_name.as_str()),
            self.0.patronymic.as_deref(),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ")
    }
    async fn birth_date(&self) -> String {
        self.0.birth_date.to_string()
    }
    /// SNILS as `XXX-XXX-XXX YY`.
    async fn snils(&self) -> String {
        let d = &self.0.snils;
        if d.len() == 11 {
            format!("{}-{}-{} {}", &d[0..3], &d[3..6], &d[6..9], &d[9..11])
        } else {
            d.clone()
        }
    }
    async fn rejection_reason(&self) -> Option<&str> {
        self.0.rejection_reason.as_deref()
    }
    async fn applied_at(&self) -> DateTime<Utc> {
        self.0.applied_at
    }
    async fn issued_at(&self) -> Option<DateTime<Utc>> {
        self.0.issued_at
    }
    /// When the holder was reminded to renew, if they were.
    async fn renewal_reminded_at(&self) -> Option<DateTime<Utc>> {
        self.0.renewal_reminded_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    /// A short-lived link to the policy's PDF, once issued (the holder; the
    /// bearer token is needed to download).
    #[graphql(complexity = "child_complexity + super::limits::PDF_RENDER_COST")]
    async fn download_url(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<String>> {
        let actor = actor(ctx)?;
        if actor.account_id != self.0.patient_id || self.0.number.is_none() {
            return Ok(None);
        }
        let doc = policy_pdf(&self.0, today(ctx));
        super::prescriptions::download_link(ctx, &doc, actor.account_id)
            .await
            .map(Some)
    }
}

/// The printable policy, built from the read model.
fn policy_pdf(view: &PolicyView, today: chrono::NaiveDate) -> PdfDocument {
    let field = |label: &str, value: String| PdfBlock::Field {
        label: label.to_string(),
        value,
    };
    let date = |d: chrono::NaiveDate| d.format("%d.%m.%Y").to_string();
    let mut blocks = vec![
        field("Номер полиса", view.number.clone().unwrap_or_default()),
        field(
            "Застрахованное лицо",
            [
                Some(view.surname.as_str()),
                Some(view.first_name.as_str()),
                view.patronymic.as_deref(),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" "),
        ),
        field("Дата рождения", date(view.birth_date)),
        field(
            "Вид полиса",
            match view.kind.as_str() {
                "regional" => "региональный",
                _ => "федеральный",
            }
            .to_string(),
        ),
    ];
    if let Some(region) = &view.region {
        blocks.push(field("Регион", region.clone()));
    }
    blocks.push(field(
        "Срок действия",
        format!(
            "с {} по {} включительно",
            date(view.valid_from),
            date(view.valid_until)
        ),
    ));
    blocks.push(field(
        "Статус",
        if view.status == "active" && view.valid_from > today {
            format!("Оформлен, действует с {}", date(view.valid_from))
        } else {
            status_of(&view.status).label_ru().to_string()
        },
    ));
    PdfDocument {
        title: "Полис обязательного медицинского страхования".to_string(),
        blocks,
        qr: None,
    }
}

/// Input of `applyForPolicy`. Every field is checked and all faults are reported
/// together. The holder is the applicant as their verified profile says: the
/// identity fields may be left out, and any given must agree with the profile
/// (`IDENTITY_MISMATCH` otherwise).
#[derive(Debug, Clone, InputObject, Serialize)]
pub struct ApplyForPolicyInput {
    /// Optional; must equal the verified profile's.
    pub surname: Option<String>,
    /// Optional; must equal the verified profile's.
    pub first_name: Option<String>,
    /// Optional; must equal the verified profile's.
    pub patronymic: Option<String>,
    /// `YYYY-MM-DD`; optional, must equal the verified profile's.
    pub birth_date: Option<String>,
    /// `XXX-XXX-XXX YY` or 11 digits; optional, must equal the verified profile's.
    pub snils: Option<String>,
    /// 4 digits; optional, must equal the verified profile's.
    pub passport_series: Option<String>,
    /// 6 digits; optional, must equal the verified profile's.
    pub passport_number: Option<String>,
    pub kind: Option<PolicyKind>,
    /// Required for a regional policy.
    pub region: Option<String>,
    /// First day (`YYYY-MM-DD`, today or up to 90 days ahead); a policy starting
    /// later is `ISSUED` until then.
    pub valid_from: Option<String>,
    /// Last day, after `validFrom`, at most 10 years later.
    pub valid_until: Option<String>,
    /// Consent to the processing of personal data; required.
    pub consent: bool,
    pub idempotency_key: Option<String>,
}

/// Input of `issuePolicy`.
#[derive(Debug, Clone, InputObject, Serialize)]
pub struct IssuePolicyInput {
    pub policy_id: ID,
    pub idempotency_key: Option<String>,
}

/// Input of `rejectPolicyApplication`.
#[derive(Debug, Clone, InputObject, Serialize)]
pub struct RejectPolicyApplicationInput {
    pub policy_id: ID,
    pub reason: String,
    pub idempotency_key: Option<String>,
}

/// Result of policy mutations.
#[derive(Debug, SimpleObject)]
pub struct PolicyPayload {
    pub policy: Option<Policy>,
    pub user_errors: Vec<UserError>,
}

fn failed(errors: Vec<UserError>) -> async_graphql::Result<PolicyPayload> {
    Ok(PolicyPayload {
        policy: None,
        user_errors: errors,
    })
}

/// The applicant as their verified profile says, or why they cannot apply yet.
async fn verified_holder(
    ctx: &Context<'_>,
    patient_id: Uuid,
) -> async_graphql::Result<Result<PolicyHolder, Vec<UserError>>> {
    let s = svc(ctx);
    let verified = s
        .identity
        .is_verified(patient_id)
        .await
        .map_err(|e| internal(ctx, e))?;
    if !verified {
        return Ok(Err(vec![UserError::from(
            kabinet_domain::user_error::UserError::new(
                "IDENTITY_NOT_VERIFIED",
                "complete identity verification first: a policy is issued to the verified holder of the profile",
            ),
        )]));
    }
    let patient = s
        .commands
        .load::<Patient>(&patient_id.to_string())
        .await
        .map_err(|e| internal(ctx, e))?;
    let d = &patient.details;
    let incomplete = |field: &str| {
        UserError::on_field(
            field,
            "PROFILE_INCOMPLETE",
            "the verified profile lacks this; it is needed for a policy",
        )
    };
    match (
        patient.profile,
        d.snils.clone(),
        d.passport_series.clone(),
        d.passport_number.clone(),
    ) {
        (Some(p), Some(snils), Some(passport_series), Some(passport_number)) => {
            Ok(Ok(PolicyHolder {
                surname: p.surname,
                first_name: p.first_name,
                patronymic: p.patronymic,
                birth_date: p.birth_date,
                snils,
                passport_series,
                passport_number,
            }))
        }
        (profile, snils, series, number) => {
            let mut errors = Vec::new();
            if profile.is_none() {
                errors.push(incomplete("surname"));
            }
            if snils.is_none() {
                errors.push(incomplete("snils"));
            }
            if series.is_none() {
                errors.push(incomplete("passportSeries"));
            }
            if number.is_none() {
                errors.push(incomplete("passportNumber"));
            }
            Ok(Err(errors))
        }
    }
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

type PolicyConnection = Connection<String, Policy, EmptyFields, EmptyFields>;

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

/// The caller's current policy: the active one, else an application in
/// progress, else the newest.
async fn current_policy(ctx: &Context<'_>, patient: Uuid) -> async_graphql::Result<Option<Policy>> {
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
        complexity = "super::pagination::connection_complexity(child_complexity, first, None)"
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
        complexity = "super::pagination::connection_complexity(child_complexity, first, None)"
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

/// Policy mutations.
#[derive(Default)]
pub struct PoliciesMutation;

impl PoliciesMutation {
    async fn load(
        ctx: &Context<'_>,
        raw: &ID,
    ) -> async_graphql::Result<Result<PolicyView, UserError>> {
        let view = match ids::decode_as(raw, "Policy") {
            Some(id) => policies::get(&svc(ctx).db, id)
                .await
                .map_err(|e| internal(ctx, e))?,
            None => None,
        };
        Ok(view.ok_or_else(|| {
            UserError::on_field("policyId", "NOT_FOUND", "no such policy application")
        }))
    }
}

#[Object]
impl PoliciesMutation {
    /// Applies for an OMS policy (patients, for themselves). At most one active
    /// policy or open application per person: `POLICY_ALREADY_ACTIVE`.
    async fn apply_for_policy(
        &self,
        ctx: &Context<'_>,
        input: ApplyForPolicyInput,
    ) -> async_graphql::Result<PolicyPayload> {
        let actor = medical_patient(ctx).await?;
        let key = match idempotency_key(input.idempotency_key.clone()) {
            Ok(k) => k,
            Err(e) => return failed(vec![e]),
        };
        let raw = RawApplication {
            surname: input.surname.clone(),
            first_name: input.first_name.clone(),
            patronymic: input.patronymic.clone(),
            birth_date: input.birth_date.clone(),
            snils: input.snils.clone(),
            passport_series: input.passport_series.clone(),
            passport_number: input.passport_number.clone(),
            kind: input.kind.map(|k| match k {
                PolicyKind::Regional => DomainKind::Regional,
                PolicyKind::Federal => DomainKind::Federal,
            }),
            region: input.region.clone(),
            valid_from: input.valid_from.clone(),
            valid_until: input.valid_until.clone(),
            consent: input.consent,
        };
        let holder = match verified_holder(ctx, actor.account_id).await? {
            Ok(holder) => holder,
            Err(errors) => return failed(errors),
        };
        let today = svc(ctx).clock.now().date_naive();
        let application = match parse_application(&raw, &holder, today) {
            Ok(a) => a,
            Err(errors) => return failed(errors.into_iter().map(UserError::from).collect()),
        };
        let id = Uuid::now_v7();
        match run_command::<PolicyAggregate>(
            ctx,
            actor,
            &id.to_string(),
            PolicyCommand::Apply {
                patient_id: actor.account_id,
                application,
            },
            &(),
            &input,
            key,
            Retry::Never,
        )
        .await?
        {
            Ok((outcome, _)) => payload(ctx, outcome).await,
            Err(errors) => failed(errors),
        }
    }

    /// Issues the policy of an application under a freshly drawn unique number (administrators).
    async fn issue_policy(
        &self,
        ctx: &Context<'_>,
        input: IssuePolicyInput,
    ) -> async_graphql::Result<PolicyPayload> {
        let actor = actor_in(ctx, &[Role::Admin])?;
        let key = match idempotency_key(input.idempotency_key.clone()) {
            Ok(k) => k,
            Err(e) => return failed(vec![e]),
        };
        let view = match Self::load(ctx, &input.policy_id).await? {
            Ok(v) => v,
            Err(e) => return failed(vec![e]),
        };
        let mut last = Vec::new();
        for _ in 0..NUMBER_DRAWS {
            // 15 random digits (first one non-zero) and the check digit.
            let fifteen =
                100_000_000_000_000 + (Uuid::new_v4().as_u128() % 900_000_000_000_000) as u64;
            let Some(number) = complete_number(fifteen) else {
                continue;
            };
            let command = PolicyCommand::Issue {
                number,
                now: svc(ctx).clock.now(),
            };
            match run_command::<PolicyAggregate>(
                ctx,
                actor,
                &view.id.to_string(),
                command,
                &(),
                &input,
                key.clone(),
                Retry::OnConflict,
            )
            .await?
            {
                Ok((outcome, _)) => return payload(ctx, outcome).await,
                // Another policy holds this number: draw again.
                Err(errors) if errors.iter().any(|e| e.code == "POLICY_NUMBER_TAKEN") => {
                    last = errors;
                }
                Err(errors) => return failed(errors),
            }
        }
        failed(last)
    }

    /// Rejects an application with a reason (administrators); the person may apply again.
    async fn reject_policy_application(
        &self,
        ctx: &Context<'_>,
        input: RejectPolicyApplicationInput,
    ) -> async_graphql::Result<PolicyPayload> {
        let actor = actor_in(ctx, &[Role::Admin])?;
        let key = match idempotency_key(input.idempotency_key.clone()) {
            Ok(k) => k,
            Err(e) => return failed(vec![e]),
        };
        let view = match Self::load(ctx, &input.policy_id).await? {
            Ok(v) => v,
            Err(e) => return failed(vec![e]),
        };
        match run_command::<PolicyAggregate>(
            ctx,
            actor,
            &view.id.to_string(),
            PolicyCommand::Reject {
                reason: input.reason.clone(),
            },
            &(),
            &input,
            key,
            Retry::OnConflict,
        )
        .await?
        {
            Ok((outcome, _)) => payload(ctx, outcome).await,
            Err(errors) => failed(errors),
        }
    }
}

async fn payload(
    ctx: &Context<'_>,
    outcome: CommandOutcome,
) -> async_graphql::Result<PolicyPayload> {
    read_your_writes(ctx, MODELS, outcome.last_order()).await;
    let id = Uuid::parse_str(&outcome.aggregate_id).map_err(|e| internal(ctx, e))?;
    let view = policies::get(&svc(ctx).db, id)
        .await
        .map_err(|e| internal(ctx, e))?;
    Ok(PolicyPayload {
        policy: view.map(Policy),
        user_errors: vec![],
    })
}

/// Live policy status.
#[derive(Default)]
pub struct PoliciesSubscription;

#[Subscription]
impl PoliciesSubscription {
    /// The caller's current policy now and after every change (patients).
    async fn my_policy_updates(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl Stream<Item = Policy>> {
        let actor = medical_patient(ctx).await?;
        let patient = actor.account_id;
        // One read record for the feed: it shows only the caller's own policy.
        record_medical_read(ctx, patient, "oms_policy", None).await?;
        let s = svc(ctx).clone();
        let progress = s.projector.subscribe_progress(policies::NAME);
        let state = (s, progress, None::<(Uuid, DateTime<Utc>)>);
        Ok(futures::stream::unfold(
            state,
            move |(s, mut progress, mut seen)| async move {
                loop {
                    let page = policies::list(&s.db, Some(patient), None, None, 100, 0)
                        .await
                        .ok()?;
                    let views: Vec<PolicyView> = page.items.into_iter().map(|(_, v)| v).collect();
                    let pick = pick_current(&views, s.clock.now().date_naive());
                    if let Some(view) = pick {
                        let mark = (view.id, view.updated_at);
                        if seen != Some(mark) {
                            seen = Some(mark);
                            return Some((Policy(view), (s, progress, seen)));
                        }
                    }
                    // Wait for the read model to move (or poll when no progress feed).
                    match progress.as_mut() {
                        Some(rx) => {
                            if rx.changed().await.is_err() {
                                return None;
                            }
                        }
                        None => tokio::time::sleep(std::time::Duration::from_secs(1)).await,
                    }
                }
            },
        ))
    }
}
