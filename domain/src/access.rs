//! The record of every read of a patient's medical data (A5, 152-FZ): who read what and
//! when. Append-only (the tables refuse UPDATE and DELETE); reads are not changes, so
//! they are kept beside the journal rather than in it. These are the values; the
//! table is written and read by `kabinet_adapters::access_record`.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::Actor;

/// One read of medical data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MedicalRead {
    pub patient_id: Uuid,
    pub reader: Actor,
    /// Kind of data read, e.g. `visit_history`, `visit_outcome`, `referral`.
    pub what: String,
    /// The record read, when one.
    pub object_id: Option<Uuid>,
    pub request_id: String,
    pub at: DateTime<Utc>,
}

/// A recorded read, as listed to the patient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRead {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub reader_id: Uuid,
    pub reader_role: String,
    pub reader_organisation_id: Option<Uuid>,
    pub what: String,
    pub object_id: Option<Uuid>,
}

/// Bounds and position of a listing of reads, newest first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadQuery {
    /// Inclusive lower bound.
    pub from: Option<DateTime<Utc>>,
    /// Exclusive upper bound.
    pub to: Option<DateTime<Utc>>,
    /// Only reads older than this `(at, seq)` in (at, seq) order.
    pub older_than: Option<(i64, i64)>,
    /// With `older_than`: reads at exactly its instant are all older.
    pub whole_instant_older: bool,
}
