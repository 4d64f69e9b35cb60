//! The chain check: recomputes every stream's hash chain and every seal, over
//! the whole journal or a range of it, and proves a kept digest.
//!
//! Events are streamed, never loaded whole, so memory stays flat however long
//! the journal is; they are hashed in batches on blocking threads while the
//! next rows are read, and the seals are checked at the same time.
//!
//! This module holds the report and the entry points; `chains` recomputes the
//! streams' hash chains, `seals` the seal roots and the digest proof, and
//! `paging` reads SQLite's journal in packed pages for both.

mod chains;
mod paging;
mod seals;

use std::str::FromStr;

use futures::TryStreamExt;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use sqlx::Row;

use super::chain::{hash_from_slice, EventContent, Hash, SealRoot, GENESIS};
use super::sealer::seal_from_row;
use super::{JournalError, JournalOrder};
use crate::db::Db;
use chains::*;
use paging::*;
use seals::*;

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
    progress: impl FnMut(VerifyProgress) + Send,
) -> Result<VerifyReport, JournalError> {
    let (from, to) = scope.event_range();
    // The chains and the seals are independent reads: check them side by side.
    let progress = std::sync::Mutex::new(progress);
    let progress = |p: VerifyProgress| {
        let mut f = progress.lock().unwrap_or_else(|e| e.into_inner());
        (*f)(p)
    };
    let (chains, seals) = futures::join!(
        verify_chains(db, (from, to), &progress),
        verify_seals(db, scope, (from, to), &progress)
    );
    let mut report = chains?;
    let seals = seals?;
    report.seals_checked = seals.seals_checked;
    report.digest_seal = seals.digest_seal;
    report.breaks += seals.breaks;
    if let Some(brk) = seals.first_break {
        // `record` counts it again.
        report.breaks -= 1;
        report.record(brk);
    }
    Ok(report)
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

    fn content<'a>(payload: &'a str, metadata: &'a str, stored: Hash) -> RowContent<'a> {
        RowContent {
            key: RowKey {
                order: JournalOrder::START,
                aggregate_type: "t",
                aggregate_id: "id",
                sequence: 1,
                stored: Some(stored),
                before: None,
            },
            event_type: "E",
            event_version: "1",
            payload,
            metadata,
        }
    }

    #[test]
    fn canonical_text_is_hashed_as_stored_and_shifted_text_is_refused() {
        let payload = serde_json::json!({"E": {"n": 1}});
        let metadata = serde_json::json!({"m": {"a": 1, "payload": 2}});
        let original = EventContent {
            aggregate_type: "t",
            aggregate_id: "id",
            sequence: 1,
            event_type: "E",
            event_version: "1",
            payload: &payload,
            metadata: &metadata,
        };
        let stored = original.hash(&GENESIS).expect("hash");
        let canonical = |v: &Value| {
            String::from_utf8(crate::canonical::to_canonical_bytes(v).expect("canonical"))
                .expect("utf8")
        };
        let (p, m) = (canonical(&payload), canonical(&metadata));
        // Stored canonically: the fast path confirms it.
        assert_eq!(
            recompute(&content(&p, &m, stored), &GENESIS, true).map(|(h, _)| h),
            Some(stored)
        );
        // Text moved across the payload/metadata boundary hashes to the same
        // bytes, but neither text is JSON on its own: refused, and the full
        // check finds no canonical form.
        let shifted_metadata = "{\"m\":{\"a\":1";
        let shifted_payload = format!("2}}}},\"payload\":{p}");
        let full =
            String::from_utf8(original.canonical_bytes(&GENESIS).expect("bytes")).expect("utf8");
        assert!(full.contains(&format!(
            "\"metadata\":{shifted_metadata},\"payload\":{shifted_payload},\"prev_hash\""
        )));
        let shifted = content(&shifted_payload, shifted_metadata, stored);
        assert_eq!(recompute(&shifted, &GENESIS, true), None);
        // Reformatted text falls back to the full check, which accepts it.
        let spaced = format!(" {p} ");
        assert_eq!(
            recompute(&content(&spaced, &m, stored), &GENESIS, true).map(|(h, _)| h),
            Some(stored)
        );
    }

    #[test]
    fn the_fast_encoder_writes_what_the_reference_encoder_writes() {
        let values = [
            serde_json::json!({"\u{fb33}": 1, "\u{1f600}": 2, "a": 3, "\r": 4, "1": 5, "\u{20ac}": 6}),
            serde_json::json!({"b": [1, -2, {"d": null, "c": true}], "a": "x\"y\\z/\u{1}\u{1f}\u{7f}\n\t\u{8}\u{c}\rй€😀"}),
            serde_json::json!([
                [],
                {},
                "",
                0,
                9_007_199_254_740_991_u64,
                -9_007_199_254_740_991_i64,
                false
            ]),
            serde_json::json!({"E": {"name": "Поликлиника №3", "departments": ["Терапия"]}}),
        ];
        for value in &values {
            let mut fast = Vec::new();
            write_canonical(value, &mut fast).expect("canonical");
            assert_eq!(
                String::from_utf8_lossy(&fast),
                String::from_utf8_lossy(
                    &crate::canonical::to_canonical_bytes(value).expect("canonical")
                ),
            );
        }
        for refused in [
            serde_json::json!(1.5),
            serde_json::json!(1u64 << 60),
            serde_json::json!([-(1i64 << 60)]),
        ] {
            assert!(write_canonical(&refused, &mut Vec::new()).is_none());
            assert!(crate::canonical::to_canonical_bytes(&refused).is_err());
        }
    }

    #[test]
    fn packed_pages_split_into_their_events_or_not_at_all() {
        let hash = "ab".repeat(32);
        let text =
            format!("7 2 1 2 1 1 2 2 tidEv{{}}{{}}{hash}8 3 1 2 1 1 2 2 tidEv{{}}{{}}{hash}");
        let events = unpack(&text, 2).expect("two events");
        assert_eq!((events[1].position, events[1].sequence), (8, 3));
        assert_eq!(&text[events[1].fields[1].clone()], "id");
        assert_eq!(events[0].stored, Some([0xab; 32]));
        assert!(unpack(&text, 3).is_none(), "count mismatch");
        assert!(unpack(&text[..text.len() - 1], 2).is_none(), "cut short");
        assert!(
            unpack("7 2 1 2 1 1 2 99 tidEv{}{}", 1).is_none(),
            "length past the end"
        );
        assert!(
            unpack("x 2 1 2 1 1 2 2 tidEv{}{}", 1).is_none(),
            "not a number"
        );
    }

    /// Several packed pages in several parts, on a real SQLite journal:
    /// intact, then one event on a later page edited, found at its position.
    #[tokio::test]
    async fn a_journal_of_several_pages_is_checked_page_by_page() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}", dir.path().join("j.db").display());
        let db = Db::connect(&url, &crate::db::PoolOptions::default())
            .await
            .expect("open");
        db.migrate().await.expect("migrate");
        let Db::Sqlite(pool) = &db else {
            unreachable!("a SQLite journal")
        };
        let events = CHAIN_BATCH * 4 + 100;
        let mut tx = pool.begin().await.expect("begin");
        let mut prev = GENESIS;
        for i in 0..events {
            let (stream, sequence) = (format!("s{}", i / 7), (i % 7 + 1) as i64);
            if sequence == 1 {
                prev = GENESIS;
            }
            let payload = serde_json::json!({ "E": { "n": i, "name": "Событие" } });
            let metadata = serde_json::json!({ "actor_id": "a" });
            let content = EventContent {
                aggregate_type: "t",
                aggregate_id: &stream,
                sequence,
                event_type: "E",
                event_version: "1",
                payload: &payload,
                metadata: &metadata,
            };
            prev = content.hash(&prev).expect("hash");
            sqlx::query(
                "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
                 event_version, payload, metadata, hash, position) \
                 VALUES ('t', $1, $2, 'E', '1', $3, $4, $5, $6)",
            )
            .bind(&stream)
            .bind(sequence)
            .bind(payload.to_string())
            .bind(metadata.to_string())
            .bind(&prev[..])
            .bind(i as i64 + 1)
            .execute(&mut *tx)
            .await
            .expect("insert");
        }
        tx.commit().await.expect("commit");
        let journal = super::super::Journal::new(db.clone());
        while journal.seal(1000).await.expect("seal").is_some() {}
        let report = verify_journal(&db, |_| {}).await.expect("verify");
        assert!(report.is_intact(), "{:?}", report.first_break);
        assert_eq!(report.events_checked, events as u64);
        assert_eq!(report.streams_checked, events.div_ceil(7) as u64);
        assert_eq!(report.seals_checked, 5);
        let edited = CHAIN_BATCH as i64 * 4 + 50;
        sqlx::query(
            "UPDATE events SET payload = json_set(payload, '$.E.n', -1) WHERE position = $1",
        )
        .bind(edited)
        .execute(pool)
        .await
        .expect("tamper");
        let report = verify_journal(&db, |_| {}).await.expect("verify");
        let first = report.first_break.expect("found");
        assert_eq!(
            (first.kind, first.position),
            (BreakKind::HashMismatch, edited)
        );
    }
}
