//! Notifications (F1): the caller's messages with how each went out, and the
//! channels they chose.

use async_graphql::connection::{Connection, Edge, EmptyFields};
use async_graphql::{Context, Enum, InputObject, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use kabinet_domain::command::Retry;
use kabinet_domain::notifications::{
    parse_preferences, NotificationChannel as DomainChannel, NotificationCommand,
    NotificationSettings,
};
use kabinet_projections::notifications::{self as model, DeliveryView, NotificationView};
use serde::Serialize;

use super::context::{actor, internal, medical_details_open, read_your_writes, services};
use super::errors::{idempotency_key, run_command, UserError};
use super::ids::ObjectType;
use super::labels::LabelRu;
use super::pagination::{connection_complexity, page_info, page_request};

/// A channel messages can travel by. (Push notifications need a mobile push
/// service and are not offered yet.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Serialize)]
pub enum NotificationChannel {
    Email,
    Sms,
}

impl From<NotificationChannel> for DomainChannel {
    fn from(c: NotificationChannel) -> Self {
        match c {
            NotificationChannel::Email => DomainChannel::Email,
            NotificationChannel::Sms => DomainChannel::Sms,
        }
    }
}

impl From<DomainChannel> for NotificationChannel {
    fn from(c: DomainChannel) -> Self {
        match c {
            DomainChannel::Email => NotificationChannel::Email,
            DomainChannel::Sms => NotificationChannel::Sms,
        }
    }
}

/// The stable kinds of notification, one per event people are told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum NotificationKind {
    AppointmentBooked,
    AppointmentRescheduled,
    AppointmentCancelled,
    VisitFulfilled,
    ReferralApproved,
    ReferralRejected,
    DocumentReady,
    DocumentRejected,
    PrescriptionIssued,
    PrescriptionReady,
    PrescriptionCancelled,
    PrescriptionExpired,
    PrescriptionRequestApproved,
    PrescriptionRequestDeclined,
    PolicyIssued,
    PolicyRejected,
    PolicyRenewalDue,
    PolicyExpired,
}

impl NotificationKind {
    /// Every kind, for reading the stored names.
    const ALL: [NotificationKind; 18] = [
        NotificationKind::AppointmentBooked,
        NotificationKind::AppointmentRescheduled,
        NotificationKind::AppointmentCancelled,
        NotificationKind::VisitFulfilled,
        NotificationKind::ReferralApproved,
        NotificationKind::ReferralRejected,
        NotificationKind::DocumentReady,
        NotificationKind::DocumentRejected,
        NotificationKind::PrescriptionIssued,
        NotificationKind::PrescriptionReady,
        NotificationKind::PrescriptionCancelled,
        NotificationKind::PrescriptionExpired,
        NotificationKind::PrescriptionRequestApproved,
        NotificationKind::PrescriptionRequestDeclined,
        NotificationKind::PolicyIssued,
        NotificationKind::PolicyRejected,
        NotificationKind::PolicyRenewalDue,
        NotificationKind::PolicyExpired,
    ];

    /// The stored name (`appointment_booked`, …).
    fn as_str(self) -> &'static str {
        match self {
            NotificationKind::AppointmentBooked => "appointment_booked",
            NotificationKind::AppointmentRescheduled => "appointment_rescheduled",
            NotificationKind::AppointmentCancelled => "appointment_cancelled",
            NotificationKind::VisitFulfilled => "visit_fulfilled",
            NotificationKind::ReferralApproved => "referral_approved",
            NotificationKind::ReferralRejected => "referral_rejected",
            NotificationKind::DocumentReady => "document_ready",
            NotificationKind::DocumentRejected => "document_rejected",
            NotificationKind::PrescriptionIssued => "prescription_issued",
            NotificationKind::PrescriptionReady => "prescription_ready",
            NotificationKind::PrescriptionCancelled => "prescription_cancelled",
            NotificationKind::PrescriptionExpired => "prescription_expired",
            NotificationKind::PrescriptionRequestApproved => "prescription_request_approved",
            NotificationKind::PrescriptionRequestDeclined => "prescription_request_declined",
            NotificationKind::PolicyIssued => "policy_issued",
            NotificationKind::PolicyRejected => "policy_rejected",
            NotificationKind::PolicyRenewalDue => "policy_renewal_due",
            NotificationKind::PolicyExpired => "policy_expired",
        }
    }

    fn of_record(name: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == name)
            .ok_or_else(|| format!("stored notification of unknown kind '{name}'"))
    }
}

