//! Journal and projector conformance: each test runs on SQLite and PostgreSQL
//! (`<test>::sqlite`, `<test>::postgres`) against a fresh database, and asserts
//! exact outcomes: one winner per sequence, every event projected exactly once
//! and in order, every tampering found at the right event, no acknowledged
//! event lost when a writer process is killed.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use kabinet_domain::command::{CommandError, CommandOutcome, Retry, MAX_CONFLICT_RETRIES};
use kabinet_domain::directory::{Organisation, OrganisationCommand};
use kabinet_domain::journal::chain::{EventContent, GENESIS};
use kabinet_domain::journal::verify::{verify_journal, BreakKind, VerifyReport};
use kabinet_domain::{Actor, Db, EventMetadata, Journal, JournalOrder, Role};
use kabinet_projections::activity_log::ActivityLog;
use kabinet_projections::{rebuild, Projector, ProjectorConfig, Wakeups};
use kabinet_tests::builders::organisation_details;
use kabinet_tests::{
    add, add_each, assert_seen_matches_journal, conformance, journal_events, metadata_of,
    run_conformance, seal_all, seen_events, SeenEvents, Tally, TallyCommand, TallyServices,
    TestBackend, TestDb,
};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, Barrier};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A unique name for this test's streams.
fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", Uuid::new_v4().simple())
}

/// A projector of [`SeenEvents`] alone, with small batches so batch boundaries
/// fall inside streams and inside concurrent bursts.
fn seen_projector(test_db: &TestDb) -> Projector {
    Projector::new(
        test_db.journal.clone(),
        vec![Arc::new(SeenEvents)],
        ProjectorConfig {
            batch_size: 7,
            poll_interval: Duration::from_millis(100),
        },
    )
}

/// The projector's runner tasks, as a server runs them.
struct Runners {
    shutdown: CancellationToken,
    handles: Vec<JoinHandle<()>>,
}

impl Runners {
    async fn start(projector: &Projector, journal: &Journal) -> Runners {
        let shutdown = CancellationToken::new();
        let wakeups = Wakeups::start(journal, shutdown.clone());
        let handles = projector
            .start(wakeups, shutdown.clone())
            .await
            .expect("start the projector");
        Runners { shutdown, handles }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        for handle in self.handles {
            handle.await.expect("a projector runner panicked");
        }
    }
}

async fn verify(db: &Db) -> VerifyReport {
    verify_journal(db, |_| {})
        .await
        .expect("run the chain check")
}

fn assert_intact(report: &VerifyReport) {
    assert!(
        report.is_intact(),
        "the journal should verify intact, but: {} ({} breaks)",
        report
            .first_break
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        report.breaks
    );
}

/// The sequences stored for one tally stream.
async fn stream_sequences(db: &Db, aggregate_id: &str) -> Vec<i64> {
    const SQL: &str = "SELECT sequence FROM events \
         WHERE aggregate_type = 'tally' AND aggregate_id = $1 ORDER BY sequence";
    kabinet_domain::on_db!(db, pool => {
        sqlx::query_scalar(SQL).bind(aggregate_id).fetch_all(pool).await.expect("read a stream")
    })
}

/// The global position of one event.
async fn position_of(db: &Db, aggregate_id: &str, sequence: i64) -> i64 {
    const SQL: &str = "SELECT position FROM events \
         WHERE aggregate_type = 'tally' AND aggregate_id = $1 AND sequence = $2";
    kabinet_domain::on_db!(db, pool => {
        sqlx::query_scalar(SQL)
            .bind(aggregate_id)
            .bind(sequence)
            .fetch_one(pool)
            .await
            .expect("find an event")
    })
}

/// Runs one tampering statement about stream `$1`; returns the rows it changed.
async fn tamper(db: &Db, sql: &str, aggregate_id: &str) -> u64 {
    kabinet_domain::on_db!(db, pool => {
        sqlx::query(sql)
            .bind(aggregate_id)
            .execute(pool)
            .await
            .expect("tamper with the journal")
            .rows_affected()
    })
}

/// `streams` tally streams of `events` events each, committed round robin so
/// their global positions interleave. Returns the stream ids.
async fn seed(test_db: &TestDb, streams: usize, events: i64) -> Vec<String> {
    let commands = test_db.commands();
    let account = Uuid::new_v4();
    let ids: Vec<String> = (0..streams).map(|_| unique("seed")).collect();
    for n in 1..=events {
        for id in &ids {
            add(&commands, id, n, account, Retry::Never)
                .await
                .expect("seed the journal");
        }
    }
    ids
}

/// The largest global order among outcomes.
fn last_order<'a>(outcomes: impl IntoIterator<Item = &'a CommandOutcome>) -> JournalOrder {
    outcomes
        .into_iter()
        .filter_map(CommandOutcome::last_order)
        .max()
        .unwrap_or(JournalOrder::START)
}

/// A `kabinet-bench write` process and the acknowledgements it prints.
struct WriterProcess {
    child: tokio::process::Child,
    acks: mpsc::UnboundedReceiver<(String, i64)>,
}

