//! Per-request context: who is asking, the request id, and shared services.

use std::sync::Arc;
use std::time::Duration;

use async_graphql::{Context, Error, ErrorExtensions};
use kabinet_adapters::access_record::AccessLog;
use kabinet_adapters::identity_store::TableSnilsRegistry;
use kabinet_app::identity::IdentityDesk;
use kabinet_domain::access::MedicalRead;
use kabinet_domain::appointments::Bookings;
use kabinet_domain::clock::Clock;
use kabinet_domain::command::CommandRunner;
use kabinet_domain::notify::Notifier;
use kabinet_domain::{Actor, Db, EventMetadata, Journal, JournalOrder, Role};
use kabinet_projections::Projector;

/// Services every resolver may use.
#[derive(Clone)]
pub struct Services {
    pub db: Db,
    pub journal: Journal,
    pub commands: CommandRunner,
    pub booking: Bookings,
    pub projector: Projector,
    pub clock: Arc<dyn Clock>,
    /// Delivers e-mail and SMS messages.
    pub notifier: Arc<dyn Notifier>,
    /// How long a mutation waits for the read models to show its effect.
    pub read_your_writes: Duration,
    /// Registration, sign-in, sessions and staff accounts.
    pub accounts: kabinet_app::accounts::Accounts,
    /// Signs access tokens of sign-in sessions.
    pub tokens: crate::auth::TokenKeys,
    /// Identity verification: registry, sealed scans, SMS codes.
    pub identity: IdentityDesk,
    /// The SNILS registry table administrators load.
    pub snils_registry: TableSnilsRegistry,
    /// The record of reads of medical data.
    pub access: AccessLog,
    /// Signs and verifies the QR tokens of printed prescriptions.
    pub prescription_signer: Arc<kabinet_domain::prescriptions::PrescriptionSigner>,
    /// Public base URL of the server (no trailing slash), for links on documents.
    pub public_url: String,
    /// Content-addressed storage of rendered documents.
    pub files: crate::files::FileStore,
    /// Signs and checks short-lived download links of stored files.
    pub file_links: crate::files::FileLinks,
    /// Hours organisations have to answer document requests, per type.
    pub document_deadlines: super::documents::DocumentDeadlines,
    /// How long a patient stays in an organisation's care after a visit.
    pub care: kabinet_projections::care::CareRules,
    /// How long before a visit's start arrival and the outcome may be recorded.
    pub visit_opens_before: chrono::Duration,
}

/// The client's network address (from the socket, or from a trusted proxy).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddress(pub Option<std::net::IpAddr>);

/// The sign-in session of the caller's token; absent for development tokens.
#[derive(Debug, Clone, Copy)]
pub struct CallerSession(pub Option<uuid::Uuid>);

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
/// callers who are not patients (`FORBIDDEN`) and patients whose identity is not
/// verified (`IDENTITY_NOT_VERIFIED`, a top-level error for queries and mutations
/// alike). Development tokens (`kabinet token`, the demo) pass the identity check.
pub async fn medical_patient<'a>(ctx: &Context<'a>) -> Result<&'a Actor, Error> {
    let actor = actor_in(ctx, &[Role::Patient])?;
    identity_verified(ctx, actor).await?;
    Ok(actor)
}

/// Remembers, for one request (or one WebSocket connection), that the caller's
/// identity is verified, so a page of visits checks it once rather than per row.
/// Only success is kept: verification never goes back, while a refusal must be
/// asked again once the person completes it.
#[derive(Debug, Default)]
pub struct VerifiedOnce(std::sync::OnceLock<()>);

/// Refuses a patient whose identity is not verified (development tokens pass).
pub async fn identity_verified(ctx: &Context<'_>, actor: &Actor) -> Result<(), Error> {
    if is_identity_verified(ctx, actor).await? {
        Ok(())
    } else {
        Err(identity_not_verified())
    }
}

/// Whether `actor`'s identity is verified (development tokens count as verified).
async fn is_identity_verified(ctx: &Context<'_>, actor: &Actor) -> Result<bool, Error> {
    if request(ctx).dev_token {
        return Ok(true);
    }
    let remembered = ctx.data_opt::<VerifiedOnce>();
    if remembered.is_some_and(|r| r.0.get().is_some()) {
        return Ok(true);
    }
    match services(ctx).identity.is_verified(actor.account_id).await {
        Ok(true) => {
            if let Some(r) = remembered {
                let _ = r.0.set(());
            }
            Ok(true)
        }
        Ok(false) => Ok(false),
        Err(e) => Err(internal(ctx, e)),
    }
}

/// Medical data stays closed until the identity is verified.
pub fn identity_not_verified() -> Error {
    Error::new("medical data opens once identity verification is complete (myIdentityVerification)")
        .extend_with(|_, e| e.set("code", "IDENTITY_NOT_VERIFIED"))
}

/// Whether `patient_id` is in the care of the caller's organisation now (see
/// [`kabinet_projections::care`]): what every staff read of a patient's personal
/// data and every staff action for a patient needs. Callers without an
/// organisation are in nobody's care relationship.
pub async fn in_care_of_caller(
    ctx: &Context<'_>,
    actor: &Actor,
    patient_id: uuid::Uuid,
) -> Result<bool, Error> {
    let Some(organisation) = actor.organisation_id else {
        return Ok(false);
    };
    let s = services(ctx);
    kabinet_projections::care::in_care(&s.db, s.care, patient_id, organisation, s.clock.now())
        .await
        .map_err(|e| internal(ctx, e))
}

/// Whether the caller may see the medical details of their own records: staff
/// and verified patients may; a patient whose identity is not verified sees
/// only neutral words (notifications say that something happened, not what).
pub async fn medical_details_open(ctx: &Context<'_>) -> Result<bool, Error> {
    let actor = actor(ctx)?;
    if actor.role != Role::Patient {
        return Ok(true);
    }
    is_identity_verified(ctx, actor).await
}

/// Opens medical data of `patient_id` to the caller and records the read
/// (`what` names the kind of data, e.g. `visit_history`; `object_id` the
/// record, when one).
///
/// The one gate of every read of medical data, by anyone and on every path
/// (lists, `node`, nested fields, payloads): a patient reading their own data
/// must have a verified identity (`IDENTITY_NOT_VERIFIED` otherwise), and every
/// read is recorded so the owner can list it in their account journal.
pub async fn record_medical_read(
    ctx: &Context<'_>,
    patient_id: uuid::Uuid,
    what: &str,
    object_id: Option<uuid::Uuid>,
) -> Result<(), Error> {
    let reader = actor(ctx)?.clone();
    if reader.role == Role::Patient {
        identity_verified(ctx, &reader).await?;
    }
    let s = services(ctx);
    let read = MedicalRead {
        patient_id,
        reader,
        what: what.to_string(),
        object_id,
        request_id: request(ctx).request_id.clone(),
        at: s.clock.now(),
    };
    s.access.record(&read).await.map_err(|e| internal(ctx, e))
}
