//! `kabinet-bench`: journal benchmarks, and the writer process the conformance
//! tests start (and kill) to prove that several processes lose nothing.
//!
//! - `write`: appends tally events and prints `ack <aggregate_id> <sequence>`
//!   (flushed) after each acknowledged commit.
//! - `journal`: durable appends through `CommandRunner` against raw INSERTs of
//!   the same rows, then the projector's catch-up rate and peak memory.
//! - `api`: bookings and `myAppointments` through the GraphQL endpoint of a
//!   server process (see `kabinet_tests::api_bench`).

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use clap::{Args, Parser, Subcommand};
use cqrs_es::persist::{EventStoreAggregateContext, PersistedEventStore};
use cqrs_es::{Aggregate, EventStore};
use kabinet_domain::command::{CommandRunner, Retry};
use kabinet_domain::db::PoolOptions;
use kabinet_domain::journal::chain::{EventContent, Hash, GENESIS};
use kabinet_domain::{Db, Journal};
use kabinet_projections::activity_log::ActivityLog;
use kabinet_projections::{Projector, ProjectorConfig};
use kabinet_tests::{add, metadata_of, Tally, TallyEvent, TestBackend, TestDb};
use serde_json::{json, Value};
use sqlx::QueryBuilder;
use tokio::task::JoinSet;
use uuid::Uuid;

#[derive(Parser)]
#[command(
    name = "kabinet-bench",
    about = "Kabinet journal benchmarks and test writer"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Append tally events, printing `ack <aggregate_id> <sequence>` per acknowledged commit.
    Write(WriteArgs),
    /// Measure journal appends against raw INSERTs, and the projector catch-up rate.
    Journal(JournalArgs),
    /// Measure bookings and `myAppointments` through the GraphQL HTTP endpoint.
    Api(kabinet_tests::api_bench::ApiBenchArgs),
    /// Measure rendering of PDF documents (an extract with visits, a QR code).
    Pdf(PdfArgs),
    /// Measure Argon2id password hashing and checking, as sign-in pays it.
    Passwords(PasswordArgs),
}

#[derive(Args)]
struct PdfArgs {
    /// Documents rendered.
    #[arg(long, default_value_t = 200)]
    documents: usize,
    /// Visits listed in each extract.
    #[arg(long, default_value_t = 20)]
    visits: usize,
}

#[derive(Args)]
struct PasswordArgs {
    /// Passwords hashed, then checked.
    #[arg(long, default_value_t = 20)]
    passwords: usize,
}

#[derive(Args)]
struct WriteArgs {
    /// sqlite://PATH or postgres://…
    #[arg(long)]
    database_url: String,
    /// Streams written concurrently, one task each.
    #[arg(long, default_value_t = 4)]
    streams: usize,
    /// Events per stream, one per commit.
    #[arg(long, default_value_t = 100)]
    events: usize,
    /// Streams are named PREFIX-0, PREFIX-1, …
    #[arg(long)]
    prefix: String,
    /// Size of the connection pool.
    #[arg(long, default_value_t = 4)]
    connections: u32,
}

#[derive(Args)]
struct JournalArgs {
    /// Benchmark this database instead of a fresh one (it is migrated, never dropped).
    #[arg(long)]
    database_url: Option<String>,
    /// Backend of the fresh database: sqlite (a temporary file) or postgres
    /// (a new database on KABINET_TEST_PG_URL, dropped afterwards).
    #[arg(long, default_value = "sqlite")]
    backend: TestBackend,
    /// Commits per writer in each append run.
    #[arg(long, default_value_t = 300)]
    events_per_writer: usize,
    /// Concurrent writers of the append runs.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    writers: Vec<usize>,
    /// Events the projector catches up over.
    #[arg(long, default_value_t = 1_000_000)]
    catch_up_events: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Write(args) => write(args).await,
        Command::Journal(args) => journal(args).await,
        Command::Api(args) => kabinet_tests::api_bench::run(args).await,
        Command::Pdf(args) => pdf(args),
        Command::Passwords(args) => passwords(args).await,
    }
}

