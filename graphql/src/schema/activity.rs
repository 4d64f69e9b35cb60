//! The activity log: queries and the live feed.

use std::time::Duration;

use async_graphql::connection::{Connection, Edge, EmptyFields};
use async_graphql::{ComplexObject, Context, InputObject, Object, SimpleObject, Subscription, ID};
use chrono::{DateTime, Utc};
use futures::Stream;
use kabinet_domain::Role;
use kabinet_projections::activity_log::{self, ActivityEntry as Entry, ActivityFilter};
use kabinet_projections::page::PageRequest;
use uuid::Uuid;

use super::accounts::UserRole;
use super::context::{actor, bad_input, forbidden, internal, services};
use super::ids::{self, ObjectType};
use super::labels::LabelRu;
use super::pagination::{connection_complexity, page_info, page_request};

/// One action in an account's activity log.
#[derive(Debug, Clone, SimpleObject)]
#[graphql(complex)]
pub struct ActivityEntry {
    /// When the action was recorded.
    pub occurred_at: DateTime<Utc>,
    /// What was done (the event type, e.g. `OrganisationRegistered`).
    pub action: String,
    /// Kind of object acted on.
    pub object_type: ObjectType,
    /// The kind of object in Russian, for display.
    pub object_type_label_ru: &'static str,
    /// Global id of the object acted on (of a schedule: its doctor's; of a
    /// patient's details or verification: the patient's account).
    pub object_id: ID,
    /// Status the object was left in, where it has one.
    pub status: Option<String>,
    /// Account that acted.
    pub actor_id: ID,
    /// Role the actor acted in, as recorded.
    #[graphql(skip)]
    pub actor_role: String,
    /// Global journal position of the action.
    pub position: i64,
}

#[ComplexObject]
impl ActivityEntry {
    /// Role the actor acted in.
    async fn actor_role(&self) -> async_graphql::Result<UserRole> {
        UserRole::of_record(&self.actor_role)
    }
    /// The role in Russian, for display.
    async fn actor_role_label_ru(&self) -> async_graphql::Result<&'static str> {
        Ok(UserRole::of_record(&self.actor_role)?.label_ru())
    }
}

impl From<Entry> for ActivityEntry {
    fn from(e: Entry) -> Self {
        let object_type = ObjectType::of_aggregate(&e.object_type);
        ActivityEntry {
            occurred_at: e.occurred_at,
            action: e.action,
            object_type,
            object_type_label_ru: object_type.label_ru(),
            object_id: object_type.global_id(&e.object_id),
            status: e.status,
            actor_id: ids::encode("Account", e.actor_id),
            actor_role: e.actor_role,
            position: e.position,
        }
    }
}

/// Filters of the activity log.
#[derive(Debug, Default, InputObject)]
pub struct ActivityLogFilter {
    /// Only actions at or after this instant.
    pub from: Option<DateTime<Utc>>,
    /// Only actions before this instant.
    pub to: Option<DateTime<Utc>>,
    /// Only these actions (e.g. `OrganisationRegistered`).
    pub actions: Option<Vec<String>>,
}

/// Longest list of actions a filter may name.
const MAX_ACTIONS: usize = 50;

fn filter_of(filter: Option<ActivityLogFilter>) -> async_graphql::Result<ActivityFilter> {
    let filter = filter.unwrap_or_default();
    if let (Some(from), Some(to)) = (filter.from, filter.to) {
        if to < from {
            return Err(bad_input("filter.to must not be before filter.from"));
        }
    }
    let actions = filter.actions.unwrap_or_default();
    if actions.len() > MAX_ACTIONS {
        return Err(bad_input(format!(
            "filter.actions may name at most {MAX_ACTIONS} actions"
        )));
    }
    Ok(ActivityFilter {
        from: filter.from,
        to: filter.to,
        actions,
    })
}

/// Whose log the caller asks for: their own, or (auditors) anyone's.
fn account_of(ctx: &Context<'_>, account_id: Option<ID>) -> async_graphql::Result<Uuid> {
    let actor = actor(ctx)?;
    match account_id {
        None => Ok(actor.account_id),
        Some(id) => {
            let Some(account) = ids::decode_as(&id, "Account") else {
                return Err(forbidden());
            };
            if account == actor.account_id || actor.role == Role::Auditor {
                Ok(account)
            } else {
                Err(forbidden())
            }
        }
    }
}

/// Activity-log queries.
#[derive(Default)]
pub struct ActivityQuery;

#[Object]
impl ActivityQuery {
    /// The caller's activity log, newest first; auditors may name another account.
    #[graphql(complexity = "connection_complexity(child_complexity, first, last)")]
    async fn activity_log(
        &self,
        ctx: &Context<'_>,
        filter: Option<ActivityLogFilter>,
        account_id: Option<ID>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<Connection<String, ActivityEntry, EmptyFields, EmptyFields>> {
        let account = account_of(ctx, account_id)?;
        let filter = filter_of(filter)?;
        let page = page_request(first, after, last, before)?;
        let page = activity_log::list(&services(ctx).db, account, &filter, page)
            .await
            .map_err(|e| internal(ctx, e))?;
        let info = page_info(&page);
        let mut connection = Connection::new(info.has_previous_page, info.has_next_page);
        connection.edges.extend(
            page.items
                .into_iter()
                .map(|(cursor, entry)| Edge::new(cursor.encode(), ActivityEntry::from(entry))),
        );
        Ok(connection)
    }
}

/// Live updates.
#[derive(Default)]
pub struct ActivitySubscription;

#[Subscription]
impl ActivitySubscription {
    /// New entries of the caller's activity log as they are recorded.
    async fn activity_feed(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl Stream<Item = ActivityEntry>> {
        let account = actor(ctx)?.account_id;
        let s = services(ctx).clone();
        let newest = activity_log::list(
            &s.db,
            account,
            &ActivityFilter::default(),
            PageRequest::Forward {
                first: 1,
                after: None,
            },
        )
        .await
        .map_err(|e| internal(ctx, e))?;
        let start = newest.items.first().map(|(c, _)| *c);
        let progress = s.projector.subscribe_progress(activity_log::NAME);
        let state = (
            s,
            start,
            progress,
            std::collections::VecDeque::<ActivityEntry>::new(),
        );
        Ok(futures::stream::unfold(
            state,
            move |(s, mut seen, mut progress, mut queue)| async move {
                loop {
                    if let Some(next) = queue.pop_front() {
                        return Some((next, (s, seen, progress, queue)));
                    }
                    // Entries newer than the last one sent, oldest first.
                    let page = PageRequest::Backward {
                        last: 100,
                        before: seen,
                    };
                    match activity_log::list(&s.db, account, &ActivityFilter::default(), page).await
                    {
                        Ok(page) => {
                            for (cursor, entry) in page.items.into_iter().rev() {
                                seen = Some(cursor);
                                queue.push_back(entry.into());
                            }
                            if !queue.is_empty() {
                                continue;
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "activity feed read failed"),
                    }
                    let wait = async {
                        match progress.as_mut() {
                            Some(rx) => {
                                let _ = rx.changed().await;
                            }
                            None => std::future::pending::<()>().await,
                        }
                    };
                    tokio::select! {
                        _ = wait => {}
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            },
        ))
    }
}
