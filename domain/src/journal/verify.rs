//! The chain check: recomputes every stream's hash chain and every seal, over
//! the whole journal or a range of it, and proves a kept digest.
//!
//! Events are streamed, never loaded whole, so memory stays flat however long
//! the journal is.

use std::str::FromStr;

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
    /// The event comes before its stream's previous event in the global order.
    Reordered { previous_position: i64 },
    /// A kept digest is no longer the hash of a seal at its position.
    DigestMismatch { reason: String },
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
            BreakKind::DigestMismatch { reason } => write!(
                f,
                "digest up to position {} is not proven: {reason}; expected {}, found {}",
                self.position,
                hex(&self.expected),
                hex(&self.found)
            ),
            kind => {
                let what = match kind {
                    BreakKind::MissingEvents { expected_sequence } => {
                        format!("events missing from sequence {expected_sequence}")
                    }
                    BreakKind::Reordered { previous_position } => format!(
                        "it precedes sequence {} (position {previous_position}) in the \
                         global order: events were reordered",
                        self.sequence - 1
                    ),
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
    /// The number of the seal a kept digest was found at, when one was given.
    pub digest_seal: Option<i64>,
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

/// A digest an auditor kept: `HEX(seal hash)@POSITION`, POSITION being the last
/// global position that seal covers (see `Seal::digest`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digest {
    pub hash: Hash,
    pub position: i64,
}

/// Text that is not a digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "malformed digest '{text}': {reason} (expected HASH@POSITION: 64 hex digits, '@', a position)"
)]
pub struct BadDigest {
    pub text: String,
    pub reason: &'static str,
}

impl FromStr for Digest {
    type Err = BadDigest;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason| BadDigest {
            text: s.chars().take(100).collect(),
            reason,
        };
        let (hash, position) = s.trim().split_once('@').ok_or_else(|| bad("no '@'"))?;
        let bytes = hex::decode(hash).map_err(|_| bad("the hash is not hexadecimal"))?;
        let hash = hash_from_slice(&bytes).ok_or_else(|| bad("the hash is not 32 bytes"))?;
        let position: i64 = position
            .parse()
            .map_err(|_| bad("the position is not a number"))?;
        if position < 1 {
            return Err(bad("the position must be at least 1"));
        }
        Ok(Digest { hash, position })
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", hex::encode(self.hash), self.position)
    }
}

/// What a check covers: by default every event and every seal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerifyScope {
    /// First global position whose event is checked.
    pub from: Option<i64>,
    /// Last global position whose event is checked.
    pub to: Option<i64>,
    /// A kept digest to prove; it extends the range back to the first event.
    pub digest: Option<Digest>,
}

impl VerifyScope {
    /// The positions whose events are recomputed: a digest needs everything up to it.
    fn event_range(&self) -> (i64, i64) {
        match self.digest {
            Some(d) => (1, self.to.map_or(i64::MAX, |to| to.max(d.position))),
            None => (self.from.unwrap_or(1), self.to.unwrap_or(i64::MAX)),
        }
    }
}

/// The phase a check is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyPhase {
    /// Recomputing the events' hash chains.
    Chains,
    /// Recomputing the seals' roots over the events' hashes.
    Seals,
}

/// How far a check has got: `done` of `total` events in the current phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyProgress {
    pub phase: VerifyPhase,
    pub done: u64,
    pub total: u64,
}

const PROGRESS_EVERY: u64 = 4096;

/// Streams in stream order; the last three columns are the stored predecessor
/// (hash, tx, position) when a range starts inside a stream.
const PG_STREAM_ORDER: &str =
    "SELECT position, aggregate_type, aggregate_id, sequence, event_type, \
     event_version, CAST(payload AS TEXT), CAST(metadata AS TEXT), hash, tx_id::text::bigint, \
     NULL::bytea, NULL::bigint, NULL::bigint \
     FROM events ORDER BY aggregate_type, aggregate_id, sequence";

const SQLITE_STREAM_ORDER: &str = "SELECT position, aggregate_type, aggregate_id, sequence, \
     event_type, event_version, CAST(payload AS TEXT), CAST(metadata AS TEXT), hash, position, \
     NULL, NULL, NULL \
     FROM events ORDER BY aggregate_type, aggregate_id, sequence";