impl WriterProcess {
    /// Starts a writer of `streams` streams × `events` events named `prefix-N`.
    fn spawn(url: &str, prefix: &str, streams: usize, events: usize) -> WriterProcess {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kabinet-bench"))
            .args(["write", "--database-url", url, "--prefix", prefix])
            .args(["--streams", &streams.to_string()])
            .args(["--events", &events.to_string()])
            .args(["--connections", "3"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start kabinet-bench write");
        let stdout = child.stdout.take().expect("the writer's stdout");
        let (tx, acks) = mpsc::unbounded_channel();
        // Read continuously so a full pipe never stalls the writer.
        tokio::spawn(async move {
            let mut stdout = BufReader::new(stdout);
            let mut line = String::new();
            loop {
                line.clear();
                match stdout.read_line(&mut line).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                // A line cut short by SIGKILL was never fully acknowledged.
                let Some(line) = line.strip_suffix('\n') else {
                    return;
                };
                let mut parts = line.split(' ');
                let ack = match (parts.next(), parts.next(), parts.next(), parts.next()) {
                    (Some("ack"), Some(id), Some(seq), None) => {
                        (id.to_string(), seq.parse().expect("an ack's sequence"))
                    }
                    _ => panic!("unexpected line from the writer: {line:?}"),
                };
                if tx.send(ack).is_err() {
                    return;
                }
            }
        });
        WriterProcess { child, acks }
    }

    /// Waits for a clean exit and returns every acknowledgement.
    async fn finish(mut self) -> Vec<(String, i64)> {
        let status = tokio::time::timeout(Duration::from_secs(180), self.child.wait())
            .await
            .expect("the writer process did not finish in 3 minutes")
            .expect("wait for the writer process");
        assert!(status.success(), "the writer process failed: {status}");
        let mut acks = Vec::new();
        while let Some(ack) = self.acks.recv().await {
            acks.push(ack);
        }
        acks
    }
}

/// A `?application_name=…` URL, so the test can see a process's PostgreSQL sessions.
fn url_named(test_db: &TestDb, application: &str) -> String {
    match test_db.backend {
        TestBackend::Postgres => {
            let separator = if test_db.url.contains('?') { '&' } else { '?' };
            format!("{}{separator}application_name={application}", test_db.url)
        }
        TestBackend::Sqlite => test_db.url.clone(),
    }
}

/// Waits until no session of `application` is left (a killed client's statement
/// may still be committing server-side after the process is gone).
async fn wait_sessions_gone(db: &Db, application: &str) {
    let Db::Postgres(pool) = db else { return };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let left: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = $1",
        )
        .bind(application)
        .fetch_one(pool)
        .await
        .expect("read pg_stat_activity");
        if left == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the killed writer's sessions did not end within a minute"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------
// Concurrent appends to one stream
// ---------------------------------------------------------------------------

conformance!(
    racing_commits_to_one_stream_have_one_winner_per_sequence,
    |test_db: TestDb| async move {
        const RACERS: usize = 32;
        const ROUNDS: i64 = 3;
        let commands = test_db.commands();
        let id = unique("race");
        let account = Uuid::new_v4();
        for round in 1..=ROUNDS {
            // Every racer loads the same stream head before any of them commits.
            let gate = Arc::new(Barrier::new(RACERS));
            let mut racers = JoinSet::new();
            for racer in 0..RACERS {
                let (commands, id, gate) = (commands.clone(), id.clone(), Arc::clone(&gate));
                racers.spawn(async move {
                    let amount = racer as i64 + 1;
                    commands
                        .execute::<Tally>(
                            &id,
                            TallyCommand::Add { amount },
                            &TallyServices::gated(gate),
                            &metadata_of(account),
                            &json!({ "amount": amount }),
                            Retry::Never,
                        )
                        .await
                        .map(|(outcome, _)| outcome)
                });
            }
            let mut winners = Vec::new();
            let mut conflicts = 0;
            while let Some(joined) = racers.join_next().await {
                match joined.expect("a racer panicked") {
                    Ok(outcome) => winners.push(outcome),
                    Err(CommandError::Conflict) => conflicts += 1,
                    Err(e) => panic!("a racer failed with something other than a conflict: {e}"),
                }
            }
            assert_eq!(winners.len(), 1, "round {round}: exactly one racer commits");
            assert_eq!(
                conflicts,
                RACERS - 1,
                "round {round}: every other racer conflicts"
            );
            let sequences: Vec<i64> = winners[0].events.iter().map(|e| e.sequence).collect();
            assert_eq!(
                sequences,
                vec![round],
                "round {round}: the winner takes the next sequence"
            );
        }
        assert_eq!(
            stream_sequences(&test_db.db, &id).await,
            (1..=ROUNDS).collect::<Vec<_>>()
        );
        assert_eq!(test_db.journal.count().await.expect("count"), ROUNDS);
        assert_intact(&verify(&test_db.db).await);
    }
);

conformance!(
    retried_commits_to_one_stream_all_land_without_gaps,
    |test_db: TestDb| async move {
        // A conflict means another writer of the round committed in between, so
        // with at most MAX_CONFLICT_RETRIES others no writer runs out of retries.
        const WRITERS: usize = MAX_CONFLICT_RETRIES as usize + 1;
        const ROUNDS: usize = 5;
        let commands = test_db.commands();
        let id = unique("retry");
        let account = Uuid::new_v4();
        let mut sequences = Vec::new();
        let mut expected_total = 0;
        for round in 0..ROUNDS {
            let gate = Arc::new(Barrier::new(WRITERS));
            let mut writers = JoinSet::new();
            for writer in 0..WRITERS {
                let (commands, id, gate) = (commands.clone(), id.clone(), Arc::clone(&gate));
                let amount = (round * WRITERS + writer) as i64 + 1;
                expected_total += amount;
                writers.spawn(async move {
                    commands
                        .execute::<Tally>(
                            &id,
                            TallyCommand::Add { amount },
                            &TallyServices::gated(gate),
                            &metadata_of(account),
                            &json!({ "amount": amount }),
                            Retry::OnConflict,
                        )
                        .await
                });
            }
            while let Some(joined) = writers.join_next().await {
                let (outcome, _) = joined
                    .expect("a writer panicked")
                    .expect("a retried command must commit");
                assert!(!outcome.replayed);
                sequences.extend(outcome.events.iter().map(|e| e.sequence));
            }
        }
        sequences.sort_unstable();
        let n = (WRITERS * ROUNDS) as i64;
        assert_eq!(
            sequences,
            (1..=n).collect::<Vec<_>>(),
            "sequences 1..n, no gaps"
        );
        assert_eq!(stream_sequences(&test_db.db, &id).await, sequences);
        // Every retry decided on the fresh state: the sum holds every amount once.
        let (_, state) = commands
            .execute::<Tally>(
                &id,
                TallyCommand::Add { amount: 1 },
                &TallyServices::default(),
                &metadata_of(account),
                &json!({ "amount": 1 }),
                Retry::Never,
            )
            .await
            .expect("one more commit");
        assert_eq!(state.total, expected_total + 1);
        assert_eq!(state.additions, n + 1);
        assert_intact(&verify(&test_db.db).await);
    }
);

// ---------------------------------------------------------------------------
// The projector under concurrent writers
// ---------------------------------------------------------------------------

conformance!(
    projector_sees_every_event_once_in_order_while_many_tasks_write,
    |test_db: TestDb| async move {
        const TASKS: usize = 16;
        const STREAMS_PER_TASK: usize = 4;
        const ROUNDS: i64 = 8;
        let projector = seen_projector(&test_db);
        let runners = Runners::start(&projector, &test_db.journal).await;
        let commands = test_db.commands();
        let run = unique("many");
        let mut tasks = JoinSet::new();
        for task in 0..TASKS {
            let commands = commands.clone();
            let run = run.clone();
            tasks.spawn(async move {
                let account = Uuid::new_v4();
                let mut outcomes = Vec::new();
                for n in 1..=ROUNDS {
                    for stream in 0..STREAMS_PER_TASK {
                        let id = format!("{run}-{task}-{stream}");
                        // Some commits carry several events, so batch boundaries
                        // also fall inside one transaction's events.
                        let outcome = if (task + stream) % 3 == 0 {
                            add_each(&commands, &id, vec![n, n, n], account, Retry::Never).await
                        } else {
                            add(&commands, &id, n, account, Retry::Never).await
                        };
                        outcomes.push(outcome.expect("commit"));
                    }
                }
                outcomes
            });
        }
        let mut outcomes = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            outcomes.extend(joined.expect("a writer panicked"));
        }
        projector
            .wait_for(
                &[SeenEvents::NAME],
                last_order(&outcomes),
                Duration::from_secs(120),
            )
            .await
            .expect("the running projector catches up");
        runners.stop().await;
        let expected: usize = outcomes.iter().map(|o| o.events.len()).sum();
        assert!(expected > TASKS * STREAMS_PER_TASK * ROUNDS as usize);
        assert_eq!(assert_seen_matches_journal(&test_db.db).await, expected);
        // Catching up again finds nothing left and applies nothing twice.
        projector.catch_up().await.expect("catch up");
        assert_eq!(assert_seen_matches_journal(&test_db.db).await, expected);
        assert_intact(&verify(&test_db.db).await);
    }
);

conformance!(
    two_projector_processes_apply_each_event_once,
    |test_db: TestDb| async move {
        // A second "server process": its own pool, journal and projector runners.
        let other_journal = Journal::new(test_db.connect_again(4).await);
        let other_projector = Projector::new(
            other_journal.clone(),
            vec![Arc::new(SeenEvents)],
            ProjectorConfig {
                batch_size: 5,
                poll_interval: Duration::from_millis(100),
            },
        );
        let projector = seen_projector(&test_db);
        let runners = Runners::start(&projector, &test_db.journal).await;
        let other_runners = Runners::start(&other_projector, &other_journal).await;
        let services = [
            test_db.commands(),
            kabinet_domain::command::CommandRunner::new(other_journal.clone()),
        ];
        let run = unique("two-projectors");
        let mut tasks = JoinSet::new();
        for task in 0..8 {
            let commands = services[task % 2].clone();
            let id = format!("{run}-{task}");
            tasks.spawn(async move {
                let account = Uuid::new_v4();
                let mut outcomes = Vec::new();
                for n in 1..=12 {
                    outcomes.push(
                        add(&commands, &id, n, account, Retry::Never)
                            .await
                            .expect("commit"),
                    );
                }
                outcomes
            });
        }
        let mut outcomes = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            outcomes.extend(joined.expect("a writer panicked"));
        }
        let last = last_order(&outcomes);
        for p in [&projector, &other_projector] {
            p.wait_for(&[SeenEvents::NAME], last, Duration::from_secs(120))
                .await
                .expect("the projection catches up");
        }
        runners.stop().await;
        other_runners.stop().await;
        assert_eq!(assert_seen_matches_journal(&test_db.db).await, 8 * 12);
        other_journal.db().close().await;
    }
);

