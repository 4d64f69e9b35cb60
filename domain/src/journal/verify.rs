//! The chain check: recomputes every stream's hash chain and every seal, over
//! the whole journal or a range of it, and proves a kept digest.
//!
//! Events are streamed, never loaded whole, so memory stays flat however long
//! the journal is; they are hashed in batches on blocking threads while the
//! next rows are read, and the seals are checked at the same time.

use std::str::FromStr;

use futures::TryStreamExt;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
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

/// Events in stream order, of the streams from ($1, $2) and before ($4, $5)
/// when $3 is 1; the last three columns are the stored predecessor (hash, tx,
/// position) when a range starts inside a stream. (A whole SQLite journal is
/// read in packed pages, see [`SQLITE_PACKED_PAGE`].)
const PG_STREAM_ORDER: &str =
    "SELECT position, aggregate_type, aggregate_id, sequence, event_type, \
     event_version, CAST(payload AS TEXT), CAST(metadata AS TEXT), hash, tx_id::text::bigint, \
     NULL::bytea, NULL::bigint, NULL::bigint FROM events \
     WHERE (aggregate_type, aggregate_id) >= ($1, $2) \
       AND ($3 = 0 OR (aggregate_type, aggregate_id) < ($4, $5)) \
     ORDER BY aggregate_type, aggregate_id, sequence";

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

/// Events handed to one hashing task.
const CHAIN_BATCH: usize = 1024;

async fn verify_chains(
    db: &Db,
    (from, to): (i64, i64),
    progress: &(impl Fn(VerifyProgress) + Sync),
) -> Result<VerifyReport, JournalError> {
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
    // SQLite stores payload and metadata as their canonical text (see `recompute`).
    let canonical_text = matches!(db, Db::Sqlite(_));
    let done = std::sync::atomic::AtomicU64::new(0);
    let progress = |events: u64| {
        let done = done.fetch_add(events, std::sync::atomic::Ordering::Relaxed) + events;
        progress(VerifyProgress {
            phase: VerifyPhase::Chains,
            done,
            total,
        })
    };
    // A whole SQLite journal is split at stream boundaries into parts read
    // side by side, so that SQLite, too, works on more than one core. (On
    // PostgreSQL the bounds turn the index scan into a sort, and the server
    // is busy enough converting the JSON.)
    let parts = match db {
        Db::Sqlite(_) if whole => split_streams(db, total).await?,
        _ => vec![Part::default()],
    };
    let parts = parts.into_iter().map(|part| {
        let progress = &progress;
        async move {
            let mut walk = ChainWalk::new(whole);
            let mut hashing = Hashing::new(canonical_text, progress);
            match db {
                Db::Sqlite(pool) if whole => {
                    read_sqlite_packed(pool, &part, &mut walk, &mut hashing).await?
                }
                _ => crate::on_db!(db, pool => {
                    let mut batch = ChainBatch::default();
                    let query = match db {
                        Db::Postgres(_) if whole => sqlx::query(PG_STREAM_ORDER)
                            .bind(part.from.0.as_str())
                            .bind(part.from.1.as_str())
                            .bind(i64::from(part.before.is_some()))
                            .bind(part.before.as_ref().map_or("", |b| b.0.as_str()))
                            .bind(part.before.as_ref().map_or("", |b| b.1.as_str())),
                        Db::Postgres(_) => sqlx::query(PG_STREAM_RANGE).bind(from).bind(to),
                        Db::Sqlite(_) => sqlx::query(SQLITE_STREAM_RANGE).bind(from).bind(to),
                    };
                    let mut rows = query.fetch(pool);
                    while let Some(row) = rows.try_next().await? {
                        let key = RowKey::read(&row)?;
                        let step = walk.step(&key);
                        let texts = [row.try_get(4)?, row.try_get(5)?, row.try_get(6)?, row.try_get(7)?];
                        batch.push(&key, step, texts);
                        if batch.rows.len() == CHAIN_BATCH {
                            hashing.submit(std::mem::take(&mut batch)).await;
                        }
                    }
                    hashing.submit(batch).await;
                }),
            }
            let mut report = hashing.finish().await;
            report.streams_checked = walk.streams;
            Ok::<_, JournalError>(report)
        }
    });
    let mut report = VerifyReport::default();
    for part in futures::future::try_join_all(parts).await? {
        report.events_checked += part.events_checked;
        report.streams_checked += part.streams_checked;
        report.bytes_hashed += part.bytes_hashed;
        report.breaks += part.breaks;
        if let Some(brk) = part.first_break {
            // `record` counts it again.
            report.breaks -= 1;
            report.record(brk);
        }
    }
    progress(0);
    Ok(report)
}

