//! Paging through SQLite's journal: pages packed into one text by SQLite, so
//! rows need not cross from its worker thread one by one; a page that does not
//! unpack in order is read row by row.

use super::*;

/// One page of the SQLite journal in stream order, packed by SQLite into a
/// single text: per event `POSITION SEQUENCE` and the byte lengths of its six
/// text fields, then those fields and the hex of its stored hash. One row a
/// page instead of one a event: rows cross from SQLite's worker thread one by
/// one, which costs more than the check itself. Keyset-paged after ($1, $2, $3),
/// before the stream ($6, $7) when $5 is 1.
/// The events come in the subquery's order (an ORDER BY inside group_concat
/// would sort them again); the reader checks that order and reads a page
/// that is not in it row by row.
pub(super) const SQLITE_PACKED_PAGE: &str =
    "SELECT group_concat(printf('%d %d %d %d %d %d %d %d ', \
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
pub(super) const SQLITE_PAGE: &str =
    "SELECT position, aggregate_type, aggregate_id, sequence, event_type, \
     event_version, CAST(payload AS TEXT), CAST(metadata AS TEXT), hash, position, \
     NULL, NULL, NULL FROM events WHERE (aggregate_type, aggregate_id, sequence) > ($1, $2, $3) \
       AND ($5 = 0 OR (aggregate_type, aggregate_id) < ($6, $7)) \
     ORDER BY aggregate_type, aggregate_id, sequence LIMIT $4";

/// An event of a packed page: numbers, and its fields as ranges of the text.
pub(super) struct Packed {
    pub(super) position: i64,
    pub(super) sequence: i64,
    pub(super) stored: Option<Hash>,
    pub(super) fields: [std::ops::Range<usize>; 6],
}

/// Splits a packed page; `None` if it is not `count` well-formed events.
pub(super) fn unpack(text: &str, count: usize) -> Option<Vec<Packed>> {
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
pub(super) fn in_stream_order(
    events: &[Packed],
    text: &str,
    after: &(String, String, i64),
) -> bool {
    let key = |e: &Packed| {
        let field = |i: usize| text.get(e.fields[i].clone()).unwrap_or_default();
        (field(0), field(1), e.sequence)
    };
    let start = (after.0.as_str(), after.1.as_str(), after.2);
    events.first().is_some_and(|e| key(e) > start)
        && events.windows(2).all(|w| key(&w[0]) < key(&w[1]))
}

/// Reads the packed page after `after` (text and event count).
pub(super) async fn packed_page(
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

pub(super) async fn read_sqlite_packed<P: Fn(u64) + Sync>(
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

/// A page of the SQLite journal's event hashes in position order, packed into
/// one text of 80 hex digits an event: position (16), hash (64). See
/// [`SQLITE_PACKED_PAGE`] for why, and why the positions are checked.
pub(super) const SQLITE_SEAL_PAGE: &str =
    "SELECT group_concat(printf('%016x', position) || hex(hash), ''), \
     count(*), max(position) FROM (SELECT position, hash FROM events \
       WHERE position > $1 AND position <= $2 ORDER BY position LIMIT $3)";

/// The same page row by row, for a page whose packed text does not unpack.
pub(super) const SQLITE_SEAL_ROWS: &str = "SELECT hash FROM events \
     WHERE position > $1 AND position <= $2 ORDER BY position LIMIT $3";

/// Events per page of a seal's hashes.
pub(super) const SEAL_PAGE: i64 = 8192;

/// The hashes of a packed seal page, if its positions rise from `after`.
pub(super) fn unpack_hashes(text: &str, mut after: i64) -> Option<Vec<u8>> {
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