/// PostgreSQL assigns positions at INSERT but readers see rows at COMMIT: an
/// event with a lower position that commits later must still be projected,
/// before the higher one, and the reader must hold the higher one back meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_projector_never_skips_a_lower_position_committed_later() {
    run_conformance(TestBackend::Postgres, |test_db: TestDb| async move {
        let Db::Postgres(pool) = &test_db.db else {
            unreachable!("a PostgreSQL test database")
        };
        let projector = seen_projector(&test_db);
        let runners = Runners::start(&projector, &test_db.journal).await;
        let account = Uuid::new_v4();

        // An earlier writer: takes its position now, commits at the end.
        let early_id = unique("early");
        let payload = json!({ "Added": { "amount": 1 } });
        let metadata = serde_json::to_value(metadata_of(account).to_map()).expect("metadata");
        let hash = EventContent {
            aggregate_type: "tally",
            aggregate_id: &early_id,
            sequence: 1,
            event_type: "Added",
            event_version: "1",
            payload: &payload,
            metadata: &metadata,
        }
        .hash(&GENESIS)
        .expect("hash");
        let mut early = pool.begin().await.expect("begin");
        let (early_position, early_tx): (i64, i64) = sqlx::query_as(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
             event_version, payload, metadata, hash) \
             VALUES ('tally', $1, 1, 'Added', '1', $2, $3, $4) \
             RETURNING position, tx_id::text::bigint",
        )
        .bind(&early_id)
        .bind(&payload)
        .bind(&metadata)
        .bind(&hash[..])
        .fetch_one(&mut *early)
        .await
        .expect("insert the early event");

        // A later writer commits first.
        let late_id = unique("late");
        let late = add(&test_db.commands(), &late_id, 1, account, Retry::Never)
            .await
            .expect("commit the late event");
        let late_order = late.last_order().expect("the late event's order");
        assert!(late_order.position > early_position && late_order.tx > early_tx);

        // The reader holds the later event back while the earlier transaction runs.
        let visible = test_db
            .journal
            .reader()
            .read_after(JournalOrder::START, 100)
            .await
            .expect("read");
        assert!(
            visible.is_empty(),
            "read_after returned {:?} while an earlier transaction was still open",
            visible.iter().map(|e| &e.aggregate_id).collect::<Vec<_>>()
        );
        // Catch-up cannot finish and applies nothing meanwhile; neither do the runners.
        let held = tokio::time::timeout(Duration::from_millis(500), projector.catch_up()).await;
        assert!(
            held.is_err(),
            "catch-up finished while an earlier transaction was open"
        );
        assert!(seen_events(&test_db.db).await.is_empty());

        early.commit().await.expect("commit the early event");
        projector
            .wait_for(&[SeenEvents::NAME], late_order, Duration::from_secs(60))
            .await
            .expect("the projector catches up");
        runners.stop().await;
        projector.catch_up().await.expect("catch up");
        assert_eq!(assert_seen_matches_journal(&test_db.db).await, 2);
        let order: Vec<String> = seen_events(&test_db.db)
            .await
            .into_iter()
            .map(|r| r.aggregate_id)
            .collect();
        assert_eq!(order, vec![early_id.clone(), late_id.clone()]);
        let all: Vec<String> = test_db
            .journal
            .reader()
            .read_after(JournalOrder::START, 100)
            .await
            .expect("read")
            .into_iter()
            .map(|e| e.aggregate_id)
            .collect();
        assert_eq!(all, vec![early_id, late_id]);
        assert_intact(&verify(&test_db.db).await);
    })
    .await
}