/// Streams `from` (type, id) on, and before `before` when given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Part {
    from: (String, String),
    before: Option<(String, String)>,
}

/// The journal's streams cut into as many parts as there are cores, at the
/// streams that start near each share of the events.
async fn split_streams(db: &Db, total: u64) -> Result<Vec<Part>, JournalError> {
    const AT: &str = "SELECT aggregate_type, aggregate_id FROM events \
         ORDER BY aggregate_type, aggregate_id, sequence LIMIT 1 OFFSET $1";
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let parts = if total < 4 * CHAIN_BATCH as u64 {
        1
    } else {
        cores.clamp(1, 4)
    };
    let mut cuts = Vec::new();
    for k in 1..parts {
        let offset = (total * k / parts) as i64;
        let cut: Option<(String, String)> = crate::on_db!(db, pool => {
            sqlx::query_as(AT).bind(offset).fetch_optional(pool).await?
        });
        if let Some(cut) = cut.filter(|c| cuts.last() != Some(c)) {
            cuts.push(cut);
        }
    }
    let mut parts = Vec::with_capacity(cuts.len() + 1);
    let mut from = (String::new(), String::new());
    for cut in cuts {
        parts.push(Part {
            from: std::mem::replace(&mut from, cut.clone()),
            before: Some(cut),
        });
    }
    parts.push(Part { from, before: None });
    Ok(parts)
}

/// Batches being hashed on blocking threads, and what the finished ones found.
struct Hashing<'p, P> {
    running: std::collections::VecDeque<tokio::task::JoinHandle<BatchOutcome>>,
    parallel: usize,
    canonical_text: bool,
    report: VerifyReport,
    /// Hears how many more events were checked.
    progress: &'p P,
}

impl<'p, P: Fn(u64) + Sync> Hashing<'p, P> {
    fn new(canonical_text: bool, progress: &'p P) -> Self {
        Hashing {
            running: std::collections::VecDeque::new(),
            parallel: std::thread::available_parallelism().map_or(2, |n| n.get()),
            canonical_text,
            report: VerifyReport::default(),
            progress,
        }
    }

    /// Starts hashing `batch`, first waiting for the oldest batch when enough run.
    async fn submit(&mut self, batch: ChainBatch) {
        if batch.rows.is_empty() {
            return;
        }
        let canonical_text = self.canonical_text;
        self.running.push_back(tokio::task::spawn_blocking(move || {
            check_batch(batch, canonical_text)
        }));
        while self.running.len() > self.parallel {
            self.collect_one().await;
        }
    }

    async fn collect_one(&mut self) {
        if let Some(done) = self.running.pop_front() {
            let before = self.report.events_checked;
            merge(&mut self.report, done.await);
            (self.progress)(self.report.events_checked - before);
        }
    }

    async fn finish(mut self) -> VerifyReport {
        while !self.running.is_empty() {
            self.collect_one().await;
        }
        self.report
    }
}

