//! The care relationship: the one rule that says whether an organisation's
//! staff may act for a patient and read their personal data.
//!
//! A patient is in the care of an organisation while any of these holds:
//! - an appointment there, not cancelled, from its booking until
//!   [`CareRules::days_after_visit`] days after the visit's end;
//! - a referral to it that is being processed, or approved within the last
//!   [`CareRules::days_after_visit`] days;
//! - a document request to it that is still open (submitted or in progress);
//! - a prescription from it that is still active (not dispensed, cancelled or
//!   expired, and inside its validity).
//!
//! A cancelled appointment gives nothing: staff who booked a patient "on their
//! behalf" lose access once the booking is cancelled.

use chrono::{DateTime, Duration, Utc};
use kabinet_domain::Db;
use uuid::Uuid;

use crate::projection::micros;

/// How long a care relationship lasts after a visit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CareRules {
    /// Days after a visit's end (or a referral's approval) that the patient
    /// stays in the organisation's care.
    pub days_after_visit: u32,
}

impl Default for CareRules {
    fn default() -> Self {
        CareRules {
            days_after_visit: DEFAULT_DAYS_AFTER_VISIT,
        }
    }
}

/// Default of [`CareRules::days_after_visit`]: a follow-up month.
pub const DEFAULT_DAYS_AFTER_VISIT: u32 = 30;

/// Whether `patient_id` is in the care of `organisation_id` at `now`.
pub async fn in_care(
    db: &Db,
    rules: CareRules,
    patient_id: Uuid,
    organisation_id: Uuid,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let since = micros(now - Duration::days(i64::from(rules.days_after_visit)));
    let now = micros(now);
    let sql = format!(
        "SELECT \
           (SELECT COUNT(*) FROM {appointments} WHERE patient_id = $1 AND organisation_id = $2 \
              AND status <> 'cancelled' AND end_at >= $3) \
         + (SELECT COUNT(*) FROM {referrals} WHERE patient_id = $1 AND organisation_id = $2 \
              AND (status = 'processing' OR (status = 'approved' AND updated_at >= $3))) \
         + (SELECT COUNT(*) FROM {documents} WHERE patient_id = $1 AND organisation_id = $2 \
              AND status IN ('submitted', 'in_progress')) \
         + (SELECT COUNT(*) FROM {prescriptions} WHERE patient_id = $1 AND organisation_id = $2 \
              AND status IN ('ready_to_print', 'sent_to_pharmacy', 'ready_at_pharmacy') \
              AND expires_at > $4)",
        appointments = crate::appointments::NAME,
        referrals = crate::referrals::NAME,
        documents = crate::document_requests::NAME,
        prescriptions = crate::prescriptions::NAME,
    );
    let (patient, organisation) = (patient_id.to_string(), organisation_id.to_string());
    kabinet_domain::on_db!(db, pool => {
        let n: i64 = sqlx::query_scalar(&sql)
            .bind(&patient)
            .bind(&organisation)
            .bind(since)
            .bind(now)
            .fetch_one(pool)
            .await?;
        Ok(n > 0)
    })
}
