//! Bearer tokens signed with the test servers' secret, minted the way the
//! server mints them.

use std::sync::LazyLock;

use kabinet_domain::{Actor, Role};
use kabinet_graphql::auth::TokenKeys;
use uuid::Uuid;

use crate::server::SECRET;

/// How long a test token stays valid.
const TTL_MINUTES: i64 = 30;

static KEYS: LazyLock<TokenKeys> = LazyLock::new(|| TokenKeys::new(SECRET.as_bytes()));

fn actor(account_id: Uuid, role: Role, organisation_id: Option<Uuid>) -> Actor {
    Actor {
        account_id,
        role,
        organisation_id,
    }
}

/// A development token for a fresh account of `role`.
pub fn token(role: Role, organisation_id: Option<Uuid>) -> String {
    token_for(Uuid::now_v7(), role, organisation_id)
}

/// A development token for account `account_id`.
pub fn token_for(account_id: Uuid, role: Role, organisation_id: Option<Uuid>) -> String {
    KEYS.mint(
        &actor(account_id, role, organisation_id),
        chrono::Duration::minutes(TTL_MINUTES),
    )
    .expect("token")
}

/// A token for account `account_id` as a sign-in issues it: not a development
/// token, so it meets the identity-verification gate.
pub fn session_token_for(account_id: Uuid, role: Role, organisation_id: Option<Uuid>) -> String {
    KEYS.mint_unmarked(
        &actor(account_id, role, organisation_id),
        chrono::Duration::minutes(TTL_MINUTES),
    )
    .expect("token")
}