/// One page of the SQLite journal in stream order, packed by SQLite into a
/// single text: per event `POSITION SEQUENCE` and the byte lengths of its six
/// text fields, then those fields and the hex of its stored hash. One row a
/// page instead of one a event: rows cross from SQLite's worker thread one by
/// one, which costs more than the check itself. Keyset-paged after ($1, $2, $3),
/// before the stream ($6, $7) when $5 is 1.
/// The events come in the subquery's order (an ORDER BY inside group_concat
/// would sort them again); the reader checks that order and reads a page
/// that is not in it row by row.
const SQLITE_PACKED_PAGE: &str = "SELECT group_concat(printf('%d %d %d %d %d %d %d %d ', \
       position, sequence, length(CAST(aggregate_type AS BLOB)), \
       length(CAST(aggregate_id AS BLOB)), length(CAST(event_type AS BLOB)), \
       length(CAST(event_version AS BLOB)), length(CAST(payload AS BLOB)), \
       length(CAST(metadata AS BLOB))) \
     || aggregate_type || aggregate_id || event_type || event_version || payload || metadata \
     || hex(hash), ''), count(*) \
     FROM (SELECT * FROM events WHERE (aggregate_type, aggregate_id, sequence) > ($1, $2, $3) \
       AND ($5 = 0 OR (aggregate_type, aggregate_id) < ($6, $7)) \
       ORDER BY aggregate_type, aggregate_id, sequence LIMIT $4)";

/// The same page row by row, for a page whose packed text does not unpack.
const SQLITE_PAGE: &str = "SELECT position, aggregate_type, aggregate_id, sequence, event_type, \
     event_version, CAST(payload AS TEXT), CAST(metadata AS TEXT), hash, position, \
     NULL, NULL, NULL FROM events WHERE (aggregate_type, aggregate_id, sequence) > ($1, $2, $3) \
       AND ($5 = 0 OR (aggregate_type, aggregate_id) < ($6, $7)) \
     ORDER BY aggregate_type, aggregate_id, sequence LIMIT $4";

/// An event of a packed page: numbers, and its fields as ranges of the text.
struct Packed {
    position: i64,
    sequence: i64,
    stored: Option<Hash>,
    fields: [std::ops::Range<usize>; 6],
}

/// Splits a packed page; `None` if it is not `count` well-formed events.
fn unpack(text: &str, count: usize) -> Option<Vec<Packed>> {
    let bytes = text.as_bytes();
    let mut at = 0;
    let number = |at: &mut usize| -> Option<i64> {
        let end = *at + bytes.get(*at..)?.iter().position(|b| *b == b' ')?;
        let value = text.get(*at..end)?.parse().ok()?;
        *at = end + 1;
        Some(value)
    };
    let mut events = Vec::with_capacity(count);
    while at < bytes.len() {
        let position = number(&mut at)?;
        let sequence = number(&mut at)?;
        let mut fields: [std::ops::Range<usize>; 6] = Default::default();
        let mut lengths = [0usize; 6];
        for length in &mut lengths {
            *length = usize::try_from(number(&mut at)?).ok()?;
        }
        for (field, length) in fields.iter_mut().zip(lengths) {
            let end = at.checked_add(length)?;
            text.get(at..end)?;
            *field = at..end;
            at = end;
        }
        let mut stored = [0u8; 32];
        hex::decode_to_slice(text.get(at..at + 64)?, &mut stored).ok()?;
        at += 64;
        events.push(Packed {
            position,
            sequence,
            stored: Some(stored),
            fields,
        });
    }
    (events.len() == count).then_some(events)
}

/// Whether the events of a page follow each other, and the page's start, in
/// stream order.
fn in_stream_order(events: &[Packed], text: &str, after: &(String, String, i64)) -> bool {
    let key = |e: &Packed| {
        let field = |i: usize| text.get(e.fields[i].clone()).unwrap_or_default();
        (field(0), field(1), e.sequence)
    };
    let start = (after.0.as_str(), after.1.as_str(), after.2);
    events.first().is_some_and(|e| key(e) > start)
        && events.windows(2).all(|w| key(&w[0]) < key(&w[1]))
}

/// Reads the packed page after `after` (text and event count).
async fn packed_page(
    pool: sqlx::SqlitePool,
    after: (String, String, i64),
    before: Option<(String, String)>,
) -> Result<(Option<String>, i64), sqlx::Error> {
    let (limit, before) = (i64::from(before.is_some()), before.unwrap_or_default());
    let page = sqlx::query(SQLITE_PACKED_PAGE)
        .bind(&after.0)
        .bind(&after.1)
        .bind(after.2)
        .bind(CHAIN_BATCH as i64)
        .bind(limit)
        .bind(&before.0)
        .bind(&before.1)
        .fetch_one(&pool)
        .await?;
    Ok((page.try_get(0)?, page.try_get(1)?))
}