const PG_STREAM_RANGE: &str = "SELECT e.position, e.aggregate_type, e.aggregate_id, e.sequence, \
     e.event_type, e.event_version, CAST(e.payload AS TEXT), CAST(e.metadata AS TEXT), e.hash, \
     e.tx_id::text::bigint, p.hash, p.tx_id::text::bigint, p.position \
     FROM events e LEFT JOIN events p ON p.aggregate_type = e.aggregate_type \
       AND p.aggregate_id = e.aggregate_id AND p.sequence = e.sequence - 1 \
     WHERE e.position >= $1 AND e.position <= $2 \
     ORDER BY e.aggregate_type, e.aggregate_id, e.sequence";

const SQLITE_STREAM_RANGE: &str = "SELECT e.position, e.aggregate_type, e.aggregate_id, \
     e.sequence, e.event_type, e.event_version, CAST(e.payload AS TEXT), \
     CAST(e.metadata AS TEXT), e.hash, e.position, p.hash, p.position, p.position \
     FROM events e LEFT JOIN events p ON p.aggregate_type = e.aggregate_type \
       AND p.aggregate_id = e.aggregate_id AND p.sequence = e.sequence - 1 \
     WHERE e.position >= $1 AND e.position <= $2 \
     ORDER BY e.aggregate_type, e.aggregate_id, e.sequence";

const COUNT_RANGE: &str = "SELECT COUNT(*) FROM events WHERE position >= $1 AND position <= $2";

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
    verify_scope(db, &VerifyScope::default(), |p| {
        if p.phase == VerifyPhase::Chains {
            progress(p.done)
        }
    })
    .await
}

/// Recomputes the chains of the events in `scope`, the seals that cover them,
/// and proves `scope.digest`: that the seal with the digest's hash still ends
/// at its position, that the seal chain up to it holds, and that every event
/// up to it recomputes. A journal cut back before the digest fails the proof.
pub async fn verify_scope(
    db: &Db,
    scope: &VerifyScope,
    mut progress: impl FnMut(VerifyProgress) + Send,
) -> Result<VerifyReport, JournalError> {
    let mut report = VerifyReport::default();
    let (from, to) = scope.event_range();
    let whole = from <= 1 && to == i64::MAX;
    let total: i64 = crate::on_db!(db, pool => {
        sqlx::query_scalar(COUNT_RANGE).bind(from).bind(to).fetch_one(pool).await?
    });
    let total = total.max(0) as u64;
    progress(VerifyProgress {
        phase: VerifyPhase::Chains,
        done: 0,
        total,
    });
    let sql = match (db, whole) {
        (Db::Postgres(_), true) => PG_STREAM_ORDER,
        (Db::Postgres(_), false) => PG_STREAM_RANGE,
        (Db::Sqlite(_), true) => SQLITE_STREAM_ORDER,
        (Db::Sqlite(_), false) => SQLITE_STREAM_RANGE,
    };
    let mut chain = ChainState::new(whole);
    crate::on_db!(db, pool => {
        let query = sqlx::query(sql);
        let query = if whole { query } else { query.bind(from).bind(to) };
        let mut rows = query.fetch(pool);
        while let Some(row) = rows.try_next().await? {
            chain.check(&row, &mut report)?;
            if report.events_checked.is_multiple_of(PROGRESS_EVERY) {
                progress(VerifyProgress {
                    phase: VerifyPhase::Chains,
                    done: report.events_checked,
                    total,
                });
            }
        }
    });
    progress(VerifyProgress {
        phase: VerifyPhase::Chains,
        done: report.events_checked,
        total: total.max(report.events_checked),
    });
    verify_seals(db, scope, (from, to), &mut report, &mut progress).await?;
    Ok(report)
}

/// The walk through the journal in stream order.
struct ChainState {
    /// Whether the whole journal is walked (else a range that may start mid-stream).
    whole: bool,
    stream: Option<(String, String)>,
    expected_sequence: i64,
    prev: Hash,
    prev_order: Option<JournalOrder>,
}

impl ChainState {
    fn new(whole: bool) -> Self {
        ChainState {
            whole,
            stream: None,
            expected_sequence: 1,
            prev: GENESIS,
            prev_order: None,
        }
    }