/// The channel a notification went by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum NotificationDeliveryChannel {
    Email,
    Sms,
    /// The person chose no channel.
    None,
}

/// How far a delivery got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum DeliveryStatus {
    Sending,
    Sent,
    /// Will be retried.
    Failed,
    GaveUp,
    Skipped,
}

/// How a notification went out on one channel.
#[derive(Debug, Clone, SimpleObject)]
pub struct NotificationDelivery {
    pub channel: NotificationDeliveryChannel,
    /// The channel in Russian, for display.
    pub channel_label_ru: &'static str,
    pub status: DeliveryStatus,
    /// The status in Russian, for display.
    pub status_label_ru: &'static str,
    pub attempts: i32,
}

impl TryFrom<&DeliveryView> for NotificationDelivery {
    type Error = String;

    fn try_from(d: &DeliveryView) -> Result<Self, String> {
        let channel = match d.channel.as_str() {
            "email" => NotificationDeliveryChannel::Email,
            "sms" => NotificationDeliveryChannel::Sms,
            "none" => NotificationDeliveryChannel::None,
            other => return Err(format!("stored delivery by unknown channel '{other}'")),
        };
        let status = match d.status.as_str() {
            "sending" => DeliveryStatus::Sending,
            "sent" => DeliveryStatus::Sent,
            "failed" => DeliveryStatus::Failed,
            "gave_up" => DeliveryStatus::GaveUp,
            "skipped" => DeliveryStatus::Skipped,
            other => return Err(format!("stored delivery in unknown status '{other}'")),
        };
        Ok(NotificationDelivery {
            channel,
            channel_label_ru: channel.label_ru(),
            status,
            status_label_ru: status.label_ru(),
            attempts: d.attempts,
        })
    }
}

/// A message to the caller about something that concerns them.
#[derive(Debug, Clone, SimpleObject)]
pub struct Notification {
    /// Stable kind, e.g. `APPOINTMENT_BOOKED`, `APPOINTMENT_RESCHEDULED`.
    pub kind: NotificationKind,
    /// The kind in Russian, for display.
    pub kind_label_ru: &'static str,
    /// Title in Russian.
    pub title: String,
    /// Text in Russian. Until the patient's identity is verified, messages about
    /// medical records say only that something new is waiting, not what.
    pub body: String,
    /// Kind of object it is about.
    pub object_type: ObjectType,
    /// The kind of object in Russian, for display.
    pub object_type_label_ru: &'static str,
    /// Global id of the object it is about.
    pub object_id: ID,
    pub created_at: DateTime<Utc>,
    /// How it went out; empty until the dispatcher has looked at it.
    pub deliveries: Vec<NotificationDelivery>,
}

/// The caller's notification preferences.
#[derive(Debug, Clone, SimpleObject)]
pub struct NotificationPreferences {
    pub channels: Vec<NotificationChannel>,
    pub email: Option<String>,
    pub phone: Option<String>,
}

/// Input of `setNotificationPreferences`.
#[derive(Debug, InputObject, Serialize)]
pub struct SetNotificationPreferencesInput {
    /// Channels to use; an empty list turns messages off (they stay listed in the account).
    pub channels: Vec<NotificationChannel>,
    /// Needed for `EMAIL`.
    pub email: Option<String>,
    /// Needed for `SMS`; any common Russian form, stored as `+7XXXXXXXXXX`.
    pub phone: Option<String>,
    pub idempotency_key: Option<String>,
}

/// Result of `setNotificationPreferences`.
#[derive(Debug, SimpleObject)]
pub struct NotificationPreferencesPayload {
    pub preferences: Option<NotificationPreferences>,
    pub user_errors: Vec<UserError>,
}

/// Notification queries.
#[derive(Default)]
pub struct NotificationsQuery;

