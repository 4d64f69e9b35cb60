//! The seals: each seal's root recomputed over its events in global order,
//! the seal chain checked, and a kept digest proved.

use super::*;

pub(super) const PG_SEAL_RANGE: &str = "SELECT position, hash FROM events \
     WHERE (tx_id, position) >= ($1::bigint::text::xid8, $2) \
       AND (tx_id, position) <= ($3::bigint::text::xid8, $4) \
     ORDER BY tx_id, position";

/// Which seals get their roots recomputed: those covering the checked events
/// (by position, and by global order, which differ on PostgreSQL) and, with a
/// digest, every seal up to the digest's seal. Binds: $1 whole journal (0/1),
/// $2 digest seal number, $3/$4 positions, $5..$8 global order bounds.
pub(super) const SEAL_SELECTED: &str = "($1 = 1 OR seal_no <= $2 \
     OR (last_position >= $3 AND first_position <= $4) \
     OR ((last_tx > $5 OR (last_tx = $5 AND last_position >= $6)) \
         AND (first_tx < $7 OR (first_tx = $7 AND first_position <= $8))))";

pub(super) const PG_ORDER_BOUND: &str = "SELECT tx_id::text::bigint, position FROM events \
     WHERE position >= $1 AND position <= $2 ORDER BY tx_id {dir}, position {dir} LIMIT 1";

pub(super) const SQLITE_ORDER_BOUND: &str = "SELECT position, position FROM events \
     WHERE position >= $1 AND position <= $2 ORDER BY position {dir} LIMIT 1";

pub(super) const DIGEST_SEAL: &str =
    "SELECT seal_no, last_position FROM seals WHERE hash = $1 ORDER BY seal_no LIMIT 1";

pub(super) async fn order_bound(
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

/// The number of events in `seal`'s range and the root over their hashes;
/// `counted` hears how many more events were read.
pub(super) async fn seal_root(
    db: &Db,
    seal: &crate::journal::Seal,
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

pub(super) async fn verify_seals(
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
