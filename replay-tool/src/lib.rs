//! `kabinet-replay`: the auditor's and analyst's tool over the journal —
//! verify, digest, replay as of a moment, rebuild, export.
//!
//! Exit status: 0 success (intact, no differences), 1 the journal is broken or
//! a rebuild check found differences, 2 the tool could not run (bad input,
//! unreachable database, not a Kabinet journal). Every command only reads,
//! except `rebuild` without `--check`.

pub mod bench;
pub mod cli;
mod export;
mod progress;
pub mod pseudonym;
mod rebuild;
mod replay;
mod rows;
pub mod source;
pub mod token;
mod verify;

use std::process::ExitCode;

pub use rebuild::rebuild_lock_key;

use cli::{Cli, Command};
use source::{open, Access};

/// Runs one command line; errors mean "could not run" (exit 2).
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let url = cli.database_url.as_str();
    match &cli.command {
        Command::Verify(args) => {
            let db = open(url, Access::ReadOnly).await?;
            let code = verify::verify(&db, args, cli.json).await;
            db.close().await;
            code
        }
        Command::Digest => {
            let db = open(url, Access::ReadOnly).await?;
            verify::digest(db, cli.json).await
        }
        Command::Replay(args) => {
            let db = open(url, Access::ReadOnly).await?;
            let done = replay::replay(&db, args, cli.json).await;
            db.close().await;
            done.map(|()| ExitCode::SUCCESS)
        }
        Command::Rebuild(args) => {
            let access = if args.check {
                Access::Temporary
            } else {
                Access::ReadWrite
            };
            let db = open(url, access).await?;
            let code = rebuild::run(&db, url, args, cli.json).await;
            db.close().await;
            code
        }
        Command::Export(args) => {
            let db = open(url, Access::ReadOnly).await?;
            let done = export::export(&db, args).await;
            db.close().await;
            done.map(|()| ExitCode::SUCCESS)
        }
        Command::Bench(args) => bench::run(args).await.map(|()| ExitCode::SUCCESS),
    }
}

/// Set to print `peak_rss_kb=N` on stderr at exit (used by the benchmark).
const PEAK_RSS_ENV: &str = "KABINET_REPLAY_PEAK_RSS";

/// The whole program: parses the command line, runs it and maps a failure to
/// exit status 2. Shared by the binary and the copy the end-to-end tests build.
pub async fn main() -> ExitCode {
    use clap::Parser;

    let code = match run(Cli::parse()).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kabinet-replay: {e:#}");
            ExitCode::from(2)
        }
    };
    if std::env::var_os(PEAK_RSS_ENV).is_some() {
        if let Some(kb) = peak_rss_kb() {
            eprintln!("peak_rss_kb={kb}");
        }
    }
    code
}

/// Peak resident memory of this process in kB (`VmHWM`), where /proc exists.
pub fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}
