//! The chain check: recomputes every stream's hash chain and every seal.
//!
//! Events are streamed, never loaded whole, so memory stays flat however long
//! the journal is.

use futures::TryStreamExt;
use serde_json::Value;
use sqlx::Row;

use super::chain::{hash_from_slice, EventContent, Hash, SealRoot, GENESIS};
use super::sealer::seal_from_row;
use super::{JournalError, JournalOrder};
use crate::db::Db;

/// What is wrong at a broken place of the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BreakKind {
    /// The stored hash is not the hash of the stored content and its predecessor:
    /// the event was edited, moved, or an event before it was removed.
    HashMismatch,
    /// The stream skips from one sequence to a later one: events were removed.
    MissingEvents { expected_sequence: i64 },
    /// A seal no longer matches the events in its range or the seal before it.
    SealMismatch { seal_no: i64, reason: String },
}

/// The first place where the journal is not what was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    pub kind: BreakKind,
    pub position: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub expected: Option<Hash>,
    pub found: Option<Hash>,
}

impl std::fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hex = |h: &Option<Hash>| h.map(hex::encode).unwrap_or_else(|| "-".into());
        match &self.kind {
            BreakKind::SealMismatch { seal_no, reason } => write!(
                f,
                "seal {seal_no} (up to position {}) is broken: {reason}; expected {}, found {}",
                self.position,
                hex(&self.expected),
                hex(&self.found)
            ),
            kind => {
                let what = match kind {
                    BreakKind::MissingEvents { expected_sequence } => {
                        format!("events missing from sequence {expected_sequence}")
                    }
                    _ => "hash mismatch".to_string(),
                };
                write!(
                    f,
                    "event at position {} ({}/{} sequence {}) is broken: {what}; expected {}, found {}",
                    self.position,
                    self.aggregate_type,
                    self.aggregate_id,
                    self.sequence,
                    hex(&self.expected),
                    hex(&self.found)
                )
            }
        }
    }
}

/// The outcome of a chain check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub events_checked: u64,
    pub streams_checked: u64,
    pub seals_checked: u64,
    pub bytes_hashed: u64,
    /// Number of broken events and seals found.
    pub breaks: u64,
    /// The break at the lowest global position (seals count at their last position).
    pub first_break: Option<ChainBreak>,
}

impl VerifyReport {
    /// Whether nothing was found broken.
    pub fn is_intact(&self) -> bool {
        self.first_break.is_none()
    }

    fn record(&mut self, brk: ChainBreak) {
        self.breaks += 1;
        let earlier = self
            .first_break
            .as_ref()
            .is_none_or(|first| brk.position < first.position);
        if earlier {
            self.first_break = Some(brk);
        }
    }
}

const STREAM_ORDER: &str = "SELECT position, aggregate_type, aggregate_id, sequence, event_type, \
     event_version, CAST(payload AS TEXT), CAST(metadata AS TEXT), hash \
     FROM events ORDER BY aggregate_type, aggregate_id, sequence";

const PG_SEAL_RANGE: &str = "SELECT position, hash FROM events \
     WHERE (tx_id, position) >= ($1::bigint::text::xid8, $2) \
       AND (tx_id, position) <= ($3::bigint::text::xid8, $4) \
     ORDER BY tx_id, position";

const SQLITE_SEAL_RANGE: &str = "SELECT position, hash FROM events \
     WHERE position >= $2 AND position <= $4 AND $1 = $1 AND $3 = $3 ORDER BY position";

