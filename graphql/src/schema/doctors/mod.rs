//! Doctors, services and schedules (B2, B3, C1): search, registration,
//! publishing and closing working periods, free slots.

mod mutations;
mod queries;
mod types;

pub use mutations::*;
pub use queries::*;
pub use types::*;

use super::context::{internal, services as svc};
use super::errors::UserError;
use async_graphql::Context;
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use kabinet_projections::doctors;
use uuid::Uuid;

/// An instant as RFC 3339 with the offset of `zone`.
pub fn local(at: DateTime<Utc>, zone: &str) -> String {
    match zone.parse::<chrono_tz::Tz>() {
        Ok(tz) => at.with_timezone(&tz).to_rfc3339(),
        Err(_) => at.to_rfc3339(),
    }
}

/// A date or time of day in the input that does not parse.
#[derive(Debug, thiserror::Error)]
pub enum WhenInputError {
    #[error("{field}: '{raw}' is not a date in the form YYYY-MM-DD")]
    Date {
        field: &'static str,
        raw: String,
        #[source]
        source: chrono::ParseError,
    },
    #[error("{field}: '{raw}' is not a local time in the form HH:MM")]
    Time {
        field: &'static str,
        raw: String,
        #[source]
        source: chrono::ParseError,
    },
}

impl WhenInputError {
    /// The input field at fault.
    pub fn field(&self) -> &'static str {
        match self {
            WhenInputError::Date { field, .. } | WhenInputError::Time { field, .. } => field,
        }
    }
}

/// A `YYYY-MM-DD` date of input field `field`.
fn parse_date(field: &'static str, raw: &str) -> Result<NaiveDate, WhenInputError> {
    NaiveDate::parse_from_str(raw.trim(), "%Y-%m-%d").map_err(|source| WhenInputError::Date {
        field,
        raw: raw.to_string(),
        source,
    })
}

/// An `HH:MM` time of day of input field `field`.
fn parse_time(field: &'static str, raw: &str) -> Result<NaiveTime, WhenInputError> {
    NaiveTime::parse_from_str(raw.trim(), "%H:%M").map_err(|source| WhenInputError::Time {
        field,
        raw: raw.to_string(),
        source,
    })
}

impl From<WhenInputError> for UserError {
    fn from(e: WhenInputError) -> Self {
        UserError::on_field(e.field(), "INVALID_INPUT", e.to_string())
    }
}

/// Resolves a doctor's global id.
pub async fn node(ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Option<Doctor>> {
    doctors::get(&svc(ctx).db, id)
        .await
        .map(|d| d.map(Doctor))
        .map_err(|e| internal(ctx, e))
}
