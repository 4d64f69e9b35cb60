//! Doctors, services and schedules (B2, B3, C1): search, registration,
//! publishing and closing working periods, free slots.

mod mutations;
mod queries;
mod types;

pub use mutations::*;
pub use queries::*;
pub use types::*;

use super::context::{internal, services as svc};
use async_graphql::Context;
use chrono::{DateTime, NaiveDate, Utc};
use kabinet_projections::doctors;
use uuid::Uuid;

/// An instant as RFC 3339 with the offset of `zone`.
pub fn local(at: DateTime<Utc>, zone: &str) -> String {
    match zone.parse::<chrono_tz::Tz>() {
        Ok(tz) => at.with_timezone(&tz).to_rfc3339(),
        Err(_) => at.to_rfc3339(),
    }
}

fn parse_date(field: &str, raw: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(raw.trim(), "%Y-%m-%d")
        .map_err(|_| format!("{field}: '{raw}' is not a date in the form YYYY-MM-DD"))
}

/// Resolves a doctor's global id.
pub async fn node(ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Option<Doctor>> {
    doctors::get(&svc(ctx).db, id)
        .await
        .map(|d| d.map(Doctor))
        .map_err(|e| internal(ctx, e))
}
