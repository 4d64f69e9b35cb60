//! `kabinet-replay bench` (hidden): fills a fresh journal with valid chained
//! events by multi-row INSERTs, then measures `verify` beside SHA-256 over the
//! same canonical bytes (`sha256sum` and in-process), and `rebuild --all`, each
//! in its own process with its peak resident memory.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::process::Stdio;
use std::str::FromStr;
use std::time::Instant;

use anyhow::{anyhow, bail, Context};
use kabinet_domain::canonical::to_canonical_bytes;
use kabinet_domain::db::{redact_url, PoolOptions};
use kabinet_domain::journal::chain::{EventContent, Hash, GENESIS};
use kabinet_domain::metadata::EventMetadata;
use kabinet_domain::{Actor, Db, Journal, Role};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::{Connection, QueryBuilder};
use uuid::Uuid;

use crate::cli::{BenchArgs, BenchBackend};
use crate::progress::Bar;

/// Streams written side by side, so that the global order interleaves them.
const WINDOW: usize = 200;
/// Rows per INSERT statement.
const ROWS_PER_INSERT: usize = 1000;
/// Events per seal.
const SEAL_SIZE: i64 = 10_000;

/// One event ready to insert.
struct Row {
    aggregate_id: String,
    sequence: i64,
    event_type: &'static str,
    payload: Value,
    metadata: Value,
    hash: Hash,
}

/// Runs the benchmark and prints its table.
pub async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("kabinet-replay-bench-")
        .tempdir()?;
    let (url, pg_drop) = match args.backend {
        BenchBackend::Sqlite => (
            format!("sqlite://{}", dir.path().join("bench.db").display()),
            None,
        ),
        BenchBackend::Postgres => {
            let name = format!("kabinet_replay_bench_{}", Uuid::new_v4().simple());
            let mut admin = sqlx::PgConnection::connect(&args.pg_url)
                .await
                .with_context(|| format!("cannot connect to {}", redact_url(&args.pg_url)))?;
            sqlx::query(&format!("CREATE DATABASE \"{name}\""))
                .execute(&mut admin)
                .await?;
            admin.close().await?;
            (with_database(&args.pg_url, &name), Some(name))
        }
    };
    let outcome = measure(args, &url, dir.path()).await;
    if args.keep && pg_drop.is_none() {
        eprintln!("kept the benchmark database {url}");
        let _ = dir.keep();
        return outcome;
    }
    if let Some(name) = pg_drop {
        if args.keep {
            eprintln!("kept the benchmark database {name}");
        } else if let Ok(mut admin) = sqlx::PgConnection::connect(&args.pg_url).await {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&mut admin)
                .await;
        }
    }
    outcome
}