/// Recomputes every chain and seal; `progress` is called with the number of
/// events checked so far, every few thousand events.
pub async fn verify_journal(
    db: &Db,
    mut progress: impl FnMut(u64) + Send,
) -> Result<VerifyReport, JournalError> {
    let mut report = VerifyReport::default();
    crate::on_db!(db, pool => {
        let mut rows = sqlx::query(STREAM_ORDER).fetch(pool);
        let mut stream: Option<(String, String)> = None;
        let mut expected_sequence = 1i64;
        let mut prev: Hash = GENESIS;
        while let Some(row) = rows.try_next().await? {
            let position: i64 = row.try_get(0)?;
            let aggregate_type: String = row.try_get(1)?;
            let aggregate_id: String = row.try_get(2)?;
            let sequence: i64 = row.try_get(3)?;
            let same_stream = stream
                .as_ref()
                .is_some_and(|(t, i)| *t == aggregate_type && *i == aggregate_id);
            if !same_stream {
                stream = Some((aggregate_type.clone(), aggregate_id.clone()));
                report.streams_checked += 1;
                expected_sequence = 1;
                prev = GENESIS;
            }
            let stored: Vec<u8> = row.try_get(8)?;
            let found = hash_from_slice(&stored);
            let payload: String = row.try_get(6)?;
            let metadata: String = row.try_get(7)?;
            let recomputed = match (
                serde_json::from_str::<Value>(&payload),
                serde_json::from_str::<Value>(&metadata),
            ) {
                (Ok(payload), Ok(metadata)) => {
                    let event_type: String = row.try_get(4)?;
                    let event_version: String = row.try_get(5)?;
                    let content = EventContent {
                        aggregate_type: &aggregate_type,
                        aggregate_id: &aggregate_id,
                        sequence,
                        event_type: &event_type,
                        event_version: &event_version,
                        payload: &payload,
                        metadata: &metadata,
                    };
                    match content.canonical_bytes(&prev) {
                        Ok(bytes) => {
                            report.bytes_hashed += bytes.len() as u64;
                            Some(<sha2::Sha256 as sha2::Digest>::digest(&bytes).into())
                        }
                        Err(_) => None,
                    }
                }
                _ => None,
            };
            let kind = if sequence != expected_sequence {
                Some(BreakKind::MissingEvents { expected_sequence })
            } else if recomputed.is_none() || recomputed != found {
                Some(BreakKind::HashMismatch)
            } else {
                None
            };
            if let Some(kind) = kind {
                report.record(ChainBreak {
                    kind,
                    position,
                    aggregate_type,
                    aggregate_id,
                    sequence,
                    expected: recomputed,
                    found,
                });
            }
            // Chain on the stored hash so one edit is reported once, not for every
            // later event of its stream.
            prev = found.unwrap_or(GENESIS);
            expected_sequence = sequence + 1;
            report.events_checked += 1;
            if report.events_checked % 4096 == 0 {
                progress(report.events_checked);
            }
        }
    });
    verify_seals(db, &mut report).await?;
    progress(report.events_checked);
    Ok(report)
}

async fn verify_seals(db: &Db, report: &mut VerifyReport) -> Result<(), JournalError> {
    const SEALS: &str = "SELECT seal_no, first_tx, first_position, last_tx, last_position, \
         event_count, root, prev_hash, hash, sealed_at FROM seals ORDER BY seal_no";
    let range_sql = match db {
        Db::Postgres(_) => PG_SEAL_RANGE,
        Db::Sqlite(_) => SQLITE_SEAL_RANGE,
    };
    crate::on_db!(db, pool => {
        let mut seals = sqlx::query(SEALS).fetch(pool);
        let mut prev_hash = GENESIS;
        let mut expected_no = 1i64;
        let mut previous_last = JournalOrder::START;
        while let Some(row) = seals.try_next().await? {
            let seal = seal_from_row(&row)?;
            let mut root = SealRoot::default();
            let mut events = sqlx::query(range_sql)
                .bind(seal.first.tx)
                .bind(seal.first.position)
                .bind(seal.last.tx)
                .bind(seal.last.position)
                .fetch(pool);
            while let Some(event) = events.try_next().await? {
                let hash: Vec<u8> = event.try_get(1)?;
                root.push(&hash);
            }
            drop(events);
            let count = root.count();
            let recomputed_root = root.finish();
            let reason = if seal.seal_no != expected_no {
                Some(format!("expected seal number {expected_no}"))
            } else if seal.prev_hash != prev_hash {
                Some("it does not chain onto the seal before it".to_string())
            } else if seal.first <= previous_last {
                Some("its range overlaps the seal before it".to_string())
            } else if count != seal.event_count {
                Some(format!(
                    "it covers {} events but {count} are in its range (events removed or added)",
                    seal.event_count
                ))
            } else if recomputed_root != seal.root {
                Some("the events in its range were changed or reordered".to_string())
            } else if seal.content().hash() != seal.hash {
                Some("the seal record itself was edited".to_string())
            } else {
                None
            };
            if let Some(reason) = reason {
                report.record(ChainBreak {
                    kind: BreakKind::SealMismatch {
                        seal_no: seal.seal_no,
                        reason,
                    },
                    position: seal.last.position,
                    aggregate_type: "seal".into(),
                    aggregate_id: seal.seal_no.to_string(),
                    sequence: seal.seal_no,
                    expected: Some(recomputed_root),
                    found: Some(seal.root),
                });
            }
            prev_hash = seal.hash;
            expected_no = seal.seal_no + 1;
            previous_last = seal.last;
            report.seals_checked += 1;
        }
    });
    Ok(())
}