// ---------------------------------------------------------------------------
// Several processes
// ---------------------------------------------------------------------------

conformance!(
    two_writer_processes_and_local_writers_lose_nothing,
    |test_db: TestDb| async move {
        const STREAMS: usize = 4;
        const EVENTS: usize = 50;
        let projector = seen_projector(&test_db);
        let runners = Runners::start(&projector, &test_db.journal).await;
        let run = unique("procs");
        let processes: Vec<WriterProcess> = ["a", "b"]
            .iter()
            .map(|p| WriterProcess::spawn(&test_db.url, &format!("{run}-{p}"), STREAMS, EVENTS))
            .collect();
        let commands = test_db.commands();
        let mut local = JoinSet::new();
        for stream in 0..STREAMS {
            let commands = commands.clone();
            let id = format!("{run}-local-{stream}");
            local.spawn(async move {
                let account = Uuid::new_v4();
                for n in 1..=EVENTS as i64 {
                    add(&commands, &id, n, account, Retry::Never)
                        .await
                        .expect("commit in process");
                }
            });
        }
        while let Some(joined) = local.join_next().await {
            joined.expect("a local writer panicked");
        }
        let mut acks = Vec::new();
        for process in processes {
            let process_acks = process.finish().await;
            assert_eq!(process_acks.len(), STREAMS * EVENTS);
            acks.extend(process_acks);
        }
        // The runners may have stopped on a poll; catch up the rest, then check.
        runners.stop().await;
        projector.catch_up().await.expect("catch up");
        let total = 3 * STREAMS * EVENTS;
        assert_eq!(assert_seen_matches_journal(&test_db.db).await, total);
        let journal: BTreeSet<(String, i64)> = journal_events(&test_db.db)
            .await
            .into_iter()
            .map(|(_, id, sequence, _, _)| (id, sequence))
            .collect();
        for ack in &acks {
            assert!(
                journal.contains(ack),
                "acknowledged {ack:?} is not in the journal"
            );
        }
        assert_eq!(journal.len(), total);
        assert_intact(&verify(&test_db.db).await);
    }
);

