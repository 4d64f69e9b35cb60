//! The `kabinet` binary: parse the command line and run.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match kabinet_graphql::cli::main().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kabinet: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