#[Object]
impl NotificationsQuery {
    /// The caller's notifications, newest first, with their deliveries.
    #[graphql(complexity = "connection_complexity(child_complexity, first, last)")]
    async fn my_notifications(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<Connection<String, Notification, EmptyFields, EmptyFields>> {
        let actor = actor(ctx)?;
        let page = page_request(first, after, last, before)?;
        let db = &services(ctx).db;
        let page = model::list(db, actor.account_id, page)
            .await
            .map_err(|e| internal(ctx, e))?;
        let positions: Vec<i64> = page.items.iter().map(|(_, n)| n.position).collect();
        let deliveries = model::deliveries_of(db, actor.account_id, &positions)
            .await
            .map_err(|e| internal(ctx, e))?;
        // Medical details wait for a verified identity, like the records they tell about.
        let open = medical_details_open(ctx).await?;
        let info = page_info(&page);
        let mut connection = Connection::new(info.has_previous_page, info.has_next_page);
        for (cursor, n) in page.items {
            let shown = notification(n, &deliveries, open).map_err(|e| internal(ctx, e))?;
            connection.edges.push(Edge::new(cursor.encode(), shown));
        }
        Ok(connection)
    }

    /// The caller's notification preferences; `null` before they chose any.
    async fn my_notification_preferences(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Option<NotificationPreferences>> {
        let actor = actor(ctx)?;
        preferences(ctx, actor.account_id).await
    }
}

/// The notification as the caller sees it; `open` is false for a patient whose
/// identity is not verified, who is told only that something new is waiting.
fn notification(
    n: NotificationView,
    deliveries: &[DeliveryView],
    open: bool,
) -> Result<Notification, String> {
    let kind = NotificationKind::of_record(&n.kind)?;
    let (title, body) = if open || !model::tells_medical_details(&n.kind) {
        (n.title, n.body)
    } else {
        model::neutral()
    };
    let object_type = ObjectType::of_aggregate(&n.object_type);
    Ok(Notification {
        deliveries: deliveries
            .iter()
            .filter(|d| d.position == n.position)
            .map(NotificationDelivery::try_from)
            .collect::<Result<_, _>>()?,
        kind,
        kind_label_ru: kind.label_ru(),
        title,
        body,
        object_type_label_ru: object_type.label_ru(),
        object_id: object_type.global_id(&n.object_id),
        object_type,
        created_at: n.created_at,
    })
}

async fn preferences(
    ctx: &Context<'_>,
    account: uuid::Uuid,
) -> async_graphql::Result<Option<NotificationPreferences>> {
    let found = model::preferences_of(&services(ctx).db, account)
        .await
        .map_err(|e| internal(ctx, e))?;
    Ok(found.map(|p| NotificationPreferences {
        channels: p.channels.into_iter().map(Into::into).collect(),
        email: p.email.map(|e| e.as_str().to_string()),
        phone: p.phone.map(|p| p.as_str().to_string()),
    }))
}

/// Notification mutations.
#[derive(Default)]
pub struct NotificationsMutation;

#[Object]
impl NotificationsMutation {
    /// Chooses the channels and addresses of the caller's notifications.
    async fn set_notification_preferences(
        &self,
        ctx: &Context<'_>,
        input: SetNotificationPreferencesInput,
    ) -> async_graphql::Result<NotificationPreferencesPayload> {
        let actor = actor(ctx)?;
        let failed = |user_errors: Vec<UserError>| {
            Ok(NotificationPreferencesPayload {
                preferences: None,
                user_errors,
            })
        };
        let key = match idempotency_key(input.idempotency_key.clone()) {
            Ok(k) => k,
            Err(e) => return failed(vec![e]),
        };
        let channels: Vec<DomainChannel> = input.channels.iter().map(|c| (*c).into()).collect();
        // Every wrong field at once; the aggregate checks again.
        if let Err(e) = parse_preferences(&channels, input.email.as_deref(), input.phone.as_deref())
        {
            return failed(e.user_errors().into_iter().map(Into::into).collect());
        }
        let command = NotificationCommand::SetPreferences {
            channels,
            email: input.email.clone(),
            phone: input.phone.clone(),
        };
        match run_command::<NotificationSettings>(
            ctx,
            actor,
            &actor.account_id.to_string(),
            command,
            &(),
            &input,
            key,
            Retry::OnConflict,
        )
        .await?
        {
            Ok((outcome, _)) => {
                read_your_writes(ctx, &[model::PREFERENCES], outcome.last_order()).await;
                Ok(NotificationPreferencesPayload {
                    preferences: preferences(ctx, actor.account_id).await?,
                    user_errors: vec![],
                })
            }
            Err(errors) => failed(errors),
        }
    }
}