async fn measure(args: &BenchArgs, url: &str, dir: &Path) -> anyhow::Result<()> {
    let db = Db::connect(
        url,
        &PoolOptions {
            max_connections: 4,
            ..PoolOptions::default()
        },
    )
    .await?;
    db.migrate().await?;
    let canonical_path = dir.join("canonical.bin");
    let started = Instant::now();
    let bytes = fill(&db, args, &canonical_path).await?;
    let fill_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let journal = Journal::new(db.clone());
    let mut seals = 0;
    loop {
        while journal.seal(SEAL_SIZE).await?.is_some() {
            seals += 1;
        }
        // PostgreSQL seals only below the snapshot horizon, which open
        // transactions elsewhere on the server hold back for a moment.
        let sealed: i64 = kabinet_domain::on_db!(&db, pool => {
            sqlx::query_scalar("SELECT CAST(COALESCE(SUM(event_count), 0) AS BIGINT) FROM seals")
                .fetch_one(pool)
                .await?
        });
        if sealed as u64 >= args.events {
            break;
        }
        if started.elapsed().as_secs() > 600 {
            bail!("only {sealed} of {} events could be sealed", args.events);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let seal_secs = started.elapsed().as_secs_f64();
    db.close().await;
    eprintln!(
        "filled {} events ({:.1} MB canonical) in {fill_secs:.1}s, {seals} seals in {seal_secs:.1}s",
        args.events,
        mb(bytes)
    );

    let sha256sum = time_sha256sum(&canonical_path)?;
    let in_process = time_in_process(&canonical_path)?;
    let verify = child(url, &["--json", "verify"])?;
    if verify.json["intact"] != Value::Bool(true) {
        bail!("the filled journal does not verify: {}", verify.json);
    }
    let verified_bytes = verify.json["bytes_hashed"].as_u64().unwrap_or(0);
    if verified_bytes != bytes {
        bail!("verify hashed {verified_bytes} bytes, the fill wrote {bytes}");
    }
    let rebuild = child(url, &["--json", "rebuild", "--all"])?;

    let n = args.events as f64;
    let backend = match args.backend {
        BenchBackend::Sqlite => "SQLite",
        BenchBackend::Postgres => "PostgreSQL",
    };
    println!();
    println!(
        "| {backend}, {} events ({:.0} MB canonical) | time | events/s | MB/s | peak RSS |",
        args.events,
        mb(bytes)
    );
    println!("|---|---:|---:|---:|---:|");
    if let Some(secs) = sha256sum {
        println!(
            "| `sha256sum` over the canonical bytes | {secs:.2} s | {:.0} | {:.0} | |",
            n / secs,
            mb(bytes) / secs
        );
    }
    println!(
        "| SHA-256 in process (sha2) over the same bytes | {in_process:.2} s | {:.0} | {:.0} | |",
        n / in_process,
        mb(bytes) / in_process
    );
    println!(
        "| `kabinet-replay verify` (chains + seals) | {:.2} s | {:.0} | {:.0} | {:.1} MB |",
        verify.secs,
        n / verify.secs,
        mb(bytes) / verify.secs,
        verify.peak_kb as f64 / 1024.0
    );
    for entry in rebuild.json["rebuilt"].as_array().into_iter().flatten() {
        let secs = entry["seconds"].as_f64().unwrap_or(f64::NAN);
        println!(
            "| `rebuild` {} | {secs:.2} s | {:.0} | | |",
            entry["projection"].as_str().unwrap_or("?"),
            entry["events_per_second"].as_f64().unwrap_or(f64::NAN)
        );
    }
    println!(
        "| `kabinet-replay rebuild --all` (whole process) | {:.2} s | | | {:.1} MB |",
        rebuild.secs,
        rebuild.peak_kb as f64 / 1024.0
    );
    println!();
    match sha256sum {
        Some(secs) => println!(
            "verify / sha256sum throughput: {:.2} (target ≥ 0.5); verify / in-process SHA-256: {:.2}",
            secs / verify.secs,
            in_process / verify.secs
        ),
        None => println!(
            "sha256sum not found; verify / in-process SHA-256: {:.2}",
            in_process / verify.secs
        ),
    }
    Ok(())
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1_000_000.0
}

/// A realistic organisation event body.
fn details(name: &str, i: u64) -> Value {
    json!({
        "name": name,
        "region": "Москва",
        "address": format!("ул. Ленина, {}", i % 200 + 1),
        "time_zone": "Europe/Moscow",
        "working_hours": "Пн–Пт 08:00–20:00, Сб 09:00–15:00",
        "departments": ["Терапия", "Хирургия", "Педиатрия"],
        "specialisations": ["therapist", "surgeon", "paediatrician"],
    })
}

/// Fills the journal with `args.events` valid chained events; writes their
/// canonical bytes to `canonical_path` and returns how many there are.
async fn fill(db: &Db, args: &BenchArgs, canonical_path: &Path) -> anyhow::Result<u64> {
    let length = args.stream_length.max(1);
    let actors: Vec<Actor> = (0..1000)
        .map(|_| Actor {
            account_id: Uuid::now_v7(),
            role: Role::Registrar,
            organisation_id: Some(Uuid::now_v7()),
        })
        .collect();
    let mut canonical = BufWriter::with_capacity(1 << 20, File::create(canonical_path)?);
    let mut bytes = 0u64;
    let mut written = 0u64;
    let mut pending: Vec<Row> = Vec::with_capacity(ROWS_PER_INSERT);
    let mut bar = Bar::new("filling");
    let mut position = 0i64;
    let mut counter = 0u64;
    while written < args.events {
        let streams = ((args.events - written).div_ceil(length) as usize).min(WINDOW);
        let ids: Vec<String> = (0..streams).map(|_| Uuid::now_v7().to_string()).collect();
        let mut prev: Vec<Hash> = vec![GENESIS; streams];
        for sequence in 1..=length as i64 {
            for (s, id) in ids.iter().enumerate() {
                if written >= args.events {
                    break;
                }
                counter += 1;
                let actor = &actors[(counter % actors.len() as u64) as usize];
                let metadata = serde_json::to_value(
                    EventMetadata::new(actor.clone(), format!("req-{counter}")).to_map(),
                )?;
                let (event_type, payload) = if sequence == 1 {
                    (
                        "OrganisationRegistered",
                        json!({ "OrganisationRegistered": details(&format!("Поликлиника №{counter}"), counter) }),
                    )
                } else {
                    (
                        "OrganisationDetailsChanged",
                        json!({ "OrganisationDetailsChanged": details(&format!("Поликлиника №{counter} (версия {sequence})"), counter) }),
                    )
                };
                let content = EventContent {
                    aggregate_type: "organisation",
                    aggregate_id: id,
                    sequence,
                    event_type,
                    event_version: "1",
                    payload: &payload,
                    metadata: &metadata,
                };
                let hash = content.hash(&prev[s])?;
                let text = content.canonical_bytes(&prev[s])?;
                canonical.write_all(&text)?;
                bytes += text.len() as u64;
                prev[s] = hash;
                pending.push(Row {
                    aggregate_id: id.clone(),
                    sequence,
                    event_type,
                    payload,
                    metadata,
                    hash,
                });
                written += 1;
                if pending.len() == ROWS_PER_INSERT {
                    insert(db, &pending, &mut position).await?;
                    pending.clear();
                    bar.set(written, args.events);
                }
            }
        }
    }
    insert(db, &pending, &mut position).await?;
    bar.set(written, args.events);
    bar.finish();
    canonical.flush()?;
    Ok(bytes)
}

async fn insert(db: &Db, rows: &[Row], position: &mut i64) -> anyhow::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    match db {
        Db::Postgres(pool) => {
            // Positions and transaction ids come from the column defaults.
            let mut q = QueryBuilder::<sqlx::Postgres>::new(
                "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
                 event_version, payload, metadata, hash) ",
            );
            q.push_values(rows, |mut b, row| {
                b.push_bind("organisation")
                    .push_bind(&row.aggregate_id)
                    .push_bind(row.sequence)
                    .push_bind(row.event_type)
                    .push_bind("1")
                    .push_bind(&row.payload)
                    .push_bind(&row.metadata)
                    .push_bind(&row.hash[..]);
            });
            q.build().execute(pool).await?;
        }
        Db::Sqlite(pool) => {
            let mut texts = Vec::with_capacity(rows.len());
            for row in rows {
                texts.push((
                    String::from_utf8(to_canonical_bytes(&row.payload)?)?,
                    String::from_utf8(to_canonical_bytes(&row.metadata)?)?,
                ));
            }
            let first = *position + 1;
            let mut q = QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
                 event_version, payload, metadata, hash, position) ",
            );
            q.push_values(
                rows.iter().zip(&texts).enumerate(),
                |mut b, (i, (row, (payload, metadata)))| {
                    b.push_bind("organisation")
                        .push_bind(&row.aggregate_id)
                        .push_bind(row.sequence)
                        .push_bind(row.event_type)
                        .push_bind("1")
                        .push_bind(payload)
                        .push_bind(metadata)
                        .push_bind(&row.hash[..])
                        .push_bind(first + i as i64);
                },
            );
            q.build().execute(pool).await?;
            *position += rows.len() as i64;
        }
    }
    Ok(())
}

