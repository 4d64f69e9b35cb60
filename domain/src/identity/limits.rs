//! Caps on what identity verification costs: SMS codes per person and per number,
//! passport scans per person, and how many scans are read at once.
//!
//! A cap is a counter row per subject with an hourly and a daily window and, where
//! asked, a least gap between two uses. Taking one use is a single conditional
//! `UPDATE`: PostgreSQL re-checks its condition on the
//! latest row under the row lock and SQLite runs one writer at a time, so concurrent
//! requests never pass a cap together.

use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};

use crate::user_error::UserError;
use crate::Db;

/// At most `per_hour` uses in an hour and `per_day` in a day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap {
    pub per_hour: u32,
    pub per_day: u32,
}

/// The identity limits, all configurable (see the server's flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityLimits {
    /// SMS codes one person may have sent.
    pub codes_per_person: Cap,
    /// SMS codes one phone number may receive, whoever asks.
    pub codes_per_number: Cap,
    /// Passport scans one person may store.
    pub scans_per_person: Cap,
    /// Scan uploads read at the same time; more are answered "busy".
    pub concurrent_uploads: usize,
    /// Longest time the body of one upload may take to arrive.
    pub upload_read_timeout: StdDuration,
}

impl Default for IdentityLimits {
    fn default() -> Self {
        IdentityLimits {
            codes_per_person: Cap {
                per_hour: 5,
                per_day: 10,
            },
            codes_per_number: Cap {
                per_hour: 5,
                per_day: 10,
            },
            scans_per_person: Cap {
                per_hour: 5,
                per_day: 10,
            },
            concurrent_uploads: 16,
            upload_read_timeout: StdDuration::from_secs(30),
        }
    }
}

/// What a cap counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    CodesToPerson,
    CodesToNumber,
    ScansOfPerson,
}

impl Counted {
    fn prefix(self) -> &'static str {
        match self {
            Counted::CodesToPerson => "codes-person",
            Counted::CodesToNumber => "codes-number",
            Counted::ScansOfPerson => "scans-person",
        }
    }
}

/// A cap was reached; the next use is allowed at `retry_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapReached {
    /// `a day`, `an hour`, or [`GAP`] when the last use was too recent.
    pub window: &'static str,
    pub limit: u32,
    pub retry_at: DateTime<Utc>,
    /// Whole seconds from the refusal to `retry_at` (at least 1).
    pub retry_seconds: i64,
}

impl CapReached {
    /// The user error: `code`, the cap and when to try again.
    pub fn to_user_error(&self, code: &'static str, what: &str) -> UserError {
        UserError::new(
            code,
            format!(
                "at most {} {what} {}; try again after {} (in {} s)",
                self.limit,
                self.window,
                self.retry_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                self.retry_seconds
            ),
        )
    }
}

/// A counter row: hour start, hour count, day start, day count, last use.
type CounterRow = (i64, i64, i64, i64, i64);

/// The `window` of a refusal because the last use was too recent.
pub const GAP: &str = "the least gap";

/// The subject's key: the kind and a digest of the subject, so no phone number is kept.
fn subject_key(counted: Counted, subject: &str) -> String {
    let digest = hex::encode(Sha256::digest(subject.as_bytes()));
    format!("{}:{}", counted.prefix(), &digest[..32])
}

/// Takes one use of `cap` for `subject` at `now`, at least `gap` after the last one,
/// or says when the next is allowed.
pub async fn take(
    db: &Db,
    counted: Counted,
    subject: &str,
    cap: Cap,
    gap: Duration,
    now: DateTime<Utc>,
) -> Result<Result<(), CapReached>, sqlx::Error> {
    const ENSURE: &str = "INSERT INTO identity_rate_limits (subject, hour_start, hour_count, \
         day_start, day_count, last_at) VALUES ($1, 0, 0, 0, 0, 0) ON CONFLICT (subject) DO NOTHING";
    // Every right-hand side reads the row as it was before this update.
    const TAKE: &str = "UPDATE identity_rate_limits SET \
         hour_count = CASE WHEN hour_start <= $2 THEN 1 ELSE hour_count + 1 END, \
         hour_start = CASE WHEN hour_start <= $2 THEN $1 ELSE hour_start END, \
         day_count = CASE WHEN day_start <= $3 THEN 1 ELSE day_count + 1 END, \
         day_start = CASE WHEN day_start <= $3 THEN $1 ELSE day_start END, \
         last_at = $1 \
         WHERE subject = $4 AND (hour_start <= $2 OR hour_count < $5) \
         AND (day_start <= $3 OR day_count < $6) AND last_at <= $7";
    const READ: &str = "SELECT hour_start, hour_count, day_start, day_count, last_at \
         FROM identity_rate_limits WHERE subject = $1";
    let key = subject_key(counted, subject);
    let at = now.timestamp_micros();
    let hour_ago = (now - Duration::hours(1)).timestamp_micros();
    let day_ago = (now - Duration::days(1)).timestamp_micros();
    let per_hour = i64::from(cap.per_hour);
    let per_day = i64::from(cap.per_day);
    let gap_start = (now - gap).timestamp_micros();
    let (taken, row): (u64, Option<CounterRow>) = crate::on_db!(db, pool => {
        sqlx::query(ENSURE).bind(&key).execute(pool).await?;
        let taken = sqlx::query(TAKE)
            .bind(at)
            .bind(hour_ago)
            .bind(day_ago)
            .bind(&key)
            .bind(per_hour)
            .bind(per_day)
            .bind(gap_start)
            .execute(pool)
            .await?
            .rows_affected();
        let row = if taken == 0 {
            sqlx::query_as(READ).bind(&key).fetch_optional(pool).await?
        } else {
            None
        };
        (taken, row)
    });
    if taken > 0 {
        return Ok(Ok(()));
    }
    let (hour_start, _, day_start, day_count, last_at) = row.unwrap_or_default();
    let instant = |micros: i64| DateTime::from_timestamp_micros(micros).unwrap_or(now);
    let reached = if last_at > gap_start {
        CapReached {
            window: GAP,
            limit: 1,
            retry_at: instant(last_at) + gap,
            retry_seconds: 0,
        }
    } else if day_start > day_ago && day_count >= per_day {
        CapReached {
            window: "a day",
            limit: cap.per_day,
            retry_at: instant(day_start) + Duration::days(1),
            retry_seconds: 0,
        }
    } else {
        CapReached {
            window: "an hour",
            limit: cap.per_hour,
            retry_at: instant(hour_start) + Duration::hours(1),
            retry_seconds: 0,
        }
    };
    let retry_seconds = (reached.retry_at - now).num_seconds().max(1);
    Ok(Err(CapReached {
        retry_seconds,
        ..reached
    }))
}
