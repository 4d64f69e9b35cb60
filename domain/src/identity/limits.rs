//! Caps on what identity verification costs: SMS codes per person and per number,
//! passport scans per person, and how many scans are read at once.
//!
//! A cap is a counter per subject with an hourly and a daily window and, where
//! asked, a least gap between two uses. These are the values; the counters live
//! in a table kept by `kabinet_adapters::identity_store`.

use std::time::Duration as StdDuration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::user_error::UserError;

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

/// The `window` of a refusal because the last use was too recent.
pub const GAP: &str = "the least gap";

/// The subject's key: the kind and a digest of the subject, so no phone number is kept.
pub fn subject_key(counted: Counted, subject: &str) -> String {
    let digest = hex::encode(Sha256::digest(subject.as_bytes()));
    format!("{}:{}", counted.prefix(), &digest[..32])
}