conformance!(
    killed_writer_loses_no_acknowledged_event,
    |test_db: TestDb| async move {
        const STREAMS: usize = 4;
        const ACKS_BEFORE_KILL: usize = 400;
        let prefix = unique("kill");
        let application = format!("writer-{prefix}");
        let mut writer = WriterProcess::spawn(
            &url_named(&test_db, &application),
            &prefix,
            STREAMS,
            1_000_000,
        );
        let mut acks = Vec::new();
        while acks.len() < ACKS_BEFORE_KILL {
            match tokio::time::timeout(Duration::from_secs(60), writer.acks.recv()).await {
                Ok(Some(ack)) => acks.push(ack),
                Ok(None) => panic!("the writer stopped after {} acks", acks.len()),
                Err(_) => panic!("the writer acknowledged nothing for a minute"),
            }
        }
        writer.child.start_kill().expect("SIGKILL the writer");
        let status = writer.child.wait().await.expect("reap the writer");
        assert_eq!(
            status.signal(),
            Some(9),
            "the writer died of SIGKILL: {status}"
        );
        // Whatever it printed before dying was acknowledged.
        while let Some(ack) = writer.acks.recv().await {
            acks.push(ack);
        }
        wait_sessions_gone(&test_db.db, &application).await;

        let journal = journal_events(&test_db.db).await;
        let stored: BTreeSet<(&str, i64)> = journal
            .iter()
            .map(|(_, id, sequence, _, _)| (id.as_str(), *sequence))
            .collect();
        let mut acked_head: BTreeMap<&str, i64> = BTreeMap::new();
        for (id, sequence) in &acks {
            assert!(
                stored.contains(&(id.as_str(), *sequence)),
                "acknowledged {id}#{sequence} is missing after the kill"
            );
            let head = acked_head.entry(id.as_str()).or_default();
            *head = (*head).max(*sequence);
        }
        assert_eq!(acked_head.len(), STREAMS);
        // Each stream's writer commits one event at a time: at most the one in
        // flight at the kill was committed without being acknowledged.
        for (id, head) in &acked_head {
            let sequences = stream_sequences(&test_db.db, id).await;
            let stored_head = sequences.len() as i64;
            assert!(
                stored_head == *head || stored_head == head + 1,
                "{id}: {stored_head} stored, {head} acknowledged"
            );
        }
        assert_intact(&verify(&test_db.db).await);
        seen_projector(&test_db)
            .catch_up()
            .await
            .expect("catch up after the kill");
        assert_eq!(
            assert_seen_matches_journal(&test_db.db).await,
            journal.len()
        );
    }
);

// ---------------------------------------------------------------------------
// Idempotency
// ---------------------------------------------------------------------------