async fn read_sqlite_packed<P: Fn(u64) + Sync>(
    pool: &sqlx::SqlitePool,
    part: &Part,
    walk: &mut ChainWalk,
    hashing: &mut Hashing<'_, P>,
) -> Result<(), JournalError> {
    // Sequences start at 1: after (type, id, 0) is the whole of that stream.
    let mut after = (part.from.0.clone(), part.from.1.clone(), 0i64);
    let before = part.before.clone();
    let page = |after: &(String, String, i64)| {
        tokio::spawn(packed_page(pool.clone(), after.clone(), before.clone()))
    };
    let mut next = page(&after);
    loop {
        let (text, count) = match next.await {
            Ok(page) => page?,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        if count == 0 {
            return Ok(());
        }
        let mut batch = ChainBatch::default();
        let unpacked = text
            .and_then(|text| Some((unpack(&text, count as usize)?, text)))
            .filter(|(events, text)| in_stream_order(events, text, &after));
        match unpacked {
            Some((events, text)) => {
                batch.rows.reserve(events.len());
                for event in events {
                    let field = |i: usize| text.get(event.fields[i].clone()).unwrap_or_default();
                    let key = RowKey {
                        order: JournalOrder {
                            tx: event.position,
                            position: event.position,
                        },
                        aggregate_type: field(0),
                        aggregate_id: field(1),
                        sequence: event.sequence,
                        stored: event.stored,
                        before: None,
                    };
                    let step = walk.step(&key);
                    batch.rows.push(BatchRow {
                        order: key.order,
                        sequence: key.sequence,
                        stored: key.stored,
                        step,
                        fields: event.fields,
                    });
                }
                batch.text = text;
            }
            None => {
                let bound = before.clone().unwrap_or_default();
                let rows = sqlx::query(SQLITE_PAGE)
                    .bind(&after.0)
                    .bind(&after.1)
                    .bind(after.2)
                    .bind(CHAIN_BATCH as i64)
                    .bind(i64::from(before.is_some()))
                    .bind(&bound.0)
                    .bind(&bound.1)
                    .fetch_all(pool)
                    .await?;
                for row in &rows {
                    let key = RowKey::read(row)?;
                    let step = walk.step(&key);
                    let texts = [
                        row.try_get(4)?,
                        row.try_get(5)?,
                        row.try_get(6)?,
                        row.try_get(7)?,
                    ];
                    batch.push(&key, step, texts);
                }
            }
        }
        let Some(last) = batch.rows.last() else {
            return Ok(());
        };
        let field = |range: &std::ops::Range<usize>| {
            batch
                .text
                .get(range.clone())
                .unwrap_or_default()
                .to_string()
        };
        after = (
            field(&last.fields[0]),
            field(&last.fields[1]),
            last.sequence,
        );
        // SQLite reads the next page while this one is hashed.
        next = page(&after);
        hashing.submit(batch).await;
    }
}

fn merge(report: &mut VerifyReport, outcome: Result<BatchOutcome, tokio::task::JoinError>) {
    match outcome {
        Ok(outcome) => {
            report.events_checked += outcome.events;
            report.bytes_hashed += outcome.bytes;
            for brk in outcome.breaks {
                report.record(brk);
            }
        }
        // A hashing task fails only by panicking, which is a bug: pass it on.
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// The fields of a `*_STREAM_*` row that place it in its stream.
struct RowKey<'r> {
    order: JournalOrder,
    aggregate_type: &'r str,
    aggregate_id: &'r str,
    sequence: i64,
    stored: Option<Hash>,
    /// The stored predecessor (hash, place) of the first event of a range
    /// that starts inside a stream.
    before: Option<(Option<Hash>, Option<JournalOrder>)>,
}

impl<'r> RowKey<'r> {
    fn read<R: Row>(row: &'r R) -> Result<RowKey<'r>, JournalError>
    where
        usize: sqlx::ColumnIndex<R>,
        &'r str: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        &'r [u8]: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        Option<&'r [u8]>: sqlx::Decode<'r, R::Database>,
        Option<i64>: sqlx::Decode<'r, R::Database>,
    {
        let before: Option<&[u8]> = row.try_get(10)?;
        let before_tx: Option<i64> = row.try_get(11)?;
        let before_position: Option<i64> = row.try_get(12)?;
        Ok(RowKey {
            order: JournalOrder {
                tx: row.try_get(9)?,
                position: row.try_get(0)?,
            },
            aggregate_type: row.try_get(1)?,
            aggregate_id: row.try_get(2)?,
            sequence: row.try_get(3)?,
            stored: hash_from_slice(row.try_get(8)?),
            before: before.map(|hash| {
                let order = before_tx
                    .zip(before_position)
                    .map(|(tx, position)| JournalOrder { tx, position });
                (hash_from_slice(hash), order)
            }),
        })
    }
}

/// The content of an event, borrowed from its row.
struct RowContent<'r> {
    key: RowKey<'r>,
    event_type: &'r str,
    event_version: &'r str,
    payload: &'r str,
    metadata: &'r str,
}

/// What an event is checked against: its stream's state before it.
struct ChainStep {
    expected_sequence: i64,
    prev: Hash,
    prev_order: Option<JournalOrder>,
}

/// The walk through the journal in stream order.
struct ChainWalk {
    /// Whether the whole journal is walked (else a range that may start mid-stream).
    whole: bool,
    stream: Option<(String, String)>,
    expected_sequence: i64,
    prev: Hash,
    prev_order: Option<JournalOrder>,
    streams: u64,
}

impl ChainWalk {
    fn new(whole: bool) -> Self {
        ChainWalk {
            whole,
            stream: None,
            expected_sequence: 1,
            prev: GENESIS,
            prev_order: None,
            streams: 0,
        }
    }

    /// Moves onto `row` and returns what it must chain onto. The walk chains
    /// on stored hashes, so it needs no hash computed, and one edit is
    /// reported once, not for every later event of its stream.
    fn step(&mut self, row: &RowKey<'_>) -> ChainStep {
        let same_stream = self
            .stream
            .as_ref()
            .is_some_and(|(t, i)| t == row.aggregate_type && i == row.aggregate_id);
        if !same_stream {
            self.stream = Some((row.aggregate_type.to_string(), row.aggregate_id.to_string()));
            self.streams += 1;
            self.expected_sequence = 1;
            self.prev = GENESIS;
            self.prev_order = None;
            // A range may start inside a stream: chain onto the stored predecessor.
            if let (Some((hash, order)), true) = (row.before, row.sequence > 1) {
                self.expected_sequence = row.sequence;
                self.prev = hash.unwrap_or(GENESIS);
                self.prev_order = order;
            } else if !self.whole && row.sequence > 1 {
                self.expected_sequence = row.sequence - 1;
            }
        }
        let step = ChainStep {
            expected_sequence: self.expected_sequence,
            prev: self.prev,
            prev_order: self.prev_order,
        };
        self.prev = row.stored.unwrap_or(GENESIS);
        self.prev_order = Some(row.order);
        self.expected_sequence = row.sequence + 1;
        step
    }
}

/// What one hashing task found.
struct BatchOutcome {
    events: u64,
    bytes: u64,
    breaks: Vec<ChainBreak>,
}

/// Rows copied out of the database for a hashing task: their text in one
/// buffer (the rows are dropped on the reading side).
#[derive(Default)]
struct ChainBatch {
    text: String,
    rows: Vec<BatchRow>,
}

/// One row of a [`ChainBatch`]: text fields as ranges of the batch's buffer.
struct BatchRow {
    order: JournalOrder,
    sequence: i64,
    stored: Option<Hash>,
    step: ChainStep,
    /// aggregate type, aggregate id, event type, event version, payload, metadata
    fields: [std::ops::Range<usize>; 6],
}

impl ChainBatch {
    fn push(
        &mut self,
        key: &RowKey<'_>,
        step: ChainStep,
        [event_type, version, payload, metadata]: [&str; 4],
    ) {
        let mut field = |text: &str| {
            let start = self.text.len();
            self.text.push_str(text);
            start..self.text.len()
        };
        let fields = [
            field(key.aggregate_type),
            field(key.aggregate_id),
            field(event_type),
            field(version),
            field(payload),
            field(metadata),
        ];
        self.rows.push(BatchRow {
            order: key.order,
            sequence: key.sequence,
            stored: key.stored,
            step,
            fields,
        });
    }
}

fn check_batch(batch: ChainBatch, canonical_text: bool) -> BatchOutcome {
    let mut outcome = BatchOutcome {
        events: 0,
        bytes: 0,
        breaks: Vec::new(),
    };
    let text = |range: &std::ops::Range<usize>| batch.text.get(range.clone()).unwrap_or_default();
    for row in &batch.rows {
        let [aggregate_type, aggregate_id, event_type, event_version, payload, metadata] =
            &row.fields;
        let content = RowContent {
            key: RowKey {
                order: row.order,
                aggregate_type: text(aggregate_type),
                aggregate_id: text(aggregate_id),
                sequence: row.sequence,
                stored: row.stored,
                before: None,
            },
            event_type: text(event_type),
            event_version: text(event_version),
            payload: text(payload),
            metadata: text(metadata),
        };
        let key = &content.key;
        let step = &row.step;
        let recomputed = recompute(&content, &step.prev, canonical_text).map(|(hash, bytes)| {
            outcome.bytes += bytes;
            hash
        });
        let kind = if key.sequence != step.expected_sequence {
            Some(BreakKind::MissingEvents {
                expected_sequence: step.expected_sequence,
            })
        } else if recomputed.is_none() || recomputed != key.stored {
            Some(BreakKind::HashMismatch)
        } else {
            match step.prev_order {
                // A stream's events are written in sequence order, so they also
                // follow each other in the global order.
                Some(before) if before >= key.order => Some(BreakKind::Reordered {
                    previous_position: before.position,
                }),
                _ => None,
            }
        };
        if let Some(kind) = kind {
            outcome.breaks.push(ChainBreak {
                kind,
                position: key.order.position,
                aggregate_type: key.aggregate_type.to_string(),
                aggregate_id: key.aggregate_id.to_string(),
                sequence: key.sequence,
                expected: recomputed,
                found: key.stored,
            });
        }
        outcome.events += 1;
    }
    outcome
}

/// The event's hash and the length of the canonical bytes it covers, or
/// `None` when the stored event has no canonical form.
///
/// Two fast paths come first; each is accepted only when it yields the stored
/// hash, and anything else falls back to the reference encoding
/// (`EventContent::canonical_bytes`), so they can make a check faster but
/// never change its verdict. A fast result equal to the stored hash means the
/// bytes hashed are the canonical bytes written; each of the two spliced texts
/// is one JSON value, whose end the `,` after it fixes, so each is exactly the
/// canonical text written, and the faithful encoder below writes that text
/// only for the value written.
fn recompute(row: &RowContent<'_>, prev: &Hash, canonical_text: bool) -> Option<(Hash, u64)> {
    let confirmed = |bytes: Vec<u8>| {
        let hash: Hash = Sha256::digest(&bytes).into();
        (Some(hash) == row.key.stored).then_some((hash, bytes.len() as u64))
    };
    let valid = |text: &str| serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok();
    // Payload and metadata stored as their canonical text (the SQLite journal).
    if canonical_text && valid(row.metadata) && valid(row.payload) {
        let spliced = splice(row, prev, row.metadata.as_bytes(), row.payload.as_bytes());
        if let Some(found) = spliced.and_then(confirmed) {
            return Some(found);
        }
    }
    let payload = serde_json::from_str::<Value>(row.payload).ok()?;
    let metadata = serde_json::from_str::<Value>(row.metadata).ok()?;
    // Any stored text, parsed, written by an encoder that copies runs of
    // characters instead of one character at a time.
    let (mut m, mut p) = (
        Vec::with_capacity(row.metadata.len()),
        Vec::with_capacity(row.payload.len()),
    );
    if write_canonical(&metadata, &mut m).is_some() && write_canonical(&payload, &mut p).is_some() {
        if let Some(found) = splice(row, prev, &m, &p).and_then(confirmed) {
            return Some(found);
        }
    }
    let content = EventContent {
        aggregate_type: row.key.aggregate_type,
        aggregate_id: row.key.aggregate_id,
        sequence: row.key.sequence,
        event_type: row.event_type,
        event_version: row.event_version,
        payload: &payload,
        metadata: &metadata,
    };
    let bytes = content.canonical_bytes(prev).ok()?;
    Some((Sha256::digest(&bytes).into(), bytes.len() as u64))
}

/// The event's canonical layout, from `EventContent` itself with `{}` in both
/// places, with `metadata` and `payload` put in those places.
fn splice(row: &RowContent<'_>, prev: &Hash, metadata: &[u8], payload: &[u8]) -> Option<Vec<u8>> {
    let empty = Value::Object(serde_json::Map::new());
    let skeleton = EventContent {
        aggregate_type: row.key.aggregate_type,
        aggregate_id: row.key.aggregate_id,
        sequence: row.key.sequence,
        event_type: row.event_type,
        event_version: row.event_version,
        payload: &empty,
        metadata: &empty,
    }
    .canonical_bytes(prev)
    .ok()?;
    const METADATA: &[u8] = b",\"metadata\":{}";
    const PAYLOAD: &[u8] = b",\"payload\":{}";
    let metadata_at = find(&skeleton, METADATA)? + METADATA.len() - 2;
    let payload_at = find(&skeleton, PAYLOAD)? + PAYLOAD.len() - 2;
    if metadata_at >= payload_at {
        return None;
    }
    let mut bytes = Vec::with_capacity(skeleton.len() + payload.len() + metadata.len());
    bytes.extend_from_slice(&skeleton[..metadata_at]);
    bytes.extend_from_slice(metadata);
    bytes.extend_from_slice(&skeleton[metadata_at + 2..payload_at]);
    bytes.extend_from_slice(payload);
    bytes.extend_from_slice(&skeleton[payload_at + 2..]);
    Some(bytes)
}

/// Largest integer RFC 8785 represents exactly.
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// RFC 8785 encoding of `value`, as `crate::canonical::write_value` writes it;
/// `None` for what has no canonical form (non-integers, unsafe integers).
fn write_canonical(value: &Value, out: &mut Vec<u8>) -> Option<()> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                (u <= MAX_SAFE_INTEGER).then_some(())?;
            } else {
                (n.as_i64()?.unsigned_abs() <= MAX_SAFE_INTEGER).then_some(())?;
            }
            out.extend_from_slice(n.to_string().as_bytes());
        }
        Value::String(s) => write_canonical_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            // Members in UTF-16 code unit order. That is the map's own (code
            // point) order unless a name holds a character from U+E000 up.
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            let in_order = members.windows(2).all(|w| w[0].0 < w[1].0)
                && members
                    .iter()
                    .all(|(k, _)| k.chars().all(|c| c < '\u{e000}'));
            if !in_order {
                members.sort_by(|(a, _), (b, _)| a.encode_utf16().cmp(b.encode_utf16()));
            }
            out.push(b'{');
            for (i, (name, item)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical_string(name, out);
                out.push(b':');
                write_canonical(item, out)?;
            }
            out.push(b'}');
        }
    }
    Some(())
}