    /// Checks the next row of a `*_STREAM_*` query.
    fn check<'r, R: Row>(
        &mut self,
        row: &'r R,
        report: &mut VerifyReport,
    ) -> Result<(), JournalError>
    where
        usize: sqlx::ColumnIndex<R>,
        &'r str: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        &'r [u8]: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        Option<&'r [u8]>: sqlx::Decode<'r, R::Database>,
        Option<i64>: sqlx::Decode<'r, R::Database>,
    {
        let position: i64 = row.try_get(0)?;
        let aggregate_type: &str = row.try_get(1)?;
        let aggregate_id: &str = row.try_get(2)?;
        let sequence: i64 = row.try_get(3)?;
        let order = JournalOrder {
            tx: row.try_get(9)?,
            position,
        };
        let same_stream = self
            .stream
            .as_ref()
            .is_some_and(|(t, i)| t == aggregate_type && i == aggregate_id);
        if !same_stream {
            self.stream = Some((aggregate_type.to_string(), aggregate_id.to_string()));
            report.streams_checked += 1;
            self.expected_sequence = 1;
            self.prev = GENESIS;
            self.prev_order = None;
            // A range may start inside a stream: chain onto the stored predecessor.
            let before: Option<&[u8]> = row.try_get(10)?;
            if let (Some(before), true) = (before, sequence > 1) {
                self.expected_sequence = sequence;
                self.prev = hash_from_slice(before).unwrap_or(GENESIS);
                let tx: Option<i64> = row.try_get(11)?;
                let pos: Option<i64> = row.try_get(12)?;
                self.prev_order = tx
                    .zip(pos)
                    .map(|(tx, position)| JournalOrder { tx, position });
            } else if !self.whole && sequence > 1 {
                self.expected_sequence = sequence - 1;
            }
        }
        let stored: &[u8] = row.try_get(8)?;
        let found = hash_from_slice(stored);
        let payload: &str = row.try_get(6)?;
        let metadata: &str = row.try_get(7)?;
        let recomputed = match (
            serde_json::from_str::<Value>(payload),
            serde_json::from_str::<Value>(metadata),
        ) {
            (Ok(payload), Ok(metadata)) => {
                let content = EventContent {
                    aggregate_type,
                    aggregate_id,
                    sequence,
                    event_type: row.try_get(4)?,
                    event_version: row.try_get(5)?,
                    payload: &payload,
                    metadata: &metadata,
                };
                match content.canonical_bytes(&self.prev) {
                    Ok(bytes) => {
                        report.bytes_hashed += bytes.len() as u64;
                        Some(<sha2::Sha256 as sha2::Digest>::digest(&bytes).into())
                    }
                    Err(_) => None,
                }
            }
            _ => None,
        };
        let kind = if sequence != self.expected_sequence {
            Some(BreakKind::MissingEvents {
                expected_sequence: self.expected_sequence,
            })
        } else if recomputed.is_none() || recomputed != found {
            Some(BreakKind::HashMismatch)
        } else {
            match self.prev_order {
                // A stream's events are written in sequence order, so they also
                // follow each other in the global order.
                Some(before) if before >= order => Some(BreakKind::Reordered {
                    previous_position: before.position,
                }),
                _ => None,
            }
        };
        if let Some(kind) = kind {
            report.record(ChainBreak {
                kind,
                position,
                aggregate_type: aggregate_type.to_string(),
                aggregate_id: aggregate_id.to_string(),
                sequence,
                expected: recomputed,
                found,
            });
        }
        // Chain on the stored hash so one edit is reported once, not for every
        // later event of its stream.
        self.prev = found.unwrap_or(GENESIS);
        self.prev_order = Some(order);
        self.expected_sequence = sequence + 1;
        report.events_checked += 1;
        Ok(())
    }
}

/// Which seals get their roots recomputed: those covering the checked events
/// (by position, and by global order, which differ on PostgreSQL) and, with a
/// digest, every seal up to the digest's seal. Binds: $1 whole journal (0/1),
/// $2 digest seal number, $3/$4 positions, $5..$8 global order bounds.
const SEAL_SELECTED: &str = "($1 = 1 OR seal_no <= $2 \
     OR (last_position >= $3 AND first_position <= $4) \
     OR ((last_tx > $5 OR (last_tx = $5 AND last_position >= $6)) \
         AND (first_tx < $7 OR (first_tx = $7 AND first_position <= $8))))";