conformance!(
    idempotent_retry_replays_the_first_outcome_and_refuses_other_input,
    |test_db: TestDb| async move {
        let commands = test_db.commands();
        let account = Uuid::new_v4();
        let key = unique("key");
        let keyed = || metadata_of(account).with_idempotency_key(Some(key.clone()));
        // Three events per request, so a replay has a range of events to report.
        let send = |id: String, amount: i64, metadata: EventMetadata| {
            let commands = commands.clone();
            async move {
                commands
                    .execute::<Tally>(
                        &id,
                        TallyCommand::AddEach {
                            amounts: vec![amount; 3],
                        },
                        &TallyServices::default(),
                        &metadata,
                        &json!({ "amount": amount }),
                        Retry::Never,
                    )
                    .await
            }
        };
        // The keyed request lands in the middle of its stream: sequences 3..=5.
        let first_id = unique("idem");
        for amount in [1, 2] {
            add(&commands, &first_id, amount, account, Retry::Never)
                .await
                .expect("earlier event");
        }
        let (first, first_state) = send(first_id.clone(), 5, keyed()).await.expect("first");
        assert!(!first.replayed);
        let sequences: Vec<i64> = first.events.iter().map(|e| e.sequence).collect();
        assert_eq!(sequences, vec![3, 4, 5]);
        let count = test_db.journal.count().await.expect("count");

        // A retry carries a new server-made id; it gets the first outcome back.
        let (second, second_state) = send(unique("idem"), 5, keyed()).await.expect("retry");
        assert!(second.replayed);
        assert_eq!(second.aggregate_id, first_id);
        assert_eq!(second.events, first.events);
        assert_eq!(second_state, first_state);
        assert_eq!(test_db.journal.count().await.expect("count"), count);

        // After the stream moved on, a retry still reports exactly the first events.
        add(&commands, &first_id, 9, account, Retry::Never)
            .await
            .expect("later event");
        let (third, third_state) = send(unique("idem"), 5, keyed()).await.expect("retry");
        assert!(third.replayed);
        assert_eq!(third.events, first.events);
        assert_eq!(
            third_state.additions, 6,
            "the state reported is the current one"
        );
        let count = count + 1;
        assert_eq!(test_db.journal.count().await.expect("count"), count);

        let reused = send(unique("idem"), 6, keyed()).await;
        assert!(
            matches!(reused, Err(CommandError::IdempotencyKeyReused)),
            "same key with different input must be refused, got {reused:?}"
        );
        assert_eq!(test_db.journal.count().await.expect("count"), count);

        // Keys belong to their caller: another account's identical key is its own.
        let other = metadata_of(Uuid::new_v4()).with_idempotency_key(Some(key.clone()));
        let (theirs, _) = send(unique("idem"), 5, other).await.expect("other caller");
        assert!(!theirs.replayed);
        assert_eq!(test_db.journal.count().await.expect("count"), count + 3);
        assert_intact(&verify(&test_db.db).await);
    }
);

conformance!(
    concurrent_requests_with_one_idempotency_key_commit_once,
    |test_db: TestDb| async move {
        const REQUESTS: usize = 16;
        let commands = test_db.commands();
        let account = Uuid::new_v4();
        let key = unique("key");
        let gate = Arc::new(Barrier::new(REQUESTS));
        let mut requests = JoinSet::new();
        for _ in 0..REQUESTS {
            let (commands, gate) = (commands.clone(), Arc::clone(&gate));
            let metadata = metadata_of(account).with_idempotency_key(Some(key.clone()));
            requests.spawn(async move {
                // Each request would create its own aggregate: only the key links them.
                commands
                    .execute::<Tally>(
                        &unique("idem"),
                        TallyCommand::Add { amount: 7 },
                        &TallyServices::gated(gate),
                        &metadata,
                        &json!({ "amount": 7 }),
                        Retry::OnConflict,
                    )
                    .await
                    .map(|(outcome, _)| outcome)
            });
        }
        let mut outcomes = Vec::new();
        while let Some(joined) = requests.join_next().await {
            outcomes.push(
                joined
                    .expect("a request panicked")
                    .expect("every request gets the outcome"),
            );
        }
        let committed: Vec<&CommandOutcome> = outcomes.iter().filter(|o| !o.replayed).collect();
        assert_eq!(committed.len(), 1, "exactly one request commits");
        for outcome in &outcomes {
            assert_eq!(outcome.aggregate_id, committed[0].aggregate_id);
            assert_eq!(outcome.events, committed[0].events);
        }
        assert_eq!(test_db.journal.count().await.expect("count"), 1);
        assert_intact(&verify(&test_db.db).await);
    }
);

// ---------------------------------------------------------------------------
// Tampering is found, at the first broken event
// ---------------------------------------------------------------------------

