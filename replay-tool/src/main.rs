//! `kabinet-replay`: the auditor's and analyst's tool over the journal.
//!
//! Exit status: 0 the journal is intact, 1 it is broken, 2 the tool could not run.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kabinet_domain::db::{redact_url, PoolOptions};
use kabinet_domain::journal::verify::{verify_journal, VerifyReport};
use kabinet_domain::{Db, Journal};
use serde_json::json;

/// Verify and inspect the Kabinet journal.
#[derive(Debug, Parser)]
#[command(name = "kabinet-replay", version)]
struct Cli {
    /// `sqlite://PATH` or `postgres://USER@HOST/DB`.
    #[arg(
        long,
        global = true,
        env = "DATABASE_URL",
        default_value = "sqlite://kabinet.db"
    )]
    database_url: String,
    /// Machine-readable output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Recompute every stream's hash chain and every seal.
    Verify,
    /// Print the journal's current digest (`HASH@POSITION`) to keep.
    Digest,
}

/// Opens the database read-only in spirit: no migrations, and refuses what is not a journal.
async fn open(url: &str) -> anyhow::Result<Db> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        let path = path.split('?').next().unwrap_or_default();
        if !std::path::Path::new(path).exists() {
            anyhow::bail!("no database at {path}");
        }
    }
    let db = Db::connect(
        url,
        &PoolOptions {
            max_connections: 4,
            ..PoolOptions::default()
        },
    )
    .await?;
    let tables = ["events", "seals"];
    for table in tables {
        let probe = format!("SELECT COUNT(*) FROM (SELECT 1 FROM {table} LIMIT 1) AS probe");
        let found = kabinet_domain::on_db!(&db, pool => {
            sqlx::query_scalar::<_, i64>(&probe).fetch_one(pool).await.is_ok()
        });
        if !found {
            anyhow::bail!(
                "{} is not a Kabinet journal (no '{table}' table)",
                redact_url(url)
            );
        }
    }
    Ok(db)
}

fn print_report(report: &VerifyReport, as_json: bool) {
    if as_json {
        let first = report.first_break.as_ref().map(|b| {
            json!({
                "position": b.position,
                "stream": format!("{}/{}", b.aggregate_type, b.aggregate_id),
                "sequence": b.sequence,
                "expected": b.expected.map(hex::encode),
                "found": b.found.map(hex::encode),
                "description": b.to_string(),
            })
        });
        println!(
            "{}",
            json!({
                "intact": report.is_intact(),
                "events": report.events_checked,
                "streams": report.streams_checked,
                "seals": report.seals_checked,
                "breaks": report.breaks,
                "first_break": first,
            })
        );
    } else if let Some(first) = &report.first_break {
        println!("BROKEN: {first}");
        println!(
            "{} problem(s) in {} events, {} seals",
            report.breaks, report.events_checked, report.seals_checked
        );
    } else {
        println!(
            "intact: {} events in {} streams, {} seals",
            report.events_checked, report.streams_checked, report.seals_checked
        );
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let db = open(&cli.database_url).await?;
    match cli.command {
        Command::Verify => {
            let report = verify_journal(&db, |_| {}).await?;
            print_report(&report, cli.json);
            Ok(if report.is_intact() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Digest => {
            let seal = Journal::new(db).latest_seal().await?;
            match (seal, cli.json) {
                (Some(seal), true) => println!(
                    "{}",
                    json!({ "digest": seal.digest(), "seal": seal.seal_no })
                ),
                (Some(seal), false) => println!("{}", seal.digest()),
                (None, _) => anyhow::bail!(
                    "the journal has no seal yet: start the server, which seals new events"
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kabinet-replay: {e:#}");
            ExitCode::from(2)
        }
    }
}