const PG_ORDER_BOUND: &str = "SELECT tx_id::text::bigint, position FROM events \
     WHERE position >= $1 AND position <= $2 ORDER BY tx_id {dir}, position {dir} LIMIT 1";

const SQLITE_ORDER_BOUND: &str = "SELECT position, position FROM events \
     WHERE position >= $1 AND position <= $2 ORDER BY position {dir} LIMIT 1";

const DIGEST_SEAL: &str =
    "SELECT seal_no, last_position FROM seals WHERE hash = $1 ORDER BY seal_no LIMIT 1";

async fn order_bound(
    db: &Db,
    (from, to): (i64, i64),
    dir: &str,
) -> Result<Option<JournalOrder>, JournalError> {
    let sql = match db {
        Db::Postgres(_) => PG_ORDER_BOUND,
        Db::Sqlite(_) => SQLITE_ORDER_BOUND,
    }
    .replace("{dir}", dir);
    let row: Option<(i64, i64)> = crate::on_db!(db, pool => {
        sqlx::query_as(&sql).bind(from).bind(to).fetch_optional(pool).await?
    });
    Ok(row.map(|(tx, position)| JournalOrder { tx, position }))
}

async fn verify_seals(
    db: &Db,
    scope: &VerifyScope,
    (from, to): (i64, i64),
    report: &mut VerifyReport,
    progress: &mut (impl FnMut(VerifyProgress) + Send),
) -> Result<(), JournalError> {
    let whole = from <= 1 && to == i64::MAX;
    let low = order_bound(db, (from, to), "ASC").await?;
    let high = order_bound(db, (from, to), "DESC").await?;
    // No events in the range: no bound in the global order selects anything.
    let low = low.unwrap_or(JournalOrder {
        tx: i64::MAX,
        position: i64::MAX,
    });
    let high = high.unwrap_or(JournalOrder {
        tx: -1,
        position: -1,
    });
    let digest_seal: Option<(i64, i64)> = match scope.digest {
        Some(d) => crate::on_db!(db, pool => {
            sqlx::query_as(DIGEST_SEAL)
                .bind(d.hash.to_vec())
                .fetch_optional(pool)
                .await?
        }),
        None => None,
    };
    let digest_no = digest_seal.map_or(0, |(no, _)| no);
    let seals_sql = format!(
        "SELECT seal_no, first_tx, first_position, last_tx, last_position, event_count, root, \
         prev_hash, hash, sealed_at, CAST(CASE WHEN {SEAL_SELECTED} THEN 1 ELSE 0 END AS BIGINT) \
         FROM seals ORDER BY seal_no"
    );
    let total_sql = format!(
        "SELECT CAST(COALESCE(SUM(event_count), 0) AS BIGINT) FROM seals WHERE {SEAL_SELECTED}"
    );
    let range_sql = match db {
        Db::Postgres(_) => PG_SEAL_RANGE,
        Db::Sqlite(_) => SQLITE_SEAL_RANGE,
    };
    let mut done = 0u64;
    // The newest seal ending at or before the digest's position, and the journal's end.
    let mut standing: Option<(i64, Hash)> = None;
    let mut last_sealed = 0i64;
    crate::on_db!(db, pool => {
        macro_rules! selected {
            ($q:expr) => {
                $q.bind(i64::from(whole))
                    .bind(digest_no)
                    .bind(from)
                    .bind(to)
                    .bind(low.tx)
                    .bind(low.position)
                    .bind(high.tx)
                    .bind(high.position)
            };
        }
        let total: i64 = selected!(sqlx::query_scalar(&total_sql)).fetch_one(pool).await?;
        let total = total.max(0) as u64;
        progress(VerifyProgress { phase: VerifyPhase::Seals, done: 0, total });
        let mut seals = selected!(sqlx::query(&seals_sql)).fetch(pool);
        let mut prev_hash = GENESIS;
        let mut expected_no = 1i64;
        let mut previous_last = JournalOrder::START;
        while let Some(row) = seals.try_next().await? {
            let seal = seal_from_row(&row)?;
            let recompute: i64 = row.try_get(10)?;
            last_sealed = last_sealed.max(seal.last.position);
            if let Some(d) = scope.digest {
                if seal.last.position <= d.position {
                    standing = Some((seal.seal_no, seal.hash));
                }
            }
            let recomputed = if recompute == 1 {
                let mut root = SealRoot::default();
                let mut events = sqlx::query(range_sql)
                    .bind(seal.first.tx)
                    .bind(seal.first.position)
                    .bind(seal.last.tx)
                    .bind(seal.last.position)
                    .fetch(pool);
                while let Some(event) = events.try_next().await? {
                    let hash: &[u8] = event.try_get(1)?;
                    root.push(hash);
                    done += 1;
                    if done.is_multiple_of(PROGRESS_EVERY) {
                        progress(VerifyProgress { phase: VerifyPhase::Seals, done, total });
                    }
                }
                drop(events);
                let count = root.count();
                Some((count, root.finish()))
            } else {
                None
            };
            // What is wrong, with the hashes that show it: the seal's own hash
            // for chain and record faults, its root for faults of its events.
            let stored = (seal.content().hash(), seal.hash);
            let fault = if seal.seal_no != expected_no {
                Some((format!("expected seal number {expected_no}"), stored))
            } else if seal.prev_hash != prev_hash {
                let reason = "it does not chain onto the seal before it".to_string();
                Some((reason, (prev_hash, seal.prev_hash)))
            } else if seal.first <= previous_last {
                Some(("its range overlaps the seal before it".to_string(), stored))
            } else if stored.0 != stored.1 {
                Some(("the seal record itself was edited".to_string(), stored))
            } else {
                match recomputed {
                    Some((count, root)) if count != seal.event_count => Some((
                        format!(
                            "it covers {} events but {count} are in its range \
                             (events removed or added)",
                            seal.event_count
                        ),
                        (root, seal.root),
                    )),
                    Some((_, root)) if root != seal.root => Some((
                        "the events in its range were changed or reordered".to_string(),
                        (root, seal.root),
                    )),
                    _ => None,
                }
            };
            if let Some((reason, (expected, found))) = fault {
                report.record(ChainBreak {
                    kind: BreakKind::SealMismatch {
                        seal_no: seal.seal_no,
                        reason,
                    },
                    position: seal.last.position,
                    aggregate_type: "seal".into(),
                    aggregate_id: seal.seal_no.to_string(),
                    sequence: seal.seal_no,
                    expected: Some(expected),
                    found: Some(found),
                });
            }
            prev_hash = seal.hash;
            expected_no = seal.seal_no + 1;
            previous_last = seal.last;
            report.seals_checked += 1;
        }
        drop(seals);
        progress(VerifyProgress { phase: VerifyPhase::Seals, done, total: total.max(done) });
    });
    if let Some(digest) = scope.digest {
        report.digest_seal = digest_seal.map(|(no, _)| no);
        let reason = match digest_seal {
            Some((_, last)) if last == digest.position => None,
            Some((no, last)) => Some(format!(
                "the seal with the digest's hash (seal {no}) now ends at position {last}: \
                 the seal was edited"
            )),
            None => {
                let end: Option<i64> = crate::on_db!(db, pool => {
                    sqlx::query_scalar("SELECT MAX(position) FROM events").fetch_one(pool).await?
                });
                let end = end.unwrap_or(0);
                if end < digest.position || last_sealed < digest.position {
                    Some(format!(
                        "the journal was truncated: its events now end at position {end} \
                         and its seals at {last_sealed}"
                    ))
                } else {
                    Some("no seal has the digest's hash: the seals up to it were rewritten".into())
                }
            }
        };
        if let Some(reason) = reason {
            report.record(ChainBreak {
                kind: BreakKind::DigestMismatch { reason },
                position: digest.position,
                aggregate_type: "digest".into(),
                aggregate_id: digest.to_string(),
                sequence: standing.map_or(0, |(no, _)| no),
                expected: Some(digest.hash),
                found: standing.map(|(_, hash)| hash),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_round_trip_and_malformed_ones_are_named() {
        let text = format!("{}@42", "ab".repeat(32));
        let digest: Digest = text.parse().expect("digest");
        assert_eq!(digest.position, 42);
        assert_eq!(digest.to_string(), text);
        for bad in [
            "",
            "abc@1",
            &format!("{}@x", "ab".repeat(32)),
            &"ab".repeat(32),
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad} parsed");
        }
        assert!(format!("{}@0", "ab".repeat(32)).parse::<Digest>().is_err());
    }
}
