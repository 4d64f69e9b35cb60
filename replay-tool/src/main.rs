//! `kabinet-replay`: verify, digest, replay, rebuild and export the Kabinet journal.
//!
//! Exit status: 0 success, 1 the journal is broken (or a rebuild check found
//! differences), 2 the tool could not run.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    kabinet_replay::main().await
}