conformance!(
    verify_finds_an_edited_payload,
    |test_db: TestDb| async move {
        let ids = seed(&test_db, 3, 5).await;
        let target = &ids[1];
        let edited = position_of(&test_db.db, target, 3).await;
        assert_intact(&verify(&test_db.db).await);
        let sql = match test_db.backend {
            TestBackend::Postgres => {
                "UPDATE events SET payload = jsonb_set(payload, '{Added,amount}', '999') \
             WHERE aggregate_type = 'tally' AND aggregate_id = $1 AND sequence = 3"
            }
            // SQLite stores the payload as canonical JSON text.
            TestBackend::Sqlite => {
                "UPDATE events SET payload = json_set(payload, '$.Added.amount', 999) \
             WHERE aggregate_type = 'tally' AND aggregate_id = $1 AND sequence = 3"
            }
        };
        assert_eq!(tamper(&test_db.db, sql, target).await, 1);
        let report = verify(&test_db.db).await;
        let first = report.first_break.expect("the edit is found");
        assert_eq!(first.kind, BreakKind::HashMismatch);
        assert_eq!(
            (first.position, first.aggregate_id.as_str(), first.sequence),
            (edited, target.as_str(), 3)
        );
        assert_eq!(report.breaks, 1, "later events chain on the stored hash");
        assert_eq!(report.events_checked, 15);
    }
);

conformance!(
    verify_finds_an_event_deleted_from_the_middle,
    |test_db: TestDb| async move {
        let ids = seed(&test_db, 3, 5).await;
        let target = &ids[0];
        let after_gap = position_of(&test_db.db, target, 4).await;
        let sql = "DELETE FROM events \
         WHERE aggregate_type = 'tally' AND aggregate_id = $1 AND sequence = 3";
        assert_eq!(tamper(&test_db.db, sql, target).await, 1);
        let report = verify(&test_db.db).await;
        let first = report.first_break.expect("the gap is found");
        assert_eq!(
            first.kind,
            BreakKind::MissingEvents {
                expected_sequence: 3
            }
        );
        assert_eq!(
            (first.position, first.aggregate_id.as_str(), first.sequence),
            (after_gap, target.as_str(), 4)
        );
        assert_eq!(report.breaks, 1);
    }
);

conformance!(
    verify_finds_two_swapped_events,
    |test_db: TestDb| async move {
        let ids = seed(&test_db, 3, 5).await;
        let target = &ids[2];
        let second = position_of(&test_db.db, target, 2).await;
        let third = position_of(&test_db.db, target, 3).await;
        // Through a spare sequence number: the primary key holds at every step.
        for sql in [
            "UPDATE events SET sequence = 1000000 \
         WHERE aggregate_type = 'tally' AND aggregate_id = $1 AND sequence = 2",
            "UPDATE events SET sequence = 2 \
         WHERE aggregate_type = 'tally' AND aggregate_id = $1 AND sequence = 3",
            "UPDATE events SET sequence = 3 \
         WHERE aggregate_type = 'tally' AND aggregate_id = $1 AND sequence = 1000000",
        ] {
            assert_eq!(tamper(&test_db.db, sql, target).await, 1);
        }
        let report = verify(&test_db.db).await;
        let first = report.first_break.expect("the swap is found");
        // Both moved events are broken, and so is sequence 4, which chains onto the
        // hash that used to precede it. The first in global order is the event
        // written second, which now claims sequence 3.
        assert_eq!(report.breaks, 3);
        assert_eq!(first.kind, BreakKind::HashMismatch);
        assert!(second < third);
        assert_eq!(
            (first.position, first.aggregate_id.as_str(), first.sequence),
            (second, target.as_str(), 3)
        );
    }
);

conformance!(
    verify_finds_the_last_event_of_a_stream_deleted_after_a_seal,
    |test_db: TestDb| async move {
        let ids = seed(&test_db, 3, 5).await;
        seal_all(&test_db.journal).await;
        assert_intact(&verify(&test_db.db).await);
        let target = &ids[0];
        let (tx, position) = journal_events(&test_db.db)
            .await
            .into_iter()
            .find(|(_, id, sequence, _, _)| id == target && *sequence == 5)
            .map(|(_, _, _, position, tx)| (tx, position))
            .expect("the stream's last event");
        let seals: Vec<(i64, i64, i64, i64, i64)> = kabinet_domain::on_db!(&test_db.db, pool => {
            sqlx::query_as(
                "SELECT seal_no, first_tx, first_position, last_tx, last_position \
                 FROM seals ORDER BY seal_no",
            )
            .fetch_all(pool)
            .await
            .expect("read the seals")
        });
        let (seal_no, _, _, _, seal_last) = *seals
            .iter()
            .find(|(_, ft, fp, lt, lp)| {
                (*ft, *fp) <= (tx, position) && (tx, position) <= (*lt, *lp)
            })
            .expect("a seal covers the event");

        let sql = "DELETE FROM events \
             WHERE aggregate_type = 'tally' AND aggregate_id = $1 AND sequence = 5";
        assert_eq!(tamper(&test_db.db, sql, target).await, 1);
        let report = verify(&test_db.db).await;
        // The chains alone cannot see a truncated stream; the seal does.
        assert_eq!(report.breaks, 1);
        let first = report.first_break.expect("the truncation is found");
        assert!(
            matches!(&first.kind, BreakKind::SealMismatch { seal_no: n, .. } if *n == seal_no),
            "expected seal {seal_no} to break, got {first}"
        );
        assert_eq!(first.position, seal_last);
        assert_eq!(first.aggregate_type, "seal");
    }
);

