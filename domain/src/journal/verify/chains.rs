//! The chains: every stream's events recomputed in stream order, hashed in
//! batches on blocking threads while the next rows are read.

use super::*;

/// Events in stream order, of the streams from ($1, $2) and before ($4, $5)
/// when $3 is 1; the last three columns are the stored predecessor (hash, tx,
/// position) when a range starts inside a stream. (A whole SQLite journal is
/// read in packed pages, see [`SQLITE_PACKED_PAGE`].)
pub(super) const PG_STREAM_ORDER: &str =
    "SELECT position, aggregate_type, aggregate_id, sequence, event_type, \
     event_version, CAST(payload AS TEXT), CAST(metadata AS TEXT), hash, tx_id::text::bigint, \
     NULL::bytea, NULL::bigint, NULL::bigint FROM events \
     WHERE (aggregate_type, aggregate_id) >= ($1, $2) \
       AND ($3 = 0 OR (aggregate_type, aggregate_id) < ($4, $5)) \
     ORDER BY aggregate_type, aggregate_id, sequence";

pub(super) const PG_STREAM_RANGE: &str =
    "SELECT e.position, e.aggregate_type, e.aggregate_id, e.sequence, \
     e.event_type, e.event_version, CAST(e.payload AS TEXT), CAST(e.metadata AS TEXT), e.hash, \
     e.tx_id::text::bigint, p.hash, p.tx_id::text::bigint, p.position \
     FROM events e LEFT JOIN events p ON p.aggregate_type = e.aggregate_type \
       AND p.aggregate_id = e.aggregate_id AND p.sequence = e.sequence - 1 \
     WHERE e.position >= $1 AND e.position <= $2 \
     ORDER BY e.aggregate_type, e.aggregate_id, e.sequence";

pub(super) const SQLITE_STREAM_RANGE: &str =
    "SELECT e.position, e.aggregate_type, e.aggregate_id, \
     e.sequence, e.event_type, e.event_version, CAST(e.payload AS TEXT), \
     CAST(e.metadata AS TEXT), e.hash, e.position, p.hash, p.position, p.position \
     FROM events e LEFT JOIN events p ON p.aggregate_type = e.aggregate_type \
       AND p.aggregate_id = e.aggregate_id AND p.sequence = e.sequence - 1 \
     WHERE e.position >= $1 AND e.position <= $2 \
     ORDER BY e.aggregate_type, e.aggregate_id, e.sequence";

pub(super) const COUNT_RANGE: &str =
    "SELECT COUNT(*) FROM events WHERE position >= $1 AND position <= $2";

/// Events handed to one hashing task.
pub(super) const CHAIN_BATCH: usize = 1024;

