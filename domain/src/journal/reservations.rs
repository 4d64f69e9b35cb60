//! Reservations: unique keys taken and released in the same transaction as the
//! events that cause them, so rules spanning aggregates hold under any
//! concurrency and across processes.

use cqrs_es::Aggregate;

use crate::user_error::UserError;

/// A change to the reservations table made with a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReservationOp {
    /// Takes `(scope, key)` for `owner`; fails the whole commit if someone holds it.
    Take {
        scope: &'static str,
        key: String,
        owner: String,
    },
    /// Takes `(scope, key)` for `owner` unless someone already holds it.
    TakeIfFree {
        scope: &'static str,
        key: String,
        owner: String,
    },
    /// Releases every key `owner` holds.
    ReleaseAll { owner: String },
}

/// The commit was refused because a key is held by someone else; nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("reservation {scope}/{key} is already taken")]
pub struct ReservationTaken {
    pub scope: String,
    pub key: String,
}

/// Aggregates whose events take or release reservations.
pub trait Reserving: Aggregate {
    /// The reservation changes `events` of aggregate `aggregate_id` make, in order.
    fn reservations(_aggregate_id: &str, _events: &[Self::Event]) -> Vec<ReservationOp> {
        Vec::new()
    }

    /// The caller's error when a key this aggregate's events take is held by
    /// someone else. Each aggregate names its own scopes; a scope it does not
    /// know is a conflict the caller may retry.
    fn reservation_error(taken: &ReservationTaken) -> UserError {
        conflict(taken)
    }
}

/// The user error for a held key no aggregate explains: a retryable conflict.
pub fn conflict(_taken: &ReservationTaken) -> UserError {
    UserError::new(
        "CONFLICT",
        "the request conflicts with another one; try again",
    )
}

pub(crate) const DELETE_OWNER: &str = "DELETE FROM reservations WHERE owner = $1";
pub(crate) const INSERT_KEY_IF_FREE: &str =
    "INSERT INTO reservations (scope, key, owner) VALUES ($1, $2, $3) \
     ON CONFLICT (scope, key) DO NOTHING";

impl super::Journal {
    /// Which of `keys` in `scope` are held, and by whom.
    pub async fn held_reservations(
        &self,
        scope: &str,
        keys: &[String],
    ) -> Result<Vec<(String, String)>, super::JournalError> {
        let mut held = Vec::new();
        for chunk in keys.chunks(500) {
            let rows: Vec<(String, String)> = crate::on_db!(self.db(), pool => {
                let mut q = sqlx::QueryBuilder::new("SELECT key, owner FROM reservations WHERE scope = ");
                q.push_bind(scope).push(" AND key IN (");
                let mut list = q.separated(", ");
                for key in chunk {
                    list.push_bind(key);
                }
                q.push(")");
                q.build_query_as().fetch_all(pool).await?
            });
            held.extend(rows);
        }
        Ok(held)
    }
}