conformance!(
    verify_passes_an_untouched_sealed_journal,
    |test_db: TestDb| async move {
        seed(&test_db, 3, 5).await;
        let first_seals = seal_all(&test_db.journal).await;
        seed(&test_db, 2, 4).await;
        let more_seals = seal_all(&test_db.journal).await;
        assert!(first_seals >= 1 && more_seals >= 1);
        let report = verify(&test_db.db).await;
        assert_intact(&report);
        assert_eq!(report.events_checked, 15 + 8);
        assert_eq!(report.streams_checked, 5);
        assert_eq!(report.seals_checked, (first_seals + more_seals) as u64);
        let digest = test_db
            .journal
            .latest_seal()
            .await
            .expect("latest seal")
            .expect("a seal");
        assert_eq!(digest.seal_no, (first_seals + more_seals) as i64);
    }
);

// ---------------------------------------------------------------------------
// Rebuild
// ---------------------------------------------------------------------------

type ActivityRow = (
    String,
    i64,
    i64,
    String,
    String,
    String,
    Option<String>,
    String,
    String,
);

async fn activity_rows(db: &Db) -> Vec<ActivityRow> {
    const SQL: &str = "SELECT account_id, position, occurred_at, action, object_type, object_id, \
         status, actor_id, actor_role FROM activity_log ORDER BY account_id, position";
    kabinet_domain::on_db!(db, pool => {
        sqlx::query_as(SQL).fetch_all(pool).await.expect("read the activity log")
    })
}

/// Tallies by several patients, and organisations registered and changed by an admin.
async fn write_activity(test_db: &TestDb, tag: &str) -> Vec<CommandOutcome> {
    let commands = test_db.commands();
    let mut outcomes = Vec::new();
    for patient in 0..4 {
        let account = Uuid::new_v4();
        for n in 1..=5 {
            let id = format!("{tag}-{patient}-{}", n % 2);
            outcomes.push(
                add(&commands, &id, n, account, Retry::Never)
                    .await
                    .expect("tally"),
            );
        }
    }
    let admin = EventMetadata::new(
        Actor {
            account_id: Uuid::new_v4(),
            role: Role::Admin,
            organisation_id: None,
        },
        "rebuild-test",
    );
    for o in 0..2 {
        let id = format!("{tag}-org-{o}");
        for command in [
            OrganisationCommand::Register(organisation_details("Поликлиника")),
            OrganisationCommand::UpdateDetails(organisation_details("Поликлиника №2")),
        ] {
            let (outcome, _) = commands
                .execute::<Organisation>(&id, command, &(), &admin, &json!({}), Retry::Never)
                .await
                .expect("organisation command");
            outcomes.push(outcome);
        }
    }
    outcomes
}

conformance!(
    rebuilt_activity_log_equals_the_live_one,
    |test_db: TestDb| async move {
        let live = Projector::new(
            test_db.journal.clone(),
            vec![Arc::new(ActivityLog)],
            ProjectorConfig {
                batch_size: 5,
                poll_interval: Duration::from_millis(100),
            },
        );
        write_activity(&test_db, &unique("before")).await;
        live.catch_up().await.expect("catch up");
        let before = activity_rows(&test_db.db).await;
        let events = test_db.journal.count().await.expect("count");
        // One actor per event and no patient ids in these payloads: one line each.
        assert_eq!(before.len() as i64, events);
        let report = rebuild(&test_db.journal, Arc::new(ActivityLog), 7)
            .await
            .expect("rebuild");
        assert_eq!(report.events_applied, events as u64);
        assert_eq!(activity_rows(&test_db.db).await, before);

        // Again while writers commit and the live runner keeps applying.
        let runners = Runners::start(&live, &test_db.journal).await;
        let mut tasks = JoinSet::new();
        for w in 0..3 {
            let tag = unique(&format!("during-{w}"));
            let commands = test_db.commands();
            tasks.spawn(async move {
                let account = Uuid::new_v4();
                let mut outcomes = Vec::new();
                for n in 1..=8 {
                    outcomes.push(
                        add(&commands, &tag, n, account, Retry::Never)
                            .await
                            .expect("tally"),
                    );
                }
                outcomes
            });
        }
        rebuild(&test_db.journal, Arc::new(ActivityLog), 7)
            .await
            .expect("rebuild under load");
        let mut outcomes = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            outcomes.extend(joined.expect("a writer panicked"));
        }
        live.wait_for(
            &[kabinet_projections::activity_log::NAME],
            last_order(&outcomes),
            Duration::from_secs(120),
        )
        .await
        .expect("the live table catches up after the swap");
        runners.stop().await;
        live.catch_up().await.expect("catch up");
        let after_load = activity_rows(&test_db.db).await;
        assert_eq!(
            after_load.len() as i64,
            test_db.journal.count().await.expect("count")
        );
        rebuild(&test_db.journal, Arc::new(ActivityLog), 1000)
            .await
            .expect("rebuild at rest");
        assert_eq!(activity_rows(&test_db.db).await, after_load);
    }
);
