//! The caller's own account.

use super::{account_of, Account};
use crate::schema::context::actor;
use async_graphql::{Context, Object};

/// Account queries.
#[derive(Default)]
pub struct AccountsQuery;

#[Object]
impl AccountsQuery {
    /// The caller's account; `null` for a development token whose subject has none.
    async fn my_account(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Account>> {
        let actor = actor(ctx)?;
        account_of(ctx, actor.account_id).await
    }
}
