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

/// How a notification went out on one channel.
#[derive(Debug, Clone, SimpleObject)]
pub struct NotificationDelivery {
    /// `EMAIL`, `SMS`, or `NONE` when no channel was chosen.
    pub channel: String,
    /// `SENDING`, `SENT`, `FAILED` (will be retried), `GAVE_UP` or `SKIPPED`.
    pub status: String,
    pub attempts: i32,
}

impl From<&DeliveryView> for NotificationDelivery {
    fn from(d: &DeliveryView) -> Self {
        NotificationDelivery {
            channel: d.channel.to_uppercase(),
            status: d.status.to_uppercase(),
            attempts: d.attempts,
        }
    }
}

/// A message to the caller about something that concerns them.
#[derive(Debug, Clone, SimpleObject)]
pub struct Notification {
    /// Stable kind, e.g. `appointment_booked`, `appointment_rescheduled`.
    pub kind: String,
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
        connection.edges.extend(
            page.items
                .into_iter()
                .map(|(cursor, n)| Edge::new(cursor.encode(), notification(n, &deliveries, open))),
        );
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
fn notification(n: NotificationView, deliveries: &[DeliveryView], open: bool) -> Notification {
    let (title, body) = if open || !model::tells_medical_details(&n.kind) {
        (n.title, n.body)
    } else {
        model::neutral()
    };
    let object_type = ObjectType::of_aggregate(&n.object_type);
    Notification {
        deliveries: deliveries
            .iter()
            .filter(|d| d.position == n.position)
            .map(NotificationDelivery::from)
            .collect(),
        kind: n.kind,
        title,
        body,
        object_type_label_ru: object_type.label_ru(),
        object_id: object_type.global_id(&n.object_id),
        object_type,
        created_at: n.created_at,
    }
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
