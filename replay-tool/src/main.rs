//! `kabinet-replay`: verify, digest, replay, rebuild and export the Kabinet journal.
//!
//! Exit status: 0 success, 1 the journal is broken (or a rebuild check found
//! differences), 2 the tool could not run.

use std::process::ExitCode;

use clap::Parser;
use kabinet_replay::cli::Cli;

/// Set to print `peak_rss_kb=N` on stderr at exit (used by the benchmark).
const PEAK_RSS_ENV: &str = "KABINET_REPLAY_PEAK_RSS";

#[tokio::main]
async fn main() -> ExitCode {
    let code = match kabinet_replay::run(Cli::parse()).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kabinet-replay: {e:#}");
            ExitCode::from(2)
        }
    };
    if std::env::var_os(PEAK_RSS_ENV).is_some() {
        if let Some(kb) = kabinet_replay::peak_rss_kb() {
            eprintln!("peak_rss_kb={kb}");
        }
    }
    code
}
