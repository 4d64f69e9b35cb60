//! Business errors in mutation payloads, and the command runner that makes them.

use async_graphql::{Context, SimpleObject};
use kabinet_domain::command::{CommandError, CommandOutcome, Retry};
use kabinet_domain::user_error::{AsUserError, UserError as DomainUserError};
use kabinet_domain::Actor;
use serde::Serialize;

use super::context::{internal, metadata, services};

/// A business error: what went wrong, the input field at fault, and a stable code.
#[derive(Debug, Clone, SimpleObject)]
pub struct UserError {
    /// Path to the input field at fault, e.g. `["input", "timeZone"]`.
    pub field: Option<Vec<String>>,
    pub message: String,
    /// Stable code, e.g. `INVALID_INPUT`, `NOT_FOUND`, `IDEMPOTENCY_KEY_REUSED`.
    pub code: String,
}

impl From<DomainUserError> for UserError {
    fn from(e: DomainUserError) -> Self {
        UserError {
            field: e.field,
            message: e.message,
            code: e.code.to_string(),
        }
    }
}

impl UserError {
    /// An error about one input field.
    pub fn on_field(field: &str, code: &'static str, message: impl Into<String>) -> Self {
        DomainUserError::field(field, code, message).into()
    }
}

/// The value of `result`, or `None` with its error added to `errors`: a mutation
/// checks every input field before answering, so the caller sees all mistakes at once.
pub fn check<T>(errors: &mut Vec<UserError>, result: Result<T, UserError>) -> Option<T> {
    result.map_err(|e| errors.push(e)).ok()
}

/// Longest idempotency key accepted.
const MAX_KEY_LEN: usize = 128;

/// Checks an idempotency key: 1 to 128 visible ASCII characters.
pub fn idempotency_key(raw: Option<String>) -> Result<Option<String>, UserError> {
    match raw {
        None => Ok(None),
        Some(key)
            if !key.is_empty()
                && key.len() <= MAX_KEY_LEN
                && key.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(Some(key))
        }
        Some(_) => Err(UserError::on_field(
            "idempotencyKey",
            "INVALID_INPUT",
            format!("must be 1 to {MAX_KEY_LEN} visible ASCII characters"),
        )),
    }
}

/// Runs a command for the caller and sorts its failures into user errors
/// (returned) and internal faults (masked).
pub async fn run_command<A>(
    ctx: &Context<'_>,
    actor: &Actor,
    aggregate_id: &str,
    command: A::Command,
    services_of_aggregate: &A::Services,
    input: &impl Serialize,
    key: Option<String>,
    retry: Retry,
) -> async_graphql::Result<Result<(CommandOutcome, A), Vec<UserError>>>
where
    A: kabinet_domain::journal::reservations::Reserving + Clone,
    A::Command: Clone,
    A::Error: AsUserError,
{
    let input = serde_json::to_value(input).map_err(|e| internal(ctx, e))?;
    let meta = metadata(ctx, actor, key);
    let result = services(ctx)
        .commands
        .execute::<A>(
            aggregate_id,
            command,
            services_of_aggregate,
            &meta,
            &input,
            retry,
        )
        .await;
    match result {
        Ok(done) => Ok(Ok(done)),
        Err(CommandError::Rejected(e)) => Ok(Err(e
            .to_user_errors()
            .into_iter()
            .map(UserError::from)
            .collect())),
        Err(CommandError::Conflict) => Ok(Err(vec![UserError {
            field: None,
            message: CommandError::<A::Error>::Conflict.to_string(),
            code: "CONFLICT".into(),
        }])),
        Err(CommandError::IdempotencyKeyReused) => Ok(Err(vec![UserError::on_field(
            "idempotencyKey",
            "IDEMPOTENCY_KEY_REUSED",
            CommandError::<A::Error>::IdempotencyKeyReused.to_string(),
        )])),
        Err(CommandError::Reserved(taken)) => Ok(Err(vec![A::reservation_error(&taken).into()])),
        Err(CommandError::Internal(e)) => Err(internal(ctx, e)),
    }
}