/// An extract of `visits` visits, as the documents feature renders one.
fn extract(visits: usize, n: usize) -> kabinet_pdf::PdfDocument {
    use kabinet_pdf::{PdfBlock, PdfDocument};
    let mut blocks = vec![
        PdfBlock::Heading("Выписка из истории болезни".into()),
        PdfBlock::Field {
            label: "Пациент".into(),
            value: format!("Смирнов Олег Игоревич №{n}"),
        },
        PdfBlock::Field {
            label: "Период".into(),
            value: "01.01.2026 — 30.11.2026".into(),
        },
        PdfBlock::Rule,
    ];
    for v in 0..visits {
        blocks.push(PdfBlock::Heading(format!(
            "Приём {}.{:02}.2026, терапевт",
            1 + v % 28,
            1 + v % 11
        )));
        blocks.push(PdfBlock::Field {
            label: "Диагноз".into(),
            value: "J06.9 Острая инфекция верхних дыхательных путей неуточнённая".into(),
        });
        blocks.push(PdfBlock::Paragraph(
            "Рекомендации: обильное тёплое питьё, постельный режим три дня, \
             повторный приём при сохранении температуры выше 38 °C."
                .into(),
        ));
    }
    PdfDocument {
        title: "Выписка из истории болезни".into(),
        blocks,
        qr: Some(format!("https://kabinet.example/verify/document/{n:032x}")),
    }
}