pub(super) async fn verify_chains(
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
pub(super) struct Part {
    pub(super) from: (String, String),
    pub(super) before: Option<(String, String)>,
}

/// The journal's streams cut into as many parts as there are cores, at the
/// streams that start near each share of the events.
pub(super) async fn split_streams(db: &Db, total: u64) -> Result<Vec<Part>, JournalError> {
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
pub(super) struct Hashing<'p, P> {
    pub(super) running: std::collections::VecDeque<tokio::task::JoinHandle<BatchOutcome>>,
    pub(super) parallel: usize,
    pub(super) canonical_text: bool,
    pub(super) report: VerifyReport,
    /// Hears how many more events were checked.
    pub(super) progress: &'p P,
}

impl<'p, P: Fn(u64) + Sync> Hashing<'p, P> {
    pub(super) fn new(canonical_text: bool, progress: &'p P) -> Self {
        Hashing {
            running: std::collections::VecDeque::new(),
            parallel: std::thread::available_parallelism().map_or(2, |n| n.get()),
            canonical_text,
            report: VerifyReport::default(),
            progress,
        }
    }

    /// Starts hashing `batch`, first waiting for the oldest batch when enough run.
    pub(super) async fn submit(&mut self, batch: ChainBatch) {
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

    pub(super) async fn collect_one(&mut self) {
        if let Some(done) = self.running.pop_front() {
            let before = self.report.events_checked;
            merge(&mut self.report, done.await);
            (self.progress)(self.report.events_checked - before);
        }
    }

    pub(super) async fn finish(mut self) -> VerifyReport {
        while !self.running.is_empty() {
            self.collect_one().await;
        }
        self.report
    }
}

pub(super) fn merge(
    report: &mut VerifyReport,
    outcome: Result<BatchOutcome, tokio::task::JoinError>,
) {
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
pub(super) struct RowKey<'r> {
    pub(super) order: JournalOrder,
    pub(super) aggregate_type: &'r str,
    pub(super) aggregate_id: &'r str,
    pub(super) sequence: i64,
    pub(super) stored: Option<Hash>,
    /// The stored predecessor (hash, place) of the first event of a range
    /// that starts inside a stream.
    pub(super) before: Option<(Option<Hash>, Option<JournalOrder>)>,
}

impl<'r> RowKey<'r> {
    pub(super) fn read<R: Row>(row: &'r R) -> Result<RowKey<'r>, JournalError>
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
pub(super) struct RowContent<'r> {
    pub(super) key: RowKey<'r>,
    pub(super) event_type: &'r str,
    pub(super) event_version: &'r str,
    pub(super) payload: &'r str,
    pub(super) metadata: &'r str,
}

/// What an event is checked against: its stream's state before it.
pub(super) struct ChainStep {
    pub(super) expected_sequence: i64,
    pub(super) prev: Hash,
    pub(super) prev_order: Option<JournalOrder>,
}

/// The walk through the journal in stream order.
pub(super) struct ChainWalk {
    /// Whether the whole journal is walked (else a range that may start mid-stream).
    pub(super) whole: bool,
    pub(super) stream: Option<(String, String)>,
    pub(super) expected_sequence: i64,
    pub(super) prev: Hash,
    pub(super) prev_order: Option<JournalOrder>,
    pub(super) streams: u64,
}

impl ChainWalk {
    pub(super) fn new(whole: bool) -> Self {
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
    pub(super) fn step(&mut self, row: &RowKey<'_>) -> ChainStep {
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
pub(super) struct BatchOutcome {
    pub(super) events: u64,
    pub(super) bytes: u64,
    pub(super) breaks: Vec<ChainBreak>,
}

/// Rows copied out of the database for a hashing task: their text in one
/// buffer (the rows are dropped on the reading side).
#[derive(Default)]
pub(super) struct ChainBatch {
    pub(super) text: String,
    pub(super) rows: Vec<BatchRow>,
}

/// One row of a [`ChainBatch`]: text fields as ranges of the batch's buffer.
pub(super) struct BatchRow {
    pub(super) order: JournalOrder,
    pub(super) sequence: i64,
    pub(super) stored: Option<Hash>,
    pub(super) step: ChainStep,
    /// aggregate type, aggregate id, event type, event version, payload, metadata
    pub(super) fields: [std::ops::Range<usize>; 6],
}

impl ChainBatch {
    pub(super) fn push(
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

pub(super) fn check_batch(batch: ChainBatch, canonical_text: bool) -> BatchOutcome {
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
pub(super) fn recompute(
    row: &RowContent<'_>,
    prev: &Hash,
    canonical_text: bool,
) -> Option<(Hash, u64)> {
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
pub(super) fn splice(
    row: &RowContent<'_>,
    prev: &Hash,
    metadata: &[u8],
    payload: &[u8],
) -> Option<Vec<u8>> {
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
pub(super) const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// RFC 8785 encoding of `value`, as `crate::canonical::write_value` writes it;
/// `None` for what has no canonical form (non-integers, unsafe integers).
pub(super) fn write_canonical(value: &Value, out: &mut Vec<u8>) -> Option<()> {
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
pub(super) fn write_canonical_string(s: &str, out: &mut Vec<u8>) {
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
pub(super) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
