//! The API benchmark: bookings through the GraphQL HTTP endpoint of a server
//! running as its own process, beside the raw INSERT rate of the same machine,
//! and `myAppointments` latency over a journal of a million events.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{Duration as Days, NaiveDate, Utc};
use clap::Args;
use kabinet_domain::appointments::{AppointmentEvent, AppointmentStatus, BookedSlot, ChangedBy};
use kabinet_domain::canonical::to_canonical_bytes;
use kabinet_domain::journal::chain::{EventContent, GENESIS};
use kabinet_domain::{Actor, Db, EventMetadata, Role};
use serde_json::{json, Value};
use sqlx::QueryBuilder;
use uuid::Uuid;

use crate::clinic::{
    doctor_input, organisation_details, publish_schedule, register_doctor, register_organisation,
    schedule_input, with,
};
use crate::server::{Client, ServerProcess};
use crate::{TestBackend, TestDb};

/// Options of `kabinet-bench api`.
#[derive(Debug, Args)]
pub struct ApiBenchArgs {
    /// sqlite (a temporary file) or postgres (a new database on KABINET_TEST_PG_URL).
    #[arg(long, default_value = "sqlite")]
    pub backend: TestBackend,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Bookings of distinct slots.
    #[arg(long, default_value_t = 2000)]
    pub bookings: usize,
    /// Booking attempts on the 10 contended slots (winners cancel at once).
    #[arg(long, default_value_t = 2000)]
    pub contended_attempts: usize,
    /// Events in the journal when `myAppointments` is measured.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: usize,
    /// `myAppointments` queries measured.
    #[arg(long, default_value_t = 2000)]
    pub queries: usize,
    /// Raw single-row INSERTs per writer for the yardstick.
    #[arg(long, default_value_t = 300)]
    pub raw_inserts_per_writer: usize,
}

/// Latency summary in milliseconds.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn summary(mut latencies: Vec<f64>) -> (f64, f64) {
    latencies.sort_by(|a, b| a.total_cmp(b));
    (percentile(&latencies, 50.0), percentile(&latencies, 99.0))
}