/// A JSON string as RFC 8785 writes it: `"` and `\` escaped, the short forms
/// of \b \t \n \f \r, other control characters as `\u00xx`, the rest
/// verbatim (byte-wise: UTF-8 bytes of other characters are all 0x80 or more).
fn write_canonical_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            0x0c => b"\\f",
            b'\r' => b"\\r",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if short.is_empty() {
            out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
        } else {
            out.extend_from_slice(short);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// The first place of `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
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

/// A page of the SQLite journal's event hashes in position order, packed into
/// one text of 80 hex digits an event: position (16), hash (64). See
/// [`SQLITE_PACKED_PAGE`] for why, and why the positions are checked.
const SQLITE_SEAL_PAGE: &str = "SELECT group_concat(printf('%016x', position) || hex(hash), ''), \
     count(*), max(position) FROM (SELECT position, hash FROM events \
       WHERE position > $1 AND position <= $2 ORDER BY position LIMIT $3)";

/// The same page row by row, for a page whose packed text does not unpack.
const SQLITE_SEAL_ROWS: &str = "SELECT hash FROM events \
     WHERE position > $1 AND position <= $2 ORDER BY position LIMIT $3";

/// Events per page of a seal's hashes.
const SEAL_PAGE: i64 = 8192;

/// The hashes of a packed seal page, if its positions rise from `after`.
fn unpack_hashes(text: &str, mut after: i64) -> Option<Vec<u8>> {
    let mut hashes = Vec::with_capacity(text.len() / 80 * 32);
    for record in text.as_bytes().chunks(80) {
        let position = std::str::from_utf8(record.get(..16)?).ok()?;
        let position = i64::from_str_radix(position, 16).ok()?;
        if position <= after {
            return None;
        }
        after = position;
        let mut hash = [0u8; 32];
        hex::decode_to_slice(record.get(16..)?, &mut hash).ok()?;
        hashes.extend_from_slice(&hash);
    }
    Some(hashes)
}

/// The number of events in `seal`'s range and the root over their hashes;
/// `counted` hears how many more events were read.
async fn seal_root(
    db: &Db,
    seal: &super::Seal,
    mut counted: impl FnMut(u64),
) -> Result<(i64, Hash), JournalError> {
    let mut root = SealRoot::default();
    match db {
        Db::Postgres(pool) => {
            let mut events = sqlx::query(PG_SEAL_RANGE)
                .bind(seal.first.tx)
                .bind(seal.first.position)
                .bind(seal.last.tx)
                .bind(seal.last.position)
                .fetch(pool);
            let mut unreported = 0;
            while let Some(event) = events.try_next().await? {
                let hash: &[u8] = event.try_get(1)?;
                root.push(hash);
                unreported += 1;
                if unreported == PROGRESS_EVERY {
                    counted(std::mem::take(&mut unreported));
                }
            }
            counted(unreported);
        }
        Db::Sqlite(pool) => {
            let mut after = seal.first.position - 1;
            loop {
                let page = sqlx::query(SQLITE_SEAL_PAGE)
                    .bind(after)
                    .bind(seal.last.position)
                    .bind(SEAL_PAGE)
                    .fetch_one(pool)
                    .await?;
                let count: i64 = page.try_get(1)?;
                let Some(last) = page.try_get::<Option<i64>, _>(2)?.filter(|_| count > 0) else {
                    break;
                };
                let text: Option<String> = page.try_get(0)?;
                let hashes = text
                    .filter(|t| t.len() == count as usize * 80)
                    .and_then(|t| unpack_hashes(&t, after));
                match hashes {
                    Some(bytes) => bytes.chunks(32).for_each(|hash| root.push(hash)),
                    // Out of order, or hashes of unusual length: row by row.
                    None => {
                        let rows: Vec<Vec<u8>> = sqlx::query_scalar(SQLITE_SEAL_ROWS)
                            .bind(after)
                            .bind(seal.last.position)
                            .bind(SEAL_PAGE)
                            .fetch_all(pool)
                            .await?;
                        rows.iter().for_each(|hash| root.push(hash));
                    }
                }
                counted(count as u64);
                after = last;
            }
        }
    }
    Ok((root.count(), root.finish()))
}

async fn verify_seals(
    db: &Db,
    scope: &VerifyScope,
    (from, to): (i64, i64),
    progress: &(impl Fn(VerifyProgress) + Sync),
) -> Result<VerifyReport, JournalError> {
    let mut found = VerifyReport::default();
    let report = &mut found;
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
                let counted = |n: u64| {
                    done += n;
                    progress(VerifyProgress { phase: VerifyPhase::Seals, done, total });
                };
                Some(seal_root(db, &seal, counted).await?)
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
    Ok(found)
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
