//! The accounts tables (migration 0003): credentials, one-time codes,
//! sessions with refresh tokens, and throttling counters.
//!
//! Times are compared in Rust, not SQL, so both backends agree on them.

use chrono::{DateTime, Utc};
use sqlx::Row;
use uuid::Uuid;

use kabinet_domain::accounts::account::{AccountStatus, LOGIN_SCOPE};
use kabinet_domain::accounts::throttle::ThrottlePolicy;
use kabinet_domain::on_db;
use kabinet_domain::Db;

/// How many times a throttling reservation is tried against racing requests.
const RESERVE_ROUNDS: usize = 64;

/// A database fault in the accounts tables.
pub type StoreResult<T> = Result<T, sqlx::Error>;

/// The accounts tables.
#[derive(Clone, Debug)]
pub struct AccountStore {
    db: Db,
}

/// A stored one-time code or sign-in challenge.
#[derive(Debug, Clone)]
pub struct StoredCode {
    pub code_hash: Vec<u8>,
    pub account_id: Option<String>,
    pub method: Option<String>,
    pub expires_at: DateTime<Utc>,
    /// Attempts made, including the one that fetched this row.
    pub attempts: i64,
}

/// A session as the per-request check sees it.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub id: Uuid,
    pub account_id: Uuid,
    pub role: String,
    pub organisation_id: Option<Uuid>,
    pub expires_at: DateTime<Utc>,
    pub revoked: bool,
    /// The account's status; `None` when no credentials row exists.
    pub status: Option<AccountStatus>,
}

impl SessionRecord {
    /// Whether requests may use the session at `now`.
    pub fn live(&self, now: DateTime<Utc>) -> bool {
        !self.revoked && self.expires_at > now && self.status == Some(AccountStatus::Active)
    }
}

/// TOTP data of an account.
#[derive(Debug, Clone, Default)]
pub struct TotpRecord {
    pub secret: Option<String>,
    pub pending: Option<String>,
    pub last_step: Option<i64>,
}

/// The outcome of spending a refresh token.
#[derive(Debug, Clone)]
pub enum Spent {
    /// The token was live and is now spent; the session it belongs to.
    Fresh(Uuid),
    /// The token had been spent before: its family must be revoked.
    Reused(Uuid),
    Unknown,
}

