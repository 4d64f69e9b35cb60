//! Applying for a policy, issuing it and rejecting an application.

use super::{Policy, PolicyKind};
use crate::schema::context::{
    actor_in, internal, medical_patient, read_your_writes, services as svc,
};
use crate::schema::errors::{idempotency_key, run_command, UserError};
use crate::schema::ids;
use async_graphql::{Context, InputObject, Object, SimpleObject, ID};
use kabinet_domain::command::{CommandOutcome, Retry};
use kabinet_domain::patients::Patient;
use kabinet_domain::policies::{
    complete_number, parse_application, Policy as PolicyAggregate, PolicyCommand, PolicyHolder,
    PolicyKind as DomainKind, RawApplication,
};
use kabinet_domain::Role;
use kabinet_projections::activity_log;
use kabinet_projections::policies::{self, PolicyView};
use serde::Serialize;
use uuid::Uuid;

/// Read models a policy mutation waits for.
pub(super) const MODELS: &[&str] = &[policies::NAME, activity_log::NAME];

/// How many numbers are drawn before giving up on a (vanishingly unlikely) run of collisions.
pub(super) const NUMBER_DRAWS: usize = 5;

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

pub(super) fn failed(errors: Vec<UserError>) -> async_graphql::Result<PolicyPayload> {
    Ok(PolicyPayload {
        policy: None,
        user_errors: errors,
    })
}

/// The applicant as their verified profile says, or why they cannot apply yet.
pub(super) async fn verified_holder(
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

pub(super) async fn payload(
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