fn pdf(args: PdfArgs) -> anyhow::Result<()> {
    let documents: Vec<_> = (0..args.documents)
        .map(|n| extract(args.visits, n))
        .collect();
    let started = std::time::Instant::now();
    let mut bytes = 0usize;
    for document in &documents {
        bytes += kabinet_pdf::render(document).len();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let same = kabinet_pdf::render(&documents[0]) == kabinet_pdf::render(&documents[0]);
    println!(
        "pdf: {} extracts of {} visits in {:.2} s: {:.1} documents/s, {:.2} ms each, {:.1} KiB average; rendering twice gives the same bytes: {same}",
        args.documents,
        args.visits,
        elapsed,
        args.documents as f64 / elapsed,
        elapsed * 1000.0 / args.documents as f64,
        bytes as f64 / args.documents as f64 / 1024.0,
    );
    Ok(())
}

async fn passwords(args: PasswordArgs) -> anyhow::Result<()> {
    use kabinet_adapters::password_hash as password;
    let mut stored = Vec::with_capacity(args.passwords);
    let started = std::time::Instant::now();
    for n in 0..args.passwords {
        stored.push(password::hash(&format!("Очень-длинный-пароль-{n}")).await?);
    }
    let hashing = started.elapsed().as_secs_f64();
    let started = std::time::Instant::now();
    for (n, hash) in stored.iter().enumerate() {
        anyhow::ensure!(
            password::verify(&format!("Очень-длинный-пароль-{n}"), Some(hash)).await?,
            "a stored hash did not verify"
        );
    }
    let checking = started.elapsed().as_secs_f64();
    println!(
        "argon2id (m=19456 KiB, t=2, p=1): hash {:.1} ms, check {:.1} ms per password ({} passwords); one core does about {:.0} sign-in checks/s",
        hashing * 1000.0 / args.passwords as f64,
        checking * 1000.0 / args.passwords as f64,
        args.passwords,
        args.passwords as f64 / checking,
    );
    Ok(())
}

async fn write(args: WriteArgs) -> anyhow::Result<()> {
    let options = PoolOptions {
        max_connections: args.connections,
        acquire_timeout: Duration::from_secs(60),
    };
    let db = Db::connect(&args.database_url, &options).await?;
    db.migrate().await?;
    let commands = CommandRunner::new(Journal::new(db));
    let account = Uuid::new_v4();
    let mut tasks = JoinSet::new();
    for s in 0..args.streams {
        let id = format!("{}-{s}", args.prefix);
        let commands = commands.clone();
        let events = args.events;
        tasks.spawn(async move {
            for n in 1..=events {
                let outcome = add(&commands, &id, n as i64, account, Retry::OnConflict)
                    .await
                    .map_err(|e| anyhow!("{id}: {e}"))?;
                for event in &outcome.events {
                    // One line per acknowledged event, flushed before the next commit:
                    // whatever a killed writer printed was committed.
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ack {id} {}", event.sequence)?;
                    out.flush()?;
                }
            }
            anyhow::Ok(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    Ok(())
}

/// A committed-equivalent event row with its chain hash, for raw INSERTs.
struct RawRow {
    aggregate_id: String,
    sequence: i64,
    payload: Value,
    /// Canonical JSON text of the payload (SQLite stores text).
    payload_text: String,
    metadata: Value,
    metadata_text: String,
    hash: Hash,
}

/// `count` chained tally events of stream `aggregate_id`, as the journal would write them.
fn raw_stream(aggregate_id: &str, count: usize, metadata: &Value) -> anyhow::Result<Vec<RawRow>> {
    let metadata_text = canonical(metadata)?;
    let mut prev = GENESIS;
    let mut rows = Vec::with_capacity(count);
    for sequence in 1..=count as i64 {
        let payload = json!({ "Added": { "amount": sequence } });
        let hash = EventContent {
            aggregate_type: "tally",
            aggregate_id,
            sequence,
            event_type: "Added",
            event_version: "1",
            payload: &payload,
            metadata,
        }
        .hash(&prev)?;
        prev = hash;
        rows.push(RawRow {
            aggregate_id: aggregate_id.to_string(),
            sequence,
            payload_text: canonical(&payload)?,
            payload,
            metadata: metadata.clone(),
            metadata_text: metadata_text.clone(),
            hash,
        });
    }
    Ok(rows)
}

fn canonical(value: &Value) -> anyhow::Result<String> {
    Ok(String::from_utf8(
        kabinet_domain::canonical::to_canonical_bytes(value)?,
    )?)
}

fn metadata_value(account: Uuid) -> anyhow::Result<Value> {
    Ok(serde_json::to_value(metadata_of(account).to_map())?)
}

const PG_INSERT_ONE: &str = "INSERT INTO events \
     (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, hash) \
     VALUES ('tally', $1, $2, 'Added', '1', $3, $4, $5)";

const SQLITE_INSERT_ONE: &str = "INSERT INTO events \
     (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, position, hash) \
     VALUES ('tally', $1, $2, 'Added', '1', $3, $4, (SELECT COALESCE(MAX(position), 0) + 1 FROM events), $5)";

/// Inserts `rows` one autocommitted statement at a time, as a journal without
/// chain, metadata handling or aggregate loading would.
async fn insert_one_by_one(journal: &Journal, rows: &[RawRow]) -> anyhow::Result<()> {
    for row in rows {
        match journal.db() {
            Db::Postgres(pool) => {
                sqlx::query(PG_INSERT_ONE)
                    .bind(&row.aggregate_id)
                    .bind(row.sequence)
                    .bind(&row.payload)
                    .bind(&row.metadata)
                    .bind(&row.hash[..])
                    .execute(pool)
                    .await?;
            }
            Db::Sqlite(pool) => {
                // Same queueing as the journal's own SQLite writers, so the
                // comparison is not decided by SQLite's busy-handler sleeps.
                let _writer = journal.lock_sqlite_writer().await;
                sqlx::query(SQLITE_INSERT_ONE)
                    .bind(&row.aggregate_id)
                    .bind(row.sequence)
                    .bind(&row.payload_text)
                    .bind(&row.metadata_text)
                    .bind(&row.hash[..])
                    .execute(pool)
                    .await?;
            }
        }
    }
    Ok(())
}

async fn journal(args: JournalArgs) -> anyhow::Result<()> {
    let options = PoolOptions {
        max_connections: 40,
        acquire_timeout: Duration::from_secs(120),
    };
    let (journal, fresh) = match &args.database_url {
        Some(url) => {
            let db = Db::connect(url, &options).await?;
            db.migrate().await?;
            (Journal::new(db), None)
        }
        None => {
            let fresh = TestDb::fresh_with(args.backend, options)
                .await
                .ok_or_else(|| anyhow!("PostgreSQL is not reachable; see the message above"))?;
            (fresh.journal.clone(), Some(fresh))
        }
    };
    let result = run_journal_bench(&args, &journal).await;
    if let Some(fresh) = fresh {
        fresh.cleanup().await;
    }
    result
}

async fn run_journal_bench(args: &JournalArgs, journal: &Journal) -> anyhow::Result<()> {
    let db = journal.db();
    let durability = match db {
        Db::Postgres(pool) => {
            let sync: String = sqlx::query_scalar("SHOW synchronous_commit")
                .fetch_one(pool)
                .await?;
            let fsync: String = sqlx::query_scalar("SHOW fsync").fetch_one(pool).await?;
            let version: String = sqlx::query_scalar("SHOW server_version")
                .fetch_one(pool)
                .await?;
            format!("PostgreSQL {version}, synchronous_commit={sync}, fsync={fsync}")
        }
        Db::Sqlite(pool) => {
            let mut conn = pool.acquire().await?;
            let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
                .fetch_one(&mut *conn)
                .await?;
            let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
                .fetch_one(&mut *conn)
                .await?;
            let version: String = sqlx::query_scalar("SELECT sqlite_version()")
                .fetch_one(&mut *conn)
                .await?;
            let sync = match sync {
                0 => "OFF",
                1 => "NORMAL",
                2 => "FULL",
                3 => "EXTRA",
                _ => "?",
            };
            format!("SQLite {version}, journal_mode={mode}, synchronous={sync}")
        }
    };
    println!("## Journal appends — {durability}");
    println!();
    println!(
        "One event per commit, each writer on its own stream, {} commits per writer.",
        args.events_per_writer
    );
    println!();
    println!(
        "| writers | journal appends/s (PersistedEventStore commit) | commands/s (CommandRunner: load, decide, commit) | raw single-row INSERTs/s | appends/raw | commands/raw |"
    );
    println!("|--:|--:|--:|--:|--:|--:|");
    let run = Uuid::new_v4().simple().to_string();
    let commands = CommandRunner::new(journal.clone());
    for &writers in &args.writers {
        let account = Uuid::new_v4();
        // Journal appends through the command path.
        let started = Instant::now();
        let mut tasks = JoinSet::new();
        for w in 0..writers {
            let commands = commands.clone();
            let id = format!("bench-{run}-j{writers}-{w}");
            let n = args.events_per_writer;
            tasks.spawn(async move {
                for amount in 1..=n as i64 {
                    add(&commands, &id, amount, account, Retry::Never)
                        .await
                        .map_err(|e| anyhow!("append to {id}: {e}"))?;
                }
                anyhow::Ok(())
            });
        }
        while let Some(joined) = tasks.join_next().await {
            joined??;
        }
        let command_rate =
            (writers * args.events_per_writer) as f64 / started.elapsed().as_secs_f64();

        // Journal appends: each writer commits through one PersistedEventStore
        // that keeps its stream head, as a long-lived writer does.
        let started = Instant::now();
        let mut tasks = JoinSet::new();
        for w in 0..writers {
            let journal = journal.clone();
            let id = format!("bench-{run}-a{writers}-{w}");
            let n = args.events_per_writer;
            tasks.spawn(async move { append_keeping_head(&journal, &id, n, account).await });
        }
        while let Some(joined) = tasks.join_next().await {
            joined??;
        }
        let journal_rate =
            (writers * args.events_per_writer) as f64 / started.elapsed().as_secs_f64();

        // Raw INSERTs of equivalent rows, hashes computed beforehand.
        let metadata = metadata_value(account)?;
        let mut streams = Vec::with_capacity(writers);
        for w in 0..writers {
            let id = format!("bench-{run}-r{writers}-{w}");
            streams.push(raw_stream(&id, args.events_per_writer, &metadata)?);
        }
        let started = Instant::now();
        let mut tasks = JoinSet::new();
        for rows in streams {
            let journal = journal.clone();
            tasks.spawn(async move { insert_one_by_one(&journal, &rows).await });
        }
        while let Some(joined) = tasks.join_next().await {
            joined??;
        }
        let raw_rate = (writers * args.events_per_writer) as f64 / started.elapsed().as_secs_f64();
        println!(
            "| {writers} | {journal_rate:.0} | {command_rate:.0} | {raw_rate:.0} | {:.2} | {:.2} |",
            journal_rate / raw_rate,
            command_rate / raw_rate
        );
    }
    println!();

    // Projector catch-up over a large journal.
    let projector = Projector::new(
        journal.clone(),
        vec![Arc::new(ActivityLog)],
        ProjectorConfig::default(),
    );
    projector.catch_up().await?;
    let started = Instant::now();
    fill(journal, args.catch_up_events, &run).await?;
    let fill_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "filled {} events in {fill_secs:.1}s; catching up",
        args.catch_up_events
    );
    let peak_before_reset = status_kib("VmHWM");
    let reset = reset_peak_rss();
    let rss_before = status_kib("VmRSS");
    let peak_before = status_kib("VmHWM");
    let started = Instant::now();
    projector.catch_up().await?;
    let secs = started.elapsed().as_secs_f64();
    let peak_after = status_kib("VmHWM");
    let rss_after = status_kib("VmRSS");
    let total = journal.count().await?;

    println!(
        "## Projector catch-up — activity log only, batches of {}",
        ProjectorConfig::default().batch_size
    );
    println!();
    println!(
        "Journal filled with {} valid chained events (streams of 10, multi-row INSERTs) in {fill_secs:.1}s; {total} events in the journal.",
        args.catch_up_events
    );
    println!();
    println!("| events caught up | seconds | events/s | VmRSS before | VmHWM before | VmHWM after | VmRSS after |");
    println!("|--:|--:|--:|--:|--:|--:|--:|");
    println!(
        "| {} | {secs:.1} | {:.0} | {} | {} | {} | {} |",
        args.catch_up_events,
        args.catch_up_events as f64 / secs,
        mib(rss_before),
        mib(peak_before),
        mib(peak_after),
        mib(rss_after)
    );
    println!();
    if reset {
        println!(
            "VmHWM (peak RSS) was reset through /proc/self/clear_refs just before the catch-up \
             (peak of the whole run before the reset: {}), so \"VmHWM after\" is the catch-up's own peak.",
            mib(peak_before_reset)
        );
    } else {
        println!("VmHWM could not be reset (/proc/self/clear_refs not writable): it is the peak of the whole process.");
    }
    Ok(())
}

/// Appends `n` tally events to stream `id` through one `PersistedEventStore`:
/// the stream is loaded once, then every commit chains onto the head the
/// repository remembers (one hash and one INSERT per event).
async fn append_keeping_head(
    journal: &Journal,
    id: &str,
    n: usize,
    account: Uuid,
) -> anyhow::Result<()> {
    let store = PersistedEventStore::<_, Tally>::new_event_store(journal.repository());
    let loaded = store
        .load_aggregate(id)
        .await
        .map_err(|e| anyhow!("load {id}: {e}"))?;
    let (mut state, mut sequence) = (loaded.aggregate, loaded.current_sequence);
    let metadata = metadata_of(account).to_map();
    for amount in 1..=n as i64 {
        let event = TallyEvent::Added { amount };
        let context = EventStoreAggregateContext {
            aggregate_id: id.to_string(),
            aggregate: state.clone(),
            current_sequence: sequence,
            current_snapshot: None,
        };
        store
            .commit(vec![event.clone()], context, metadata.clone())
            .await
            .map_err(|e| anyhow!("append to {id}: {e}"))?;
        state.apply(event);
        sequence += 1;
    }
    Ok(())
}

/// Appends `count` valid chained events (streams of 10) with multi-row INSERTs.
async fn fill(journal: &Journal, count: usize, run: &str) -> anyhow::Result<()> {
    const STREAM_LEN: usize = 10;
    const ROWS_PER_INSERT: usize = 1000;
    let streams = count.div_ceil(STREAM_LEN);
    // A thousand accounts act, so the activity log has realistic fan-out.
    let accounts: Arc<Vec<Uuid>> = Arc::new((0..1000).map(|_| Uuid::new_v4()).collect());
    let tasks = match journal.db() {
        Db::Postgres(_) => 2,
        // One writer at a time anyway; positions are assigned here.
        Db::Sqlite(_) => 1,
    };
    let mut set = JoinSet::new();
    for task in 0..tasks {
        let journal = journal.clone();
        let accounts = Arc::clone(&accounts);
        let run = run.to_string();
        set.spawn(async move {
            let mut batch: Vec<RawRow> = Vec::with_capacity(ROWS_PER_INSERT);
            let mut written = 0usize;
            let mut s = task;
            while s < streams {
                let remaining = count - s * STREAM_LEN;
                let len = remaining.min(STREAM_LEN);
                let metadata = metadata_value(accounts[s % accounts.len()])?;
                batch.extend(raw_stream(&format!("fill-{run}-{s}"), len, &metadata)?);
                if batch.len() >= ROWS_PER_INSERT {
                    insert_many(&journal, &batch).await?;
                    written += batch.len();
                    batch.clear();
                    if task == 0 && written % 100_000 < ROWS_PER_INSERT {
                        eprintln!("filling: ~{} events", written * tasks);
                    }
                }
                s += tasks;
            }
            if !batch.is_empty() {
                insert_many(&journal, &batch).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(joined) = set.join_next().await {
        joined??;
    }
    Ok(())
}

/// One multi-row INSERT of `rows`.
async fn insert_many(journal: &Journal, rows: &[RawRow]) -> anyhow::Result<()> {
    match journal.db() {
        Db::Postgres(pool) => {
            let mut q = QueryBuilder::<sqlx::Postgres>::new(
                "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
                 event_version, payload, metadata, hash) ",
            );
            q.push_values(rows, |mut b, row| {
                b.push_bind("tally")
                    .push_bind(&row.aggregate_id)
                    .push_bind(row.sequence)
                    .push_bind("Added")
                    .push_bind("1")
                    .push_bind(&row.payload)
                    .push_bind(&row.metadata)
                    .push_bind(&row.hash[..]);
            });
            q.build().execute(pool).await?;
        }
        Db::Sqlite(pool) => {
            let _writer = journal.lock_sqlite_writer().await;
            let mut tx = pool.begin().await?;
            let last: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM events")
                .fetch_one(&mut *tx)
                .await?;
            let mut q = QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
                 event_version, payload, metadata, position, hash) ",
            );
            let mut position = last;
            q.push_values(rows, |mut b, row| {
                position += 1;
                b.push_bind("tally")
                    .push_bind(&row.aggregate_id)
                    .push_bind(row.sequence)
                    .push_bind("Added")
                    .push_bind("1")
                    .push_bind(&row.payload_text)
                    .push_bind(&row.metadata_text)
                    .push_bind(position)
                    .push_bind(&row.hash[..]);
            });
            q.build().execute(&mut *tx).await?;
            tx.commit().await?;
        }
    }
    Ok(())
}

/// A `/proc/self/status` field in KiB (e.g. `VmHWM`, the peak resident set).
fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Resets VmHWM to the current RSS (Linux: `echo 5 > /proc/self/clear_refs`).
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}