fn uuid_of(text: &str) -> Result<Uuid, sqlx::Error> {
    Uuid::parse_str(text).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

impl AccountStore {
    /// The tables in `db`.
    pub fn new(db: Db) -> Self {
        AccountStore { db }
    }

    // --- credentials ---------------------------------------------------------------------

    /// Creates or replaces the credentials row of a new account.
    pub async fn put_credentials(
        &self,
        account_id: Uuid,
        password_hash: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        const SQL: &str = "INSERT INTO account_credentials (account_id, password_hash, status, updated_at) \
             VALUES ($1, $2, 'active', $3) \
             ON CONFLICT (account_id) DO UPDATE SET password_hash = excluded.password_hash, updated_at = excluded.updated_at";
        on_db!(&self.db, pool => {
            sqlx::query(SQL).bind(account_id.to_string()).bind(password_hash).bind(now).execute(pool).await?;
        });
        Ok(())
    }

    /// Removes the credentials row of an account that was not opened after all.
    pub async fn delete_credentials(&self, account_id: Uuid) -> StoreResult<()> {
        const SQL: &str = "DELETE FROM account_credentials WHERE account_id = $1";
        on_db!(&self.db, pool => {
            sqlx::query(SQL).bind(account_id.to_string()).execute(pool).await?;
        });
        Ok(())
    }

    /// The stored password hash and status; `None` without a credentials row.
    pub async fn credentials(
        &self,
        account_id: Uuid,
    ) -> StoreResult<Option<(Option<String>, AccountStatus)>> {
        const SQL: &str =
            "SELECT password_hash, status FROM account_credentials WHERE account_id = $1";
        let row: Option<(Option<String>, String)> = on_db!(&self.db, pool => {
            sqlx::query_as(SQL).bind(account_id.to_string()).fetch_optional(pool).await?
        });
        Ok(row.map(|(hash, status)| (hash, AccountStatus::from_stored(&status))))
    }

    /// Replaces the password hash.
    pub async fn set_password(
        &self,
        account_id: Uuid,
        password_hash: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.put_credentials(account_id, Some(password_hash), now)
            .await
    }

    /// Records the account's status (before a closing event is written).
    pub async fn set_status(
        &self,
        account_id: Uuid,
        status: AccountStatus,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        const SQL: &str = "INSERT INTO account_credentials (account_id, status, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (account_id) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at";
        on_db!(&self.db, pool => {
            sqlx::query(SQL).bind(account_id.to_string()).bind(status.as_str()).bind(now).execute(pool).await?;
        });
        Ok(())
    }

    /// The status of account `account_id`, `None` when it has no credentials row.
    pub async fn status(&self, account_id: Uuid) -> StoreResult<Option<AccountStatus>> {
        Ok(self.credentials(account_id).await?.map(|(_, s)| s))
    }

    // --- TOTP ----------------------------------------------------------------------------

    /// The account's TOTP data.
    pub async fn totp(&self, account_id: Uuid) -> StoreResult<TotpRecord> {
        const SQL: &str = "SELECT totp_secret, totp_pending, totp_last_step FROM account_credentials WHERE account_id = $1";
        let row: Option<(Option<String>, Option<String>, Option<i64>)> = on_db!(&self.db, pool => {
            sqlx::query_as(SQL).bind(account_id.to_string()).fetch_optional(pool).await?
        });
        Ok(row
            .map(|(secret, pending, last_step)| TotpRecord {
                secret,
                pending,
                last_step,
            })
            .unwrap_or_default())
    }

    /// Keeps `secret` as the one awaiting its first code.
    pub async fn set_totp_pending(&self, account_id: Uuid, secret: &str) -> StoreResult<()> {
        const SQL: &str = "UPDATE account_credentials SET totp_pending = $2 WHERE account_id = $1";
        on_db!(&self.db, pool => {
            sqlx::query(SQL).bind(account_id.to_string()).bind(secret).execute(pool).await?;
        });
        Ok(())
    }

    /// Makes the pending secret the account's, with `step` used; false when
    /// another request used that step first.
    pub async fn activate_totp(&self, account_id: Uuid, step: i64) -> StoreResult<bool> {
        const SQL: &str = "UPDATE account_credentials SET totp_secret = totp_pending, totp_pending = NULL, totp_last_step = $2 \
             WHERE account_id = $1 AND totp_pending IS NOT NULL AND (totp_last_step IS NULL OR totp_last_step < $2)";
        let done = on_db!(&self.db, pool => {
            sqlx::query(SQL).bind(account_id.to_string()).bind(step).execute(pool).await?.rows_affected()
        });
        Ok(done == 1)
    }

    /// Marks `step` used; false when it (or a later one) was used already, so
    /// two requests racing with one code cannot both pass.
    pub async fn use_totp_step(&self, account_id: Uuid, step: i64) -> StoreResult<bool> {
        const SQL: &str = "UPDATE account_credentials SET totp_last_step = $2 \
             WHERE account_id = $1 AND totp_secret IS NOT NULL AND (totp_last_step IS NULL OR totp_last_step < $2)";
        let done = on_db!(&self.db, pool => {
            sqlx::query(SQL).bind(account_id.to_string()).bind(step).execute(pool).await?.rows_affected()
        });
        Ok(done == 1)
    }

    /// Forgets the account's TOTP secrets (the last used step stays).
    pub async fn clear_totp(&self, account_id: Uuid) -> StoreResult<()> {
        const SQL: &str = "UPDATE account_credentials SET totp_secret = NULL, totp_pending = NULL WHERE account_id = $1";
        on_db!(&self.db, pool => {
            sqlx::query(SQL).bind(account_id.to_string()).execute(pool).await?;
        });
        Ok(())
    }

    // --- one-time codes ------------------------------------------------------------------

    /// When the code of `(purpose, subject)` was last sent, with the sends in its window.
    pub async fn code_sends(
        &self,
        purpose: &str,
        subject: &str,
    ) -> StoreResult<Option<(DateTime<Utc>, i64, DateTime<Utc>)>> {
        const SQL: &str = "SELECT sent_at, sends, window_from FROM one_time_codes WHERE purpose = $1 AND subject = $2";
        on_db!(&self.db, pool => {
            sqlx::query_as(SQL).bind(purpose).bind(subject).fetch_optional(pool).await
        })
    }

    /// Stores a new code for `(purpose, subject)`, replacing an older one.
    #[allow(clippy::too_many_arguments)]
    pub async fn put_code(
        &self,
        purpose: &str,
        subject: &str,
        code_hash: &[u8],
        account_id: Option<Uuid>,
        method: Option<&str>,
        expires_at: DateTime<Utc>,
        sends: i64,
        window_from: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        const SQL: &str = "INSERT INTO one_time_codes \
             (purpose, subject, code_hash, account_id, method, expires_at, attempts, sent_at, sends, window_from) \
             VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $8, $9) \
             ON CONFLICT (purpose, subject) DO UPDATE SET code_hash = excluded.code_hash, \
             account_id = excluded.account_id, method = excluded.method, expires_at = excluded.expires_at, \
             attempts = 0, sent_at = excluded.sent_at, sends = excluded.sends, window_from = excluded.window_from";
        on_db!(&self.db, pool => {
            sqlx::query(SQL)
                .bind(purpose)
                .bind(subject)
                .bind(code_hash)
                .bind(account_id.map(|a| a.to_string()))
                .bind(method)
                .bind(expires_at)
                .bind(now)
                .bind(sends)
                .bind(window_from)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Counts one attempt at the code of `(purpose, subject)` and returns it,
    /// unless `max_attempts` were made already (`Err(())` inside) or there is none.
    pub async fn attempt_code(
        &self,
        purpose: &str,
        subject: &str,
        max_attempts: i64,
    ) -> StoreResult<Option<Result<StoredCode, ()>>> {
        const BUMP: &str = "UPDATE one_time_codes SET attempts = attempts + 1 \
             WHERE purpose = $1 AND subject = $2 AND attempts < $3 \
             RETURNING code_hash, account_id, method, expires_at, attempts";
        const EXISTS: &str = "SELECT 1 FROM one_time_codes WHERE purpose = $1 AND subject = $2";
        let row = on_db!(&self.db, pool => {
            let row = sqlx::query(BUMP).bind(purpose).bind(subject).bind(max_attempts).fetch_optional(pool).await?;
            match row {
                Some(r) => Some(StoredCode {
                    code_hash: r.try_get(0)?,
                    account_id: r.try_get(1)?,
                    method: r.try_get(2)?,
                    expires_at: r.try_get(3)?,
                    attempts: r.try_get(4)?,
                }),
                None => None,
            }
        });
        if let Some(code) = row {
            return Ok(Some(Ok(code)));
        }
        let exists = on_db!(&self.db, pool => {
            sqlx::query(EXISTS).bind(purpose).bind(subject).fetch_optional(pool).await?.is_some()
        });
        Ok(exists.then_some(Err(())))
    }

    /// Stores a new code for `(purpose, subject)` only if the last send is still
    /// the one seen at `previous` (`None`: no code was stored). False when a
    /// concurrent request sent first, so two sends never both pass one check.
    #[allow(clippy::too_many_arguments)]
    pub async fn put_code_if_unchanged(
        &self,
        purpose: &str,
        subject: &str,
        code_hash: &[u8],
        account_id: Option<Uuid>,
        expires_at: DateTime<Utc>,
        sends: i64,
        window_from: DateTime<Utc>,
        now: DateTime<Utc>,
        previous: Option<DateTime<Utc>>,
    ) -> StoreResult<bool> {
        const FIRST: &str = "INSERT INTO one_time_codes \
             (purpose, subject, code_hash, account_id, method, expires_at, attempts, sent_at, sends, window_from) \
             VALUES ($1, $2, $3, $4, NULL, $5, 0, $6, $7, $8) \
             ON CONFLICT (purpose, subject) DO NOTHING";
        const NEXT: &str = "INSERT INTO one_time_codes \
             (purpose, subject, code_hash, account_id, method, expires_at, attempts, sent_at, sends, window_from) \
             VALUES ($1, $2, $3, $4, NULL, $5, 0, $6, $7, $8) \
             ON CONFLICT (purpose, subject) DO UPDATE SET code_hash = excluded.code_hash, \
             account_id = excluded.account_id, method = NULL, expires_at = excluded.expires_at, \
             attempts = 0, sent_at = excluded.sent_at, sends = excluded.sends, window_from = excluded.window_from \
             WHERE one_time_codes.sent_at = $9";
        let account = account_id.map(|a| a.to_string());
        let written = on_db!(&self.db, pool => {
            let query = match previous {
                None => sqlx::query(FIRST),
                Some(_) => sqlx::query(NEXT),
            };
            let query = query
                .bind(purpose)
                .bind(subject)
                .bind(code_hash)
                .bind(account.as_deref())
                .bind(expires_at)
                .bind(now)
                .bind(sends)
                .bind(window_from);
            let query = match previous {
                None => query,
                Some(at) => query.bind(at),
            };
            query.execute(pool).await?.rows_affected()
        });
        Ok(written == 1)
    }

    /// Removes the code of `(purpose, subject)`: it was used.
    pub async fn delete_code(&self, purpose: &str, subject: &str) -> StoreResult<()> {
        const SQL: &str = "DELETE FROM one_time_codes WHERE purpose = $1 AND subject = $2";
        on_db!(&self.db, pool => {
            sqlx::query(SQL).bind(purpose).bind(subject).execute(pool).await?;
        });
        Ok(())
    }

    // --- sessions ------------------------------------------------------------------------

    /// Opens a session with its first refresh token.
    pub async fn create_session(
        &self,
        session_id: Uuid,
        account_id: Uuid,
        role: &str,
        organisation_id: Option<Uuid>,
        refresh_hash: &[u8],
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<()> {
        const SESSION: &str =
            "INSERT INTO sessions (id, account_id, role, organisation_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)";
        const TOKEN: &str =
            "INSERT INTO refresh_tokens (token_hash, session_id, created_at) VALUES ($1, $2, $3)";
        on_db!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(SESSION)
                .bind(session_id.to_string())
                .bind(account_id.to_string())
                .bind(role)
                .bind(organisation_id.map(|o| o.to_string()))
                .bind(now)
                .bind(expires_at)
                .execute(&mut *tx)
                .await?;
            sqlx::query(TOKEN).bind(refresh_hash).bind(session_id.to_string()).bind(now).execute(&mut *tx).await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// The session `id` with its account's status: one indexed read per request.
    pub async fn session(&self, id: Uuid) -> StoreResult<Option<SessionRecord>> {
        const SQL: &str = "SELECT s.account_id, s.role, s.organisation_id, s.expires_at, s.revoked_at IS NOT NULL, c.status \
             FROM sessions s LEFT JOIN account_credentials c ON c.account_id = s.account_id WHERE s.id = $1";
        on_db!(&self.db, pool => {
            let row = sqlx::query(SQL).bind(id.to_string()).fetch_optional(pool).await?;
            match row {
                None => Ok(None),
                Some(r) => {
                    let account: String = r.try_get(0)?;
                    let org: Option<String> = r.try_get(2)?;
                    let status: Option<String> = r.try_get(5)?;
                    Ok(Some(SessionRecord {
                        id,
                        account_id: uuid_of(&account)?,
                        role: r.try_get(1)?,
                        organisation_id: org.as_deref().map(uuid_of).transpose()?,
                        expires_at: r.try_get(3)?,
                        revoked: r.try_get(4)?,
                        status: status.as_deref().map(AccountStatus::from_stored),
                    }))
                }
            }
        })
    }

    /// Spends refresh token `hash` at `now`.
    pub async fn spend_refresh(&self, hash: &[u8], now: DateTime<Utc>) -> StoreResult<Spent> {
        const SPEND: &str = "UPDATE refresh_tokens SET used_at = $2 WHERE token_hash = $1 AND used_at IS NULL RETURNING session_id";
        const FIND: &str = "SELECT session_id FROM refresh_tokens WHERE token_hash = $1";
        let fresh: Option<String> = on_db!(&self.db, pool => {
            sqlx::query_scalar(SPEND).bind(hash).bind(now).fetch_optional(pool).await?
        });
        if let Some(session) = fresh {
            return Ok(Spent::Fresh(uuid_of(&session)?));
        }
        let spent: Option<String> = on_db!(&self.db, pool => {
            sqlx::query_scalar(FIND).bind(hash).fetch_optional(pool).await?
        });
        Ok(match spent {
            Some(session) => Spent::Reused(uuid_of(&session)?),
            None => Spent::Unknown,
        })
    }

    /// Adds a refresh token to session `session_id`.
    pub async fn add_refresh(
        &self,
        session_id: Uuid,
        hash: &[u8],
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        const SQL: &str =
            "INSERT INTO refresh_tokens (token_hash, session_id, created_at) VALUES ($1, $2, $3)";
        on_db!(&self.db, pool => {
            sqlx::query(SQL).bind(hash).bind(session_id.to_string()).bind(now).execute(pool).await?;
        });
        Ok(())
    }

    /// Revokes session `id`; false when it was not live.
    pub async fn revoke_session(
        &self,
        id: Uuid,
        reason: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        const SQL: &str = "UPDATE sessions SET revoked_at = $2, revoke_reason = $3 WHERE id = $1 AND revoked_at IS NULL";
        let n = on_db!(&self.db, pool => {
            sqlx::query(SQL).bind(id.to_string()).bind(now).bind(reason).execute(pool).await?.rows_affected()
        });
        Ok(n == 1)
    }

    /// Revokes every session of `account_id`; returns how many were live.
    pub async fn revoke_all(
        &self,
        account_id: Uuid,
        reason: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        const SQL: &str = "UPDATE sessions SET revoked_at = $2, revoke_reason = $3 WHERE account_id = $1 AND revoked_at IS NULL";
        let n = on_db!(&self.db, pool => {
            sqlx::query(SQL).bind(account_id.to_string()).bind(now).bind(reason).execute(pool).await?.rows_affected()
        });
        Ok(n)
    }

    // --- throttling ----------------------------------------------------------------------

    /// Counts a failure of `(scope, key)` at `now`.
    pub async fn throttle_fail(
        &self,
        policy: &ThrottlePolicy,
        scope: &str,
        key: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        const READ: &str =
            "SELECT last_failure FROM sign_in_throttle WHERE scope = $1 AND key = $2";
        const FORGET: &str = "DELETE FROM sign_in_throttle WHERE scope = $1 AND key = $2";
        // The increment is one statement, so concurrent guesses are all counted.
        const COUNT: &str = "INSERT INTO sign_in_throttle (scope, key, failures, last_failure) VALUES ($1, $2, 1, $3) \
             ON CONFLICT (scope, key) DO UPDATE SET failures = sign_in_throttle.failures + 1, last_failure = excluded.last_failure";
        on_db!(&self.db, pool => {
            let last: Option<DateTime<Utc>> = sqlx::query_scalar(READ).bind(scope).bind(key).fetch_optional(pool).await?;
            if last.is_some_and(|last| policy.forgotten(last, now)) {
                sqlx::query(FORGET).bind(scope).bind(key).execute(pool).await?;
            }
            sqlx::query(COUNT).bind(scope).bind(key).bind(now).execute(pool).await?;
        });
        Ok(())
    }

    /// Counts an attempt of `(scope, key)` before it is checked, unless the key
    /// must wait: `Err(wait)` then, and nothing is counted. The count a request
    /// checks is the one it increments (compare and set), so parallel attempts
    /// cannot all read the same count and pass a limit together.
    pub async fn throttle_reserve(
        &self,
        policy: &ThrottlePolicy,
        scope: &str,
        key: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Result<(), chrono::Duration>> {
        const READ: &str =
            "SELECT failures, last_failure FROM sign_in_throttle WHERE scope = $1 AND key = $2";
        const FIRST: &str = "INSERT INTO sign_in_throttle (scope, key, failures, last_failure) VALUES ($1, $2, 1, $3) \
             ON CONFLICT (scope, key) DO NOTHING";
        const NEXT: &str = "UPDATE sign_in_throttle SET failures = $4, last_failure = $3 \
             WHERE scope = $1 AND key = $2 AND failures = $5";
        // Each round one of the racing requests wins; a loser reads again.
        for _ in 0..RESERVE_ROUNDS {
            let row: Option<(i64, DateTime<Utc>)> = on_db!(&self.db, pool => {
                sqlx::query_as(READ).bind(scope).bind(key).fetch_optional(pool).await?
            });
            let won = match row {
                None => on_db!(&self.db, pool => {
                    sqlx::query(FIRST).bind(scope).bind(key).bind(now).execute(pool).await?.rows_affected()
                }),
                Some((failures, last)) => {
                    let next = if policy.forgotten(last, now) {
                        1
                    } else if let Some(wait) = policy.wait(failures, last, now) {
                        return Ok(Err(wait));
                    } else {
                        failures + 1
                    };
                    on_db!(&self.db, pool => {
                        sqlx::query(NEXT).bind(scope).bind(key).bind(now).bind(next).bind(failures)
                            .execute(pool).await?.rows_affected()
                    })
                }
            };
            if won == 1 {
                return Ok(Ok(()));
            }
        }
        // Too many requests at once on one key: that itself is a reason to wait.
        Ok(Err(chrono::Duration::seconds(1)))
    }

    /// Gives back an attempt counted by [`AccountStore::throttle_reserve`] that
    /// turned out not to be a failure.
    pub async fn throttle_refund(&self, scope: &str, key: &str) -> StoreResult<()> {
        const SQL: &str = "UPDATE sign_in_throttle SET failures = failures - 1 \
             WHERE scope = $1 AND key = $2 AND failures > 0";
        on_db!(&self.db, pool => {
            sqlx::query(SQL).bind(scope).bind(key).execute(pool).await?;
        });
        Ok(())
    }

    /// Forgets the failures of `(scope, key)` after a success.
    pub async fn throttle_reset(&self, scope: &str, key: &str) -> StoreResult<()> {
        const SQL: &str = "DELETE FROM sign_in_throttle WHERE scope = $1 AND key = $2";
        on_db!(&self.db, pool => {
            sqlx::query(SQL).bind(scope).bind(key).execute(pool).await?;
        });
        Ok(())
    }

    /// The account holding `login`, from the reservation its registration took.
    pub async fn account_of_login(&self, login: &str) -> StoreResult<Option<Uuid>> {
        const SQL: &str = "SELECT owner FROM reservations WHERE scope = $1 AND key = $2";
        let owner: Option<String> = on_db!(&self.db, pool => {
            sqlx::query_scalar(SQL).bind(LOGIN_SCOPE).bind(login).fetch_optional(pool).await?
        });
        owner
            .as_deref()
            .and_then(|o| o.strip_prefix("account:"))
            .map(uuid_of)
            .transpose()
    }
}
