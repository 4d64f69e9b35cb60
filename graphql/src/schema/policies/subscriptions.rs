//! Live updates of the caller's policies.

use super::{pick_current, Policy};
use crate::schema::context::{medical_patient, record_medical_read, services as svc};
use async_graphql::{Context, Subscription};
use chrono::{DateTime, Utc};
use futures::Stream;
use kabinet_projections::policies::{self, PolicyView};
use uuid::Uuid;

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
