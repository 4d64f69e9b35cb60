//! Insurance policies as the API shows them.

use super::{policy_pdf, status_of, today};
use crate::schema::context::actor;
use crate::schema::ids;
use crate::schema::labels::LabelRu;
use crate::schema::links::DownloadLink;
use async_graphql::connection::{Connection, EmptyFields};
use async_graphql::{Context, Enum, Object, ID};
use chrono::{DateTime, Utc};
use kabinet_domain::policies::PolicyStatus as DomainStatus;
use kabinet_projections::policies::PolicyView;
use serde::Serialize;

/// Regional or federal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Serialize)]
pub enum PolicyKind {
    Regional,
    Federal,
}

impl PolicyKind {
    /// The kind of a stored name.
    fn parse(raw: &str) -> PolicyKind {
        match raw {
            "regional" => PolicyKind::Regional,
            _ => PolicyKind::Federal,
        }
    }
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

/// The status a holder sees on `today`: an issued policy is active only from its
/// first day.
pub(super) fn status_on(view: &PolicyView, today: chrono::NaiveDate) -> PolicyStatus {
    match status_of(&view.status) {
        DomainStatus::Active if view.valid_from > today => PolicyStatus::Issued,
        other => PolicyStatus::of(other),
    }
}

impl PolicyStatus {
    pub(crate) fn of(s: DomainStatus) -> Self {
        match s {
            DomainStatus::Applied => PolicyStatus::Applied,
            DomainStatus::Active => PolicyStatus::Active,
            DomainStatus::Rejected => PolicyStatus::Rejected,
            DomainStatus::Expired => PolicyStatus::Expired,
        }
    }

    pub(crate) fn domain(self) -> DomainStatus {
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
                "{}, действует с {}",
                PolicyStatus::Issued.label_ru(),
                self.0.valid_from.format("%d.%m.%Y")
            ),
            other => other.label_ru().to_string(),
        }
    }
    /// The 16-digit unified policy number, once issued.
    async fn number(&self) -> Option<&str> {
        self.0.number.as_deref()
    }
    async fn kind(&self) -> PolicyKind {
        PolicyKind::parse(&self.0.kind)
    }
    /// The kind in Russian, for display.
    async fn kind_label_ru(&self) -> &'static str {
        PolicyKind::parse(&self.0.kind).label_ru()
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
    #[graphql(complexity = "child_complexity + crate::schema::limits::PDF_RENDER_COST")]
    async fn download(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<DownloadLink>> {
        let actor = actor(ctx)?;
        if actor.account_id != self.0.patient_id || self.0.number.is_none() {
            return Ok(None);
        }
        let doc = policy_pdf(&self.0, today(ctx));
        crate::schema::prescriptions::download_link(ctx, &doc, actor.account_id)
            .await
            .map(Some)
    }
}

pub(super) type PolicyConnection = Connection<String, Policy, EmptyFields, EmptyFields>;
