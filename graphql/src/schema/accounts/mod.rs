//! Accounts and sign-in (A1, A4, A6): registration with a code, two-factor
//! sign-in, sessions with rotating refresh tokens, recovery, TOTP, closing the
//! account, staff accounts; and the guard that lets one operation check at
//! most one credential.

mod credentials;
mod mutations;
mod queries;
mod types;

pub use credentials::*;
pub use mutations::*;
pub use queries::*;
pub use types::*;

use super::context::{internal, services};
use async_graphql::Context;
use chrono::Utc;
use kabinet_app::accounts::NewSession;
use uuid::Uuid;

fn tokens(ctx: &Context<'_>, session: &NewSession) -> async_graphql::Result<AuthTokens> {
    let access_token = services(ctx)
        .tokens
        .mint_session(&session.actor, session.session_id)
        .map_err(|e| internal(ctx, e))?;
    Ok(AuthTokens {
        access_token,
        access_token_expires_at: Utc::now()
            + chrono::Duration::minutes(crate::auth::ACCESS_TTL_MINUTES),
        refresh_token: session.refresh_token.clone(),
        session_expires_at: session.expires_at,
    })
}

async fn account_of(ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Option<Account>> {
    let view = services(ctx)
        .accounts
        .account(id)
        .await
        .map_err(|e| internal(ctx, e))?;
    Ok(view.map(Account))
}