/// Resident set of process `pid` in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        line.strip_prefix("VmRSS:")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// Samples the server's resident memory every 100 ms; returns the peak so far.
struct RssWatch {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssWatch {
    fn start(pid: u32) -> RssWatch {
        let (peak, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (p, s) = (peak.clone(), stop.clone());
        tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                if let Some(kib) = rss_kib(pid) {
                    p.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        RssWatch { peak, stop }
    }

    fn peak_mib(&self) -> f64 {
        self.peak.load(Ordering::Relaxed) as f64 / 1024.0
    }
}

impl Drop for RssWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

async fn ok(client: &Client, token: &str, query: &str, variables: Value) -> anyhow::Result<Value> {
    let response = client.graphql(Some(token), query, variables).await;
    if let Some(errors) = response.get("errors") {
        anyhow::bail!("GraphQL errors: {errors}");
    }
    Ok(response["data"].clone())
}

struct Setup {
    registrar: String,
    doctors: Vec<String>,
    tomorrow: NaiveDate,
}

/// An organisation with `doctors` doctors, each with 14 days of 08:00–20:00 in 20-minute slots.
async fn setup(client: &Client, doctors: usize) -> anyhow::Result<Setup> {
    let admin = client.token(Role::Admin, None);
    let organisation = register_organisation(
        client,
        &admin,
        with(
            organisation_details("Поликлиника нагрузочного теста"),
            json!({ "address": "ул. Тестовая, 1" }),
        ),
    )
    .await;
    let (org_id, org_uuid) = (organisation.id, organisation.uuid);
    let registrar = client.token(Role::Registrar, Some(org_uuid));
    let tz: chrono_tz::Tz = chrono_tz::Europe::Moscow;
    let tomorrow = (Utc::now().with_timezone(&tz) + Days::days(1)).date_naive();
    let mut ids = Vec::new();
    for i in 0..doctors {
        let doctor = with(
            doctor_input(&format!("Врач{i}"), &org_id),
            json!({ "firstName": "Тест", "patronymic": null,
                "qualification": "первая категория", "serviceCodes": [] }),
        );
        let id = register_doctor(client, &registrar, doctor).await.id;
        for day in 0..14 {
            let date = tomorrow + Days::days(day);
            let period = with(
                schedule_input(&id, &date.to_string()),
                json!({ "start": "08:00", "end": "20:00", "room": "101", "serviceCodes": [],
                    "bookingHorizonDays": 20, "changeCutoffHours": 0 }),
            );
            let published = publish_schedule(client, &registrar, period).await;
            if published["userErrors"] != json!([]) {
                anyhow::bail!("publishing failed: {published}");
            }
        }
        ids.push(id);
    }
    Ok(Setup {
        registrar,
        doctors: ids,
        tomorrow,
    })
}

async fn free_slots(
    client: &Client,
    doctor: &str,
    from: NaiveDate,
    to: NaiveDate,
) -> anyhow::Result<Vec<String>> {
    let data = client
        .data(None, "query($d: ID!, $f: String!, $t: String!) { freeSlots(doctorId: $d, from: $f, to: $t) { id } }",
            json!({ "d": doctor, "f": from.to_string(), "t": to.to_string() }))
        .await;
    Ok(data["freeSlots"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}

const BOOK: &str = "mutation($i: BookAppointmentInput!) { bookAppointment(input: $i) { appointment { id } userErrors { code } } }";
const CANCEL: &str = "mutation($i: CancelAppointmentInput!) { cancelAppointment(input: $i) { appointment { status } userErrors { code } } }";

/// Raw single-row INSERTs by `writers` concurrent writers: the yardstick.
async fn raw_insert_rate(db: &Db, writers: usize, per_writer: usize) -> anyhow::Result<f64> {
    let metadata = json!({ "actor_id": Uuid::nil().to_string(), "actor_role": "system" });
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..writers {
        let (db, metadata) = (db.clone(), metadata.clone());
        tasks.spawn(async move {
            let stream = format!("raw-{}-{w}", Uuid::new_v4().simple());
            let mut prev = GENESIS;
            for seq in 1..=per_writer as i64 {
                let payload = json!({ "Added": { "amount": seq } });
                let hash = EventContent { aggregate_type: "raw", aggregate_id: &stream, sequence: seq, event_type: "Added",
                    event_version: "1", payload: &payload, metadata: &metadata }.hash(&prev)?;
                prev = hash;
                match &db {
                    Db::Postgres(pool) => {
                        sqlx::query("INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, hash) \
                                     VALUES ('raw', $1, $2, 'Added', '1', $3, $4, $5)")
                            .bind(&stream).bind(seq).bind(&payload).bind(&metadata).bind(&hash[..])
                            .execute(pool).await?;
                    }
                    Db::Sqlite(pool) => {
                        sqlx::query("INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, position, hash) \
                                     VALUES ('raw', $1, $2, 'Added', '1', $3, $4, (SELECT COALESCE(MAX(position), 0) + 1 FROM events), $5)")
                            .bind(&stream).bind(seq).bind(payload.to_string()).bind(metadata.to_string()).bind(&hash[..])
                            .execute(pool).await?;
                    }
                }
            }
            anyhow::Ok(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    Ok((writers * per_writer) as f64 / started.elapsed().as_secs_f64())
}

/// Fills the journal with `count` booked appointments of `patients` patients, as
/// the journal would have written them (valid chain), with multi-row INSERTs.
async fn fill_appointments(db: &Db, count: usize, patients: &[Uuid]) -> anyhow::Result<()> {
    let doctor = Uuid::now_v7();
    let organisation = Uuid::now_v7();
    let start_day = Utc::now() + Days::days(400);
    let mut done = 0usize;
    while done < count {
        let n = (count - done).min(1000);
        let mut rows = Vec::with_capacity(n);
        for i in 0..n {
            let k = done + i;
            let patient = patients[k % patients.len()];
            let start = start_day + Days::minutes(20 * k as i64);
            let event = AppointmentEvent::AppointmentBooked {
                patient_id: patient,
                slot: BookedSlot {
                    doctor_id: doctor,
                    organisation_id: organisation,
                    period_id: Uuid::nil(),
                    start,
                    end: start + Days::minutes(20),
                    day: start.date_naive(),
                    time_zone: "Europe/Moscow".into(),
                    room: "101".into(),
                    change_cutoff_hours: 2,
                },
                service_code: None,
                by: ChangedBy::Patient,
                status: AppointmentStatus::Booked,
            };
            let payload = serde_json::to_value(&event)?;
            let actor = Actor {
                account_id: patient,
                role: Role::Patient,
                organisation_id: None,
            };
            let metadata = serde_json::to_value(EventMetadata::new(actor, "bench-fill").to_map())?;
            let id = Uuid::now_v7().to_string();
            let hash = EventContent {
                aggregate_type: "appointment",
                aggregate_id: &id,
                sequence: 1,
                event_type: "AppointmentBooked",
                event_version: "1",
                payload: &payload,
                metadata: &metadata,
            }
            .hash(&GENESIS)?;
            rows.push((id, payload, metadata, hash));
        }
        match db {
            Db::Postgres(pool) => {
                let mut q = QueryBuilder::<sqlx::Postgres>::new(
                    "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, hash) ");
                q.push_values(&rows, |mut b, (id, payload, metadata, hash)| {
                    b.push_bind("appointment")
                        .push_bind(id)
                        .push_bind(1i64)
                        .push_bind("AppointmentBooked")
                        .push_bind("1")
                        .push_bind(payload)
                        .push_bind(metadata)
                        .push_bind(&hash[..]);
                });
                q.build().execute(pool).await?;
            }
            Db::Sqlite(pool) => {
                // IMMEDIATE: the server process writes too, and a read-then-write
                // transaction could not wait for it.
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let last: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM events")
                    .fetch_one(&mut *tx)
                    .await?;
                let texts: Vec<(String, String)> = rows
                    .iter()
                    .map(|(_, p, m, _)| {
                        Ok((
                            String::from_utf8(to_canonical_bytes(p)?)?,
                            String::from_utf8(to_canonical_bytes(m)?)?,
                        ))
                    })
                    .collect::<anyhow::Result<_>>()?;
                let mut q = QueryBuilder::<sqlx::Sqlite>::new(
                    "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, position, hash) ");
                let mut position = last;
                q.push_values(
                    rows.iter().zip(&texts),
                    |mut b, ((id, _, _, hash), (p, m))| {
                        position += 1;
                        b.push_bind("appointment")
                            .push_bind(id)
                            .push_bind(1i64)
                            .push_bind("AppointmentBooked")
                            .push_bind("1")
                            .push_bind(p)
                            .push_bind(m)
                            .push_bind(position)
                            .push_bind(&hash[..]);
                    },
                );
                q.build().execute(&mut *tx).await?;
                tx.commit().await?;
            }
        }
        done += n;
        if done.is_multiple_of(100_000) {
            eprintln!("  filled {done} events");
        }
    }
    Ok(())
}

/// Waits until every projection has applied the whole journal; returns how long it took.
async fn wait_caught_up(db: &Db) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let behind: i64 = kabinet_domain::on_db!(db, pool => {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM projection_checkpoints c WHERE c.name NOT LIKE '%#%' AND c.position < \
                 (SELECT COALESCE(MAX(position), 0) FROM events)",
            )
            .fetch_one(pool)
            .await?
        });
        if behind == 0 {
            return Ok(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(1800) {
            anyhow::bail!("the projections did not catch up within 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs the benchmark and prints a markdown table.
pub async fn run(args: ApiBenchArgs) -> anyhow::Result<()> {
    let test_db = TestDb::fresh(args.backend)
        .await
        .ok_or_else(|| anyhow::anyhow!("PostgreSQL is not reachable"))?;
    let binary = std::env::current_exe()?
        .parent()
        .map(|dir| dir.join("kabinet-server"))
        .ok_or_else(|| anyhow::anyhow!("cannot locate kabinet-server"))?;
    let server = ServerProcess::start(&binary.to_string_lossy(), &test_db.url).await;
    let pid = server
        .pid()
        .ok_or_else(|| anyhow::anyhow!("server has no pid"))?;
    let rss = RssWatch::start(pid);
    let client = server.client.clone();
    eprintln!("setting up the directory and schedules…");
    let setup = setup(&client, 8).await?;

    eprintln!("raw INSERT yardstick…");
    let raw = raw_insert_rate(&test_db.db, args.clients, args.raw_inserts_per_writer).await?;

    // Distinct slots: a queue of free slots over all doctors and days.
    let mut queue = VecDeque::new();
    for doctor in &setup.doctors[1..] {
        queue.extend(
            free_slots(
                &client,
                doctor,
                setup.tomorrow,
                setup.tomorrow + Days::days(13),
            )
            .await?,
        );
    }
    let bookings = args.bookings.min(queue.len());
    queue.truncate(bookings);
    let queue = Arc::new(Mutex::new(queue));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(bookings)));
    eprintln!(
        "booking {bookings} distinct slots with {} clients…",
        args.clients
    );
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.clients {
        let (client, queue, latencies) = (client.clone(), queue.clone(), latencies.clone());
        tasks.spawn(async move {
            let mut failures = 0u64;
            loop {
                let Some(slot) = queue
                    .lock()
                    .map_err(|_| anyhow::anyhow!("lock"))?
                    .pop_front()
                else {
                    break;
                };
                let token = client.token(Role::Patient, None);
                let t = Instant::now();
                let data = ok(&client, &token, BOOK, json!({ "i": { "slotId": slot } })).await?;
                latencies
                    .lock()
                    .map_err(|_| anyhow::anyhow!("lock"))?
                    .push(t.elapsed().as_secs_f64() * 1000.0);
                if !data["bookAppointment"]["appointment"]["id"].is_string() {
                    failures += 1;
                }
            }
            anyhow::Ok(failures)
        });
    }
    let mut failed = 0;
    while let Some(joined) = tasks.join_next().await {
        failed += joined??;
    }
    let distinct_rate = (bookings as u64 - failed) as f64 / started.elapsed().as_secs_f64();
    let (distinct_p50, distinct_p99) = summary(std::mem::take(
        &mut *latencies.lock().map_err(|_| anyhow::anyhow!("lock"))?,
    ));

    // Contention: everyone on the same 10 slots; a winner cancels at once.
    let hot: Vec<String> = free_slots(
        &client,
        &setup.doctors[0],
        setup.tomorrow + Days::days(2),
        setup.tomorrow + Days::days(2),
    )
    .await?
    .into_iter()
    .take(10)
    .collect();
    let hot = Arc::new(hot);
    let attempts = Arc::new(AtomicU64::new(0));
    let wins = Arc::new(AtomicU64::new(0));
    eprintln!(
        "{} attempts on 10 contended slots…",
        args.contended_attempts
    );
    let started = Instant::now();
    for c in 0..args.clients {
        let (client, hot, attempts, wins, latencies) = (
            client.clone(),
            hot.clone(),
            attempts.clone(),
            wins.clone(),
            latencies.clone(),
        );
        let limit = args.contended_attempts as u64;
        tasks.spawn(async move {
            let mut i = c;
            while attempts.fetch_add(1, Ordering::Relaxed) < limit {
                let token = client.token(Role::Patient, None);
                let t = Instant::now();
                let data = ok(
                    &client,
                    &token,
                    BOOK,
                    json!({ "i": { "slotId": hot[i % hot.len()] } }),
                )
                .await?;
                latencies
                    .lock()
                    .map_err(|_| anyhow::anyhow!("lock"))?
                    .push(t.elapsed().as_secs_f64() * 1000.0);
                if let Some(id) = data["bookAppointment"]["appointment"]["id"].as_str() {
                    wins.fetch_add(1, Ordering::Relaxed);
                    ok(
                        &client,
                        &token,
                        CANCEL,
                        json!({ "i": { "appointmentId": id } }),
                    )
                    .await?;
                }
                i += 1;
            }
            anyhow::Ok(0u64)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined??;
    }
    let contended_elapsed = started.elapsed().as_secs_f64();
    let contended_attempts = args.contended_attempts as f64;
    let (contended_p50, contended_p99) = summary(std::mem::take(
        &mut *latencies.lock().map_err(|_| anyhow::anyhow!("lock"))?,
    ));
    let contended_wins = wins.load(Ordering::Relaxed);

    // myAppointments over a journal of `events` events.
    let patients: Vec<Uuid> = (0..(args.events / 10).max(1))
        .map(|_| Uuid::now_v7())
        .collect();
    let existing = test_db.journal.count().await? as usize;
    let to_fill = args.events.saturating_sub(existing);
    eprintln!("filling the journal with {to_fill} appointment events…");
    fill_appointments(&test_db.db, to_fill, &patients).await?;
    eprintln!("waiting for the server's projections to catch up…");
    let catch_up = wait_caught_up(&test_db.db).await?;
    let total = test_db.journal.count().await?;
    let mut latencies = Vec::with_capacity(args.queries);
    for q in 0..args.queries {
        let patient = patients[(q * 7919) % patients.len()];
        let token = client.token_for(patient, Role::Patient, None);
        let t = Instant::now();
        let data = ok(&client, &token, "{ myAppointments(filter: { when: UPCOMING }, first: 20) { edges { node { id date time room status } } } }", json!({})).await?;
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
        if data["myAppointments"]["edges"]
            .as_array()
            .is_none_or(Vec::is_empty)
        {
            anyhow::bail!("patient {patient} has no appointments: {data}");
        }
    }
    let (query_p50, query_p99) = summary(latencies);

    let backend = format!("{:?}", args.backend).to_lowercase();
    println!(
        "\n### API benchmark ({backend}, {} clients)\n",
        args.clients
    );
    println!("| measurement | value |");
    println!("|---|---|");
    println!(
        "| raw single-row INSERT, {} writers | {raw:.0} rows/s |",
        args.clients
    );
    println!("| bookings, distinct slots ({bookings}) | {distinct_rate:.0} /s (p50 {distinct_p50:.1} ms, p99 {distinct_p99:.1} ms) |");
    println!(
        "| bookings / raw INSERT | {:.2} (target ≥ 0.35) |",
        distinct_rate / raw
    );
    println!("| contended: {contended_attempts} attempts on 10 slots | {:.0} attempts/s (p50 {contended_p50:.1} ms, p99 {contended_p99:.1} ms), {contended_wins} won and cancelled |",
        contended_attempts / contended_elapsed);
    println!("| projector catch-up of {to_fill} filled events (all read models, in the server) | {:.1} s, {:.0} events/s |",
        catch_up.as_secs_f64(), to_fill as f64 / catch_up.as_secs_f64().max(0.001));
    println!("| `myAppointments` with {total} events, {} sequential queries | p50 {query_p50:.2} ms, p99 {query_p99:.2} ms (target p99 ≤ 10 ms) |", args.queries);
    println!(
        "| server peak resident memory | {:.1} MiB (target < 150 MB) |",
        rss.peak_mib()
    );
    drop(rss);
    server.kill().await;
    let _ = setup.registrar;
    test_db.cleanup().await;
    Ok(())
}