/// Seconds `sha256sum` takes over the file, or `None` when it is not installed.
fn time_sha256sum(path: &Path) -> anyhow::Result<Option<f64>> {
    let started = Instant::now();
    let status = std::process::Command::new("sha256sum")
        .arg(path)
        .stdout(Stdio::null())
        .status();
    match status {
        Ok(status) if status.success() => Ok(Some(started.elapsed().as_secs_f64())),
        Ok(status) => bail!("sha256sum failed: {status}"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Seconds SHA-256 (the crate verify uses) takes over the file, read in chunks.
fn time_in_process(path: &Path) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let _digest = hasher.finalize();
    Ok(started.elapsed().as_secs_f64())
}

/// What a child run of this tool reported.
struct ChildRun {
    secs: f64,
    json: Value,
    peak_kb: u64,
}

/// Runs this binary with `args` in its own process, timing it and reading its
/// JSON output and peak resident memory.
fn child(url: &str, args: &[&str]) -> anyhow::Result<ChildRun> {
    let exe = std::env::current_exe()?;
    let started = Instant::now();
    let output = std::process::Command::new(exe)
        .arg("--database-url")
        .arg(url)
        .args(args)
        .env("KABINET_REPLAY_PEAK_RSS", "1")
        .stdin(Stdio::null())
        .output()?;
    let secs = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!("{args:?} failed ({}): {stderr}", output.status);
    }
    let json = serde_json::from_slice(&output.stdout)
        .map_err(|e| anyhow!("{args:?} printed no JSON ({e})"))?;
    let peak_kb = stderr
        .lines()
        .find_map(|l| l.strip_prefix("peak_rss_kb="))
        .and_then(|v| u64::from_str(v.trim()).ok())
        .ok_or_else(|| anyhow!("{args:?} did not report its peak memory"))?;
    Ok(ChildRun {
        secs,
        json,
        peak_kb,
    })
}

/// `url` with its database replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let start = base.find("://").map_or(0, |i| i + 3);
    let path = base[start..].find('/').map_or(base.len(), |i| start + i);
    let mut out = format!("{}/{database}", &base[..path]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}
